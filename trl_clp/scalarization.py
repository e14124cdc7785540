"""Scalarisation of per-objective rewards and the group baselines built on them, as pure functions.

Order of operations for one generation batch of N = G·K completions (G prompt groups of K completions each):

1. per-objective rewards `R` `(N, m)` (NaN where a reward function returned None),
2. optional per-objective normalisation: `(R − mean) / std` with running statistics (`RunningMoments`),
3. scalarisation with each row's weighting w (NaN terms skipped, as in TRL):
   - linear: `s = Σ_i w_i R_i`;
   - Tchebycheff: `s = −max_{i: w_i > 0} w_i (z_i − R_i)`, z the ideal point (`IdealPoint`: given, or the running
     per-objective maxima of the raw rewards, normalised as in step 2 when used); augmented with ρ > 0:
     `s − ρ Σ_i (z_i − R_i)`,
4. optional clipping of `s` to `reward_clip_range` (RLOO),
5. KL penalty: `r = s − α · KL` with each row's α,
6. the trainer's group baseline: leave-one-out (RLOO, `leave_one_out_advantages`) or group mean and std (GRPO,
   `group_relative_advantages`; GRPO's `normalize_then_sum` normalises each objective within its group first,
   `group_normalized_rewards`).

The weighted sum only reaches the convex part of a Pareto front: where the trade-off is concave, every weighting
of `Σ_i w_i R_i` is maximised at one of the front's ends. Tchebycheff scalarisation reaches every Pareto-optimal
point: for the point R* on the front, the weighting w_i ∝ 1 / (z_i − R*_i) makes R* the maximiser of s
(Miettinen, *Nonlinear Multiobjective Optimization*, 1999, Theorem 3.4.5).
"""

from __future__ import annotations

import torch

SCALARIZATIONS = ("linear", "tchebycheff")


