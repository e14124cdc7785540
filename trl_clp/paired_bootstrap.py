"""Intervals that decide between methods: a bootstrap over seeds and prompts, shared by every method of a comparison.

A comparison holds, per method, a table of per-(seed, weighting, prompt) means, `(S, K, P, c)`: S training seeds, K
weightings, P held-out prompts, c columns (the m rewards, and the KL). Every statistic of a method (hypervolume, a
margin, a weighting's w·R) is a function of its seed- and prompt-averaged `(K, c)` means.

**The resamples.** Each resample draws P prompt indices with replacement, the same for every method, seed and
weighting (every method is evaluated on the same held-out prompts with the same sampling seed, so prompt p is a
harder or easier prompt for all of them alike), and S seed indices with replacement within each method. It then
averages the drawn prompts per seed (NaN entries left out), and the drawn seeds. Seeds and prompts are crossed (every
seed sees every prompt), not nested: drawing both factors independently is the two-way ("pigeonhole") bootstrap of
Owen (2007, Ann. Appl. Stat. 1(2)), slightly conservative. A method with one seed has no seed variance to draw: its
interval covers prompts only.

**Seeds of two methods.** With `pair_seeds=True` (the default), methods with the same number of seeds draw the same
seed indices: seed i of one is resampled with seed i of the other. A seed number shares what varies between seeds
outside the method: the training stream (prompt order, LoRA initialisation), and in `examples/compare_baselines.py`
and `compare_dpo.py` the base model and held-out prompts as well, which move every method of that seed together; the
KL-weight fronts of one multi-α model are even the same runs. Pairing keeps that shared variation out of the
difference; where seed i of two methods shares nothing, pairing is still unbiased (it draws independent pairs).
Methods with different numbers of seeds draw independently. `pair_seeds=False` draws every method independently.

**Paired differences.** A − B of any statistic is computed on each resample from the same drawn prompts (and paired
seeds), so what the methods share (hard prompts, a seed's base model) cancels; its percentile interval decides:
`verdict` says "A beats B" when the whole interval is above 0, "B beats A" when it is below, else "no difference
detected" (higher is better). Per-method intervals that overlap do not mean a tie: the paired one may exclude 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

A_BEATS_B = "A beats B"
B_BEATS_A = "B beats A"
NO_DIFFERENCE = "no difference detected"
VERDICTS = (A_BEATS_B, B_BEATS_A, NO_DIFFERENCE)


@dataclass(frozen=True)
class Estimate:
    """A statistic on all seeds and prompts, its percentile interval, and its value on every resample.

    `values` `(B,)` is the statistic on each of the B resamples (NaN where undefined, e.g. a margin on a resample
    whose prompts all lack a reward); `low`/`high` are percentiles of its non-NaN entries (NaN if there are none).
    """

    point: float
    low: float
    high: float
    values: torch.Tensor

    def as_list(self) -> list[float]:
        """`[point, low, high]`, as `comparison.json` stores an interval."""
        return [self.point, self.low, self.high]


def percentile_interval(values: torch.Tensor, confidence: float = 0.95) -> tuple[float, float]:
    """The `confidence` percentile interval of `(B,)` resampled values, NaN entries left out (NaN if none is left).

    Linear interpolation between order statistics (numpy's default percentile).
    """
    values = torch.as_tensor(values, dtype=torch.float64)
    values = values[~torch.isnan(values)]
    if values.numel() == 0:
        return float("nan"), float("nan")
    tail = (1 - confidence) / 2
    return torch.quantile(values, tail).item(), torch.quantile(values, 1 - tail).item()


def draw_resamples(
    num_seeds: Mapping[str, int],
    num_prompts: int,
    num_resamples: int = 1000,
    seed: int = 0,
    resample_seeds: bool = True,
    pair_seeds: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The index draws of a comparison's resamples: prompts shared by every method, seeds per method.

    Args:
        num_seeds: each method's number of seeds S (the first dimension of its table).
        num_prompts: P, shared by every method.
        num_resamples: B.
        seed: seeds the draws (a `torch.Generator`): the same arguments give the same draws.
        resample_seeds: False keeps every seed in every resample (prompts-only intervals).
        pair_seeds: methods with the same S draw the same seed indices (see the module docstring); False draws each
            method's independently.

    Returns:
        `(B, P)` prompt indices, and per method `(B, S)` seed indices (`arange(S)` in each row without
        `resample_seeds`). Prompts are drawn first, then seeds: per distinct S in ascending order when paired, per
        method in the order of `num_seeds` otherwise.
    """
    generator = torch.Generator().manual_seed(seed)
    prompts = torch.randint(num_prompts, (num_resamples, num_prompts), generator=generator)

    def draw(size: int) -> torch.Tensor:
        if not resample_seeds:
            return torch.arange(size).expand(num_resamples, size)
        return torch.randint(size, (num_resamples, size), generator=generator)

    if pair_seeds:
        by_size = {size: draw(size) for size in sorted(set(num_seeds.values()))}
        return prompts, {label: by_size[size] for label, size in num_seeds.items()}
    return prompts, {label: draw(size) for label, size in num_seeds.items()}


def resampled_means(table: torch.Tensor, seed_indices: torch.Tensor, prompt_indices: torch.Tensor) -> torch.Tensor:
    """`(B, K, c)` means of a `(S, K, P, c)` table on each resample: drawn prompts averaged per seed, NaN entries left
    out, then drawn seeds averaged.

    Computed from how often each prompt and seed is drawn (`(B, P)` and `(B, S)` counts): the mean over the drawn
    prompts of seed s is Σ_p n_bp x_skp / Σ_p n_bp [x_skp not NaN], without materialising `(B, S, K, P, c)`.

    Args:
        table: `(S, K, P, c)` per-(seed, weighting, prompt) means, NaN where a prompt has no value.
        seed_indices: `(B, S)` drawn seed indices.
        prompt_indices: `(B, P)` drawn prompt indices.
    """
    table = torch.as_tensor(table, dtype=torch.float64)
    num_seeds, _, num_prompts, _ = table.shape
    prompt_counts = torch.zeros(len(prompt_indices), num_prompts, dtype=torch.float64)  # (B, P)
    prompt_counts.scatter_add_(1, prompt_indices, torch.ones_like(prompt_indices, dtype=torch.float64))
    seed_counts = torch.zeros(len(seed_indices), num_seeds, dtype=torch.float64)  # (B, S)
    seed_counts.scatter_add_(1, seed_indices, torch.ones_like(seed_indices, dtype=torch.float64))
    present = ~torch.isnan(table)
    totals = torch.einsum("bp,skpc->bskc", prompt_counts, torch.where(present, table, 0.0))  # (B, S, K, c)
    counts = torch.einsum("bp,skpc->bskc", prompt_counts, present.double())  # (B, S, K, c)
    per_seed = totals / counts  # NaN where every drawn prompt lacks a value
    return torch.einsum("bs,bskc->bkc", seed_counts, per_seed) / seed_indices.size(1)  # (B, K, c)


class PairedBootstrap:
    """The two-way bootstrap of a comparison: every method's resampled means, drawn once, on which every statistic
    and every paired difference is computed (see the module docstring for the draws).

    Args:
        tables: per method (or any group of fronts that shares seeds, such as the base model), its `(S, K, P, c)`
            per-(seed, weighting, prompt) means; every table has the same P (prompt p is the same prompt in each,
            or, where each seed has its own prompts, the p-th prompt of that seed's set).
        num_resamples, seed, resample_seeds, pair_seeds: as in `draw_resamples`.
        confidence: of every interval.

    Attributes:
        means: per method, `(K, c)` its means over all seeds and prompts (prompts first, then seeds).
        resampled: per method, `(B, K, c)` its means on each resample.
    """

    def __init__(
        self,
        tables: Mapping[str, torch.Tensor],
        num_resamples: int = 1000,
        seed: int = 0,
        confidence: float = 0.95,
        resample_seeds: bool = True,
        pair_seeds: bool = True,
    ):
        tables = {label: torch.as_tensor(table, dtype=torch.float64) for label, table in tables.items()}
        prompt_counts = {label: table.size(2) for label, table in tables.items()}
        if len(set(prompt_counts.values())) > 1:
            raise ValueError(
                f"Every table needs the same number of prompts (its third dimension) to share the drawn prompts; "
                f"got {prompt_counts}. Evaluate every method on the same held-out prompts."
            )
        if not 0 < confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), e.g. 0.95; got {confidence}.")
        self.confidence = confidence
        num_prompts = next(iter(prompt_counts.values()))
        self.prompt_indices, self.seed_indices = draw_resamples(
            {label: table.size(0) for label, table in tables.items()},
            num_prompts,
            num_resamples,
            seed,
            resample_seeds,
            pair_seeds,
        )
        self.means = {label: table.nanmean(2).mean(0) for label, table in tables.items()}
        self.resampled = {
            label: resampled_means(table, self.seed_indices[label], self.prompt_indices)
            for label, table in tables.items()
        }

    def estimate(self, statistic: Callable[[Mapping[str, torch.Tensor]], float], batched: bool = False) -> Estimate:
        """`statistic` on all seeds and prompts and on every resample, with its percentile interval.

        Args:
            statistic: maps `{method: (K, c) means}` to a float (it may read several methods: a difference, a gain
                over the base model).
            batched: `statistic` maps `{method: (B, K, c) means}` to `(B,)` values at once (for statistics written
                with leading dimensions, e.g. `means[..., k, 0]`); it is called once on the resamples, and once on
                `{method: (1, K, c)}` for the point.
        """
        if batched:
            point = float(statistic({label: means[None] for label, means in self.means.items()})[0])
            values = torch.as_tensor(statistic(self.resampled), dtype=torch.float64)
        else:
            point = float(statistic(self.means))
            num_resamples = len(self.prompt_indices)
            values = torch.tensor(
                [
                    float(statistic({label: means[b] for label, means in self.resampled.items()}))
                    for b in range(num_resamples)
                ],
                dtype=torch.float64,
            )
        return Estimate(point, *percentile_interval(values, self.confidence), values)

    def difference(self, a: Estimate, b: Estimate) -> Estimate:
        """`a − b` of two estimates from this bootstrap, on the same resamples: the paired difference."""
        return paired_difference(a, b, self.confidence)


