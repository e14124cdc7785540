"""Every code block of README.md and docs/*.md runs as written, or is marked as not runnable offline.

The blocks of one page run in order, in one namespace (```python) or one shell (```bash, each block a `bash -e`
script), in a fresh working directory that holds `examples/` and `benchmarks/` (links to this checkout), the main
job's output at toy size in `outputs/clp-demo` (and a copy in `out`, the folder `trainer.save_model()` writes in
the examples), as after the README's first command. A block preceded by `<!-- docs-test: skip (reason) -->` is not
run; the reason must be given.

What is substituted, and only this (the pages are otherwise run as written):
- hub ids, by tiny local equivalents (`HUB_SUBSTITUTES`): the policy by the demo's tiny Llama with its byte-level
  tokenizer, trl-lib/tldr by a 16-row JSON-lines copy with the same columns, the NLI model by a tiny BERT classifier;
- `pip install ...` by `true`: the package and its extras are installed where the tests run;
- the main job's size: `TOY_SIZE` flags are appended to a command line that runs `examples/train_clp.py` or
  `trl-clp train`, so that it trains for 2 steps on a tiny pre-trained model instead of 2.5 minutes (for DPO, the
  same flags less `--max_completion_length`).
"""

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

import pytest

from .conftest import TOY_MAIN_JOB_FLAGS, save_tiny_nli_model, toy_main_job_argv

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
PAGES = ["README.md"] + sorted(
    os.path.join("docs", name) for name in os.listdir(os.path.join(ROOT, "docs")) if name.endswith(".md")
)
SKIP = re.compile(r"<!--\s*docs-test:\s*skip\s*\((?P<reason>[^)]+)\)\s*-->")
FENCE = re.compile(r"^```(?P<language>[\w+-]*)\s*$")
RUN_LANGUAGES = {"python": "python", "py": "python", "bash": "bash", "sh": "bash", "shell": "bash"}
TOY_SIZE = " ".join(toy_main_job_argv())
# `--trainer dpo` (a DPO recipe) generates nothing: the same size less the completion length, not a DPO field.
DPO_TOY_SIZE = " ".join(f"--{k} {v}" for k, v in TOY_MAIN_JOB_FLAGS.items() if k != "max_completion_length")


@contextlib.contextmanager
def working_directory(path):
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


@dataclass
class Block:
    page: str
    line: int  # 1-based line of the opening fence
    language: str  # "python", "bash", or the fence's own tag for blocks that are not run (output, yaml, ...)
    code: str
    skip_reason: str | None


