"""`MultiObjectiveDPOConfig`: `DPOConfig` plus the fields of Conditional Language Policy training from preferences."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from trl import DPOConfig

from .conditioning_fields import SharedConditioningFields, parameters_docstring

PREFERENCE_LAYOUTS = ("labels", "scores")
# The DPO losses whose pair loss is a function ℓ of one signed pair score, so that an objective preferring the other
# response is the same loss with the sign flipped (see `trl_clp.preference_loss`).
DPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo")


@dataclass
class PreferenceFields:
    """The fields DPO-CLP adds beyond the shared ones (kept apart so that the docstring block lists them)."""

    preference_layout: str = field(
        default="labels",
        metadata={
            "help": "How the dataset says which response each objective prefers: 'labels' (columns `chosen`, "
            "`rejected`, `objective_labels`: per objective +1 if it prefers `chosen`, -1 if it prefers `rejected`, 0 "
            "if neither) or 'scores' (columns `chosen_scores` and `rejected_scores`: one score per objective and "
            "response; under a weighting w the pair is ordered by w·(chosen_scores - rejected_scores)).",
            "choices": list(PREFERENCE_LAYOUTS),
        },
    )
    score_margin: float = field(
        default=0.0,
        metadata={
            "help": "For preference_layout='scores': a pair whose weighted score difference |w·Δr| is below this "
            "margin (or exactly 0) is left out of the loss under that w; the share left out is logged as "
            "`pairs/dropped`."
        },
    )
    score_temperature: float | None = field(
        default=None,
        metadata={
            "help": "For preference_layout='scores': None (default) orders each pair by the sign of w·Δr, Δr = "
            "chosen_scores - rejected_scores (a hard label: DPO on the pair as binarised under w; exact ties left "
            "out); a value τ > 0 uses the soft preference p = sigmoid(w·Δr / τ), the Bradley-Terry probability "
            "that `chosen` wins when w·r is a reward on the scale τ, so a small difference asks for a small "
            "margin. τ is in the scores' units: choose it from their spread (e.g. the typical |w·Δr|)."
        },
    )


@dataclass
class MultiObjectiveDPOConfig(SharedConditioningFields, PreferenceFields, DPOConfig):
    r"""
    Configuration for [`MultiObjectiveDPOTrainer`]: [`~trl.DPOConfig`] plus the fields below. Only the fields of
    Conditional Language Policy (CLP, https://huggingface.co/papers/2407.15762) training and of the preference layout
    are new; every DPO field keeps its meaning (`beta` is DPO's β), except:

    - `objective_names` is required: it says how many objectives the dataset's labels or scores have, and names them.
    - `loss_type` is one of 'sigmoid', 'hinge', 'ipo' (a single loss; with per-objective preferences the pair loss
      is mixed over the objectives, see docs/preference.md).

    Refused because they cannot be honoured per row: other loss types and loss combinations, `ld_alpha`,
    `f_divergence_type` other than 'reverse_kl', `use_weighting` (WPO), and conditioning='logit' (DPO reads
    `lm_head.weight` directly, so an adapter on it would not be trained); `use_liger_kernel` is refused as untested
    with per-row conditioning. `loss_weights` (one weight, for the one loss) scales the loss as in DPO. With conditioning='prompt' (the prompting
    baseline) each pair's weighting is written into the policy's prompt (`prompt_template`) and one shared LoRA is
    trained; the reference sees the prompt as written in the data, and both score the same completion tokens (those
    left by TRL's `keep_start` truncation at `max_length`: the policy's rows are longer by the weighting's text;
    `truncation_mode='keep_end'`, which would cut the weighting, is refused).

    The LoRA rank, alpha and targets of one objective come from the trainer's `peft_config` (a `peft.LoraConfig`;
    default rank 8, alpha 16, all linear layers); conditioned layers get one such block per objective. The
    reference is the base model with the adapter disabled.
    """

    def __post_init__(self):
        if self.preference_layout not in PREFERENCE_LAYOUTS:
            raise ValueError(
                f"`preference_layout` must be one of {PREFERENCE_LAYOUTS}, got {self.preference_layout!r}."
            )
        if not (math.isfinite(self.score_margin) and self.score_margin >= 0):
            raise ValueError(f"`score_margin` must be a finite value >= 0, got {self.score_margin}.")
        if self.score_margin and self.preference_layout != "scores":
            raise ValueError(
                "`score_margin` applies to preference_layout='scores' only: set that layout, or remove the margin."
            )
        if self.score_temperature is not None:
            if not (math.isfinite(self.score_temperature) and self.score_temperature > 0):
                raise ValueError(
                    f"`score_temperature` must be a finite value > 0 (or None for the hard preference), got "
                    f"{self.score_temperature}."
                )
            if self.preference_layout != "scores":
                raise ValueError(
                    "`score_temperature` applies to preference_layout='scores' only: set that layout, or remove it."
                )
        if self.conditioning == "prompt" and self.truncation_mode == "keep_end" and self.max_length is not None:
            raise ValueError(
                "truncation_mode='keep_end' cuts the start of the prompt, where conditioning='prompt' writes the "
                "weighting, and TRL deprecates it: use truncation_mode='keep_start' (the default)."
            )
        if self.conditioning == "logit":
            raise ValueError(
                "conditioning='logit' is not supported for DPO: TRL's DPO computes log-probabilities from "
                "`lm_head.weight` directly, so a conditioned output layer would never be trained. Choose "
                "conditioning='full' or 'attn'."
            )
        if self.objective_names is None or len(self.objective_names) < 2:
            raise ValueError(
                f"`objective_names` is {self.objective_names}: DPO-CLP takes the objectives from the config, not from "
                "reward functions. Give one name per objective of the dataset's labels or scores, at least 2 (e.g. "
                "objective_names=['helpful', 'harmless'])."
            )
        if self.use_liger_kernel:
            raise ValueError(
                "`use_liger_kernel` is not supported by DPO-CLP: Liger replaces the model's layers with its own "
                "kernels, a path the per-row mixing of the LoRA blocks is not tested on. Remove it."
            )
        super().__post_init__()  # the shared checks, then DPOConfig's (which makes `loss_type` a list)
        if len(self.loss_type) != 1 or self.loss_type[0] not in DPO_LOSS_TYPES:
            raise ValueError(
                f"`loss_type` is {self.loss_type}: DPO-CLP supports one of {list(DPO_LOSS_TYPES)}, the losses of one "
                "signed pair score. Set loss_type='sigmoid' (DPO), 'hinge' (SLiC) or 'ipo'."
            )
        if self.ld_alpha is not None or self.f_divergence_type != "reverse_kl" or self.use_weighting:
            raise ValueError(
                "`ld_alpha`, `f_divergence_type` other than 'reverse_kl' and `use_weighting` are not supported by "
                "DPO-CLP: remove them (the pair loss is the standard DPO margin, mixed over the objectives)."
            )
        if self.parsed_fixed_weights is not None and len(self.parsed_fixed_weights[0]) != len(self.objective_names):
            raise ValueError(
                f"`fixed_weights` rows have {len(self.parsed_fixed_weights[0])} entries for "
                f"{len(self.objective_names)} `objective_names`: give one weight per objective."
            )


MultiObjectiveDPOConfig.__doc__ += parameters_docstring(SharedConditioningFields) + parameters_docstring(
    PreferenceFields
).replace("\n    Parameters:\n", "\n", 1)
