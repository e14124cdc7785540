"""Reward maths of CLP, as pure functions, and ready-made reward functions with TRL's signature.

Order of operations for one generation batch of N = G·K completions (G prompt groups of K completions each):

1. per-objective rewards `R` `(N, m)` (NaN where a reward function returned None),
2. optional per-objective normalisation: `(R − mean) / std` with running statistics,
3. scalarisation with each row's weighting: `r = Σ_i w_i R_i` (NaN terms skipped, as in TRL),
4. optional clipping of `r` to `reward_clip_range`,
5. KL penalty: `r − α · KL` with each row's α,
6. leave-one-out baseline within each group; optional advantage whitening.
"""

from __future__ import annotations

import importlib

import torch


def scalarize_rewards(
    rewards_per_objective: torch.Tensor,
    weights: torch.Tensor,
    kl: torch.Tensor | None = None,
    kl_weight: torch.Tensor | None = None,
    clip_range: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Per-row scalar reward `w·R − α·KL` (steps 3–5 above).

    Args:
        rewards_per_objective: `(N, m)`; NaN marks "not applicable".
        weights: `(N, m)`, each row the weighting its completion was sampled under.
        kl: `(N,)` sequence-level KL estimate `Σ_t log π(y_t) − log π_ref(y_t)`, or None.
        kl_weight: `(N,)` α of each row, or None.
        clip_range: optional `(low, high)` applied to `w·R` before the KL penalty (TRL's `reward_clip_range`).

    Returns:
        `(N,)`; NaN for rows where every objective is NaN (unscorable, as in TRL).
    """
    scalar = (rewards_per_objective * weights).nansum(dim=1)  # (N,)
    scalar[torch.isnan(rewards_per_objective).all(dim=1)] = torch.nan
    if clip_range is not None:
        scalar = scalar.clamp(min=clip_range[0], max=clip_range[1])
    if kl is not None and kl_weight is not None:
        scalar = scalar - kl_weight * kl
    return scalar


def leave_one_out_advantages(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    """RLOO advantages: each reward minus the mean of its group's other scorable rewards.

    `A_j = r_j − (Σ_{k≠j} r_k) / (n − 1)` with n the group's count of non-NaN rewards. Rows are grouped
    consecutively: rows `[g·K, (g+1)·K)` form group g. NaN rewards stay NaN (the caller zeroes them).

    Args:
        rewards: `(G·K,)`.
        num_generations: K >= 2.

    Returns:
        `(G·K,)`.
    """
    grouped = rewards.view(-1, num_generations)  # (G, K)
    counts = (~torch.isnan(grouped)).sum(dim=1, keepdim=True)  # (G, 1)
    totals = torch.nansum(grouped, dim=1, keepdim=True)  # (G, 1)
    baselines = (totals - grouped) / (counts - 1)  # (G, K)
    return (grouped - baselines).view(-1)


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


def _completion_text(completion) -> str:
    # TRL passes strings for standard prompts and a list of messages for conversational ones.
    return completion if isinstance(completion, str) else completion[-1]["content"]


def _prompt_text(prompt) -> str:
    return prompt if isinstance(prompt, str) else " ".join(message["content"] for message in prompt)


def brevity_reward(completions, completion_ids, max_length: int | None = None, **kwargs) -> list[float]:
    """`1 − tokens / max_length` per completion: 1 for an empty answer, 0 at the length limit.

    `max_length` defaults to the longest completion in the batch; pass it with `functools.partial` to pin it
    to `max_completion_length` (scores are then comparable across batches).
    """
    lengths = [len(ids) for ids in completion_ids]
    limit = max_length or max(max(lengths), 1)
    return [1.0 - min(length, limit) / limit for length in lengths]


def source_coverage_reward(prompts, completions, **kwargs) -> list[float]:
    """Fraction of the distinct words of the prompt that the completion repeats, in [0, 1].

    A crude but real faithfulness/coverage proxy: it grows with how much of the source the answer covers, so it
    pulls against brevity.
    """
    scores = []
    for prompt, completion in zip(prompts, completions, strict=True):
        source_words = set(_prompt_text(prompt).lower().split())
        answer_words = set(_completion_text(completion).lower().split())
        scores.append(len(source_words & answer_words) / len(source_words) if source_words else 0.0)
    return scores


def _character_fraction(completions, predicate) -> list[float]:
    texts = [_completion_text(completion) for completion in completions]
    return [sum(map(predicate, text)) / len(text) if text else 0.0 for text in texts]


def lowercase_reward(completions, **kwargs) -> list[float]:
    """Fraction of the completion's characters that are lowercase letters (a calm, prose-like register)."""
    return _character_fraction(completions, str.islower)


def uppercase_reward(completions, **kwargs) -> list[float]:
    """Fraction of the completion's characters that are uppercase letters (an emphatic register)."""
    return _character_fraction(completions, str.isupper)


def titlecase_reward(completions, **kwargs) -> list[float]:
    """Fraction of the completion's words written in Title case ("River"), a third register."""
    scores = []
    for completion in completions:
        words = _completion_text(completion).split()
        scores.append(sum(w.istitle() and len(w) > 1 for w in words) / len(words) if words else 0.0)
    return scores


BUILTIN_REWARDS = {
    "lowercase": lowercase_reward,
    "uppercase": uppercase_reward,
    "titlecase": titlecase_reward,
    "brevity": brevity_reward,
    "source_coverage": source_coverage_reward,
}


def resolve_reward_function(spec: str):
    """A reward function from a command-line spec.

    Args:
        spec: a built-in name (`lowercase`, `uppercase`, `titlecase`, `brevity`, `source_coverage`), a `module:function` import
            path, or anything else, returned unchanged for TRL to load as a reward-model id or path.
    """
    if spec in BUILTIN_REWARDS:
        return BUILTIN_REWARDS[spec]
    if ":" in spec:
        module_name, function_name = spec.split(":", 1)
        return getattr(importlib.import_module(module_name), function_name)
    return spec
