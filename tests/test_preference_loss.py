"""`trl_clp.preference_loss`: the maths of DPO-CLP against hand computations."""

import pytest
import torch

from trl_clp.preference_loss import label_preference, score_preference


def test_label_and_score_preferences_by_hand():
    weights = torch.tensor([[0.2, 0.8], [0.2, 0.8], [1.0, 0.0], [0.5, 0.5]])
    labels = torch.tensor([[1, -1], [1, 0], [0, 1], [-1, -1]])
    p, kept = label_preference(labels, weights)
    # 0.2 / (0.2 + 0.8); 0.2 / 0.2; only objective 2 speaks, with weight 0: dropped; both prefer rejected.
    assert p.tolist() == pytest.approx([0.2, 1.0, 0.0, 0.0])
    assert kept.tolist() == [True, True, False, True]
    p, kept = score_preference(
        torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.3, 0.3]]),
        torch.tensor([[0.0, 1.0], [0.0, 0.0], [0.3, 0.3]]),
        torch.tensor([[0.7, 0.3], [0.5, 0.5], [0.5, 0.5]]),
        margin=0.45,
    )
    # w·Δr = 0.4 (below the margin), 0.5, 0 (a tie)
    assert p.tolist() == [1.0, 1.0, 0.0]
    assert kept.tolist() == [False, True, False]
