"""Multi-objective preference data: the two layouts DPO-CLP trains on, and their check.

- labels: `prompt, chosen, rejected, objective_labels` (length m, each +1 / −1 / 0: does objective i prefer
  `chosen`, `rejected`, or neither);
- scores: `prompt, chosen, rejected, chosen_scores, rejected_scores` (length m each).

Data in either layout can come from public datasets (`trl_clp.preference_adapters`) or from reward functions
(`trl_clp.preference_sampling`).

`prompt` may be left out when `chosen` and `rejected` hold whole conversations sharing their beginning (TRL's implicit
prompt); prompts and responses may be strings or message lists, as for TRL's DPOTrainer.
"""

from __future__ import annotations

import itertools
import math

from datasets import Dataset

# The columns each layout adds to `chosen` and `rejected`.
SIGNAL_COLUMNS = {"labels": ("objective_labels",), "scores": ("chosen_scores", "rejected_scores")}
LAYOUT_DESCRIPTIONS = {
    "labels": "prompt, chosen, rejected, objective_labels (one label per objective: +1 if it prefers `chosen`, -1 if "
    "it prefers `rejected`, 0 if neither)",
    "scores": "prompt, chosen, rejected, chosen_scores, rejected_scores (one score per objective and response)",
}


# Rows of a streamed dataset (`IterableDataset`) read and checked before training: its first ones.
PEEKED_ROWS = 64


def check_preference_dataset(dataset, layout: str, objective_names: list[str], name: str = "training") -> None:
    """Raise a `ValueError` naming the fix if `dataset` is not in `layout` for these objectives.

    Checks the columns and the rows of a `datasets.Dataset`, or of an `IterableDataset` its first `PEEKED_ROWS` rows
    (a stream is not read to the end): at least one pair; one value per objective; labels in {−1, 0, +1}; finite
    scores; and that some objective prefers one response of each pair.
    """
    if isinstance(dataset, Dataset):
        if dataset.num_rows == 0:
            raise ValueError(
                f"The {name} dataset has no pairs (0 rows; columns {dataset.column_names}): give it preference pairs, "
                "or check the filter, split or conversion that emptied it."
            )
        columns, rows = dataset.column_names, None
    else:  # a stream: its first rows stand for it (its columns may be unknown until a row is read)
        rows = list(itertools.islice(iter(dataset), PEEKED_ROWS))
        if not rows:
            raise ValueError(
                f"The {name} dataset (a stream) yields no rows: give it preference pairs, or check the filter, "
                "split or conversion that emptied it."
            )
        columns = dataset.column_names or list(rows[0].keys())
    expected = ("chosen", "rejected", *SIGNAL_COLUMNS[layout])
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
    num_objectives = len(objective_names)
    signals = {
        column: dataset[column] if rows is None else [row[column] for row in rows] for column in SIGNAL_COLUMNS[layout]
    }
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