def paired_difference(a: Estimate, b: Estimate, confidence: float = 0.95) -> Estimate:
    """`a − b` per resample, and its percentile interval: the paired difference of two statistics computed on the
    same `(B,)` resamples (from one `PairedBootstrap`)."""
    if a.values.shape != b.values.shape:
        raise ValueError(
            f"A paired difference needs both statistics on the same resamples; got {tuple(a.values.shape)} and "
            f"{tuple(b.values.shape)} values. Compute both with the same PairedBootstrap."
        )
    values = a.values - b.values
    return Estimate(a.point - b.point, *percentile_interval(values, confidence), values)


def verdict(low: float, high: float) -> str:
    """What the interval `[low, high]` of a difference A − B says (higher is better): "A beats B" when it lies wholly
    above 0, "B beats A" when wholly below, "no difference detected" otherwise (it holds 0, or is NaN)."""
    if low > 0:
        return A_BEATS_B
    if high < 0:
        return B_BEATS_A
    return NO_DIFFERENCE


def describe_verdict(outcome: str, a: str, b: str) -> str:
    """A verdict with the methods' names: "full-CLP beats prompting", or "no difference detected"."""
    return {A_BEATS_B: f"{a} beats {b}", B_BEATS_A: f"{b} beats {a}"}.get(outcome, outcome)
