"""Fronts, dominance, hypervolume and steerability metrics against hand-computed values."""

import math

import pytest
import torch

from trl_clp import simplex_grid
from trl_clp.pareto import (
    WeightRewardWindow,
    additive_epsilon,
    bootstrap_mean_ci,
    dominates,
    fraction_dominated,
    hypervolume,
    monotonicity_violations,
    non_dominated_mask,
    pareto_front,
    reward_by_weight,
    spearman_correlation,
    steerability,
)

T = torch.tensor


def test_dominance_by_hand():
    assert dominates(T([2.0, 2.0]), T([1.0, 2.0]))
    assert not dominates(T([2.0, 2.0]), T([2.0, 2.0]))  # equal points do not dominate
    assert not dominates(T([3.0, 0.0]), T([0.0, 3.0]))


def test_non_dominated_subset_by_hand():
    points = T([[1.0, 3.0], [2.0, 2.0], [1.5, 1.5], [3.0, 1.0], [0.5, 0.5], [2.0, 2.0]])
    assert non_dominated_mask(points).tolist() == [True, True, False, True, False, True]
    assert pareto_front(points).shape == (4, 2)


def test_fraction_dominated_and_epsilon_by_hand():
    a = T([[1.0, 3.0], [3.0, 1.0]])
    b = T([[0.5, 2.0], [2.0, 0.5], [2.0, 2.0]])
    assert fraction_dominated(a, b) == pytest.approx(2 / 3)
    assert fraction_dominated(b, a) == 0.0
    # For b's (2, 2): best a point falls short by max(1, -1) = 1 (from (1, 3)) or max(-1, 1) = 1: ε = 1.
    assert additive_epsilon(a, b) == pytest.approx(1.0)
    # For a's (1, 3): closest b point is (2, 2) with gap max(-1, 1) = 1; (3, 1) likewise: ε = 1.
    assert additive_epsilon(b, a) == pytest.approx(1.0)
    assert additive_epsilon(a, a) == 0.0


