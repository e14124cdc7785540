"""trl_clp.paired_bootstrap: the two-way bootstrap over seeds and prompts, checked against a plain-loop recomputation
on the same index draws, and on synthetic tables whose answer is known."""

import math

import numpy
import pytest
import torch

from trl_clp.paired_bootstrap import (
    A_BEATS_B,
    B_BEATS_A,
    NO_DIFFERENCE,
    PairedBootstrap,
    describe_verdict,
    draw_resamples,
    paired_difference,
    percentile_interval,
    resampled_means,
    verdict,
)
from trl_clp.pareto import hypervolume

WEIGHTS = torch.tensor([[1.0, 0.0], [0.75, 0.25], [0.5, 0.5], [0.25, 0.75], [0.0, 1.0]], dtype=torch.float64)


def loop_means(table: torch.Tensor, seeds: list[int], prompts: list[int]) -> list[list[float]]:
    """`(K, c)` means of one resample, in plain Python: per drawn seed, the mean of the drawn prompts' non-NaN
    values (a prompt drawn twice counts twice), then the mean over the drawn seeds."""
    rows = table.tolist()  # [S][K][P][c]
    out = []
    for k in range(table.size(1)):
        out.append([])
        for c in range(table.size(3)):
            seed_means = []
            for s in seeds:
                values = [rows[s][k][p][c] for p in prompts if not math.isnan(rows[s][k][p][c])]
                seed_means.append(sum(values) / len(values) if values else math.nan)
            out[-1].append(sum(seed_means) / len(seed_means))
    return out


def margin(means: torch.Tensor, i: int) -> float:
    """R_i at w_i = 1 minus R_i at w_i = 0, on `(K, m)` means over `WEIGHTS`."""
    return (means[WEIGHTS[:, i] == 1, i].mean() - means[WEIGHTS[:, i] == 0, i].mean()).item()


def tables_with_seed_noise(seed_sd: float, prompt_sd: float, num_seeds=(3, 2), num_prompts=24, generator_seed=0):
    """Per method `(S, 5, P, 2)` rewards: a steering trend over the 5 weightings + a per-(method, seed) offset of sd
    `seed_sd` + per-(seed, weighting, prompt) noise of sd `prompt_sd`."""
    generator = torch.Generator().manual_seed(generator_seed)
    trend = WEIGHTS * 0.3 + 0.3  # (K, m): R_i rises with w_i
    tables = {}
    for label, size in zip("AB", num_seeds, strict=True):
        offsets = torch.randn(size, 1, 1, 1, generator=generator, dtype=torch.float64) * seed_sd
        noise = torch.randn(size, 5, num_prompts, 2, generator=generator, dtype=torch.float64) * prompt_sd
        tables[label] = trend[None, :, None, :] + offsets + noise
    return tables


