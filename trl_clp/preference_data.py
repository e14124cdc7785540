"""Multi-objective preference data: the two layouts DPO-CLP trains on, and their checks.

- labels: `prompt, chosen, rejected, objective_labels` (length m, each +1 / −1 / 0: does objective i prefer
  `chosen`, `rejected`, or neither);
- scores: `prompt, chosen, rejected, chosen_scores, rejected_scores` (length m each).

Data in either layout can come from public datasets (`pku_saferlhf_to_labels`, `helpsteer2_to_scores`,
`ultrafeedback_to_scores`) or from reward functions: `sample_completions` samples k completions per prompt from a
reference policy, `pairs_from_reward_functions` pairs and labels (or scores) them.

`prompt` may be left out when `chosen` and `rejected` hold whole conversations sharing their beginning (TRL's implicit
prompt); prompts and responses may be strings or message lists, as for TRL's DPOTrainer.
"""

from __future__ import annotations

import itertools
import logging
import math

import torch
from datasets import Dataset

from .conditioning.prompts import check_prompts, tokenize_left_padded
from .conditioning.steerable import SteerableModel

logger = logging.getLogger(__name__)

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


# ---------------------------------------------------------------- public datasets → the two layouts

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


# ---------------------------------------------------------------- reward functions → the two layouts


@torch.no_grad()
def sample_completions(
    model,
    tokenizer,
    prompts: list,
    num_completions: int = 2,
    max_new_tokens: int = 32,
    weights=None,
    batch_size: int = 64,
    seed: int = 0,
    **generation_kwargs,
) -> tuple[list[list], list[list[list[int]]]]:
    """Sample `num_completions` completions per prompt from a policy (e.g. the reference policy DPO starts from).

    Prompts are tokenized as the trainers tokenize them (`tokenize_left_padded`: conversations with the chat
    template); sampling is from the full distribution (`top_k=0`, `top_p=1`) unless `generation_kwargs` say
    otherwise. Each batch of `batch_size` rows is sampled from its own seed drawn from `seed`, so two calls with the
    same arguments give the same completions.

    Args:
        model: a causal LM (`PreTrainedModel` or `PeftModel`, used as it is), or a `SteerableModel` steered to
            `weights`.
        tokenizer: its tokenizer.
        prompts: P strings, or P conversations (lists of `{"role", "content"}` messages).
        num_completions: k ≥ 2 completions per prompt.
        weights: for a `SteerableModel`, the `(m,)` weighting to sample at; None for a plain model.

    Returns:
        `(completions, completion_ids)`: P lists of k completions, decoded without special tokens, text for text
        prompts and `[{"role": "assistant", "content": text}]` for conversations (TRL's shapes), and their token ids
        (up to and including EOS), for reward functions that read them.
    """
    conversational = check_prompts(prompts)
    if num_completions < 2:
        raise ValueError(f"`num_completions` is {num_completions}: a pair needs at least 2 completions per prompt.")
    steerable = isinstance(model, SteerableModel)
    if steerable == (weights is None):
        raise ValueError(
            "Pass `weights=` (the weighting to sample at) with a SteerableModel, and only with one: a plain model "
            "samples as it is."
        )
    generation_kwargs = {"do_sample": True, "top_k": 0, "top_p": 1.0, **generation_kwargs}
    rows = [p for p in range(len(prompts)) for _ in range(num_completions)]
    batches = [rows[start : start + batch_size] for start in range(0, len(rows), batch_size)]
    batch_seeds = torch.randint(2**62, (len(batches),), generator=torch.Generator().manual_seed(seed)).tolist()
    texts, ids = [], []
    for batch, batch_seed in zip(batches, batch_seeds, strict=True):
        torch.manual_seed(batch_seed)
        batch_prompts = [prompts[p] for p in batch]
        if steerable:
            encoded = model.tokenize_prompts(batch_prompts, weights)
            sequences = model.generate(
                **encoded,
                weights=weights,
                pad_token_id=tokenizer.pad_token_id,
                max_new_tokens=max_new_tokens,
                **generation_kwargs,
            )
        else:
            encoded = tokenize_left_padded(tokenizer, batch_prompts).to(model.device)
            sequences = model.generate(
                **encoded, pad_token_id=tokenizer.pad_token_id, max_new_tokens=max_new_tokens, **generation_kwargs
            )
        for row in sequences[:, encoded["input_ids"].size(1) :].tolist():
            # generate pads a finished row; the completion ends at its first EOS, kept as TRL keeps it
            end = row.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in row else len(row)
            ids.append(row[:end])
            texts.append(tokenizer.decode(row[:end], skip_special_tokens=True))
    completions = [[{"role": "assistant", "content": text}] for text in texts] if conversational else texts
    k = num_completions
    return (
        [completions[p * k : (p + 1) * k] for p in range(len(prompts))],
        [ids[p * k : (p + 1) * k] for p in range(len(prompts))],
    )


