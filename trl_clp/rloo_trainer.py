"""`MultiObjectiveTrainer`: RLOO that trains one policy for every weighting of several rewards (CLP)."""

from __future__ import annotations

import torch
from trl import RLOOTrainer
from trl.trainer.utils import nanstd

from .online_trainer import ConditionedTrainerMixin
from .rloo_config import MultiObjectiveConfig
from .scalarization import leave_one_out_advantages, objective_rewards


class MultiObjectiveTrainer(ConditionedTrainerMixin, RLOOTrainer):
    """CLP on [`~trl.RLOOTrainer`]: the conditioning of `ConditionedTrainerMixin` (see there for every change
    with respect to RLOO) with RLOO's leave-one-out baseline on the per-row rewards `w·R − α·KL`.

    Args:
        model, reward_funcs, peft_config, and the other arguments: as for `ConditionedTrainerMixin`.
        args: a [`MultiObjectiveConfig`].
    """

    config_class = MultiObjectiveConfig
    _tag_names = ["trl", "rloo", "clp", "trl-clp"]

    def _policy_logps(self, output, batch_size):
        return output["old_logps"]  # RLOO always scores the completions under the sampling policy

    def _rewards_and_advantages(self, rewards_per_objective, weights, kl, kl_weight, num_generations):
        rewards = self._scalarize(rewards_per_objective, weights, kl, kl_weight, self.reward_clip_range)  # (N,)
        advantages = leave_one_out_advantages(rewards, num_generations)
        if self.normalize_advantages:
            advantages = (advantages - torch.nanmean(advantages)) / (nanstd(advantages) + 1e-4)
        return rewards, torch.nan_to_num(advantages, nan=0.0)

    def _objective_advantages(self, rewards_per_objective, weights, kl, kl_weight, num_generations):
        # Leave-one-out is linear in the rewards and the normalisation uses the scalar advantages' statistics, so
        # Σ_i w_i A_i is the advantage `_rewards_and_advantages` returns.
        advantages = leave_one_out_advantages(objective_rewards(rewards_per_objective, kl, kl_weight), num_generations)
        if self.normalize_advantages:
            scalar = (advantages * weights).sum(dim=1)  # (N,) the leave-one-out advantages of w·R − α·KL
            advantages = (advantages - torch.nanmean(scalar)) / (nanstd(scalar) + 1e-4)
        return torch.nan_to_num(advantages, nan=0.0)
