"""Held-out preference accuracy of a steerable model at each weighting: DPO-CLP's evaluation when the objectives
exist only as labels or scores of pairs (no reward function to score samples with)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .conditioning.steerable import SteerableModel


@dataclass
class PreferenceAccuracy:
    """How one weighting's policy orders held-out preference pairs, by its implicit reward.

    The implicit reward of a response is DPO's log-ratio `log π_w(y | x) − log π_ref(y | x)`; a pair is ordered by
    the margin Δ = (chosen's log-ratio) − (rejected's). `accuracy` is the share of the pairs the weighting has a
    preference on where Δ's sign agrees with it; `objective_accuracy[name]` the share of the pairs that objective
    has an opinion on where Δ's sign agrees with that objective alone (a steerable model's rises with its weight);
    `margin` the mean Δ (nats) oriented to the response the weighting prefers; `num_pairs` the pairs the weighting
    prefers a response of. `accuracy` and `margin` are None when it prefers none (e.g. w = (0.5, 0.5) on pairs
    whose two objectives disagree).
    """

    weights: list[float]
    accuracy: float | None
    objective_accuracy: dict[str, float]
    margin: float | None
    num_pairs: int


def _sequence_log_probs(model, batch: dict) -> torch.Tensor:
    """`(R,)` summed log-probability of each row's completion tokens (`completion_mask`), rows right-padded."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    log_probs = torch.log_softmax(logits.float(), dim=-1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    return (log_probs * batch["completion_mask"][:, 1:]).sum(-1)


@torch.no_grad()
def evaluate_preferences(
    model: SteerableModel,
    pairs,
    weightings: torch.Tensor,
    preference_layout: str = "labels",
    score_margin: float = 0.0,
    batch_size: int = 16,
) -> list[PreferenceAccuracy]:
    """Held-out preference accuracy of a steerable model at each weighting: DPO-CLP's counterpart of `evaluate_front`
    when the objectives exist only as labels or scores of pairs (no reward function to score samples with).

    Args:
        model: the steerable model; its reference is its base model with the adapter disabled, as in training.
        pairs: tokenized pairs as `MultiObjectiveDPOTrainer` prepares them (e.g. its `eval_dataset`): columns
            `prompt_ids`, `chosen_ids`, `rejected_ids` and the layout's (`objective_labels`, or `chosen_scores` and
            `rejected_scores`); for a prompting-baseline model also `prompt`, the text the weighting is written into.
        weightings: `(K, m)` weightings, e.g. `trl_clp.simplex_grid(2, 5)`.
        preference_layout, score_margin: as in `MultiObjectiveDPOConfig`; they say which response a weighting
            prefers (`trl_clp.preference_loss.label_preference`, `score_preference`).
        batch_size: pairs per forward pass (each pass holds 2 × batch_size rows).

    Returns:
        one `PreferenceAccuracy` per weighting, in the order of `weightings`.
    """
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    from .preference_layouts import SIGNAL_COLUMNS, check_preference_dataset
    from .preference_loss import label_preference, score_preference

    weightings = torch.as_tensor(weightings, dtype=torch.float32)
    names = model.objective_names
    check_preference_dataset(pairs, preference_layout, names, "held-out")
    prompting = model.conditioning_config.conditioning == "prompt"
    tokenizer = model._require_tokenizer() if prompting else model.tokenizer
    pad_token_id = tokenizer.pad_token_id if tokenizer is not None else model.model.config.pad_token_id
    collate = DataCollatorForPreference(pad_token_id=pad_token_id)
    signals = {
        column: torch.tensor(pairs[column], dtype=torch.float32) for column in SIGNAL_COLUMNS[preference_layout]
    }
    if preference_layout == "labels":
        signs = signals["objective_labels"]  # (N, m)
    else:
        signs = torch.sign(signals["chosen_scores"] - signals["rejected_scores"])
    num_pairs = len(signs)
    device = model.device
    margins = torch.zeros(len(weightings), num_pairs)  # (K, N) Δ
    for start in range(0, num_pairs, batch_size):
        rows = [pairs[i] for i in range(start, min(start + batch_size, num_pairs))]
        keys = ("prompt_ids", "chosen_ids", "rejected_ids")
        batch = {k: v.to(device) for k, v in collate([{k: row[k] for k in keys} for row in rows]).items()}
        with model.model.disable_adapter():
            reference = _sequence_log_probs(model.model, batch)  # (2b,)
        for k, weights in enumerate(weightings):
            if prompting:  # the policy reads the weighting in its prompt, the reference the prompt of the data
                encoded = model.tokenize_prompts([row["prompt"] for row in rows], weights)
                prompt_ids = [
                    ids[mask.bool()].tolist()
                    for ids, mask in zip(encoded["input_ids"], encoded["attention_mask"], strict=True)
                ]
                examples = [
                    {**{k: row[k] for k in keys}, "prompt_ids": ids} for row, ids in zip(rows, prompt_ids, strict=True)
                ]
                policy = _sequence_log_probs(model.model, {k: v.to(device) for k, v in collate(examples).items()})
            else:
                with model.condition(weights, batch_size=2 * len(rows)):
                    policy = _sequence_log_probs(model.model, batch)
            chosen, rejected = (policy - reference).chunk(2)
            margins[k, start : start + len(rows)] = (chosen - rejected).cpu()
    results = []
    for k, weights in enumerate(weightings):
        rows_weights = weights.expand(num_pairs, -1)
        if preference_layout == "labels":
            preference, pair_weight = label_preference(signs, rows_weights)
        else:
            preference, pair_weight = score_preference(
                signals["chosen_scores"], signals["rejected_scores"], rows_weights, score_margin
            )
        # (N,) +1: w prefers chosen, −1 rejected, 0 neither (or the pair weighs nothing under w)
        orientation = torch.sign(2 * preference - 1) * (pair_weight > 0)
        decided = orientation != 0
        agree = torch.sign(margins[k]) == orientation
        voiced = signs != 0  # (N, m)
        per_objective = (torch.sign(margins[k])[:, None] == signs) & voiced
        results.append(
            PreferenceAccuracy(
                weights=weights.tolist(),
                accuracy=(agree & decided).sum().item() / decided.sum().item() if decided.any() else None,
                objective_accuracy={
                    name: per_objective[:, i].sum().item() / max(voiced[:, i].sum().item(), 1)
                    for i, name in enumerate(names)
                },
                margin=(orientation * margins[k]).sum().item() / decided.sum().item() if decided.any() else None,
                num_pairs=int(decided.sum().item()),
            )
        )
    return results


def format_preference_table(results: list[PreferenceAccuracy]) -> str:
    """A fixed-width text table of `evaluate_preferences`' results: one line per weighting."""
    names = list(results[0].objective_accuracy)
    header = ["weights", "accuracy"] + [f"{name} acc." for name in names] + ["margin", "pairs"]
    lines = [header] + [
        ["(" + ", ".join(f"{w:.2f}" for w in r.weights) + ")", "—" if r.accuracy is None else f"{r.accuracy:.3f}"]
        + [f"{r.objective_accuracy[n]:.3f}" for n in names]
        + ["—" if r.margin is None else f"{r.margin:.3f}", str(r.num_pairs)]
        for r in results
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in lines)
