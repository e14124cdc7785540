"""Pure maths of DPO-CLP: which response a weighting prefers, and the DPO pair loss mixed over the objectives.

Under a weighting w a pair carries two numbers: its preference p ∈ [0, 1], the share of "`chosen` is better" (and
1 − p that of "`rejected` is better"), and its weight v ∈ [0, 1] (0: the pair says nothing under w). With ℓ the pair
loss of the configured `loss_type` as a function of the signed pair score z (z > 0 favours `chosen`), the batch loss
is the mean over the batch's B pairs

    L = (1/B)·Σ_b v_b·[p_b·ℓ(z_b) + (1 − p_b)·ℓ(−z_b)],

normalised by the batch, not pair by pair. For the labels layout v·p = Σ_{i: s_i=+1} w_i and v·(1 − p) =
Σ_{i: s_i=−1} w_i, so a pair's term is Panacea's Σ_i w_i·1[s_i≠0]·ℓ(s_i·z): continuous in w, and an objective that
abstains (s_i = 0) takes its weight out of the pair instead of handing it to the others. In expectation over the
pairs, a weighting w asks for the policy minimising Σ_i w_i·π_i·L_i, with L_i objective i's DPO loss on the pairs
it labels and π_i the share of pairs it labels. For the scores layout v is 1 (0 for a pair left out by the margin)
and p is 1[w·Δr > 0] or the soft σ(w·Δr / τ). One forward pass per pair gives z; only the sign differs across
objectives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def label_preference(labels: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each pair's preference and weight under its weighting, from per-objective labels.

    Args:
        labels: `(B, m)` s_i ∈ {−1, 0, +1}: objective i prefers `chosen` (+1), `rejected` (−1) or neither (0).
        weights: `(B, m)` each pair's weighting w.

    Returns:
        p `(B,)` = Σ_{i: s_i=+1} w_i / Σ_{i: s_i≠0} w_i (0 where that sum is 0), and the pair weight v `(B,)` =
        Σ_{i: s_i≠0} w_i, the weight of the objectives that voice an opinion: 1 when all do, w_2 alone for a pair
        objective 1 ties on, 0 for a pair whose only opinions come from objectives weighted 0.
    """
    labels = labels.to(weights.dtype)
    pair_weight = (weights * (labels != 0)).sum(-1)  # (B,)
    in_favour = (weights * (labels > 0)).sum(-1)  # (B,)
    p = in_favour / torch.where(pair_weight > 0, pair_weight, torch.ones_like(pair_weight))
    return p, pair_weight


def score_preference(
    chosen_scores: torch.Tensor,
    rejected_scores: torch.Tensor,
    weights: torch.Tensor,
    margin: float = 0.0,
    temperature: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each pair's preference and weight under its weighting, from per-objective scores.

    Args:
        chosen_scores, rejected_scores: `(B, m)` r_c and r_r, one score per objective.
        weights: `(B, m)` each pair's weighting w.
        margin: pairs with |w·(r_c − r_r)| < margin are left out (weight 0).
        temperature: None for the hard preference p = 1[w·Δr > 0] (exact ties left out too: they prefer neither);
            τ > 0 for the soft p = σ(w·Δr / τ), the Bradley–Terry probability of `chosen` winning when the weighted
            score is a reward on the scale τ (exact ties kept, with p = 0.5: "equally good" is a preference too).

    Returns:
        p `(B,)` and the pair weight v `(B,)`, 1 for the pairs kept and 0 for those left out.
    """
    difference = (weights * (chosen_scores - rejected_scores).to(weights.dtype)).sum(-1)  # (B,) w·Δr
    kept = difference.abs() >= margin
    if temperature is None:
        return (difference > 0).to(weights.dtype), (kept & (difference != 0)).to(weights.dtype)
    return torch.sigmoid(difference / temperature), kept.to(weights.dtype)


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
    scores: torch.Tensor, preference: torch.Tensor, pair_weight: torch.Tensor, loss_type: str, beta: float
) -> torch.Tensor:
    """The batch loss (1/B)·Σ_b v_b·[p_b·ℓ(z_b) + (1 − p_b)·ℓ(−z_b)], the mean over all B pairs (a pair of weight 0
    adds 0; the loss stays attached to the graph when every pair weighs 0, so that every rank runs backward).

    Dividing by the number of pairs, not by each pair's own weight nor by the batch's total weight, keeps the loss
    continuous in every pair's w: a pair objective 1 ties on adds w_2·ℓ(±z)/B, which vanishes at the corner
    w = (1, 0) even in a batch of such pairs only.

    Args:
        scores: `(B,)` z from `pair_scores`.
        preference: `(B,)` p.
        pair_weight: `(B,)` v ≥ 0 (`label_preference`, `score_preference`).

    Returns:
        a scalar.
    """
    per_pair = preference * pair_loss(scores, loss_type, beta) + (1 - preference) * pair_loss(-scores, loss_type, beta)
    weighted = torch.where(pair_weight > 0, pair_weight * per_pair, torch.zeros_like(per_pair))  # (B,)
    return weighted.mean()
