"""Every optional dependency, when missing, fails in one line naming the extra that installs it."""

import os
import re
import sys

import pytest
from peft import LoraConfig
from transformers import BitsAndBytesConfig

from trl_clp import MultiObjectiveConfig, MultiObjectiveTrainer, demo, extras
from trl_clp.cli import main

from .conftest import TARGETS, lower, tiny_config_values, upper

ROOT = os.path.join(os.path.dirname(__file__), os.pardir)


def install_hint(package: str, purpose: str, extra: str) -> str:
    return f'`{package}` is not installed; it is needed for {purpose}: `pip install "trl-clp[{extra}]"`.'


def hide(monkeypatch, *modules):
    """Make `import module` raise ImportError, as on a machine without it."""
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)


@pytest.mark.parametrize("package", ["fastapi", "uvicorn"])
def test_cli_serve_without_the_server_packages_names_the_serve_extra(package, monkeypatch, capsys):
    hide(monkeypatch, package)
    monkeypatch.delitem(sys.modules, "trl_clp.serving", raising=False)  # imported afresh, as in a new process
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "outputs/clp-demo"])
    assert exit_info.value.code == (
        "trl-clp serve: error: " + install_hint(package, "the HTTP server (`trl-clp serve`)", "serve")
    )


def test_plots_without_matplotlib_name_the_plots_extra(monkeypatch):
    from trl_clp.plotting import plot_fronts

    hide(monkeypatch, "matplotlib")
    with pytest.raises(ImportError) as error:
        plot_fronts({}, "front.png")
    assert str(error.value) == install_hint("matplotlib", "plots", "plots")


def test_rouge_rewards_without_rouge_score_name_the_rewards_extra(monkeypatch):
    from trl_clp.rewards import resolve_reward_function

    hide(monkeypatch, "rouge_score", "rouge_score.rouge_scorer")
    with pytest.raises(ImportError) as error:
        resolve_reward_function("rougeL")
    assert str(error.value) == install_hint("rouge_score", "the ROUGE rewards", "rewards")


def test_a_bitsandbytes_config_without_bitsandbytes_names_the_quantization_extra(tmp_path, monkeypatch):
    hide(monkeypatch, "bitsandbytes")
    for quantization_config, init_kwargs in (
        (BitsAndBytesConfig(load_in_4bit=True), None),
        (None, {"quantization_config": BitsAndBytesConfig(load_in_4bit=True)}),
    ):
        with pytest.raises(ImportError) as error:
            MultiObjectiveTrainer(
                model="path/to/model",  # refused before anything loads
                reward_funcs=[lower, upper],
                args=MultiObjectiveConfig(**tiny_config_values(tmp_path, model_init_kwargs=init_kwargs)),
                train_dataset=demo.make_prompt_dataset(8, seed=0),
                processing_class=demo.make_byte_tokenizer(),
                peft_config=LoraConfig(r=4, target_modules=TARGETS),
                quantization_config=quantization_config,
            )
        assert str(error.value) == install_hint(
            "bitsandbytes", "a 4-bit or 8-bit base model (`BitsAndBytesConfig`)", "quantization"
        )


def test_convert_gguf_without_gguf_names_the_gguf_extra(tmp_path, monkeypatch, capsys):
    hide(monkeypatch, "gguf")
    with pytest.raises(SystemExit) as exit_info:
        main(["convert-gguf", str(tmp_path / "model.gguf"), str(tmp_path / "out")])
    assert exit_info.value.code == "trl-clp convert-gguf: error: " + install_hint("gguf", "reading GGUF files", "gguf")


def test_every_extra_is_listed_in_the_readme_and_in_the_extras_module():
    with open(os.path.join(ROOT, "pyproject.toml")) as handle:  # no tomllib: Python 3.10 is supported
        section = handle.read().split("[project.optional-dependencies]")[1].split("\n[")[0]
    names = set(re.findall(r"^([a-z-]+) = \[", section, re.MULTILINE)) - {"test", "dev"}
    assert {"serve", "plots", "quantization", "rewards", "gguf"} <= names
    with open(os.path.join(ROOT, "README.md")) as handle:
        lines = [line for line in handle.read().replace("\n", " ").split(". ") if "Extras:" in line]
    assert len(lines) == 1, "README.md: one sentence listing the extras"
    listed = set(re.findall(r"`([a-z-]+)` \(", lines[0]))
    assert listed == names, f"README.md lists the extras {sorted(listed)}; pyproject.toml has {sorted(names)}"
    assert set(re.findall(r"^\| `([a-z-]+)` \|", extras.__doc__, re.MULTILINE)) == names
