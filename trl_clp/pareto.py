"""Pareto fronts of steerable models: dominance, hypervolume, steerability and confidence intervals, as pure functions.

Every function maximises: a point `p` (one mean reward per objective) dominates `q` when `p >= q` everywhere and
`p > q` somewhere. Points are `(K, m)`, K points of m objectives: torch tensors, or anything `torch.as_tensor` takes
(nested lists, numpy arrays, as pymoo and moocore use).
"""

from __future__ import annotations

import torch


def dominates(p: torch.Tensor, q: torch.Tensor) -> bool:
    """Whether `(m,)` point `p` Pareto-dominates `q` (maximisation)."""
    p, q = torch.as_tensor(p), torch.as_tensor(q)
    return bool((p >= q).all() and (p > q).any())


def non_dominated_mask(points: torch.Tensor) -> torch.Tensor:
    """`(K,)` bool: True for the points no other point dominates (duplicates are all kept).

    Args:
        points: `(K, m)`.
    """
    points = torch.as_tensor(points)
    geq = (points.unsqueeze(0) >= points.unsqueeze(1)).all(-1)  # (K, K): geq[j, i] = points[i] >= points[j]
    gt = (points.unsqueeze(0) > points.unsqueeze(1)).any(-1)  # (K, K)
    dominated = (geq & gt).any(dim=1)  # (K,): some i dominates j
    return ~dominated


def pareto_front(points: torch.Tensor) -> torch.Tensor:
    """The non-dominated points of `(K, m)` `points`, in their original order (a tensor)."""
    points = torch.as_tensor(points)
    return points[non_dominated_mask(points)]


def fraction_dominated(front_a: torch.Tensor, front_b: torch.Tensor) -> float:
    """Fraction of the points of `front_b` `(K_b, m)` that some point of `front_a` `(K_a, m)` dominates."""
    front_a, front_b = torch.as_tensor(front_a), torch.as_tensor(front_b)
    geq = (front_a.unsqueeze(1) >= front_b.unsqueeze(0)).all(-1)  # (K_a, K_b)
    gt = (front_a.unsqueeze(1) > front_b.unsqueeze(0)).any(-1)
    return (geq & gt).any(dim=0).float().mean().item()


def additive_epsilon(front_a: torch.Tensor, front_b: torch.Tensor) -> float:
    """Additive ε-indicator I(A, B): the smallest ε such that A shifted by ε weakly dominates every point of B.

    `max_b min_a max_i (b_i − a_i)`. ≤ 0 means A weakly dominates B (by |ε| with room to spare); > 0 is how far A
    falls short of B somewhere. Comparing I(A, B) and I(B, A) says which front is ahead and by how much.
    """
    front_a, front_b = torch.as_tensor(front_a), torch.as_tensor(front_b)
    gaps = (front_b.unsqueeze(0) - front_a.unsqueeze(1)).max(-1).values  # (K_a, K_b)
    return gaps.min(dim=0).values.max().item()


def hypervolume(points: torch.Tensor, reference: torch.Tensor) -> float:
    """Exact hypervolume dominated by `points` `(K, m)` and bounded below by `reference` `(m,)`.

    Points not strictly above the reference in every objective contribute nothing. m = 1 and 2 are solved
    directly (a sweep); larger m by slicing along the last objective (exact; O(K^(m−1)), fine for evaluation grids).

    Example: points (1, 3), (2, 2), (3, 1) with reference (0, 0) cover 3 + 2 + 1 = 6.
    """
    points = torch.as_tensor(points, dtype=torch.float64)
    reference = torch.as_tensor(reference, dtype=torch.float64, device=points.device)
    points = points[(points > reference).all(-1)]
    if points.numel() == 0:
        return 0.0
    points = pareto_front(points)
    m = points.size(-1)
    if m == 1:
        return (points.max() - reference[0]).item()
    if m == 2:
        order = torch.argsort(points[:, 0], descending=True)
        volume, best_y = 0.0, reference[1].item()
        for x, y in points[order].tolist():
            if y > best_y:
                volume += (x - reference[0].item()) * (y - best_y)
                best_y = y
        return volume
    # Slice along the last objective: between consecutive levels, the cross-section is the (m−1)-dimensional
    # hypervolume of the points at or above the upper level.
    levels = torch.unique(points[:, -1]).tolist()  # ascending
    volume, lower = 0.0, reference[-1].item()
    for level in levels:
        above = points[points[:, -1] >= level, :-1]
        volume += (level - lower) * hypervolume(above, reference[:-1])
        lower = level
    return volume


