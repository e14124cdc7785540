# Copyright 2026 The trl-clp developers. Apache-2.0.
"""The DPO path of `trl-clp train` (`--trainer dpo`): `--preference_format`'s public datasets and their check, the
training and held-out pairs, and the report of the held-out preference accuracy at each weighting of the grid."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import TYPE_CHECKING

from trl_clp import MultiObjectiveDPOConfig, simplex_grid
from trl_clp.preference_adapters import (
    HELPSTEER2_ATTRIBUTES,
    PKU_SAFERLHF_OBJECTIVES,
    ULTRAFEEDBACK_ASPECTS,
    check_adapter_objectives,
    helpsteer2_to_scores,
    pku_saferlhf_to_labels,
    ultrafeedback_to_scores,
)
from trl_clp.preference_evaluation import evaluate_preferences, format_preference_table

if TYPE_CHECKING:  # for the annotations only: train.py imports this module
    from trl_clp.scripts.train import ScriptArguments

# `--preference_format`: a public dataset's columns → a preference layout (trl_clp.preference_adapters), with the layout
# it gives and its objectives. `--objective_names` chooses them and their order (default: all, in the order listed):
# PKU-SafeRLHF's two in either order, HelpSteer2's attributes and UltraFeedback's aspects any of them.
PREFERENCE_FORMATS = {
    "pku_saferlhf": (pku_saferlhf_to_labels, "labels", PKU_SAFERLHF_OBJECTIVES),
    "helpsteer2": (helpsteer2_to_scores, "scores", HELPSTEER2_ATTRIBUTES),
    "ultrafeedback": (ultrafeedback_to_scores, "scores", ULTRAFEEDBACK_ASPECTS),
}


def check_preference_arguments(script_args: ScriptArguments, training_args: MultiObjectiveDPOConfig) -> None:
    """`--preference_format` against the layout and objectives set: a `ValueError` naming the fix, before any loading."""
    if script_args.preference_format is None:
        return
    _, layout, known = PREFERENCE_FORMATS[script_args.preference_format]
    if training_args.preference_layout != layout:
        raise ValueError(
            f"--preference_format {script_args.preference_format} gives the {layout} layout, but preference_layout is "
            f"{training_args.preference_layout!r}: set --preference_layout {layout} (or leave it out)."
        )
    # The adapter writes the labels or scores in the order of `objective_names`: a name that is not the dataset's
    # (or, for PKU-SafeRLHF, a missing one) is refused rather than mislabelled.
    name = script_args.preference_format
    check_adapter_objectives(training_args.objective_names, known, name, every=name == "pku_saferlhf")


def load_preference_pairs(script_args: ScriptArguments, training_args: MultiObjectiveDPOConfig):
    """The training pairs and the held-out pairs (None without an evaluation split), in `preference_layout`."""
    from datasets import load_dataset

    name = script_args.dataset_name
    if os.path.isfile(name):  # one JSON-lines (or JSON) file: its pairs all train, none are held out
        dataset = load_dataset("json", data_files={script_args.dataset_train_split: name})
    else:
        dataset = load_dataset(name, script_args.dataset_config)
    eval_split = script_args.dataset_eval_split or ("test" if "test" in dataset else None)
    train_pairs = dataset[script_args.dataset_train_split]
    eval_pairs = None
    if eval_split is not None:
        eval_pairs = dataset[eval_split]
    if script_args.preference_format is not None:
        convert = PREFERENCE_FORMATS[script_args.preference_format][0]
        objectives = list(training_args.objective_names)  # the order the labels or scores are written in
        convert_split = lambda split: convert(split, objectives)  # noqa: E731
        train_pairs = convert_split(train_pairs)
        if eval_pairs is not None:  # the whole split, then the cut: a cut of its rows could split a prompt's responses
            eval_pairs = convert_split(eval_pairs)
    if eval_pairs is not None:
        eval_pairs = eval_pairs.select(range(min(script_args.num_eval_prompts, len(eval_pairs))))
    return train_pairs, eval_pairs


def report_preference_accuracy(trainer, steer, script_args: ScriptArguments, training_args) -> str:
    """Score the held-out pairs at each weighting of the grid, print the table and write preference_accuracy.json."""
    results = evaluate_preferences(
        steer,
        trainer.eval_dataset,  # tokenized by the trainer, as its training pairs
        simplex_grid(steer.conditioning_config.num_objectives, script_args.eval_grid_points),
        preference_layout=training_args.preference_layout,
        score_margin=training_args.score_margin,
        batch_size=training_args.per_device_eval_batch_size,
    )
    path = os.path.join(training_args.output_dir, "preference_accuracy.json")
    with open(path, "w") as handle:
        json.dump(
            {"objective_names": steer.objective_names, "results": [asdict(r) for r in results]}, handle, indent=2
        )
    print(format_preference_table(results))
    print(
        f"Each row: one weighting of ({', '.join(steer.objective_names)}) and {len(trainer.eval_dataset)} held-out "
        "pairs, ordered by the implicit reward log π_w(y|x) − log π_ref(y|x): accuracy = share of the pairs the "
        "weighting prefers a response of where the model orders them as it does; <objective> acc. = share of the "
        "pairs that objective has an opinion on where the model agrees with it; margin = mean log-ratio margin "
        "(nats) towards the response the weighting prefers; pairs = pairs the weighting decides."
    )
    for i, name in enumerate(steer.objective_names):
        at_one = [r.objective_accuracy[name] for r in results if r.weights[i] == 1.0]
        at_zero = [r.objective_accuracy[name] for r in results if r.weights[i] == 0.0]
        low, high = sum(at_zero) / len(at_zero), sum(at_one) / len(at_one)
        print(f"{name}: accuracy {low:.3f} with weight 0 → {high:.3f} with weight 1 ({high - low:+.3f})")
    return path
