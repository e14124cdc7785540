"""`MultiObjectiveGRPOTrainer`: GRPO that trains one policy for every weighting of several rewards (CLP)."""

from __future__ import annotations

import torch
from trl import GRPOTrainer

from .grpo_config import MultiObjectiveGRPOConfig
from .model_card import GRPO_STEP
from .online_trainer import ConditionedTrainerMixin
from .scalarization import (
    batch_normalized,
    group_centered,
    group_normalized_rewards,
    group_relative_advantages,
    group_relative_scale,
    objective_rewards,
)


class MultiObjectiveGRPOTrainer(ConditionedTrainerMixin, GRPOTrainer):
    """CLP on [`~trl.GRPOTrainer`]: the conditioning of `ConditionedTrainerMixin` (see there for every change with
    respect to the TRL trainer) with GRPO's group-relative advantages on the per-row rewards `s(R; w) − α·KL`.

    Each prompt group shares one weighting, so GRPO's group mean (and, per `scale_rewards`, std) is taken over
    rewards scalarised with one w; `multi_objective_aggregation="normalize_then_sum"` normalises each objective
    within its group before the per-row `w·R`. Every `loss_type` works unchanged: they only aggregate and clip the
    token losses. The KL weight α enters each row's reward, as in the RLOO trainer, not GRPO's loss (`beta` is
    neutralised after construction); see docs/grpo.md for why.

    Args:
        model, reward_funcs, peft_config, and the other arguments: as for `ConditionedTrainerMixin`. GRPO's `tools`,
            `rollout_func` and `environment_factory` are not supported (multi-turn rollouts regenerate subsets of
            rows, which would lose the rows' weightings).
        args: a [`MultiObjectiveGRPOConfig`].
    """

    config_class = MultiObjectiveGRPOConfig
    _tag_names = ["trl", "grpo", "clp", "trl-clp"]
    _card_step = GRPO_STEP

    def _policy_logps(self, output, batch_size):
        old_per_token_logps = output.get("old_per_token_logps")  # GRPO skips it when generation and updates align
        if old_per_token_logps is None:
            return super()._policy_logps(output, batch_size)
        return (old_per_token_logps * output["completion_mask"]).sum(1)

    def _rewards_and_advantages(self, rewards_per_objective, weights, kl, kl_weight, num_generations):
        if self.multi_objective_aggregation == "normalize_then_sum":
            normalized = group_normalized_rewards(rewards_per_objective, num_generations)  # (N, m)
            # Unscorable rows are decided from the raw rewards, as TRL does: an objective with a single value in its
            # group normalises to NaN and adds 0, but does not make the row unscorable.
            unscorable = torch.isnan(rewards_per_objective).all(dim=1)  # (N,)
            rewards = (normalized * weights).nansum(dim=1).masked_fill(unscorable, torch.nan)  # (N,)
            if kl is not None:
                rewards = rewards - kl_weight * kl
            advantages = batch_normalized(rewards)
        else:
            rewards = self._scalarize(rewards_per_objective, weights, kl, kl_weight)  # (N,)
            advantages = group_relative_advantages(rewards, num_generations, self.scale_rewards)
        return rewards, torch.nan_to_num(advantages, nan=0.0)

    def _objective_advantages(self, rewards_per_objective, weights, kl, kl_weight, num_generations):
        # Centring is linear and the scale comes from the scalar rewards, so Σ_i w_i A_i is the advantage
        # `_rewards_and_advantages` returns.
        rewards, _ = self._rewards_and_advantages(rewards_per_objective, weights, kl, kl_weight, num_generations)
        if self.multi_objective_aggregation == "normalize_then_sum":
            # NaN terms add 0 to the scalar reward (its nansum), which is NaN only where every raw reward is
            normalized = group_normalized_rewards(rewards_per_objective, num_generations).nan_to_num(nan=0.0)
            shares = objective_rewards(normalized, kl, kl_weight).masked_fill(
                torch.isnan(rewards).unsqueeze(1), torch.nan
            )
            advantages = batch_normalized(shares, reference=rewards)
        else:
            scale = group_relative_scale(rewards, num_generations, self.scale_rewards)  # (N,)
            shares = objective_rewards(rewards_per_objective, kl, kl_weight)  # (N, m)
            advantages = group_centered(shares, num_generations) / scale.unsqueeze(1)
        return torch.nan_to_num(advantages, nan=0.0)
