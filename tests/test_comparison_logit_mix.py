"""`trl-clp compare --logit_mix_for`: a run evaluated also as the logit mixture of its corner specialists (MOD), beside
its parameter-space front; its files read back by --reuse; refusals before any sampling."""

import dataclasses
import json
import shutil

import pytest
import torch
from peft import LoraConfig

from trl_clp import SteerableModel, demo
from trl_clp.cli import main as cli
from trl_clp.comparison import plan_fronts

CORNERS = ([1.0, 0.0], [0.0, 1.0])
MIDDLE = [0.5, 0.5]


def save_run(path, base_model, tokenizer, seed=0, conditioning="full", min_kl_weight=None) -> str:
    """A tiny steerable model with random LoRA blocks (each weighting samples differently), saved as a run folder;
    with `min_kl_weight`, one more block for the KL weight, as a model trained with `kl_weights`."""
    torch.manual_seed(seed)
    names = ["lower", "upper"] + (["kl"] if min_kl_weight is not None else [])
    steer = SteerableModel.from_base_model(
        demo.make_tiny_llama(seed=0),
        names,
        LoraConfig(r=6, lora_alpha=12, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
        conditioning,
        tokenizer=tokenizer,
    )
    if min_kl_weight is not None:
        config = dataclasses.replace(steer.conditioning_config, objective_names=names[:2], min_kl_weight=min_kl_weight)
        steer = SteerableModel(steer.model, config, tokenizer, steer.conditioner)
    steer.model.peft_config["default"].base_model_name_or_path = base_model
    steer.save_pretrained(path)
    return str(path)


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Describe: river {i}\n"}) + "\n" for i in range(4)))
    return str(path)


def compare_argv(runs, prompts, output, *extra) -> list[str]:
    argv = ["compare", "--runs", *runs, "--prompts", prompts, "--reward_funcs", "lowercase", "uppercase"]
    argv += ["--grid_points", "3", "--max_new_tokens", "6", "--num_resamples", "50", "--temperature", "1.5"]
    return argv + ["--base_samples_per_prompt", "2", "--no_guards", "--output_dir", str(output), *extra]


def read_samples(output, stem) -> list[dict]:
    return [json.loads(line) for line in (output / f"{stem}.samples.jsonl").read_text().splitlines()]


def at(samples, weights) -> list[dict]:
    return [s for s in samples if s["weights"] == weights]


def test_logit_mix_is_the_specialist_at_each_corner_and_differs_from_parameter_mixing_inside(
    tmp_path, saved_base_model, tokenizer, prompts_file
):
    """At a one-hot weighting the mixture has one component with weight 1, the run's own specialist: the same
    completions as the run's parameter-space front (same prompts, rows and sampling seeds) and the same KL. At
    (0.5, 0.5) it samples softmax(½ logits(e_0) + ½ logits(e_1)), not the model at (0.5, 0.5): other tokens and
    another KL, measured from the mixture's own log-probabilities."""
    seeds = [save_run(tmp_path / f"rs{s}", saved_base_model, tokenizer, seed=s) for s in range(2)]
    output = tmp_path / "comparison"
    cli(compare_argv([f"RS={','.join(seeds)}"], prompts_file, output, "--logit_mix_for", "RS"))
    for s in range(2):
        own, mixed = read_samples(output, f"RS-s{s}"), read_samples(output, f"RS-logit-mix-s{s}")
        assert len(mixed) == len(own) == 3 * 4 * 2  # weightings × prompts × samples
        for corner in CORNERS:
            assert [m["completion"] for m in at(mixed, corner)] == [o["completion"] for o in at(own, corner)]
            assert [m["kl"] for m in at(mixed, corner)] == pytest.approx([o["kl"] for o in at(own, corner)], abs=1e-4)
        middle_own, middle_mixed = at(own, MIDDLE), at(mixed, MIDDLE)
        assert [m["completion"] for m in middle_mixed] != [o["completion"] for o in middle_own]
        kl_gaps = [abs(m["kl"] - o["kl"]) for m, o in zip(middle_mixed, middle_own, strict=True)]
        assert max(kl_gaps) > 1e-2

    results = json.loads((output / "comparison.json").read_text())
    assert list(results["methods"]) == ["RS", "RS (logit mix)"] and results["methods"]["RS (logit mix)"]["seeds"] == 2
    assert results["settings"]["logit_mix_for"] == ["RS"]
    assert results["paired"]["RS − RS (logit mix)"]["scalarised"][0]["difference"] == pytest.approx([0.0] * 3)
    report = (output / "report.md").read_text()
    assert "| RS (logit mix) | 2 |" in report and "### RS − RS (logit mix)" in report

    # --reuse from a copy, the runs gone: the mixture's files are read back and the comparison is the same.
    copy = tmp_path / "copy"
    shutil.copytree(output, copy)
    (copy / "comparison.json").unlink()
    for path in seeds:
        shutil.rmtree(path)
    argv = ["compare", "--reuse", "--runs", f"RS={','.join(seeds)}", "--logit_mix_for", "RS", "--grid_points", "3"]
    cli(argv + ["--num_resamples", "50", "--base_samples_per_prompt", "2", "--no_guards", "--output_dir", str(copy)])
    again = json.loads((copy / "comparison.json").read_text())
    assert again["methods"] == results["methods"] and again["paired"] == results["paired"]


def test_logit_mix_of_a_kl_conditioned_run_mixes_its_specialists_at_its_own_alpha(
    tmp_path, saved_base_model, tokenizer, prompts_file
):
    """A multi-α run's specialists are its corners at the α its own front is evaluated at (the smallest trained on):
    the conditioning vectors carry the KL entry, so each corner of the mixture is again the run's own front."""
    run = save_run(tmp_path / "multi", saved_base_model, tokenizer, min_kl_weight=0.1)
    output = tmp_path / "comparison"
    cli(compare_argv([f"M={run}"], prompts_file, output, "--logit_mix_for", "M"))
    own, mixed = read_samples(output, "M-s0"), read_samples(output, "M-logit-mix-s0")
    for corner in CORNERS:
        assert [m["completion"] for m in at(mixed, corner)] == [o["completion"] for o in at(own, corner)]
    assert [m["completion"] for m in at(mixed, MIDDLE)] != [o["completion"] for o in at(own, MIDDLE)]
    results = json.loads((output / "comparison.json").read_text())
    assert results["methods"]["M (logit mix)"]["kl_weight"] == results["methods"]["M"]["kl_weight"] == 0.1


def test_logit_mix_refusals_name_the_fix_before_any_sampling(tmp_path, saved_base_model, tokenizer, prompts_file):
    run = save_run(tmp_path / "rs", saved_base_model, tokenizer)
    prompting = save_run(tmp_path / "prompting", saved_base_model, tokenizer, conditioning="prompt")
    output = tmp_path / "out"
    refusals = [
        ([f"RS={run}"], ["--logit_mix_for", "CLP"], r"--logit_mix_for 'CLP': no run has that label; .*\['RS'\]"),
        (
            [f"RS={run}", f"P={prompting}"],
            ["--logit_mix_for", "P"],
            "is a prompting run .* Drop P from --logit_mix_for",
        ),
        ([f"RS={run}"], ["--logit_mix_for", "RS", "--top_p", "0.9"], "Compare with --top_p 1.0 --top_k 0"),
        ([f"RS={run}"], ["--logit_mix_for", "RS", "--top_k", "5"], "Compare with --top_p 1.0 --top_k 0"),
        (
            [f"RS={run}"],
            ["--logit_mix_for", "RS", "--kl_weights_for", "RS", "0.2"],
            "list its folders a second time in --runs under another label",
        ),
    ]
    for runs, extra, message in refusals:
        with pytest.raises(SystemExit, match=message):
            cli(compare_argv(runs, prompts_file, output, *extra))
        assert not list(output.glob("*.samples.jsonl"))  # refused before anything was sampled
    with pytest.raises(ValueError, match="one file name"):  # "A logit mix"'s stem is that of A's mixture
        plan_fronts(["A=a", "A logit mix=b"], logit_mix_for=["A"])


def test_compare_help_lists_logit_mix_and_plan_names_the_front_and_its_files(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli(["compare", "--help"])
    assert exit_info.value.code == 0
    assert "--logit_mix_for LABEL [LABEL ...]" in capsys.readouterr().out
    planned = plan_fronts(["RS=a,b", "CLP=c"], logit_mix_for=["RS"])
    assert [(f.label, f.paths, f.logit_mix, f.stem(1)) for f in planned] == [
        ("RS", ("a", "b"), False, "RS-s1"),
        ("RS (logit mix)", ("a", "b"), True, "RS-logit-mix-s1"),
        ("CLP", ("c",), False, "CLP-s1"),
    ]