def linear_scalarization(rewards_per_objective: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """`s = Σ_i w_i R_i` per row.

    Args:
        rewards_per_objective: `(N, m)`; NaN marks "not applicable" and is skipped.
        weights: `(N, m)`, each row on the simplex.

    Returns:
        `(N,)`; NaN for rows where every objective is NaN.
    """
    scalar = (rewards_per_objective * weights).nansum(dim=1)  # (N,)
    scalar[torch.isnan(rewards_per_objective).all(dim=1)] = torch.nan
    return scalar


def tchebycheff_scalarization(
    rewards_per_objective: torch.Tensor,
    weights: torch.Tensor,
    ideal_point: torch.Tensor,
    augmentation: float = 0.0,
) -> torch.Tensor:
    """`s = −max_i w_i (z_i − R_i) − ρ Σ_i (z_i − R_i)` per row (augmented Tchebycheff when ρ > 0).

    s is the negated weighted distance to the ideal point z along the worst objective: maximising it pulls up
    the objective that lags most (relative to its weight), so, unlike the weighted sum, every point of a concave
    front is the maximiser for some weighting. With ρ = 0 the maximisers are weakly Pareto-optimal; a small ρ > 0
    (e.g. 0.01) breaks ties towards Pareto-optimal points. The gaps are not taken in absolute value, so s never
    falls as an R_i rises, and it keeps rising with the objective whose weighted gap is the largest even past z.
    Objectives of zero weight are left out of the max (only ρ's sum sees them): their term would be 0 whatever
    their reward, and would cap s at 0 once the weighted objectives pass z (w = (1, 0), z = (1, 1): R_1 = 1.5
    would score 0, as R_1 = 1 does, instead of 0.5).

    Args:
        rewards_per_objective: `(N, m)`; NaN marks "not applicable" and the objective is left out of the max.
        weights: `(N, m)`, each row on the simplex.
        ideal_point: `(m,)` z; NaN for an objective leaves it out (e.g. one never scored yet).
        augmentation: ρ >= 0.

    Returns:
        `(N,)`; NaN for rows where every objective is NaN; 0 (before ρ's sum) for rows where only zero-weight
        objectives are scored, as the weighted sum gives them.

    Example: R = (0.2, 0.8), w = (0.5, 0.5), z = (1, 1): gaps (0.8, 0.2), s = −max(0.4, 0.1) = −0.4.
    """
    gaps = ideal_point.to(rewards_per_objective) - rewards_per_objective  # (N, m)
    missing = torch.isnan(gaps)
    weighted_gaps = (weights * gaps).masked_fill(missing | (weights == 0), -torch.inf)  # (N, m)
    scalar = -weighted_gaps.amax(dim=1)  # (N,); +inf where no weighted objective is scored
    scalar = scalar.masked_fill(torch.isinf(scalar), 0.0)
    if augmentation:
        scalar = scalar - augmentation * gaps.nansum(dim=1)
    scalar[missing.all(dim=1)] = torch.nan
    return scalar


def scalarize_rewards(
    rewards_per_objective: torch.Tensor,
    weights: torch.Tensor,
    kl: torch.Tensor | None = None,
    kl_weight: torch.Tensor | None = None,
    clip_range: tuple[float, float] | None = None,
    *,
    scalarization: str = "linear",
    ideal_point: torch.Tensor | None = None,
    augmentation: float = 0.0,
) -> torch.Tensor:
    """Per-row scalar reward `s(R; w) − α·KL` (steps 3–5 above).

    Args:
        rewards_per_objective: `(N, m)`; NaN marks "not applicable".
        weights: `(N, m)`, each row the weighting its completion was sampled under.
        kl: `(N,)` sequence-level KL estimate `Σ_t log π(y_t) − log π_ref(y_t)`, or None.
        kl_weight: `(N,)` α of each row, or None.
        clip_range: optional `(low, high)` applied to `s` before the KL penalty (TRL's `reward_clip_range`).
        scalarization: `"linear"` or `"tchebycheff"` (then `ideal_point` `(m,)` is required).
        augmentation: ρ of the augmented Tchebycheff scalarisation.

    Returns:
        `(N,)`; NaN for rows where every objective is NaN (unscorable, as in TRL).
    """
    if scalarization == "linear":
        scalar = linear_scalarization(rewards_per_objective, weights)
    elif scalarization == "tchebycheff":
        if ideal_point is None:
            raise ValueError("scalarization='tchebycheff' needs the ideal point z: pass `ideal_point`.")
        scalar = tchebycheff_scalarization(rewards_per_objective, weights, ideal_point, augmentation)
    else:
        raise ValueError(f"`scalarization` must be one of {SCALARIZATIONS}, got {scalarization!r}.")
    if clip_range is not None:
        scalar = scalar.clamp(min=clip_range[0], max=clip_range[1])
    if kl is not None and kl_weight is not None:
        scalar = scalar - kl_weight * kl
    return scalar


def leave_one_out_advantages(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    """RLOO advantages: each reward minus the mean of its group's other scorable rewards.

    `A_j = r_j − (Σ_{k≠j} r_k) / (n − 1)` with n the group's count of non-NaN rewards. Rows are grouped
    consecutively: rows `[g·K, (g+1)·K)` form group g. NaN rewards stay NaN (the caller zeroes them). Extra trailing
    dimensions are columns baselined independently (e.g. each objective's reward, `objective_rewards`).

    Args:
        rewards: `(G·K,)` or `(G·K, c)`.
        num_generations: K >= 2.

    Returns:
        the shape of `rewards`.
    """
    grouped = rewards.view(-1, num_generations, *rewards.shape[1:])  # (G, K, ...)
    counts = (~torch.isnan(grouped)).sum(dim=1, keepdim=True)  # (G, 1, ...)
    totals = torch.nansum(grouped, dim=1, keepdim=True)  # (G, 1, ...)
    baselines = (totals - grouped) / (counts - 1)  # (G, K, ...)
    return (grouped - baselines).view(rewards.shape)


def _nanstd(values: torch.Tensor, dim: int | None = None, keepdim: bool = False) -> torch.Tensor:
    # Bessel-corrected and NaN-aware, as TRL's `nanstd` (GRPO's advantages must match upstream to 1e-5).
    mean = torch.nanmean(values, dim=dim, keepdim=True)
    count = (~torch.isnan(values)).sum(dim=dim, keepdim=True)
    variance = torch.nanmean((values - mean) ** 2, dim=dim, keepdim=True) * count / (count - 1)
    std = torch.where(count > 1, variance, torch.nan).sqrt()
    return std if keepdim else (std.squeeze() if dim is None else std.squeeze(dim))


def group_relative_advantages(
    rewards: torch.Tensor, num_generations: int, scale_rewards: str = "group"
) -> torch.Tensor:
    """GRPO advantages: each reward minus its group's mean, divided by a standard deviation per `scale_rewards`.

    `A_j = (r_j − mean_g(r)) / (σ + 1e-4)` with σ the group's std (`"group"`), the batch's std (`"batch"`), or no
    division (`"none"`); NaN rewards are left out of the statistics and stay NaN (the caller zeroes them). Rows
    `[g·K, (g+1)·K)` form group g.

    Args:
        rewards: `(G·K,)` per-row scalar rewards.
        num_generations: K.
        scale_rewards: `"group"`, `"batch"` or `"none"`.

    Returns:
        `(G·K,)`.
    """
    return group_centered(rewards, num_generations) / group_relative_scale(rewards, num_generations, scale_rewards)


def group_centered(values: torch.Tensor, num_generations: int) -> torch.Tensor:
    """Each value minus its prompt group's mean (NaN-aware), the numerator of GRPO's advantages.

    Args:
        values: `(G·K,)` or `(G·K, c)` (columns centred independently).
        num_generations: K.

    Returns:
        the shape of `values`.
    """
    grouped = values.view(-1, num_generations, *values.shape[1:])  # (G, K, ...)
    return (grouped - torch.nanmean(grouped, dim=1, keepdim=True)).view(values.shape)


def group_relative_scale(rewards: torch.Tensor, num_generations: int, scale_rewards: str = "group") -> torch.Tensor:
    """`(G·K,)` the divisor of each row's GRPO advantage: its group's std + 1e-4 (`"group"`), the batch's std + 1e-4
    (`"batch"`) or 1 (`"none"`), from the scalar rewards `(G·K,)`."""
    if scale_rewards == "group":
        grouped = rewards.view(-1, num_generations)  # (G, K)
        return _nanstd(grouped, dim=1, keepdim=True).expand_as(grouped).reshape(-1) + 1e-4
    if scale_rewards == "batch":
        return (_nanstd(rewards) + 1e-4).expand_as(rewards)
    if scale_rewards == "none":
        return torch.ones_like(rewards)
    raise ValueError(f"`scale_rewards` must be 'group', 'batch' or 'none', got {scale_rewards!r}.")


def group_normalized_rewards(rewards_per_objective: torch.Tensor, num_generations: int) -> torch.Tensor:
    """Each objective normalised within its prompt group, `(R_i − mean_g(R_i)) / (std_g(R_i) + 1e-4)`: the first
    step of GRPO's `multi_objective_aggregation="normalize_then_sum"`.

    Args:
        rewards_per_objective: `(G·K, m)`; NaN entries are left out of the statistics and stay NaN.
        num_generations: K.

    Returns:
        `(G·K, m)`.
    """
    num_objectives = rewards_per_objective.size(1)
    grouped = rewards_per_objective.view(-1, num_generations, num_objectives)  # (G, K, m)
    mean = torch.nanmean(grouped, dim=1, keepdim=True)  # (G, 1, m)
    std = _nanstd(grouped, dim=1, keepdim=True) if num_generations > 1 else torch.zeros_like(mean)
    return ((grouped - mean) / (std + 1e-4)).view(-1, num_objectives)


def batch_normalized(rewards: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
    """`(r − mean) / (std + 1e-4)` with the mean and std of `reference` `(N,)` (default `rewards`), NaN-aware (GRPO's
    `normalize_then_sum`).

    Args:
        rewards: `(N,)`, or `(N, c)` columns normalised with the same statistics (e.g. each objective's share of the
            scalar reward, whose weighted sum then stays the normalised scalar reward).
        reference: `(N,)` the values the statistics come from.
    """
    reference = rewards if reference is None else reference
    std = _nanstd(reference) if reference.numel() > 1 else torch.zeros(())
    return (rewards - torch.nanmean(reference)) / (std + 1e-4)


def objective_rewards(
    rewards_per_objective: torch.Tensor, kl: torch.Tensor | None = None, kl_weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Each objective's own reward with the row's KL penalty, `r_i = R_i − α·KL`, per row.

    For a weighting on the simplex, `Σ_i w_i r_i = w·R − α·KL`: the linear scalar reward (`scalarize_rewards`), so any
    baseline that is linear in the rewards (leave-one-out; a group mean with the scalar reward's std) gives advantages
    `A_i` with `Σ_i w_i A_i = A`. A NaN `R_i` (not applicable) counts 0, as `linear_scalarization` skips it; a row
    where every objective is NaN stays NaN (unscorable).

    Args:
        rewards_per_objective: `(N, m)`.
        kl: `(N,)` sequence KL, or None.
        kl_weight: `(N,)` each row's α, or None.

    Returns:
        `(N, m)`.
    """
    values = rewards_per_objective.nan_to_num(nan=0.0)  # (N, m)
    if kl is not None and kl_weight is not None:
        values = values - (kl_weight * kl).unsqueeze(1)
    return values.masked_fill(torch.isnan(rewards_per_objective).all(dim=1, keepdim=True), torch.nan)


class RunningMoments:
    """Per-objective running mean and variance (Chan et al.'s parallel update), NaN-aware.

    The statistics are updated from the globally gathered rewards, so every rank holds the same values.
    """

    def __init__(self, num_objectives: int):
        self.count = torch.zeros(num_objectives, dtype=torch.float64)
        self.mean = torch.zeros(num_objectives, dtype=torch.float64)
        self.sum_sq = torch.zeros(num_objectives, dtype=torch.float64)  # Σ (x − mean)²

    def update(self, rewards_per_objective: torch.Tensor) -> None:
        """Add a batch `(N, m)`; NaN entries are skipped."""
        values = rewards_per_objective.detach().to("cpu", torch.float64)
        valid = ~torch.isnan(values)
        batch_count = valid.sum(0).to(torch.float64)  # (m,)
        batch_mean = torch.where(valid, values, 0).sum(0) / batch_count.clamp(min=1)
        batch_sum_sq = torch.where(valid, (values - batch_mean) ** 2, 0).sum(0)
        total = self.count + batch_count
        delta = batch_mean - self.mean
        safe_total = total.clamp(min=1)
        self.mean = self.mean + delta * batch_count / safe_total
        self.sum_sq = self.sum_sq + batch_sum_sq + delta**2 * self.count * batch_count / safe_total
        self.count = total

    @property
    def std(self) -> torch.Tensor:
        """`(m,)` population standard deviation; 1 where fewer than two values were seen."""
        var = self.sum_sq / self.count.clamp(min=1)
        return torch.where(self.count > 1, var.sqrt(), torch.ones_like(var))

    def normalize(self, rewards_per_objective: torch.Tensor) -> torch.Tensor:
        """`(N, m)` → `(N, m)`: `(R − mean) / (std + 1e-8)` per objective."""
        mean = self.mean.to(rewards_per_objective)
        std = self.std.to(rewards_per_objective)
        return (rewards_per_objective - mean) / (std + 1e-8)

    def state_dict(self) -> dict[str, list[float]]:
        return {"count": self.count.tolist(), "mean": self.mean.tolist(), "sum_sq": self.sum_sq.tolist()}

    def load_state_dict(self, state: dict[str, list[float]]) -> None:
        self.count = torch.tensor(state["count"], dtype=torch.float64)
        self.mean = torch.tensor(state["mean"], dtype=torch.float64)
        self.sum_sq = torch.tensor(state["sum_sq"], dtype=torch.float64)


class IdealPoint:
    """Tchebycheff's ideal point z `(m,)`: fixed if given, else the running per-objective maxima of the rewards.

    The maxima are updated from the globally gathered rewards of training batches only, so every rank holds the
    same z and evaluation does not change training. The trainer updates them with raw rewards and normalises z when
    it uses it (`including(..., normalize)`): maxima kept in the normalised units of past batches would go stale as
    the running statistics move.

    Args:
        num_objectives: m.
        given: a fixed z, or None for the running maxima.
    """

    def __init__(self, num_objectives: int, given: list[float] | None = None):
        self.given = given is not None
        if self.given:
            self.maxima = torch.tensor(given, dtype=torch.float64)
        else:
            self.maxima = torch.full((num_objectives,), -torch.inf, dtype=torch.float64)

    def update(self, rewards_per_objective: torch.Tensor) -> None:
        """Raise the running maxima to those of a batch `(N, m)`; NaN entries are skipped. No-op when z is given."""
        if not self.given:
            self.maxima = self.including(rewards_per_objective).nan_to_num(nan=-torch.inf).to(torch.float64)

    def including(self, rewards_per_objective: torch.Tensor, normalize=None) -> torch.Tensor:
        """`(m,)` z as it would be after `update` with this batch, without storing it, in the units of
        `rewards_per_objective`; NaN for an objective with no reward seen yet. A given z is returned as is.

        Args:
            rewards_per_objective: `(N, m)` the batch.
            normalize: maps `(1, m)` raw rewards into the batch's units (e.g. `RunningMoments.normalize`), applied to
                the stored maxima; None when the batch is raw. It must increase in each objective, so that the
                normalised maxima are the maxima of the normalised rewards.
        """
        maxima = self.maxima.to(rewards_per_objective)
        if not self.given:
            if normalize is not None:
                maxima = normalize(maxima.unsqueeze(0)).squeeze(0)  # an unseen objective's −inf stays −inf
            batch = rewards_per_objective.nan_to_num(nan=-torch.inf).amax(dim=0)  # (m,)
            maxima = torch.maximum(maxima, batch)
        return maxima.masked_fill(torch.isinf(maxima), torch.nan)

    def state_dict(self) -> dict:
        return {"ideal_point": [None if v == -torch.inf else v for v in self.maxima.tolist()], "given": self.given}

    def load_state_dict(self, state: dict) -> None:
        self.maxima = torch.tensor([-torch.inf if v is None else v for v in state["ideal_point"]], dtype=torch.float64)
