"""The fields CLP adds to a TRL online trainer's config (`ConditioningFields`), mixed into RLOO's and GRPO's configs.

`ConditioningFields` (the shared fields of `trl_clp.conditioning_fields` plus the online ones) is mixed into
`MultiObjectiveConfig` (`trl_clp.rloo_config`) and `MultiObjectiveGRPOConfig` (`trl_clp.grpo_config`); each config's
`Parameters:` docstring block is generated from the fields' `help` by `parameters_docstring`, so a field is documented
in one place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .conditioning_fields import SharedConditioningFields
from .gguf import CONVERT_HINT
from .scalarization import SCALARIZATIONS

REWARD_NORMALIZATIONS = ("none", "running")
BLOCK_SIGNALS = ("mixed", "own")


@dataclass
class ConditioningFields(SharedConditioningFields):
    """The fields CLP adds to a TRL online trainer's config, and their checks: the shared ones
    (`SharedConditioningFields`) plus the KL weight, reward normalisation and scalarisation of online training.

    Mixed into `MultiObjectiveConfig` (RLOO) and `MultiObjectiveGRPOConfig` (GRPO) ahead of the TRL config class:
    `__post_init__` checks these fields, then calls the TRL config's.
    """

    kl_weights: list[float] | None = field(
        default=None,
        metadata={
            "help": "Condition the policy on the KL weight α (multi-α CLP): each group draws α uniformly from this "
            "list. All values must be > 0. Leave unset to use the fixed `beta`."
        },
    )
    kl_weight_range: list[float] | None = field(
        default=None,
        metadata={
            "help": "Like `kl_weights`, but α is drawn log-uniformly from [low, high] (two values, low > 0). Set at "
            "most one of `kl_weights` and `kl_weight_range`."
        },
    )
    reward_normalization: str = field(
        default="none",
        metadata={
            "help": "Per-objective normalisation before weighting: 'none' or 'running' ((R_i − mean_i) / std_i with "
            "running statistics over all rewards seen). Order: normalise each objective, scalarise with w, clip "
            "(RLOO's `reward_clip_range`), subtract α·KL, the trainer's group baseline.",
            "choices": list(REWARD_NORMALIZATIONS),
        },
    )
    scalarization: str = field(
        default="linear",
        metadata={
            "help": "How each row's weighting w turns the per-objective rewards R into one reward: 'linear' (w·R) or "
            "'tchebycheff' (−max_i w_i (z_i − R_i), z the ideal point). The weighted sum only reaches the convex part "
            "of a Pareto front; Tchebycheff reaches concave parts too.",
            "choices": list(SCALARIZATIONS),
        },
    )
    ideal_point: list[float] | None = field(
        default=None,
        metadata={
            "help": "For scalarization='tchebycheff': the ideal point z, one value per objective (after "
            "`reward_normalization`). Default: the running per-objective maxima of the raw training rewards, normalised "
            "with the current statistics when used."
        },
    )
    tchebycheff_augmentation: float = field(
        default=0.0,
        metadata={
            "help": "For scalarization='tchebycheff': ρ >= 0 of the augmented form, which subtracts ρ·Σ_i (z_i − R_i); "
            "a small ρ (e.g. 0.01) makes every optimum Pareto-optimal, not only weakly."
        },
    )
    steerability_window: int = field(
        default=256,
        metadata={
            "help": "Completions the logged steerability statistics (`rewards/<objective>/slope_vs_weight`, `w_low`, "
            "`w_mid`, `w_high`) are fitted on: every completion since the last log, and at least this many of the "
            "latest ones (pooled across steps). A batch holds one weighting per prompt group, too few for a fit of "
            "its own; 0 fits on the completions since the last log only."
        },
    )

    block_signal: str = field(
        default="mixed",
        metadata={
            "help": "The advantage each objective's LoRA block learns from. 'mixed' (the CLP paper): every block from "
            "the advantage A of the row's scalar reward w·R − α·KL, which reaches block i as w_i·A and flips sign with "
            "w where the rewards conflict. 'own' (beyond the paper): block i from its own objective's advantage A_i at "
            "the mixed policy (w_i·A_i), the cross terms added back as `cross_term_start`/`cross_term_end` say; other "
            "blocks and shared LoRA layers keep A. Needs a linear scalarisation and a policy ratio of 1 at each update "
            "(`num_iterations=1`, `steps_per_generation` = `gradient_accumulation_steps`, no dropout). See "
            "docs/trainer.md, 'Each block's learning signal'.",
            "choices": list(BLOCK_SIGNALS),
        },
    )
    cross_term_start: float = field(
        default=0.0,
        metadata={
            "help": "With block_signal='own': the fraction of `max_steps` at which the cross terms start to come back. "
            "Block i learns from (1 − λ)·A_i + λ·A, λ rising linearly from 0 at `cross_term_start` to 1 at "
            "`cross_term_end` (today's signal from then on); both >= 1 keeps λ = 0 for the whole run."
        },
    )
    cross_term_end: float = field(
        default=1.0,
        metadata={
            "help": "With block_signal='own': the fraction of `max_steps` at which λ reaches 1 (>= `cross_term_start`)."
        },
    )

    def __post_init__(self):
        # Ours come first (they need none of the values TRL's config derives), then the shared ones, then TRL's.
        if self.reward_weights is not None:
            raise ValueError(
                "`reward_weights` is fixed for the whole run, while CLP draws a weighting per prompt group. Remove "
                "`reward_weights` and choose `weight_distribution` (use 'fixed' with `fixed_weights` for given ones)."
            )
        if self.num_generations is None or self.num_generations < 2:
            raise ValueError(
                f"`num_generations` is {self.num_generations}: the group baseline needs at least 2 "
                "completions per prompt. Set `num_generations >= 2`."
            )
        if self.use_vllm:
            raise ValueError(
                "`use_vllm=True` is not supported: vLLM merges the adapter into the weights, which loses the per-row "
                "weighting. Set `use_vllm=False` (generation then runs through transformers, rows conditioned "
                "individually)."
            )
        if self.use_transformers_continuous_batching or self.use_transformers_paged:
            raise ValueError(
                "Continuous batching packs rows from different prompts together, which loses the per-row weighting. "
                "Set `use_transformers_continuous_batching=False`."
            )
        if (self.generation_kwargs or {}).get("num_return_sequences", 1) > 1:
            raise ValueError(
                "`generation_kwargs` sets `num_return_sequences`, which would return several completions per row where "
                "the trainer expects one. Set `num_generations` for the number of completions per prompt instead."
            )
        if self.reward_normalization not in REWARD_NORMALIZATIONS:
            raise ValueError(
                f"`reward_normalization` must be one of {REWARD_NORMALIZATIONS}, got {self.reward_normalization!r}."
            )
        if self.steerability_window < 0:
            raise ValueError(
                f"`steerability_window` must be >= 0 (a number of completions), got {self.steerability_window}."
            )
        self._check_kl_weights()
        if self.conditioning == "prompt" and self.conditions_on_kl_weight:
            raise ValueError(
                "The prompting baseline does not condition on the KL weight. Unset `kl_weights`/`kl_weight_range` or "
                "choose conditioning='full', 'attn' or 'logit'."
            )
        self._check_scalarization()
        super().__post_init__()
        self._check_block_signal()  # after TRL's, which resolves `steps_per_generation`
        # After TRL's checks, which turn `model_init_kwargs` given as JSON on the command line into a dict.
        if "gguf_file" in (self.model_init_kwargs or {}):
            raise ValueError(
                "`model_init_kwargs` sets `gguf_file`, which TRL's model loading does not pass on ('Unrecognized "
                f"model'), and a GGUF-loaded model cannot be saved. {CONVERT_HINT}"
            )

    @property
    def conditions_on_kl_weight(self) -> bool:
        return self.kl_weights is not None or self.kl_weight_range is not None

    def _check_scalarization(self):
        if self.scalarization not in SCALARIZATIONS:
            raise ValueError(f"`scalarization` must be one of {SCALARIZATIONS}, got {self.scalarization!r}.")
        if self.scalarization != "tchebycheff" and (self.ideal_point is not None or self.tchebycheff_augmentation):
            raise ValueError(
                "`ideal_point` and `tchebycheff_augmentation` are used with scalarization='tchebycheff' only: set it, "
                "or remove them."
            )
        if not self.tchebycheff_augmentation >= 0:
            raise ValueError(f"`tchebycheff_augmentation` must be >= 0, got {self.tchebycheff_augmentation}.")
        if self.ideal_point is not None:
            self.ideal_point = [float(v) for v in self.ideal_point]
            if not all(math.isfinite(v) for v in self.ideal_point):
                raise ValueError(f"`ideal_point` must be finite, got {self.ideal_point}.")

    def _check_block_signal(self):
        if self.block_signal not in BLOCK_SIGNALS:
            raise ValueError(f"`block_signal` must be one of {BLOCK_SIGNALS}, got {self.block_signal!r}.")
        if self.block_signal == "mixed":
            if (self.cross_term_start, self.cross_term_end) != (0.0, 1.0):
                raise ValueError(
                    "`cross_term_start`/`cross_term_end` schedule the own-advantage signal: set block_signal='own', "
                    "or remove them."
                )
            return
        if not 0 <= self.cross_term_start <= self.cross_term_end:
            raise ValueError(
                f"`cross_term_start` ({self.cross_term_start}) and `cross_term_end` ({self.cross_term_end}) must satisfy "
                "0 <= start <= end (fractions of max_steps)."
            )
        problems = []
        if self.scalarization != "linear":
            problems.append(
                f"scalarization={self.scalarization!r} is not linear in the rewards, so the advantage does not split "
                "into the objectives' advantages: use scalarization='linear'"
            )
        if self.conditioning in ("prompt", "logit"):
            problems.append(
                f"conditioning={self.conditioning!r} has no per-objective block trained through a LoRA layer's "
                "forward (prompt: none; logit: the output layer runs through a fused head): use 'full' or 'attn'"
            )
        if self.num_iterations != 1 or self.steps_per_generation != self.gradient_accumulation_steps:
            problems.append(
                f"num_iterations={self.num_iterations} and steps_per_generation={self.steps_per_generation} (with "
                f"gradient_accumulation_steps={self.gradient_accumulation_steps}) update a batch with a policy that "
                "moved since it was sampled, where PPO clipping depends on each advantage's sign, which differs per "
                "block: set num_iterations=1 and steps_per_generation=gradient_accumulation_steps"
            )
        problems += self._block_signal_problems()
        if problems:
            raise ValueError("block_signal='own' cannot apply here:\n- " + "\n- ".join(problems))

    def _block_signal_problems(self) -> list[str]:
        """Hook: the TRL trainer's own settings under which a per-block advantage is not exact."""
        return []

    def _check_kl_weights(self):
        if self.kl_weights is not None and self.kl_weight_range is not None:
            raise ValueError("Set at most one of `kl_weights` and `kl_weight_range`.")
        if self.kl_weights is not None and (not self.kl_weights or min(self.kl_weights) <= 0):
            raise ValueError(
                f"`kl_weights` must be a non-empty list of values > 0, got {self.kl_weights}: KL-weight conditioning "
                "encodes α as α_min/α."
            )
        if self.kl_weight_range is not None:
            if len(self.kl_weight_range) != 2 or not 0 < self.kl_weight_range[0] < self.kl_weight_range[1]:
                raise ValueError(
                    f"`kl_weight_range` must be [low, high] with 0 < low < high, got {self.kl_weight_range}."
                )

    def check_num_objectives(self, num_objectives: int) -> None:
        """Check the per-objective fields against the number of reward functions (called by the trainer)."""
        if self.objective_names is not None and len(self.objective_names) != num_objectives:
            raise ValueError(
                f"{len(self.objective_names)} `objective_names` for {num_objectives} reward functions: give one name "
                "per reward function."
            )
        if self.parsed_fixed_weights is not None and len(self.parsed_fixed_weights[0]) != num_objectives:
            raise ValueError(
                f"`fixed_weights` rows have {len(self.parsed_fixed_weights[0])} entries for {num_objectives} reward "
                "functions: give one weight per reward function."
            )
        if self.ideal_point is not None and len(self.ideal_point) != num_objectives:
            raise ValueError(
                f"`ideal_point` has {len(self.ideal_point)} entries for {num_objectives} reward functions: give one "
                "value per reward function."
            )
        if num_objectives < 2:
            raise ValueError("CLP needs at least 2 reward functions to condition on; use TRL's trainer for one.")

    @property
    def min_kl_weight(self) -> float | None:
        if self.kl_weights is not None:
            return float(min(self.kl_weights))
        if self.kl_weight_range is not None:
            return float(self.kl_weight_range[0])
        return None