def test_resampled_means_and_intervals_match_a_plain_loop_on_the_same_draws():
    tables = tables_with_seed_noise(0.05, 0.1)
    tables["A"][1, 2, 3, 0] = math.nan  # a prompt without a reward at one weighting
    tables["A"][:, 4, 5, :] = math.nan  # a prompt without rewards at every seed of a weighting
    tables["base"] = torch.rand(1, 1, 24, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    bootstrap = PairedBootstrap(tables, num_resamples=60, seed=3)
    reference = torch.zeros(2, dtype=torch.float64)
    for label, table in tables.items():
        seeds, prompts = bootstrap.seed_indices[label], bootstrap.prompt_indices
        assert seeds.shape == (60, table.size(0)) and prompts.shape == (60, 24)
        for b in range(60):
            expected = loop_means(table, seeds[b].tolist(), prompts[b].tolist())
            torch.testing.assert_close(
                bootstrap.resampled[label][b], torch.tensor(expected, dtype=torch.float64), equal_nan=True
            )
        all_seeds = loop_means(table, list(range(table.size(0))), list(range(24)))
        torch.testing.assert_close(
            bootstrap.means[label], torch.tensor(all_seeds, dtype=torch.float64), equal_nan=True
        )

    # A statistic of one method, and one reading two (the gain of A's hypervolume over the base model's mean).
    volume = bootstrap.estimate(lambda means: hypervolume(means["A"], reference))
    values = [
        hypervolume(torch.tensor(loop_means(tables["A"], s.tolist(), p.tolist())), reference)
        for s, p in zip(bootstrap.seed_indices["A"], bootstrap.prompt_indices, strict=True)
    ]
    assert volume.values.tolist() == pytest.approx(values)
    assert [volume.low, volume.high] == pytest.approx(numpy.percentile(values, [2.5, 97.5]).tolist())
    assert volume.point == pytest.approx(hypervolume(bootstrap.means["A"], reference))
    gain = bootstrap.estimate(lambda means: means["A"][0, 0].item() - means["base"][0, 0].item())
    assert gain.values.tolist() == pytest.approx(
        (bootstrap.resampled["A"][:, 0, 0] - bootstrap.resampled["base"][:, 0, 0]).tolist()
    )

    # The paired difference is taken resample by resample.
    volume_b = bootstrap.estimate(lambda means: hypervolume(means["B"], reference))
    difference = bootstrap.difference(volume, volume_b)
    per_resample = [a - b for a, b in zip(volume.values.tolist(), volume_b.values.tolist(), strict=True)]
    assert difference.values.tolist() == pytest.approx(per_resample)
    assert [difference.low, difference.high] == pytest.approx(numpy.percentile(per_resample, [2.5, 97.5]).tolist())
    assert difference.point == pytest.approx(volume.point - volume_b.point)


def test_draws_share_prompts_pair_seeds_of_equal_count_and_repeat_with_the_seed():
    prompts, seeds = draw_resamples({"A": 3, "B": 2, "C": 3, "base": 1}, num_prompts=10, num_resamples=50, seed=7)
    assert prompts.shape == (50, 10) and int(prompts.min()) >= 0 and int(prompts.max()) == 9
    assert torch.equal(seeds["A"], seeds["C"]) and seeds["B"].shape == (50, 2) and not seeds["base"].any()
    assert len({tuple(row) for row in seeds["A"].tolist()}) > 5  # seeds are drawn with replacement, not kept
    again = draw_resamples({"A": 3, "B": 2, "C": 3, "base": 1}, num_prompts=10, num_resamples=50, seed=7)
    assert torch.equal(again[0], prompts) and all(torch.equal(again[1][k], seeds[k]) for k in seeds)
    _, independent = draw_resamples({"A": 3, "C": 3}, num_prompts=10, num_resamples=50, seed=7, pair_seeds=False)
    assert not torch.equal(independent["A"], independent["C"])
    _, kept = draw_resamples({"A": 3, "B": 2}, num_prompts=10, num_resamples=4, resample_seeds=False)
    assert kept["A"].tolist() == [[0, 1, 2]] * 4 and kept["B"].tolist() == [[0, 1]] * 4


def test_a_constant_gain_on_every_prompt_and_seed_is_detected_where_per_method_intervals_overlap():
    """B = A + 0.05 everywhere: B's w·R exceeds A's by exactly 0.05 on every resample (a degenerate interval), so
    "B beats A", while each method's own interval, wide from seed and prompt noise, overlaps the other's. Margins are
    unchanged by a constant shift: their difference is exactly 0, no difference detected. B's front lies above A's
    in every objective, so its hypervolume is larger on every resample: B beats A there too."""
    table = tables_with_seed_noise(0.05, 0.15, num_seeds=(3, 3))["A"]
    bootstrap = PairedBootstrap({"A": table, "B": table + 0.05}, num_resamples=200, seed=0)
    for k, weights in enumerate(WEIGHTS):

        def scalarised(means, label, k=k, weights=weights):
            return (weights * means[label][k]).sum().item()

        a = bootstrap.estimate(lambda means, s=scalarised: s(means, "A"))
        b = bootstrap.estimate(lambda means, s=scalarised: s(means, "B"))
        assert a.low < b.low < a.high < b.high  # the per-method intervals overlap
        difference = bootstrap.difference(a, b)
        assert [difference.point, difference.low, difference.high] == pytest.approx([-0.05] * 3)
        assert verdict(difference.low, difference.high) == B_BEATS_A == "B beats A"
        assert verdict(-difference.high, -difference.low) == A_BEATS_B  # B − A
    for i in range(2):
        a = bootstrap.estimate(lambda means, i=i: margin(means["A"], i))
        b = bootstrap.estimate(lambda means, i=i: margin(means["B"], i))
        difference = bootstrap.difference(a, b)
        assert [difference.point, difference.low, difference.high] == pytest.approx([0.0] * 3, abs=1e-12)
        assert verdict(difference.low, difference.high) == NO_DIFFERENCE
    reference = torch.zeros(2, dtype=torch.float64)
    a = bootstrap.estimate(lambda means: hypervolume(means["A"], reference))
    b = bootstrap.estimate(lambda means: hypervolume(means["B"], reference))
    difference = bootstrap.difference(a, b)
    assert (difference.values < 0).all() and verdict(difference.low, difference.high) == B_BEATS_A
    assert a.low < b.high and b.low < a.high


def test_seed_noise_widens_the_interval_that_a_prompts_only_bootstrap_leaves_narrow():
    """Seeds far apart (sd 0.1) and little prompt noise: resampling seeds widens a method's interval well beyond the
    prompts-only one, which stays as narrow as the prompt noise. Two methods sharing each seed's offset (a base model
    per seed) differ by a constant: pairing their seeds cancels the offsets, independent draws do not."""
    generator = torch.Generator().manual_seed(0)
    offsets = torch.tensor([-0.1, 0.0, 0.1], dtype=torch.float64)[:, None, None, None]
    noise = torch.randn(3, 5, 40, 2, generator=generator, dtype=torch.float64) * 0.02
    a = 0.5 + offsets + noise
    b = 0.5 + offsets + 0.03 + torch.randn(3, 5, 40, 2, generator=generator, dtype=torch.float64) * 0.02

    def width(estimate):
        return estimate.high - estimate.low

    def first_reward(label):
        return lambda means: means[label][0, 0].item()

    hierarchical = PairedBootstrap({"A": a, "B": b}, num_resamples=400, seed=1)
    prompts_only = PairedBootstrap({"A": a, "B": b}, num_resamples=400, seed=1, resample_seeds=False)
    assert width(hierarchical.estimate(first_reward("A"))) > 5 * width(prompts_only.estimate(first_reward("A")))
    assert width(prompts_only.estimate(first_reward("A"))) < 0.02  # ~ 4 × 0.02 / sqrt(3 × 40)

    independent = PairedBootstrap({"A": a, "B": b}, num_resamples=400, seed=1, pair_seeds=False)
    paired = hierarchical.difference(
        hierarchical.estimate(first_reward("B")), hierarchical.estimate(first_reward("A"))
    )
    unpaired = independent.difference(independent.estimate(first_reward("B")), independent.estimate(first_reward("A")))
    assert verdict(paired.low, paired.high) == A_BEATS_B  # B − A = +0.03, offsets cancelled
    assert verdict(unpaired.low, unpaired.high) == NO_DIFFERENCE and width(unpaired) > 4 * width(paired)


def test_verdicts_percentiles_and_refusals():
    assert verdict(0.01, 0.2) == "A beats B" and verdict(-0.2, -0.01) == "B beats A"
    assert verdict(0.0, 0.2) == verdict(-0.1, 0.1) == verdict(math.nan, math.nan) == "no difference detected"
    assert describe_verdict(B_BEATS_A, "full-CLP", "Rewarded Soups") == "Rewarded Soups beats full-CLP"
    assert describe_verdict(NO_DIFFERENCE, "full-CLP", "Rewarded Soups") == "no difference detected"
    values = torch.tensor([3.0, math.nan, 1.0, 2.0, 4.0])
    assert percentile_interval(values, 0.5) == pytest.approx(numpy.percentile([1, 2, 3, 4], [25, 75]).tolist())
    assert all(math.isnan(x) for x in percentile_interval(torch.tensor([math.nan])))
    table = torch.zeros(1, 1, 3, 1)
    assert resampled_means(table, torch.zeros(2, 1, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long)).shape == (
        2,
        1,
        1,
    )
    with pytest.raises(ValueError, match="same number of prompts.*Evaluate every method on the same held-out prompts"):
        PairedBootstrap({"A": torch.zeros(1, 1, 3, 1), "B": torch.zeros(1, 1, 4, 1)})
    first = PairedBootstrap({"A": table}, num_resamples=5).estimate(lambda means: 0.0)
    second = PairedBootstrap({"A": table}, num_resamples=6).estimate(lambda means: 0.0)
    with pytest.raises(ValueError, match="same PairedBootstrap"):
        paired_difference(first, second)
