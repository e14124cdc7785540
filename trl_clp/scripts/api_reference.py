# Copyright 2026 The trl-clp developers. Apache-2.0.
"""Write docs/api.md, the API reference, from the docstrings and the config fields' help.

    python -m trl_clp.scripts.api_reference            # rewrites docs/api.md
    python -m trl_clp.scripts.api_reference --check    # exits 1 if docs/api.md is out of date

`tests/test_docs.py` fails when the page differs from what this script writes: regenerate it after changing a
public name, a docstring or a config field.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import re
import sys

# Module → the names documented from it, in reading order. `trl_clp.__all__` is the top-level API; the rest are the
# modules a user imports from directly (rewards, metrics, plots, the demo, decoding baselines, the script).
SECTIONS = [
    (
        "trl_clp",
        "Training",
        [
            "MultiObjectiveConfig",
            "MultiObjectiveTrainer",
            "MultiObjectiveGRPOConfig",
            "MultiObjectiveGRPOTrainer",
            "MultiObjectiveDPOConfig",
            "MultiObjectiveDPOTrainer",
        ],
    ),
    ("trl_clp.conditioned_trainer", "The conditioning core every trainer shares", ["ConditionedTrainerCore"]),
    ("trl_clp.online_trainer", "The conditioning layer both online trainers share", ["ConditionedTrainerMixin"]),
    ("trl_clp.scalarization", "Scalarisation", None),
    ("trl_clp.preference_loss", "The preference loss of DPO-CLP", None),
    ("trl_clp.preference_layouts", "Preference layouts", None),
    ("trl_clp.preference_adapters", "Public preference datasets", None),
    ("trl_clp.preference_sampling", "Preference pairs from reward functions", None),
    ("trl_clp", "Steerable models", ["SteerableModel", "ConditioningConfig", "format_weighted_prompt"]),
    ("trl_clp", "Weightings", ["simplex_grid", "check_weights", "sample_group_weights"]),
    ("trl_clp", "Evaluation", ["evaluate_front", "Front", "FrontEvaluationCallback"]),
    ("trl_clp.evaluation", "Evaluation results", ["WeightingResult"]),
    (
        "trl_clp.evaluation",
        "The steps of `evaluate_front`",
        [
            "evaluation_rows",
            "batch_seeds",
            "render_prompts",
            "SampledBatch",
            "sample_conditioned",
            "sample_mixture",
            "kl_to_reference",
            "sample_batch",
            "share_batches",
            "score_completions",
            "summarise_front",
            "completion_log_probs",
        ],
    ),
    (
        "trl_clp.preference_evaluation",
        "Evaluation on held-out preference pairs",
        ["evaluate_preferences", "PreferenceAccuracy", "format_preference_table"],
    ),
    ("trl_clp.gaming_guards", "Guards that catch gaming", None),
    ("trl_clp.rewards", "Reward functions", None),
    ("trl_clp.gguf", "GGUF checkpoints", ["convert_gguf", "check_not_gguf"]),
    ("trl_clp.pareto", "Front metrics", None),
    (
        "trl_clp.comparison",
        "Comparing methods (`trl-clp compare`)",
        [
            "compare_runs",
            "compare_fronts",
            "write_comparison",
            "format_report",
            "evaluate_runs",
            "plan_fronts",
            "plan_kl_series",
            "check_kl_weights",
            "ComparedFront",
            "save_evaluation",
            "load_evaluation",
            "per_prompt_table",
            "margin",
            "scalarised_gain",
            "gain_per_nat",
            "gain_at_kl",
            "matched_gain_difference",
        ],
    ),
    ("trl_clp.paired_bootstrap", "Paired intervals over seeds and prompts", None),
    ("trl_clp.plotting", "Plots", None),
    ("trl_clp.decoding", "Decoding-time baselines", None),
    ("trl_clp.demo", "The offline demo", None),
    (
        "trl_clp.scripts.train",
        "The training script (`trl-clp train`, `examples/train_clp.py`)",
        ["ScriptArguments", "make_parser", "main"],
    ),
]
SKIP_MARKER = "<!-- docs-test: skip (a docstring example, shown as written in the code) -->"
PAGE = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "docs", "api.md")


def _public_names(module) -> list[str]:
    """Functions and classes defined in `module` whose names do not start with an underscore, in source order."""
    members = [
        (name, obj)
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isfunction(obj) or inspect.isclass(obj))
        and obj.__module__ == module.__name__
    ]
    return [name for name, obj in sorted(members, key=lambda item: inspect.getsourcelines(item[1])[1])]


def _docstring(obj) -> str:
    """The cleaned docstring in Markdown: Google-style sections as lists, fenced examples marked as not run."""
    lines, in_section = [], False
    for line in (inspect.getdoc(obj) or "(no docstring)").splitlines():
        section = re.fullmatch(r"(Args|Arguments|Parameters|Returns|Raises|Yields|Attributes|Shapes?):", line)
        if section:
            lines += ["", f"**{section[1]}:**", ""]
            in_section = True
        elif in_section and re.match(r"    \S", line):
            item = re.match(r"    ([\w*, ]+?)( \([^)]*\))?:(?: (.*))?$", line)
            lines.append(f"- `{item[1]}`{item[2] or ''}: {item[3] or ''}".rstrip() if item else f"- {line.strip()}")
        elif in_section and line.startswith("        "):
            lines[-1] += " " + line.strip()
        else:
            in_section = in_section and line.strip() != "" and not line.startswith("```")
            # a fence inside a docstring is an example whose names come from the surrounding text
            lines += [SKIP_MARKER, line] if re.fullmatch(r"```\w+", line) else [line]
    return "\n".join(lines).strip("\n")


def _signature(name: str, obj) -> str:
    try:
        signature = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return name
    return f"{name}{signature}"


def _field_table(cls, own_only: bool) -> list[str]:
    """Markdown table of a dataclass's fields: name, default, help (only the fields trl-clp adds if asked: those not
    inherited from a TRL or transformers config)."""
    inherited = set()
    if own_only:
        for base in cls.__mro__[1:]:
            if dataclasses.is_dataclass(base) and not base.__module__.startswith("trl_clp"):
                inherited |= {f.name for f in dataclasses.fields(base)}
    lines = ["| field | default | help |", "|---|---|---|"]
    for f in dataclasses.fields(cls):
        if f.name in inherited or f.name.startswith("_"):
            continue
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = repr(f.default_factory())
        else:
            default = "required"
        help_text = f.metadata.get("help", "").replace("|", "\\|").replace("\n", " ")
        if "choices" in f.metadata:
            help_text += " Choices: " + ", ".join(f"`{c}`" for c in f.metadata["choices"]) + "."
        lines.append(f"| `{f.name}` | `{default}` | {help_text} |")
    return lines


def _methods(cls) -> list[tuple[str, object]]:
    """Public methods and properties `cls` defines itself, with a docstring, in source order."""
    found = []
    for name, member in vars(cls).items():
        if name.startswith("_"):
            continue
        function = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
        if isinstance(member, property):
            function = member.fget
        if inspect.isfunction(function) and function.__doc__:
            found.append((name, member, inspect.getsourcelines(function)[1]))
    return [(name, member) for name, member, _ in sorted(found, key=lambda item: item[2])]


def _document(module_name: str, name: str, obj) -> list[str]:
    if inspect.isclass(obj) and dataclasses.is_dataclass(obj):
        # a config's signature is its fields (hundreds, for TRL's): the table below lists them with their help
        header = f"class {name}({', '.join(base.__name__ for base in obj.__bases__)})"
    else:
        header = ("class " if inspect.isclass(obj) else "def ") + _signature(name, obj)
    docstring = _docstring(obj)
    if inspect.isclass(obj) and dataclasses.is_dataclass(obj):
        # A config's `Parameters:` block is generated from its fields' help: the table below shows the same text.
        docstring = docstring.split("\n\n**Parameters:**")[0].rstrip()
    lines = [f"### `{module_name}.{name}`", "", "```text", header, "```", "", docstring, ""]
    if inspect.isclass(obj) and dataclasses.is_dataclass(obj):
        own_only = any(dataclasses.is_dataclass(base) for base in obj.__mro__[1:])
        title = "Fields added to the parent config" if own_only else "Fields"
        lines += [f"{title}:", "", *_field_table(obj, own_only), ""]
    if inspect.isclass(obj):
        for method_name, member in _methods(obj):
            if isinstance(member, property):
                lines += [f"- **`{method_name}`** (property): " + _docstring(member.fget).split("\n\n")[0], ""]
                continue
            function = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
            lines += [
                f"#### `{name}.{method_name}`",
                "",
                "```text",
                _signature(method_name, function),
                "```",
                "",
                _docstring(function),
                "",
            ]
    return lines


def render() -> str:
    """The text of docs/api.md."""
    lines = [
        "# API reference",
        "",
        (
            "Generated from the docstrings by `python -m trl_clp.scripts.api_reference`; do not edit by hand "
            "(`tests/test_docs.py` checks it is up to date). `MultiObjectiveConfig` lists only the fields it adds to "
            "TRL's [`RLOOConfig`](https://huggingface.co/docs/trl/rloo_trainer), whose fields all apply too."
        ),
        "",
    ]
    for module_name, title, names in SECTIONS:
        module = importlib.import_module(module_name)
        lines += [f"## {title}", ""]
        for name in names or _public_names(module):
            lines += _document(module_name, name, getattr(module, name))
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = render()
    path = os.path.normpath(PAGE)
    if "--check" in argv:
        with open(path, encoding="utf-8") as handle:
            current = handle.read()
        if current != text:
            print(f"{path} is out of date: run `python -m trl_clp.scripts.api_reference`.")
            return 1
        return 0
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    print(f"Wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
