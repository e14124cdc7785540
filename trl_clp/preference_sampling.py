"""Preference pairs from reward functions: `sample_completions` samples k completions per prompt from a reference
policy, `pairs_from_reward_functions` pairs and labels (or scores) them, in either preference layout
(`trl_clp.preference_layouts`).
"""

from __future__ import annotations

import math

import torch
from datasets import Dataset

from .conditioning.prompts import check_prompts, tokenize_left_padded
from .conditioning.steerable import SteerableModel
from .preference_layouts import SIGNAL_COLUMNS


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
