"""Public multi-objective preference datasets → the two preference layouts (`trl_clp.preference_layouts`).

`pku_saferlhf_to_labels` (PKU-SafeRLHF → labels), `helpsteer2_to_scores` (HelpSteer2 → scores) and
`ultrafeedback_to_scores` (UltraFeedback → scores); each adapter names its objectives, and `check_adapter_objectives`
refuses names that are not the dataset's rather than mislabel the pairs.
"""

from __future__ import annotations

import logging
import math

from datasets import Dataset

logger = logging.getLogger(__name__)

# Each adapter's objectives, by name: the dataset column (or rating) each objective's preference is read from.
PKU_SAFERLHF_LABEL_COLUMNS = {"helpful": "better_response_id", "harmless": "safer_response_id"}
PKU_SAFERLHF_OBJECTIVES = list(PKU_SAFERLHF_LABEL_COLUMNS)
HELPSTEER2_ATTRIBUTES = ["helpfulness", "correctness", "coherence", "complexity", "verbosity"]
ULTRAFEEDBACK_ASPECTS = ["helpfulness", "honesty", "instruction_following", "truthfulness"]


def check_adapter_objectives(objectives: list[str], known: list[str], dataset: str, every: bool = False) -> list[str]:
    """`objectives` as a list, or a `ValueError` naming the fix: names among `known` (the dataset's own), each once,
    and with `every` all of them (in any order). The order given is the order of the labels or scores written."""
    objectives = list(objectives)
    unknown = [name for name in objectives if name not in known]
    repeated = sorted({name for name in objectives if objectives.count(name) > 1})
    left_out = [name for name in known if name not in objectives] if every else []
    if unknown:
        problem = f"{unknown} are not among them"
    elif repeated:
        problem = f"{repeated} appear more than once"
    elif left_out:
        problem = f"{objectives} leave out {left_out}"
    else:
        return objectives
    need = f"all of {known}, in the order you want" if every else f"among {known}, each once"
    raise ValueError(
        f"{dataset}'s objectives are {known}; {problem}. Name them {need}: the labels or scores are written in that "
        "order, so give the trainer the same `objective_names`."
    )


def _require_columns(dataset, columns: tuple[str, ...], adapter: str, hint: str = "") -> None:
    """A `ValueError` naming the missing columns of a dataset given to an adapter (columns read off its first row when
    a stream does not know them)."""
    present = getattr(dataset, "column_names", None)
    if present is None:
        first = next(iter(dataset), None)
        present = list(first) if first is not None else []
    missing = [column for column in columns if column not in present]
    if missing:
        raise ValueError(
            f"{adapter} reads the columns {list(columns)}; the dataset has no {missing} (its columns are {present}).{hint}"
        )


def _converted(pairs: list[dict], adapter: str, num_rows: int, left_out: dict[str, int]) -> Dataset:
    """The pairs as a `Dataset`; what was left out is logged with its count, and zero pairs are refused saying why."""
    reasons = "; ".join(f"{count} {reason}" for reason, count in left_out.items() if count)
    if not pairs:
        raise ValueError(
            f"{adapter} made 0 preference pairs from {num_rows} rows"
            + (f": left out {reasons}." if reasons else ".")
            + " Check that the dataset has the rows you expect (split, filter), and that the objectives chosen tell "
            "its responses apart."
        )
    if reasons:
        logger.warning("%s: %d pairs from %d rows; left out %s.", adapter, len(pairs), num_rows, reasons)
    return Dataset.from_list(pairs)


def pku_saferlhf_to_labels(dataset, objectives: list[str] | None = None) -> Dataset:
    """PKU-SafeRLHF (`prompt, response_0, response_1, better_response_id, safer_response_id, ...`) → the labels layout.

    `chosen` is `response_0` and `rejected` `response_1`; `objective_labels` has one label per name of `objectives`,
    in that order: "helpful" is +1 if the dataset's better response (`better_response_id`) is `response_0`, else −1;
    "harmless" the same for its safer response (`safer_response_id`). Rows whose two responses are the same text
    carry no preference and are left out (counted in a logged warning).

    Args:
        objectives: both of `PKU_SAFERLHF_OBJECTIVES` in the order wanted (default ["helpful", "harmless"]); pass the
            trainer the same list as `objective_names`.
    """
    names = check_adapter_objectives(
        objectives or PKU_SAFERLHF_OBJECTIVES, PKU_SAFERLHF_OBJECTIVES, "PKU-SafeRLHF", every=True
    )
    columns = [PKU_SAFERLHF_LABEL_COLUMNS[name] for name in names]
    _require_columns(dataset, ("prompt", "response_0", "response_1", *columns), "pku_saferlhf_to_labels")
    pairs, num_rows, identical = [], 0, 0
    for row in dataset:
        num_rows += 1
        if row["response_0"] == row["response_1"]:
            identical += 1
            continue
        labels = [1 if int(row[column]) == 0 else -1 for column in columns]
        pairs.append(
            {
                "prompt": row["prompt"],
                "chosen": row["response_0"],
                "rejected": row["response_1"],
                "objective_labels": labels,
            }
        )
    return _converted(pairs, "pku_saferlhf_to_labels", num_rows, {"rows whose two responses are identical": identical})