def pairs_from_reward_functions(
    prompts: list,
    completions: list[list],
    reward_funcs: list,
    layout: str = "labels",
    tie_tolerance: float = 0.0,
    completion_ids: list[list[list[int]]] | None = None,
    reward_kwargs: dict[str, list] | None = None,
) -> Dataset:
    """Preference pairs labelled (or scored) by reward functions: every two completions of a prompt form a pair.

    Each completion is scored once by each of the m reward functions (TRL's signature: `prompts`, `completions`,
    `completion_ids` when given, and the `reward_kwargs` columns, one row per completion). For completions a, b
    (a listed before b, so `chosen` is a and `rejected` b) with rewards r_a, r_b `(m,)`:

    - labels layout: `objective_labels` = sign(r_a − r_b) per objective, 0 where |r_a,i − r_b,i| ≤ `tie_tolerance`
      or either reward is None;
    - scores layout: `chosen_scores` = r_a, `rejected_scores` = r_b.

    Pairs no objective prefers (every label 0; in the scores layout, every difference within the tolerance) carry
    no signal under any weighting and are dropped, as `MultiObjectiveDPOTrainer` requires; so are pairs with a None
    score in the scores layout.

    Args:
        prompts: P strings or conversations, kept as they are in the `prompt` column.
        completions: P lists of k ≥ 2 completions (strings; for conversations, assistant message lists), e.g. from
            `sample_completions`.
        reward_funcs: m callables with TRL's reward-function signature.
        layout: 'labels' or 'scores'.
        tie_tolerance: reward differences at most this large count as ties (≥ 0).
        completion_ids: P lists of k token-id lists, for reward functions that read them (e.g. `brevity_reward`).
        reward_kwargs: extra per-prompt columns passed to the reward functions (length P each).

    Returns:
        a `datasets.Dataset` in `layout`, pairs in the order (prompt, a, b).
    """
    if layout not in SIGNAL_COLUMNS:
        raise ValueError(f"`layout` must be one of {list(SIGNAL_COLUMNS)}, got {layout!r}.")
    if not (math.isfinite(tie_tolerance) and tie_tolerance >= 0):
        raise ValueError(f"`tie_tolerance` must be a finite value >= 0, got {tie_tolerance}.")
    check_prompts(prompts)
    if len(completions) != len(prompts):
        raise ValueError(f"Got {len(completions)} completion lists for {len(prompts)} prompts: give one per prompt.")
    for p, group in enumerate(completions):
        if len(group) < 2:
            raise ValueError(f"Prompt {p + 1} has {len(group)} completion(s): a pair needs at least 2 per prompt.")
    rows = [(p, c) for p, group in enumerate(completions) for c in range(len(group))]
    call = {
        "prompts": [prompts[p] for p, _ in rows],
        "completions": [completions[p][c] for p, c in rows],
        **{key: [values[p] for p, _ in rows] for key, values in (reward_kwargs or {}).items()},
    }
    if completion_ids is not None:
        call["completion_ids"] = [completion_ids[p][c] for p, c in rows]
    columns = []
    for reward_func in reward_funcs:
        values = list(reward_func(**call))
        if len(values) != len(rows):
            name = getattr(reward_func, "__name__", type(reward_func).__name__)
            raise ValueError(f"The reward function {name} returned {len(values)} values for {len(rows)} completions.")
        columns.append([math.nan if v is None else float(v) for v in values])
    scores = torch.tensor(columns, dtype=torch.float64).T  # (R, m)
    start = 0
    pairs = []
    for p, group in enumerate(completions):
        group_scores = scores[start : start + len(group)]  # (k, m)
        start += len(group)
        for a in range(len(group)):
            for b in range(a + 1, len(group)):
                difference = group_scores[a] - group_scores[b]  # (m,), NaN where a reward is None
                decided = difference.abs() > tie_tolerance  # False for NaN
                if not decided.any():
                    continue
                pair = {"prompt": prompts[p], "chosen": group[a], "rejected": group[b]}
                if layout == "labels":
                    pair["objective_labels"] = torch.where(decided, torch.sign(difference), 0.0).long().tolist()
                elif difference.isnan().any():
                    continue
                else:
                    pair["chosen_scores"], pair["rejected_scores"] = group_scores[a].tolist(), group_scores[b].tolist()
                pairs.append(pair)
    if not pairs:
        raise ValueError(
            "No pair has a reward difference above `tie_tolerance` on any objective: sample more completions per "
            "prompt, at a higher temperature, or lower `tie_tolerance`."
        )
    return Dataset.from_list(pairs)