def code_blocks(page: str) -> list[Block]:
    """The fenced blocks of a page, with the skip reason written just above each (if any)."""
    with open(os.path.join(ROOT, page), encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    blocks, index = [], 0
    while index < len(lines):
        match = FENCE.match(lines[index])
        if not match:
            index += 1
            continue
        start = index
        end = next((i for i in range(start + 1, len(lines)) if lines[i].strip() == "```"), None)
        assert end is not None, f"{page}:{start + 1}: unclosed code fence"
        previous = next((lines[i] for i in range(start - 1, -1, -1) if lines[i].strip()), "")
        skip = SKIP.search(previous)
        language = RUN_LANGUAGES.get(match["language"], match["language"] or "text")
        blocks.append(
            Block(
                page, start + 1, language, "\n".join(lines[start + 1 : end]), skip["reason"].strip() if skip else None
            )
        )
        index = end + 1
    return blocks


@pytest.fixture(scope="module")
def hub_substitutes(tmp_path_factory):
    """Hub id → a local tiny stand-in (built once for the module)."""
    from trl_clp import demo

    root = tmp_path_factory.mktemp("hub")
    policy = root / "tiny-policy"
    model = demo.make_tiny_llama(seed=0)
    tokenizer = demo.make_byte_tokenizer()
    demo.pretrain_demo_model(model, tokenizer, steps=5)
    model.save_pretrained(policy)
    tokenizer.save_pretrained(policy)

    tldr = root / "tldr"
    tldr.mkdir()
    for split, count in (("train", 16), ("validation", 4), ("test", 4)):
        rows = [
            {"prompt": f"SUBREDDIT: r/cats\nPOST: the cat sat on the mat {i}\nTL;DR:", "completion": " the cat sat"}
            for i in range(count)
        ]
        (tldr / f"{split}.jsonl").write_text("\n".join(json.dumps(row) for row in rows))

    nli = save_tiny_nli_model(root / "tiny-nli")
    return {
        "Qwen/Qwen2.5-0.5B": str(policy),
        "trl-lib/tldr": str(tldr),
        "MoritzLaurer/DeBERTa-v3-base-mnli-fever-anli": nli,
        "user/clp-tldr": "outputs/clp-demo",  # a steerable model on the hub: the main job's, saved locally
    }


@pytest.fixture(scope="module")
def main_job_output(tmp_path_factory):
    """The main job's output folder, `outputs/clp-demo` (relative, as the README's command writes it), at toy size."""
    from trl_clp.scripts.train import main, make_parser

    workdir = tmp_path_factory.mktemp("main-job")
    with working_directory(workdir), contextlib.redirect_stdout(io.StringIO()):
        main(*make_parser().parse_args_and_config(args=TOY_SIZE.split()))
    return workdir / "outputs"


def substitute(code: str, language: str, hub_substitutes: dict[str, str]) -> str:
    for hub_id, local in hub_substitutes.items():
        code = code.replace(f'"{hub_id}"', f'"{local}"') if language == "python" else code.replace(hub_id, local)
    if language == "bash":
        code = re.sub(r"pip install [^&|;\n]*", "true ", code)
        lines = []
        for line in code.splitlines():
            if re.search(r"examples/train_clp\.py|trl-clp train|trl_clp\.scripts\.train", line):
                command, hash_, comment = line.partition(" #")
                toy = DPO_TOY_SIZE if re.search(r"--trainer dpo|dpo_\w*\.yaml", command) else TOY_SIZE
                line = f"{command.rstrip().rstrip(chr(92)).rstrip()} {toy}" + (f" #{comment}" if hash_ else "")
            lines.append(line)
        code = "\n".join(lines)
    return code


def run_page(page: str, workdir, hub_substitutes: dict[str, str]) -> list[str]:
    """Run the page's blocks in order in `workdir`; returns the skipped blocks' reasons."""
    namespace = {"__name__": "__docs__"}
    skipped = []
    env = {
        **os.environ,
        "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        # `accelerate` and `trl-clp` from the interpreter running the tests, also from a venv that is not activated.
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
    }
    with working_directory(workdir):
        for block in code_blocks(page):
            if block.language not in ("python", "bash"):
                continue
            where = f"{page}:{block.line}"
            if block.skip_reason is not None:
                skipped.append(f"{where}: {block.skip_reason}")
                continue
            code = substitute(block.code, block.language, hub_substitutes)
            if block.language == "python":
                try:
                    exec(compile(code, where, "exec"), namespace)
                except Exception as error:
                    raise AssertionError(f"{where} fails as written: {type(error).__name__}: {error}") from error
            else:
                result = subprocess.run(
                    ["bash", "-e", "-c", code], env=env, capture_output=True, text=True, timeout=600
                )
                assert result.returncode == 0, (
                    f"{where} fails as written (exit {result.returncode}):\n{code}\n{result.stdout[-3000:]}\n"
                    f"{result.stderr[-3000:]}"
                )
    return skipped


def test_every_page_is_collected_and_every_skip_gives_a_reason():
    assert "README.md" in PAGES and os.path.join("docs", "quickstart.md") in PAGES
    for page in PAGES:
        with open(os.path.join(ROOT, page), encoding="utf-8") as handle:
            text = handle.read()
        for match in re.finditer(r"<!--\s*docs-test:[^>]*-->", text):
            assert SKIP.fullmatch(match[0]), (
                f"{page}: malformed marker {match[0]!r}; write `<!-- docs-test: skip (why) -->`"
            )
        blocks = code_blocks(page)
        for block in blocks:
            if block.language in ("python", "bash") or block.skip_reason is None:
                continue
            pytest.fail(f"{page}:{block.line}: a skip marker above a block that is never run ({block.language})")


def test_the_block_parser_reads_languages_skips_and_order(tmp_path, monkeypatch):
    page = tmp_path / "page.md"
    page.write_text(
        "# T\n```python\nx = 1\n```\n\n<!-- docs-test: skip (needs a GPU) -->\n```bash\nnvidia-smi\n```\n"
        "```\noutput\n```\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", str(tmp_path))
    blocks = code_blocks("page.md")
    assert [(b.language, b.line, b.skip_reason) for b in blocks] == [
        ("python", 2, None),
        ("bash", 7, "needs a GPU"),
        ("text", 10, None),
    ]
    assert substitute('m = "Qwen/Qwen2.5-0.5B"', "python", {"Qwen/Qwen2.5-0.5B": "/tiny"}) == 'm = "/tiny"'
    line = substitute("pip install x && accelerate launch examples/train_clp.py --beta 0.1  # demo", "bash", {})
    assert line.startswith("true && accelerate launch examples/train_clp.py --beta 0.1 --max_steps 2")
    assert line.endswith("# demo")


def test_bash_blocks_run_the_interpreters_own_commands(tmp_path, monkeypatch):
    """`path/to/venv/bin/python -m pytest` without activating the venv: `accelerate` is still the venv's."""
    bin_folder = os.path.dirname(sys.executable)
    assert os.path.isfile(os.path.join(bin_folder, "accelerate")), "the test needs accelerate installed beside python"
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # a shell whose PATH does not reach the interpreter's bin folder
    page = tmp_path / "page.md"
    page.write_text(f'```bash\ntest "$(command -v accelerate)" = "{bin_folder}/accelerate"\n```\n')
    monkeypatch.setattr(sys.modules[__name__], "ROOT", str(tmp_path))
    assert run_page("page.md", tmp_path, {}) == []


@pytest.mark.parametrize("page", PAGES)
def test_page_runs_as_written(page, tmp_path, hub_substitutes, main_job_output):
    blocks = [b for b in code_blocks(page) if b.language in ("python", "bash")]
    if not blocks:
        pytest.skip(f"{page} has no code to run")
    for folder in ("examples", "benchmarks"):
        os.symlink(os.path.join(ROOT, folder), tmp_path / folder)
    shutil.copytree(main_job_output, tmp_path / "outputs", symlinks=True)
    shutil.copytree(main_job_output / "clp-demo", tmp_path / "out", symlinks=True)
    skipped = run_page(page, tmp_path, hub_substitutes)
    assert len(skipped) < len(blocks) or page in NOTHING_RUNS_OFFLINE, (
        f"{page}: every block is skipped; make at least one run offline:\n" + "\n".join(skipped)
    )


# Pages whose every block needs what tests cannot have (GPUs, downloads, long runs) or is a docstring example (api.md);
# the reason is on each block.
NOTHING_RUNS_OFFLINE = {
    os.path.join("docs", name) for name in ("api.md", "benchmarks.md", "comparison.md", "scaling.md")
}


def test_main_job_output_loads_from_another_working_directory(main_job_output, tmp_path):
    """The README's first command writes `outputs/clp-demo`; a user then loads it by absolute path from elsewhere."""
    import torch

    from trl_clp import SteerableModel

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with working_directory(elsewhere):
        steer = SteerableModel.from_pretrained(str(main_job_output / "clp-demo"))
        batch = steer.tokenizer(
            ["Describe: quiet river\n"] * 2, return_tensors="pt", padding=True, padding_side="left"
        )
        out = steer.generate(**batch, weights=torch.tensor([[1.0, 0.0], [0.0, 1.0]]), max_new_tokens=4)
    assert out.shape == (2, batch["input_ids"].shape[1] + 4)


def test_api_reference_is_up_to_date():
    """docs/api.md is what `python -m trl_clp.scripts.api_reference` writes from the current docstrings."""
    from trl_clp.scripts import api_reference

    with open(os.path.join(ROOT, "docs", "api.md"), encoding="utf-8") as handle:
        current = handle.read()
    assert current == api_reference.render(), (
        "docs/api.md is out of date: run `python -m trl_clp.scripts.api_reference` and commit the page."
    )
    for name in ("MultiObjectiveConfig", "SteerableModel", "evaluate_front", "RougeReward", "ScriptArguments"):
        assert f".{name}`" in current
    assert "| `conditioning` | `'full'` | Which parameters depend on the weighting" in current