def spearman_correlation(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman rank correlation of two `(K,)` vectors (average ranks for ties); NaN if either is constant."""

    def ranks(v: torch.Tensor) -> torch.Tensor:
        order = torch.argsort(v)
        ranked = torch.empty_like(v, dtype=torch.float64)
        ranked[order] = torch.arange(len(v), dtype=torch.float64)
        for value in torch.unique(v):  # average the ranks of ties
            tied = v == value
            ranked[tied] = ranked[tied].mean()
        return ranked

    rx = ranks(torch.as_tensor(x, dtype=torch.float64))
    ry = ranks(torch.as_tensor(y, dtype=torch.float64))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = (rx.square().sum() * ry.square().sum()).sqrt()
    return (rx * ry).sum().div(denominator).item() if denominator > 0 else float("nan")


def monotonicity_violations(weights, rewards, tolerance: float = 0.0) -> int:
    """How often an objective's reward falls as weight moves onto it from one other objective.

    The grid points are compared along lines of the simplex: two points lie on line (i, j) when they differ only by
    weight moved between objectives i and j (every other w_k equal, and w_i + w_j equal). Along each line, sorted by
    w_i, every step to the next point (a strictly larger w_i) whose reward R_i drops by more than `tolerance` counts
    one violation; the reverse steps check R_j the same way. For m = 2 there is one line, so this is "sorted by w_i,
    consecutive points". Points that differ in three or more weights are never compared: a move like (0, 0, 1) →
    (.5, .5, 0) changes two weights besides w_1, and R_1 may rightly fall along it. Perfectly steerable models
    score 0.

    Args:
        weights: `(K, m)` evaluated weightings.
        rewards: `(K, m)` mean reward of each objective at each weighting.
    """
    weights = torch.as_tensor(weights, dtype=torch.float64)
    rewards = torch.as_tensor(rewards, dtype=torch.float64)
    # Lattice weights such as 1/3 come out of different arithmetic; compare them to 1e-9.
    keys = torch.round(weights * 1e9).long()  # (K, m)
    violations = 0
    m = weights.size(1)
    for i in range(m):
        for j in range(m):
            if i == j:
                continue
            others = [k for k in range(m) if k not in (i, j)]
            line_key = torch.cat([keys[:, others], (keys[:, i] + keys[:, j])[:, None]], dim=1)  # (K, m − 1)
            lines, line_of = torch.unique(line_key, dim=0, return_inverse=True)
            for line in range(len(lines)):
                members = (line_of == line).nonzero().squeeze(1)  # the points on this line
                order = members[torch.argsort(keys[members, i], stable=True)]
                w, r = keys[order, i], rewards[order, i]
                rises = w[1:] > w[:-1]
                drops = r[1:] < r[:-1] - tolerance
                violations += int((rises & drops).sum())
    return violations


def steerability(weights: torch.Tensor, rewards: torch.Tensor, tolerance: float = 0.0) -> dict[str, object]:
    """Steerability summary of a front: per-objective range and rank correlation, and monotonicity violations.

    Args:
        weights: `(K, m)`; rewards: `(K, m)`.

    Returns:
        `{"range": [m floats], "rank_correlation": [m floats], "monotonicity_violations": int}`: the range is
        `max_k R_i − min_k R_i` over the grid; the correlation is Spearman's between w_i and R_i.
    """
    weights, rewards = torch.as_tensor(weights), torch.as_tensor(rewards)
    return {
        "range": (rewards.max(0).values - rewards.min(0).values).tolist(),
        "rank_correlation": [spearman_correlation(weights[:, i], rewards[:, i]) for i in range(weights.size(1))],
        "monotonicity_violations": monotonicity_violations(weights, rewards, tolerance),
    }


WEIGHT_BINS = (("low", 0.0, 1 / 3), ("mid", 1 / 3, 2 / 3), ("high", 2 / 3, 1.01))


def reward_by_weight(weights: torch.Tensor, rewards: torch.Tensor) -> dict[str, torch.Tensor]:
    """Steerability within one batch of rows: each objective's reward as a function of its weight.

    An average over random weightings hides steerability; these statistics show it (the trainer logs them as
    `rewards/<objective>/w_low`, `w_mid`, `w_high` and `slope_vs_weight`, fitted on the rows of a
    `WeightRewardWindow`). NaN rewards (a reward function that does not apply to a row) are left out.

    Args:
        weights: `(N, m)` each row's weighting.
        rewards: `(N, m)` each row's per-objective reward, NaN where unscored.

    Returns:
        `{"w_low", "w_mid", "w_high"}`: `(m,)` mean reward of objective i over rows with w_i in [0, 1/3), [1/3, 2/3),
        [2/3, 1] (NaN for an empty bin); `"slope_vs_weight"`: `(m,)` least-squares slope of R_i against w_i,
        `cov(w_i, R_i) / var(w_i)` (NaN where w_i does not vary).
    """
    weights, rewards = torch.as_tensor(weights), torch.as_tensor(rewards)
    valid = ~torch.isnan(rewards)  # (N, m)
    statistics = {}
    for label, low, high in WEIGHT_BINS:
        in_bin = (weights >= low) & (weights < high) & valid  # (N, m)
        total = torch.where(in_bin, rewards, 0.0).sum(0)  # (m,)
        count = in_bin.sum(0)  # (m,)
        statistics[f"w_{label}"] = torch.where(count > 0, total / count.clamp(min=1), torch.nan)
    slopes = []
    for i in range(weights.size(1)):
        w, r = weights[valid[:, i], i], rewards[valid[:, i], i]
        w_centered = w - w.mean()
        variance = (w_centered**2).mean()
        slopes.append((w_centered * (r - r.mean())).mean() / variance if variance > 1e-8 else torch.tensor(torch.nan))
    statistics["slope_vs_weight"] = torch.stack(slopes).to(rewards.dtype)  # (m,)
    return statistics


class WeightRewardWindow:
    """The rows `reward_by_weight` is fitted on when logged during training: every row since the last log, and at
    least the `size` most recent ones.

    One generation batch holds few distinct weightings (one per prompt group: 2 in a batch of 8 rows with 4
    generations), so a fit per batch swings wildly (a slope through two weightings) and often leaves a weight bin
    empty; averaging such per-batch slopes over a logging interval keeps their heavy tails. Pooling the rows first
    and fitting once gives the least-squares slope of all of them, at the cost of a lag of at most `size` rows.
    """

    def __init__(self, size: int):
        self.size = size
        self._weights: list[torch.Tensor] = []  # (n_b, m) per batch, oldest first
        self._rewards: list[torch.Tensor] = []  # (n_b, m)
        self._rows_since_fit = 0

    def add(self, weights: torch.Tensor, rewards: torch.Tensor) -> None:
        """Record one batch: `(N, m)` weightings and `(N, m)` per-objective rewards (NaN where unscored)."""
        self._weights.append(torch.as_tensor(weights).detach().cpu().float())
        self._rewards.append(torch.as_tensor(rewards).detach().cpu().float())
        self._rows_since_fit += len(weights)

    def fit(self) -> dict[str, torch.Tensor] | None:
        """`reward_by_weight` of the rows since the last `fit` (at least the latest `size`), then drop the rows a
        later window will not need; None if no row came since the last `fit`."""
        if self._rows_since_fit == 0:
            return None
        weights, rewards = torch.cat(self._weights), torch.cat(self._rewards)  # (R, m)
        rows = max(self._rows_since_fit, self.size)
        statistics = reward_by_weight(weights[-rows:], rewards[-rows:])
        kept = slice(max(len(weights) - self.size, 0), None)  # the latest `size` rows (none for size 0)
        self._weights, self._rewards = [weights[kept]], [rewards[kept]]
        self._rows_since_fit = 0
        return statistics


def bootstrap_mean_ci(
    values: torch.Tensor, num_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of `(P,)` per-prompt values (NaN entries dropped)."""
    values = torch.as_tensor(values, dtype=torch.float64)
    values = values[~torch.isnan(values)]
    if values.numel() == 0:
        return float("nan"), float("nan")
    generator = torch.Generator().manual_seed(seed)
    indices = torch.randint(len(values), (num_resamples, len(values)), generator=generator)
    means = values[indices].mean(dim=1)  # (num_resamples,)
    tail = (1 - confidence) / 2
    return torch.quantile(means, tail).item(), torch.quantile(means, 1 - tail).item()
