"""`MultiObjectiveConfig`: `RLOOConfig` plus the fields of Conditional Language Policy training (`ConditioningFields`)."""

from __future__ import annotations

from dataclasses import dataclass

from trl import RLOOConfig

from .conditioning_fields import parameters_docstring
from .online_config import REWARD_NORMALIZATIONS, ConditioningFields  # noqa: F401 (re-exported: old import path)


@dataclass
class MultiObjectiveConfig(ConditioningFields, RLOOConfig):
    r"""
    Configuration for [`MultiObjectiveTrainer`]: [`~trl.RLOOConfig`] plus the fields below. Only the fields of
    Conditional Language Policy (CLP, https://huggingface.co/papers/2407.15762) are new; every RLOO field keeps
    its meaning, except that `beta` is the KL weight α of the per-row reward `w·R − α·KL` (unless `kl_weights` or
    `kl_weight_range` conditions the policy on α) and `reward_weights` is replaced by sampled weightings. The
    defaults of `learning_rate` (1e-4, for LoRA), `gradient_checkpointing` and `dataloader_pin_memory` differ from
    TRL's, as their entries below say.

    The LoRA rank, alpha and targets of one objective come from the trainer's `peft_config` (a `peft.LoraConfig`;
    default rank 8, alpha 16, all linear layers); conditioned layers get one such block per objective.
    """

    def _block_signal_problems(self) -> list[str]:
        if self.reward_clip_range is not None:
            return ["`reward_clip_range` clips the scalar reward, which then no longer splits by objective: remove it"]
        return []


MultiObjectiveConfig.__doc__ += parameters_docstring(ConditioningFields)
