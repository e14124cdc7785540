"""Multi-objective preference data: the two layouts DPO-CLP trains on, and their checks.

- labels: `prompt, chosen, rejected, objective_labels` (length m, each +1 / −1 / 0: does objective i prefer
  `chosen`, `rejected`, or neither);
- scores: `prompt, chosen, rejected, chosen_scores, rejected_scores` (length m each).

`prompt` may be left out when `chosen` and `rejected` hold whole conversations sharing their beginning (TRL's implicit
prompt); prompts and responses may be strings or message lists, as for TRL's DPOTrainer.
"""

from __future__ import annotations

import math

from datasets import Dataset

# The columns each layout adds to `chosen` and `rejected`.
SIGNAL_COLUMNS = {"labels": ("objective_labels",), "scores": ("chosen_scores", "rejected_scores")}
LAYOUT_DESCRIPTIONS = {
    "labels": "prompt, chosen, rejected, objective_labels (one label per objective: +1 if it prefers `chosen`, -1 if "
    "it prefers `rejected`, 0 if neither)",
    "scores": "prompt, chosen, rejected, chosen_scores, rejected_scores (one score per objective and response)",
}


def check_preference_dataset(dataset, layout: str, objective_names: list[str], name: str = "training") -> None:
    """Raise a `ValueError` naming the fix if `dataset` is not in `layout` for these objectives.

    Checks the columns (any `datasets.Dataset` or `IterableDataset`) and, for a `Dataset`, every row: one value per
    objective; labels in {−1, 0, +1}; finite scores; and that some objective prefers one response of each pair.
    """
    expected = ("chosen", "rejected", *SIGNAL_COLUMNS[layout])
    columns = dataset.column_names
    if columns is None:  # an IterableDataset of unknown features: read the columns off its first row
        columns = list(next(iter(dataset)).keys())
    missing = [column for column in expected if column not in columns]
    if missing:
        other = "scores" if layout == "labels" else "labels"
        hint = (
            f" Its columns fit preference_layout={other!r}: set that."
            if all(column in columns for column in SIGNAL_COLUMNS[other])
            else ""
        )
        raise ValueError(
            f"The {name} dataset has no {', '.join(repr(c) for c in missing)} column: preference_layout={layout!r} "
            f"expects the columns {LAYOUT_DESCRIPTIONS[layout]}; it has {columns}.{hint}"
        )
    if not isinstance(dataset, Dataset):
        return
    num_objectives = len(objective_names)
    signals = {column: dataset[column] for column in SIGNAL_COLUMNS[layout]}
    for column, values in signals.items():
        for row, value in enumerate(values):
            if not isinstance(value, (list, tuple)) or len(value) != num_objectives:
                raise ValueError(
                    f"Row {row} of the {name} dataset has {column}={value}: give one value per objective "
                    f"({num_objectives}: {objective_names})."
                )
    if layout == "labels":
        for row, labels in enumerate(signals["objective_labels"]):
            if any(label not in (-1, 0, 1) for label in labels):
                raise ValueError(
                    f"Row {row} of the {name} dataset has objective_labels={labels}: each label must be +1 (the "
                    "objective prefers `chosen`), -1 (it prefers `rejected`) or 0 (neither)."
                )
            if not any(labels):
                raise ValueError(
                    f"Row {row} of the {name} dataset has objective_labels={labels}: no objective prefers either "
                    "response, so the pair carries no signal under any weighting. Drop it (e.g. `dataset.filter(lambda "
                    "row: any(row['objective_labels']))`)."
                )
        return
    for row, (chosen, rejected) in enumerate(zip(signals["chosen_scores"], signals["rejected_scores"], strict=True)):
        if not all(value is not None and math.isfinite(value) for value in (*chosen, *rejected)):
            raise ValueError(
                f"Row {row} of the {name} dataset has chosen_scores={chosen}, rejected_scores={rejected}: every score "
                "must be a finite number. Fill in or drop the missing ones."
            )
        if chosen == rejected:
            raise ValueError(
                f"Row {row} of the {name} dataset has equal scores {chosen} for both responses: no objective prefers "
                "either, so the pair carries no signal under any weighting. Drop it."
            )