def test_hypervolume_2d_by_hand():
    points = T([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    assert hypervolume(points, T([0.0, 0.0])) == pytest.approx(6.0)
    # A dominated point and one below the reference change nothing.
    more = torch.cat([points, T([[1.0, 1.0], [5.0, -1.0]])])
    assert hypervolume(more, T([0.0, 0.0])) == pytest.approx(6.0)
    # Reference (1, 1): (1, 3) and (3, 1) sit on its boundary and add no area; (2, 2) adds a unit box.
    assert hypervolume(points, T([1.0, 1.0])) == pytest.approx(1.0)
    assert hypervolume(T([[0.5, 0.5]]), T([1.0, 1.0])) == 0.0


def test_hypervolume_3d_by_hand():
    # Two boxes [0,2]x[0,1]x[0,1] and [0,1]x[0,2]x[0,1] overlap in [0,1]^3: 2 + 2 − 1 = 3; a third
    # [0,1]x[0,1]x[0,3] adds 3 − 1 = 2 more.
    points = T([[2.0, 1.0, 1.0], [1.0, 2.0, 1.0], [1.0, 1.0, 3.0]])
    assert hypervolume(points, T([0.0, 0.0, 0.0])) == pytest.approx(5.0)


def test_hypervolume_matches_monte_carlo_in_4d():
    generator = torch.Generator().manual_seed(0)
    points = torch.rand(6, 4, generator=generator)
    samples = torch.rand(200_000, 4, generator=generator)
    covered = (samples.unsqueeze(1) <= points.unsqueeze(0)).all(-1).any(-1).double().mean().item()
    assert hypervolume(points, torch.zeros(4)) == pytest.approx(covered, abs=5e-3)


def test_spearman_by_hand():
    assert spearman_correlation(T([0.0, 0.5, 1.0]), T([1.0, 2.0, 9.0])) == pytest.approx(1.0)
    assert spearman_correlation(T([0.0, 0.5, 1.0]), T([3.0, 2.0, 1.0])) == pytest.approx(-1.0)
    assert math.isnan(spearman_correlation(T([0.0, 0.5, 1.0]), T([1.0, 1.0, 1.0])))


def test_monotonicity_and_steerability_by_hand():
    weights = T([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    steerable = T([[0.9, 0.1], [0.5, 0.5], [0.1, 0.9]])
    assert monotonicity_violations(weights, steerable) == 0
    bumpy = T([[0.9, 0.1], [0.2, 0.5], [0.3, 0.4]])  # R_0 drops 0.3 -> 0.2 (w 0 -> .5), R_1 drops .5 -> .4
    assert monotonicity_violations(weights, bumpy) == 2
    assert monotonicity_violations(weights, bumpy, tolerance=0.2) == 0
    summary = steerability(weights, steerable)
    assert summary["range"] == pytest.approx([0.8, 0.8])
    assert summary["rank_correlation"] == pytest.approx([1.0, 1.0])


def test_bootstrap_ci_brackets_the_mean_and_narrows_with_data():
    generator = torch.Generator().manual_seed(0)
    small = torch.randn(20, generator=generator)
    large = torch.randn(2000, generator=generator)
    low, high = bootstrap_mean_ci(small)
    assert low < small.mean().item() < high
    large_low, large_high = bootstrap_mean_ci(large)
    assert large_high - large_low < high - low
    assert bootstrap_mean_ci(torch.tensor([1.0, float("nan"), 1.0])) == (1.0, 1.0)


def test_monotonicity_compares_only_points_one_move_apart_for_three_objectives():
    # simplex_grid(3, 3): 0 (1,0,0), 1 (.5,.5,0), 2 (.5,0,.5), 3 (0,1,0), 4 (0,.5,.5), 5 (0,0,1). Weight moved onto
    # objective 0 gives six comparisons: 3→1→0 and 4→2 (from objective 1), 5→2→0 and 4→1 (from objective 2).
    weights = simplex_grid(3, 3)
    # R_1 = w_1 and R_2 = w_2 are steerable. R_0 rises along all six moves, but (0,0,1) → (.5,.5,0), two points
    # that no single move joins, has it fall from 0.4 to 0.3: not a violation.
    steerable = T([[0.9, 0.3, 0.5, 0.0, 0.1, 0.4], weights[:, 1].tolist(), weights[:, 2].tolist()]).T
    assert monotonicity_violations(weights, steerable) == 0
    # R_0 falls from 0.35 to 0.3 on the move (0,1,0) → (.5,.5,0): one violation (one that sorting every point by w_0
    # misses, since it steps from (0,0,1) to (.5,.5,0) instead).
    bumpy = steerable.clone()
    bumpy[:, 0] = T([0.9, 0.3, 0.5, 0.35, 0.1, 0.2])
    assert monotonicity_violations(weights, bumpy) == 1
    assert monotonicity_violations(weights, bumpy, tolerance=0.05) == 0
    # R_2 falling on the move (1,0,0) → (.5,0,.5) counts once more; the order of the grid's rows does not matter.
    bumpier = bumpy.clone()
    bumpier[0, 2] = 0.6
    assert monotonicity_violations(weights, bumpier) == 2
    order = torch.randperm(len(weights), generator=torch.Generator().manual_seed(0))
    assert monotonicity_violations(weights[order], bumpier[order]) == 2
    assert steerability(weights, bumpier)["monotonicity_violations"] == 2


def test_array_likes_give_the_values_of_tensors():
    np = pytest.importorskip("numpy")
    a = [[1.0, 3.0], [3.0, 1.0], [2.0, 2.0], [1.0, 1.0]]
    b = [[0.5, 2.0], [2.0, 0.5], [2.5, 2.5]]
    weights, rewards = [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]], [[0.9, 0.1], [0.2, 0.5], [0.3, 0.4]]
    for convert in (list, np.array):
        assert dominates(convert(a[2]), convert(a[3])) and not dominates(convert(a[0]), convert(a[1]))
        assert (
            non_dominated_mask(convert(a)).tolist() == non_dominated_mask(T(a)).tolist() == [True, True, True, False]
        )
        assert torch.equal(pareto_front(convert(a)), pareto_front(T(a)))
        assert fraction_dominated(convert(a), convert(b)) == fraction_dominated(T(a), T(b)) == pytest.approx(2 / 3)
        assert additive_epsilon(convert(a), convert(b)) == additive_epsilon(T(a), T(b)) == pytest.approx(0.5)
        assert hypervolume(convert(a), convert([0.0, 0.0])) == hypervolume(T(a), T([0.0, 0.0])) == pytest.approx(6.0)
        assert spearman_correlation(convert([0.0, 0.5, 1.0]), convert([1.0, 2.0, 9.0])) == pytest.approx(1.0)
        assert monotonicity_violations(convert(weights), convert(rewards)) == 2
        summary, expected = steerability(convert(weights), convert(rewards)), steerability(T(weights), T(rewards))
        assert summary["range"] == pytest.approx(expected["range"])
        assert summary["range"] == pytest.approx([0.7, 0.4])
        assert summary["rank_correlation"] == pytest.approx(expected["rank_correlation"])
        assert summary["monotonicity_violations"] == expected["monotonicity_violations"] == 2
        assert bootstrap_mean_ci(convert([1.0, 2.0, 3.0])) == bootstrap_mean_ci(T([1.0, 2.0, 3.0]))


def test_reward_by_weight_bins_and_slope_by_hand():
    weights = T([[0.0, 1.0], [0.2, 0.8], [0.5, 0.5], [0.9, 0.1], [1.0, 0.0], [0.5, 0.5]])  # (6, 2)
    rewards = T([[1.0, 4.0], [3.0, math.nan], [5.0, 2.0], [7.0, 1.0], [9.0, 0.0], [math.nan, 3.0]])  # (6, 2)
    stats = reward_by_weight(weights, rewards)
    # Objective 0: w < 1/3 → rewards 1, 3; w in [1/3, 2/3) → 5 (the NaN row left out); w >= 2/3 → 7, 9.
    # Objective 1: w < 1/3 → 1, 0; mid → 2, 3; high → 4 (the NaN at w = 0.8 left out).
    assert stats["w_low"].tolist() == pytest.approx([2.0, 0.5])
    assert stats["w_mid"].tolist() == pytest.approx([5.0, 2.5])
    assert stats["w_high"].tolist() == pytest.approx([8.0, 4.0])
    # Objective 0 over its 5 scored rows: w = (0, .2, .5, .9, 1), mean .52; R = (1, 3, 5, 7, 9), mean 5:
    # Σ(w − .52)(R − 5) = 5.4 and Σ(w − .52)² = 0.748.
    w0, r0 = torch.tensor([0.0, 0.2, 0.5, 0.9, 1.0]), torch.tensor([1.0, 3.0, 5.0, 7.0, 9.0])
    slope0 = ((w0 - 0.52) * (r0 - 5.0)).sum() / ((w0 - 0.52) ** 2).sum()
    # Objective 1 over its 5 scored rows: w = (1, .5, .1, 0, .5), R = (4, 2, 1, 0, 3): means .42 and 2.
    w1, r1 = torch.tensor([1.0, 0.5, 0.1, 0.0, 0.5]), torch.tensor([4.0, 2.0, 1.0, 0.0, 3.0])
    slope1 = ((w1 - 0.42) * (r1 - 2.0)).sum() / ((w1 - 0.42) ** 2).sum()
    assert stats["slope_vs_weight"].tolist() == pytest.approx([slope0.item(), slope1.item()])
    assert slope0.item() == pytest.approx(5.4 / 0.748) and slope1.item() == pytest.approx(3.8217, abs=1e-4)
    # An empty bin and a weight that does not vary give NaN.
    one_hot = reward_by_weight(T([[1.0, 0.0], [1.0, 0.0]]), T([[1.0, 2.0], [3.0, 4.0]]))
    assert math.isnan(one_hot["w_mid"][0]) and math.isnan(one_hot["w_low"][0]) and one_hot["w_high"][0] == 2.0
    assert math.isnan(one_hot["slope_vs_weight"][0]) and math.isnan(one_hot["slope_vs_weight"][1])


def steerability_stream(steps: int, slope: float = 0.5, rows: int = 8, generations: int = 4, seed: int = 0):
    """Synthetic training batches: one weighting per prompt group, R_0 = 0.2 + slope·w_0 + N(0, 0.3²)."""
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        w0 = torch.rand(rows // generations, generator=generator).repeat_interleave(generations)  # (rows,)
        rewards = torch.stack(
            [
                0.2 + slope * w0 + 0.3 * torch.randn(rows, generator=generator),
                0.3 * torch.randn(rows, generator=generator),
            ],
            1,
        )  # (rows, 2)
        yield torch.stack([w0, 1 - w0], 1), rewards


@pytest.mark.parametrize("logging_steps", [1, 10])
def test_pooled_window_reads_the_true_slope_where_per_step_fits_swing(logging_steps):
    # 8 rows per step, 2 prompt groups: what TRL logged before is the mean of the interval's per-step fits.
    window, per_step, logged_before, logged_now = WeightRewardWindow(256), [], [], []
    for step, (weights, rewards) in enumerate(steerability_stream(400), start=1):
        window.add(weights, rewards)
        per_step.append(reward_by_weight(weights, rewards))
        if step % logging_steps == 0:
            pooled = window.fit()
            if step > 40:  # past the first window
                slopes = [s["slope_vs_weight"][0] for s in per_step if not math.isnan(s["slope_vs_weight"][0])]
                logged_before.append(sum(slopes) / len(slopes))
                logged_now.append(pooled)
            per_step = []
    error_before = torch.tensor([s - 0.5 for s in logged_before]).pow(2).mean().sqrt()
    error_now = torch.tensor([p["slope_vs_weight"][0] - 0.5 for p in logged_now]).pow(2).mean().sqrt()
    assert error_now < 0.1 < 1.0 < error_before  # measured: 0.063 vs 3.4 (every step) and 1.03 (every 10 steps)
    # Every log has both ends of the weight range, read close to the truth (0.2 + 0.5·w averaged over each bin).
    assert all(not math.isnan(p[b][0]) for p in logged_now for b in ("w_low", "w_high"))
    assert torch.tensor([p["w_high"][0] - p["w_low"][0] for p in logged_now]).mean() == pytest.approx(1 / 3, abs=0.05)


def test_window_fits_the_rows_since_the_last_fit_and_at_least_the_latest_size():
    T = torch.tensor
    window = WeightRewardWindow(size=3)
    assert window.fit() is None  # nothing since the last log: nothing to report
    window.add(T([[0.0, 1.0], [1.0, 0.0]]), T([[0.0, 5.0], [2.0, 5.0]]))
    window.add(T([[0.5, 0.5]]), T([[4.0, 5.0]]))
    # The 3 rows: slope of (0, 0), (1, 2), (0.5, 4) is 2.
    assert window.fit()["slope_vs_weight"][0].item() == pytest.approx(2.0)
    window.add(T([[1.0, 0.0]]), T([[6.0, 5.0]]))
    # 1 new row, topped up to 3 with the latest older ones: (1, 2), (0.5, 4), (1, 6) → slope 0.
    assert window.fit()["slope_vs_weight"][0].item() == pytest.approx(0.0)
    for w0, r0 in ((0.0, 0.0), (1.0, 1.0), (0.0, 0.0), (1.0, 1.0)):
        window.add(T([[w0, 1 - w0]]), T([[r0, 5.0]]))
    # 4 new rows, more than `size`: all of them and only them.
    assert window.fit()["w_high"][0].item() == pytest.approx(1.0)
    alone = WeightRewardWindow(size=0)  # an evaluation: its own rows only
    alone.add(T([[1.0, 0.0]]), T([[1.0, 0.0]]))
    alone.fit()
    alone.add(T([[0.0, 1.0]]), T([[3.0, 0.0]]))
    stats = alone.fit()
    assert math.isnan(stats["w_high"][0]) and stats["w_low"][0].item() == 3.0
