"""Weightings on the simplex: validation, per-group sampling for training and its schedule, evaluation grids.

Every sampler here draws from its own ``numpy`` generator seeded by ``(seed, *stream)``, never from the global
RNGs, so that (a) every rank draws the same weights for the same global prompt group, (b) a resumed run continues
the same stream, and (c) drawing weights does not perturb the torch RNG that generation uses.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import torch

WEIGHT_DISTRIBUTIONS = ("dirichlet", "uniform", "one_hot", "fixed")
SIMPLEX_TOLERANCE = 1e-4


def check_weights(weights: torch.Tensor | Sequence, num_objectives: int, name: str = "weights") -> torch.Tensor:
    """Validate a weighting (or a batch of them) and return it as a float tensor.

    Args:
        weights: `(m,)` or `(B, m)` non-negative values summing to 1 along the last axis.
        num_objectives: m, the number of objectives the model was trained on.
        name: how the caller calls the argument, used in error messages.

    Returns:
        `(m,)` or `(B, m)` float32 tensor (on the input's device if it was a tensor).

    Raises:
        ValueError: wrong length, NaN/inf, negative entries, or rows not summing to 1.
    """
    tensor = (
        torch.as_tensor(weights, dtype=torch.float32) if not isinstance(weights, torch.Tensor) else weights.float()
    )
    if tensor.dim() not in (1, 2) or tensor.size(-1) != num_objectives:
        raise ValueError(
            f"`{name}` has shape {tuple(tensor.shape)}, expected ({num_objectives},) or (batch, {num_objectives}): "
            f"give one weight per objective."
        )
    if not torch.isfinite(tensor).all():
        raise ValueError(f"`{name}` contains NaN or inf: {tensor.tolist()}. Give finite weights that sum to 1.")
    if (tensor < -SIMPLEX_TOLERANCE).any():
        raise ValueError(f"`{name}` has negative entries: {tensor.tolist()}. Weights must be >= 0 and sum to 1.")
    sums = tensor.sum(-1)
    if ((sums - 1).abs() > SIMPLEX_TOLERANCE).any():
        raise ValueError(
            f"`{name}` does not lie on the simplex (rows sum to {sums.tolist()}): weights must sum to 1. "
            f"Normalise them, e.g. `w / w.sum(-1, keepdim=True)`."
        )
    return tensor


def sample_group_weights(
    distribution: str,
    num_groups: int,
    num_objectives: int,
    seed: int,
    stream: Sequence[int],
    concentration: float | Sequence[float] = 1.0,
    fixed_weights: Sequence[Sequence[float]] | None = None,
    one_hot_probability: float = 0.0,
) -> torch.Tensor:
    """Draw one weighting per prompt group, deterministically from `(seed, *stream)`.

    With `one_hot_probability` p > 0 the draw is from the mixture p·one-hot + (1 − p)·`distribution`: each group is,
    with probability p, replaced by a uniformly chosen corner (see `one_hot_probability`, the schedule of p).

    Args:
        distribution: one of `"dirichlet"`, `"uniform"` (Dirichlet(1): uniform on the simplex), `"one_hot"` (a
            uniformly chosen corner: Rewarded Soups' training regime), `"fixed"` (uniform choice among
            `fixed_weights`).
        num_groups: G, the number of global prompt groups in the generation batch.
        num_objectives: m.
        seed: the run's seed.
        stream: position in the stream; the trainer uses `(0, micro-step of the generation)` in training and
            `(1, evaluation call)` in evaluation.
        concentration: Dirichlet concentration, a scalar or one value per objective.
        fixed_weights: `(K, m)` weightings for `"fixed"`.
        one_hot_probability: p in [0, 1], the probability that a group's weighting is a one-hot corner instead.

    Returns:
        `(G, m)` float32 tensor, each row on the simplex.
    """
    rng = np.random.default_rng([seed, *stream])
    if distribution == "uniform":
        distribution, concentration = "dirichlet", 1.0
    if distribution == "dirichlet":
        alpha = np.broadcast_to(np.asarray(concentration, dtype=np.float64), (num_objectives,))
        weights = rng.dirichlet(alpha, size=num_groups)
    elif distribution == "one_hot":
        weights = np.eye(num_objectives)[rng.integers(num_objectives, size=num_groups)]
    elif distribution == "fixed":
        table = np.asarray(fixed_weights, dtype=np.float64)
        weights = table[rng.integers(len(table), size=num_groups)]
    else:
        raise ValueError(f"Unknown weight distribution {distribution!r}; choose one of {WEIGHT_DISTRIBUTIONS}.")
    if one_hot_probability > 0:
        # A key of its own (the KL weights' is 1): the corners replace rows of the draw above without moving it, so
        # that p = 0 draws exactly what a run without a schedule draws, and p does not shift the other rows.
        corner_rng = np.random.default_rng([seed, *stream, 2])
        is_corner = corner_rng.random(num_groups) < one_hot_probability  # (G,)
        corners = np.eye(num_objectives)[corner_rng.integers(num_objectives, size=num_groups)]  # (G, m)
        weights = np.where(is_corner[:, None], corners, weights)
    return torch.as_tensor(weights, dtype=torch.float32)


def one_hot_probability(
    step: int, max_steps: int, one_hot_fraction: float, anneal_fraction: float, final_probability: float
) -> float:
    """p at an optimizer step of the "corners first, then spread" weighting schedule.

    With t = step / max_steps: p = 1 (every group on a corner) while t < `one_hot_fraction`; then p falls linearly
    from 1 to `final_probability` over the next `anneal_fraction` of training; then p = `final_probability`.
    Each group's weighting is a one-hot corner with probability p, else drawn from the weight distribution.

    Args:
        step: the optimizer step, 0 ≤ step (≤ max_steps).
        max_steps: the number of optimizer steps of the run, > 0.
        one_hot_fraction, anneal_fraction: fractions of `max_steps`, each in [0, 1], summing to at most 1.
        final_probability: p after the anneal, in [0, 1].

    Returns:
        p in [final_probability, 1].
    """
    if max_steps <= 0:
        raise ValueError(f"The weighting schedule needs the run's number of steps, got max_steps={max_steps}.")
    progress = step / max_steps
    if progress < one_hot_fraction:
        return 1.0
    if progress < one_hot_fraction + anneal_fraction:
        return 1.0 - (1.0 - final_probability) * (progress - one_hot_fraction) / anneal_fraction
    return final_probability


def sample_group_kl_weights(
    num_groups: int,
    seed: int,
    stream: Sequence[int],
    choices: Sequence[float] | None = None,
    log_uniform_range: Sequence[float] | None = None,
) -> torch.Tensor:
    """Draw one KL weight α per prompt group (multi-α training), from its own stream.

    Exactly one of `choices` (uniform choice) or `log_uniform_range` (`(low, high)`, log-uniform) is given.

    Returns:
        `(G,)` float32 tensor.
    """
    # A distinct last key keeps the α stream independent of the weighting stream drawn at the same position.
    rng = np.random.default_rng([seed, *stream, 1])
    if choices is not None:
        values = np.asarray(choices, dtype=np.float64)[rng.integers(len(choices), size=num_groups)]
    else:
        low, high = log_uniform_range
        values = np.exp(rng.uniform(math.log(low), math.log(high), size=num_groups))
    return torch.as_tensor(values, dtype=torch.float32)


def kl_conditioning_vector(weights: torch.Tensor, kl_weight: torch.Tensor, min_kl_weight: float) -> torch.Tensor:
    """Fold the KL weight into the conditioning vector (multi-α CLP).

    With an extra objective whose reward is 0, the weighting `(s·w, 1 − s)` optimises `s·w·R − α0·KL`, that is
    `w·R − (α0 / s)·KL`. So α is encoded as `s = α0 / α` with `α0 = min_kl_weight`, and the policy gets one more
    conditioned block whose weight is `1 − s` (zero at the smallest α).

    Args:
        weights: `(B, m)` reward weightings.
        kl_weight: `(B,)` KL weights, each >= `min_kl_weight` > 0.
        min_kl_weight: α0, the smallest KL weight the model was trained on.

    Returns:
        `(B, m + 1)` conditioning vectors on the simplex.
    """
    scale = (min_kl_weight / kl_weight).clamp(max=1.0).unsqueeze(-1)  # (B, 1)
    return torch.cat([scale * weights, 1 - scale], dim=-1)


def simplex_grid(num_objectives: int, points_per_edge: int) -> torch.Tensor:
    """All weightings whose entries are multiples of `1 / (points_per_edge - 1)` (a simplex lattice).

    For m = 2 and `points_per_edge=5` this is `[[1, 0], [.75, .25], [.5, .5], [.25, .75], [0, 1]]`.

    Returns:
        `(K, m)` float32 tensor, K = C(points_per_edge + m − 2, m − 1), ordered from the first corner.
    """
    if points_per_edge < 2:
        raise ValueError(f"`points_per_edge` must be >= 2 to include the corners, got {points_per_edge}.")
    steps = points_per_edge - 1
    rows = [
        counts for counts in itertools.product(range(steps, -1, -1), repeat=num_objectives) if sum(counts) == steps
    ]
    return torch.tensor(rows, dtype=torch.float32) / steps