def _score_pairs(prompt, responses: list[str], scores: list[list[float]], left_out: dict[str, int]) -> list[dict]:
    """Every pair of a prompt's responses whose scores differ, in the scores layout (the earlier response first);
    the pairs left out are counted in `left_out`."""
    pairs = []
    for i in range(len(responses)):
        for j in range(i + 1, len(responses)):
            if responses[i] == responses[j]:
                left_out[IDENTICAL_PAIRS] += 1
            elif scores[i] == scores[j]:
                left_out[TIED_PAIRS] += 1
            else:
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


# What the score adapters leave out, as their logged warning counts it.
IDENTICAL_PAIRS = "pairs of identical responses"
TIED_PAIRS = "pairs whose scores tie on every objective"
UNRATED = "responses with a missing or non-numeric rating (None, 'N/A')"


def _rating(value) -> float | None:
    """A rating as a finite float, or None when it is missing or not a number (None, "N/A", NaN)."""
    try:
        rating = float(value)
    except (TypeError, ValueError):
        return None
    return rating if math.isfinite(rating) else None


def helpsteer2_to_scores(dataset, attributes: list[str] | None = None) -> Dataset:
    """HelpSteer2 (`prompt, response, helpfulness, correctness, coherence, complexity, verbosity`, one response per
    row, scores 0–4) → the scores layout: the rows of one prompt are paired (every two responses whose scores
    differ), with one score per attribute. Ties, identical responses and responses with a missing score are left out
    and counted in a logged warning.

    Args:
        attributes: the objectives, in order; default all five (`HELPSTEER2_ATTRIBUTES`). Note that a higher
            `verbosity` or `complexity` is not better in itself: choose the attributes you want to steer along.
    """
    attributes = check_adapter_objectives(attributes or HELPSTEER2_ATTRIBUTES, HELPSTEER2_ATTRIBUTES, "HelpSteer2")
    _require_columns(dataset, ("prompt", "response", *attributes), "helpsteer2_to_scores")
    left_out = {UNRATED: 0, TIED_PAIRS: 0, IDENTICAL_PAIRS: 0, "prompts with a single rated response": 0}
    by_prompt: dict[str, tuple[list[str], list[list[float]]]] = {}
    num_rows = 0
    for row in dataset:
        num_rows += 1
        scores = [_rating(row[attribute]) for attribute in attributes]
        responses, prompt_scores = by_prompt.setdefault(row["prompt"], ([], []))
        if None in scores:
            left_out[UNRATED] += 1
            continue
        responses.append(row["response"])
        prompt_scores.append(scores)
    pairs = []
    for prompt, (responses, scores) in by_prompt.items():
        left_out["prompts with a single rated response"] += len(responses) == 1
        pairs += _score_pairs(prompt, responses, scores, left_out)
    return _converted(pairs, "helpsteer2_to_scores", num_rows, left_out)


def ultrafeedback_to_scores(dataset, aspects: list[str] | None = None) -> Dataset:
    """UltraFeedback (`instruction, completions`, each completion a `response` with
    `annotations.<aspect>.Rating`, a string) → the scores layout: every two completions of one instruction whose
    ratings differ, with one score per aspect. Completions with a rating that is missing or not a number (None,
    "N/A"), ties and identical responses are left out and counted in a logged warning.

    The binarized variants (e.g. `HuggingFaceH4/ultrafeedback_binarized`: `chosen`, `rejected`, `score_chosen`) keep
    one overall score per response, not one per aspect, and are refused: convert the original `openbmb/UltraFeedback`.

    Args:
        aspects: the objectives, in order; default the four fine-grained ratings (`ULTRAFEEDBACK_ASPECTS`).
    """
    aspects = check_adapter_objectives(aspects or ULTRAFEEDBACK_ASPECTS, ULTRAFEEDBACK_ASPECTS, "UltraFeedback")
    binarized = (
        " It looks like a binarized UltraFeedback (one overall score per response, e.g. "
        "HuggingFaceH4/ultrafeedback_binarized), which has no per-aspect ratings to steer along: convert the original "
        "openbmb/UltraFeedback, whose completions keep their four ratings, or train on the binarized pairs with TRL's "
        "DPOTrainer."
    )
    _require_columns(dataset, ("instruction", "completions"), "ultrafeedback_to_scores", binarized)
    left_out = {UNRATED: 0, TIED_PAIRS: 0, IDENTICAL_PAIRS: 0}
    pairs, num_rows = [], 0
    for row in dataset:
        num_rows += 1
        responses, scores = [], []
        for completion in row["completions"]:
            annotations = completion.get("annotations") or {}
            ratings = [_rating((annotations.get(aspect) or {}).get("Rating")) for aspect in aspects]
            if None in ratings:
                left_out[UNRATED] += 1
                continue
            responses.append(completion["response"])
            scores.append(ratings)
        pairs += _score_pairs(row["instruction"], responses, scores, left_out)
    return _converted(pairs, "ultrafeedback_to_scores", num_rows, left_out)
