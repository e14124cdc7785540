"""`MultiObjectiveGRPOConfig`: `GRPOConfig` plus the fields of Conditional Language Policy training."""

from __future__ import annotations

from dataclasses import dataclass

from trl import GRPOConfig

from .conditioning_fields import parameters_docstring
from .online_config import ConditioningFields

MULTI_OBJECTIVE_AGGREGATIONS = ("sum_then_normalize", "normalize_then_sum")


@dataclass
class MultiObjectiveGRPOConfig(ConditioningFields, GRPOConfig):
    r"""
    Configuration for [`MultiObjectiveGRPOTrainer`]: [`~trl.GRPOConfig`] plus the fields of Conditional Language
    Policy training (the same as [`MultiObjectiveConfig`]'s, see `ConditioningFields`). Every GRPO field keeps its
    meaning per row, except:

    - `beta` is the KL weight α of the per-row reward `s(R; w) − α·KL` (CLP's objective, as in the RLOO trainer),
      not a KL term in the loss; `kl_weights`/`kl_weight_range` condition the policy on α.
    - `reward_weights` is replaced by the sampled weightings.
    - `learning_rate` defaults to 1e-4 (for LoRA), and `gradient_checkpointing` and `dataloader_pin_memory` to
      unset values resolved without warnings (see their entries below).
    - `multi_objective_aggregation`: `"sum_then_normalize"` scalarises each row with its weighting, then takes the
      group mean and, per `scale_rewards`, std; `"normalize_then_sum"` normalises each objective within its group,
      then takes `w·R` per row (linear scalarisation only), then normalises over the batch.

    Refused here because they cannot be honoured with per-row weightings: a fixed `reward_weights`, vLLM (it
    merges the adapter), continuous batching (it packs rows) and Tchebycheff with `normalize_then_sum` (a weighted sum
    by definition). `use_bias_correction_kl` has no effect: there is no KL term in the loss to correct.
    """

    def __post_init__(self):
        if self.multi_objective_aggregation not in MULTI_OBJECTIVE_AGGREGATIONS:
            raise ValueError(
                f"`multi_objective_aggregation` must be one of {MULTI_OBJECTIVE_AGGREGATIONS}, got "
                f"{self.multi_objective_aggregation!r}."
            )
        if self.multi_objective_aggregation == "normalize_then_sum" and self.scalarization != "linear":
            raise ValueError(
                "multi_objective_aggregation='normalize_then_sum' sums the group-normalised rewards with weights w, a "
                f"linear scalarisation, so scalarization={self.scalarization!r} cannot apply. Use "
                "multi_objective_aggregation='sum_then_normalize' (add reward_normalization='running' to put the "
                "objectives on one scale first), or scalarization='linear'."
            )
        super().__post_init__()

    def _block_signal_problems(self) -> list[str]:
        problems = []
        if self.loss_type == "vespo":
            problems.append("loss_type='vespo' weights tokens by the advantage's sign: choose another `loss_type`")
        if self.off_policy_mask_threshold is not None:
            problems.append("`off_policy_mask_threshold` masks rows by the advantage's sign: remove it")
        if self.entropy_coef != 0.0 or self.use_adaptive_entropy:
            problems.append(
                "an entropy bonus (`entropy_coef`, `use_adaptive_entropy`) is a loss term without the advantage, whose "
                "gradient the per-block coefficients would scale: remove it"
            )
        return problems


MultiObjectiveGRPOConfig.__doc__ += parameters_docstring(ConditioningFields)
