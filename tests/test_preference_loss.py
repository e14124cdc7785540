"""`trl_clp.preference_loss`: the mixed DPO loss against hand computations, near the corners of the simplex and with
soft score preferences."""

import math

import pytest
import torch

from trl_clp.preference_loss import label_preference, mixed_preference_loss, score_preference


def softplus(x: float) -> float:
    """ℓ(z) = −log σ(z) = log(1 + e^{−z}), DPO's sigmoid pair loss, at x = −z."""
    return math.log1p(math.exp(x))


def dpo(z: float) -> float:
    return softplus(-z)


# Pair 0: both objectives voice an opinion and disagree ([+1, −1]); pair 1: objective 1 ties, objective 2 prefers
# `chosen` ([0, +1]).
LABELS = torch.tensor([[1, -1], [0, 1]])
Z = [0.8, -1.0]


def labels_loss(w1: float, labels=LABELS, z=Z) -> tuple[float, list[float]]:
    """The labels loss at the weighting (w1, 1 − w1) for every pair, and its gradient with respect to each z_b."""
    scores = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    weights = torch.tensor([[w1, 1 - w1]], dtype=torch.float64).expand(len(z), 2)
    p, pair_weight = label_preference(labels, weights)
    loss = mixed_preference_loss(scores, p, pair_weight, "sigmoid", beta=0.1)
    loss.backward()
    return loss.item(), scores.grad.tolist()


def test_the_labels_loss_is_panaceas_weighted_sum_continuous_in_w_and_a_tie_pair_fades_at_the_corner():
    z0, z1 = Z
    # By hand, (1/B)·Σ_b Σ_i w_i·1[s_i≠0]·ℓ(s_i·z_b): the tie pair counts w_2·ℓ(z_1), nothing at w_2 = 0.
    by_hand = {
        1.0: dpo(z0) / 2,
        0.999: (0.999 * dpo(z0) + 0.001 * dpo(-z0) + 0.001 * dpo(z1)) / 2,
        0.5: (0.5 * dpo(z0) + 0.5 * dpo(-z0) + 0.5 * dpo(z1)) / 2,
    }
    for w1, expected in by_hand.items():
        assert labels_loss(w1)[0] == pytest.approx(expected, abs=1e-12)
    # Continuous at the corner: per-pair normalisation gave the tie pair its full loss ℓ(z_1) = 1.313 at any w_2 > 0
    # and 0 at w_2 = 0, a jump of ℓ(z_1)/2 in the batch loss.
    assert dpo(z1) == pytest.approx(1.313, abs=1e-3)
    assert abs(labels_loss(0.999)[0] - labels_loss(1.0)[0]) < 2e-3
    # The tie pair's gradient is w_2·ℓ'(z_1)/B: proportional to w_2, so it vanishes at the corner.
    slope = -1 / (1 + math.exp(z1))  # ℓ'(z_1)
    for w2 in (0.5, 0.01, 0.001, 0.0):
        assert labels_loss(1 - w2)[1][1] == pytest.approx(w2 * slope / 2, abs=1e-12)


def test_a_batch_of_tie_pairs_only_still_fades_at_the_corner():
    # Normalising by the batch's total pair weight would give these pairs their full loss again whenever w_2 > 0.
    labels = torch.tensor([[0, 1], [0, -1]])
    z = [0.4, 0.9]
    for w2 in (0.5, 0.001, 0.0):
        expected = w2 * (dpo(z[0]) + dpo(-z[1])) / 2
        assert labels_loss(1 - w2, labels, z)[0] == pytest.approx(expected, abs=1e-12)


def test_soft_score_preference_is_the_bradley_terry_probability_of_the_weighted_difference():
    chosen = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.3, 0.3], [0.5, 0.0]])
    rejected = torch.tensor([[0.0, 1.0], [0.0, 0.0], [0.3, 0.3], [0.0, 0.0]])
    weights = torch.tensor([[0.7, 0.3], [0.5, 0.5], [0.5, 0.5], [0.2, 0.8]])
    # w·Δr = 0.4, 1.0, 0 (a tie), 0.1
    p, pair_weight = score_preference(chosen, rejected, weights, temperature=0.5)
    sigmoid = [1 / (1 + math.exp(-d / 0.5)) for d in (0.4, 1.0, 0.0, 0.1)]
    assert p.tolist() == pytest.approx(sigmoid, abs=1e-6)
    assert pair_weight.tolist() == [1.0, 1.0, 1.0, 1.0]  # a tie is kept: p = 0.5 asks for z = 0
    # The margin still leaves pairs out; the hard preference drops the tie and ignores the difference's size.
    _, pair_weight = score_preference(chosen, rejected, weights, margin=0.2, temperature=0.5)
    assert pair_weight.tolist() == [1.0, 1.0, 0.0, 0.0]
    p, pair_weight = score_preference(chosen, rejected, weights)
    assert p.tolist() == [1.0, 1.0, 0.0, 1.0] and pair_weight.tolist() == [1.0, 1.0, 0.0, 1.0]

    # The loss: (1/B)·Σ_b [p_b·ℓ(z_b) + (1 − p_b)·ℓ(−z_b)]; at the sigmoid loss's minimum z = logit(p) = w·Δr / τ.
    z = torch.tensor([0.3, -0.2, 0.5, 0.0])
    p, pair_weight = score_preference(chosen, rejected, weights, temperature=0.5)
    loss = mixed_preference_loss(z, p, pair_weight, "sigmoid", beta=0.1)
    expected = sum(q * dpo(zb) + (1 - q) * dpo(-zb) for q, zb in zip(sigmoid, z.tolist(), strict=True)) / 4
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    optimum = torch.tensor([0.8, 2.0, 0.0, 0.2], requires_grad=True)  # w·Δr / τ
    mixed_preference_loss(optimum, p, pair_weight, "sigmoid", beta=0.1).backward()
    assert optimum.grad.abs().max().item() < 1e-6


def test_label_and_score_preferences_by_hand():
    weights = torch.tensor([[0.2, 0.8], [0.2, 0.8], [1.0, 0.0], [0.5, 0.5]])
    labels = torch.tensor([[1, -1], [1, 0], [0, 1], [-1, -1]])
    p, pair_weight = label_preference(labels, weights)
    # 0.2 / (0.2 + 0.8); 0.2 / 0.2; only objective 2 speaks, with weight 0: weight 0; both prefer rejected.
    assert p.tolist() == pytest.approx([0.2, 1.0, 0.0, 0.0])
    # The weight of the objectives that voice an opinion: the pair objective 2 abstains on weighs w_1 = 0.2.
    assert pair_weight.tolist() == pytest.approx([1.0, 0.2, 0.0, 1.0])
    p, pair_weight = score_preference(
        torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.3, 0.3]]),
        torch.tensor([[0.0, 1.0], [0.0, 0.0], [0.3, 0.3]]),
        torch.tensor([[0.7, 0.3], [0.5, 0.5], [0.5, 0.5]]),
        margin=0.45,
    )
    # w·Δr = 0.4 (below the margin), 0.5, 0 (a tie)
    assert p.tolist() == [1.0, 1.0, 0.0]
    assert pair_weight.tolist() == [0.0, 1.0, 0.0]
