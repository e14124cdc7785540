"""Pure maths of DPO-CLP: which response a weighting prefers, and the DPO pair loss mixed over the objectives.

A pair's preference under a weighting w is one number p ∈ [0, 1], the weight of "`chosen` is better" (and 1 − p that
of "`rejected` is better"), and a flag saying whether the pair counts at all under w. With ℓ the pair loss of the
configured `loss_type` as a function of the signed pair score z (z > 0 favours `chosen`), the loss of a pair is

    L(w) = p · ℓ(z) + (1 − p) · ℓ(−z),

which for the labels layout is exactly Σ_i w_i·1[s_i≠0]·ℓ(s_i·z) / Σ_i w_i·1[s_i≠0] (the objectives preferring
`chosen` have s_i = +1, those preferring `rejected` s_i = −1), and for the scores layout ℓ(±z) with the sign of
w·(r_c − r_r). One forward pass per pair gives z; only the sign differs across objectives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def label_preference(labels: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight of "`chosen` is better" under each pair's weighting, from per-objective labels.

    Args:
        labels: `(B, m)` s_i ∈ {−1, 0, +1}: objective i prefers `chosen` (+1), `rejected` (−1) or neither (0).
        weights: `(B, m)` each pair's weighting w.

    Returns:
        p `(B,)` = Σ_{i: s_i=+1} w_i / Σ_{i: s_i≠0} w_i, and kept `(B,)` bool: Σ_{i: s_i≠0} w_i > 0 (a pair
        whose only opinions come from objectives weighted 0 says nothing under w; p is 0 there).
    """
    labels = labels.to(weights.dtype)
    voiced = weights * (labels != 0)  # (B, m)
    total = voiced.sum(-1)  # (B,)
    kept = total > 0
    p = (weights * (labels > 0)).sum(-1) / torch.where(kept, total, torch.ones_like(total))
    return p, kept


def score_preference(
    chosen_scores: torch.Tensor, rejected_scores: torch.Tensor, weights: torch.Tensor, margin: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight of "`chosen` is better" under each pair's weighting, from per-objective scores.

    Args:
        chosen_scores, rejected_scores: `(B, m)` r_c and r_r, one score per objective.
        weights: `(B, m)` each pair's weighting w.
        margin: pairs with |w·(r_c − r_r)| < margin are left out; so are exact ties.

    Returns:
        p `(B,)` = 1[w·(r_c − r_r) > 0], and kept `(B,)` bool.
    """
    difference = (weights * (chosen_scores - rejected_scores).to(weights.dtype)).sum(-1)  # (B,)
    kept = (difference.abs() >= margin) & (difference != 0)
    return (difference > 0).to(weights.dtype), kept


def pair_scores(
    chosen_logratios: torch.Tensor,
    rejected_logratios: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    loss_type: str,
    beta: float,
) -> torch.Tensor:
    """The signed pair score z each loss type is a function of (z > 0 favours `chosen`), as in TRL's DPOTrainer.

    Args:
        chosen_logratios, rejected_logratios: `(B,)` log π(y) − log π_ref(y), summed over the completion tokens.
        chosen_lengths, rejected_lengths: `(B,)` completion tokens (IPO averages the log-ratios per token).
        loss_type: 'sigmoid' or 'hinge' (z = β·Δ, Δ the difference of the log-ratios), or 'ipo' (z = the difference
            of the per-token log-ratios).
        beta: β.

    Returns:
        `(B,)`.
    """
    if loss_type == "ipo":
        return chosen_logratios / chosen_lengths.clamp(min=1.0) - rejected_logratios / rejected_lengths.clamp(min=1.0)
    return beta * (chosen_logratios - rejected_logratios)


def pair_loss(scores: torch.Tensor, loss_type: str, beta: float) -> torch.Tensor:
    """ℓ(z), the loss of a pair whose preferred response has signed score z (TRL's formulas).

    'sigmoid': −log σ(z) (DPO); 'hinge': max(0, 1 − z) (SLiC); 'ipo': (z − 1/(2β))² (IPO, Eq. 17).

    Args:
        scores: `(B,)` z from `pair_scores`.

    Returns:
        `(B,)`.
    """
    if loss_type == "sigmoid":
        return -F.logsigmoid(scores)
    if loss_type == "hinge":
        return torch.relu(1 - scores)
    if loss_type == "ipo":
        return (scores - 1 / (2 * beta)) ** 2
    raise ValueError(f"Unknown loss_type {loss_type!r}: one of 'sigmoid', 'hinge', 'ipo'.")


def mixed_preference_loss(
    scores: torch.Tensor, preference: torch.Tensor, kept: torch.Tensor, loss_type: str, beta: float
) -> torch.Tensor:
    """The batch loss: the mean over kept pairs of p·ℓ(z) + (1 − p)·ℓ(−z); 0 (still attached to the graph) when no
    pair is kept, so that every rank runs backward.

    Args:
        scores: `(B,)` z from `pair_scores`.
        preference: `(B,)` p.
        kept: `(B,)` bool.

    Returns:
        a scalar.
    """
    per_pair = preference * pair_loss(scores, loss_type, beta) + (1 - preference) * pair_loss(-scores, loss_type, beta)
    per_pair = torch.where(kept, per_pair, torch.zeros_like(per_pair))
    return per_pair.sum() / kept.sum().clamp(min=1)