# ---------------------------------------------------------------- public datasets → the two layouts

PKU_SAFERLHF_OBJECTIVES = ["helpful", "harmless"]
HELPSTEER2_ATTRIBUTES = ["helpfulness", "correctness", "coherence", "complexity", "verbosity"]
ULTRAFEEDBACK_ASPECTS = ["helpfulness", "honesty", "instruction_following", "truthfulness"]


def pku_saferlhf_to_labels(dataset) -> Dataset:
    """PKU-SafeRLHF (`prompt, response_0, response_1, better_response_id, safer_response_id, ...`) → the labels layout.

    `chosen` is `response_0` and `rejected` `response_1`; `objective_labels` is `[helpful, harmless]`
    (`PKU_SAFERLHF_OBJECTIVES`), each +1 if the dataset's better (resp. safer) response is `response_0`, else −1.
    """
    rows = []
    for row in dataset:
        labels = [1 if int(row[column]) == 0 else -1 for column in ("better_response_id", "safer_response_id")]
        rows.append(
            {
                "prompt": row["prompt"],
                "chosen": row["response_0"],
                "rejected": row["response_1"],
                "objective_labels": labels,
            }
        )
    return Dataset.from_list(rows)


def _score_pairs(prompt, responses: list[str], scores: list[list[float]]) -> list[dict]:
    """Every pair of a prompt's responses whose scores differ, in the scores layout (the earlier response first)."""
    pairs = []
    for i in range(len(responses)):
        for j in range(i + 1, len(responses)):
            if scores[i] != scores[j] and responses[i] != responses[j]:
                pairs.append(
                    {
                        "prompt": prompt,
                        "chosen": responses[i],
                        "rejected": responses[j],
                        "chosen_scores": scores[i],
                        "rejected_scores": scores[j],
                    }
                )
    return pairs


def helpsteer2_to_scores(dataset, attributes: list[str] | None = None) -> Dataset:
    """HelpSteer2 (`prompt, response, helpfulness, correctness, coherence, complexity, verbosity`, one response per
    row, scores 0–4) → the scores layout: the rows of one prompt are paired (every two responses whose scores
    differ), with one score per attribute.

    Args:
        attributes: the objectives, in order; default all five (`HELPSTEER2_ATTRIBUTES`). Note that a higher
            `verbosity` or `complexity` is not better in itself: choose the attributes you want to steer along.
    """
    attributes = list(attributes or HELPSTEER2_ATTRIBUTES)
    by_prompt: dict[str, tuple[list[str], list[list[float]]]] = {}
    for row in dataset:
        responses, scores = by_prompt.setdefault(row["prompt"], ([], []))
        responses.append(row["response"])
        scores.append([float(row[attribute]) for attribute in attributes])
    rows = [
        pair for prompt, (responses, scores) in by_prompt.items() for pair in _score_pairs(prompt, responses, scores)
    ]
    return Dataset.from_list(rows)


def ultrafeedback_to_scores(dataset, aspects: list[str] | None = None) -> Dataset:
    """UltraFeedback (`instruction, completions`, each completion a `response` with
    `annotations.<aspect>.Rating`, a string) → the scores layout: every two completions of one instruction whose
    ratings differ, with one score per aspect. Completions with a rating that is not a number (e.g. "N/A") are left
    out.

    Args:
        aspects: the objectives, in order; default the four fine-grained ratings (`ULTRAFEEDBACK_ASPECTS`).
    """
    aspects = list(aspects or ULTRAFEEDBACK_ASPECTS)
    rows = []
    for row in dataset:
        responses, scores = [], []
        for completion in row["completions"]:
            try:
                ratings = [float(completion["annotations"][aspect]["Rating"]) for aspect in aspects]
            except ValueError:
                continue
            responses.append(completion["response"])
            scores.append(ratings)
        rows += _score_pairs(row["instruction"], responses, scores)
    return Dataset.from_list(rows)
