"""The configuration of CLP training: the fields every trainer's config adds (`ConditioningFields`), and RLOO's.

`ConditioningFields` is mixed into `MultiObjectiveConfig` (RLOO, here) and `MultiObjectiveGRPOConfig` (GRPO); each
config's `Parameters:` docstring block is generated from the fields' `help` by `parameters_docstring`, so a field is
documented in one place.
"""

from __future__ import annotations

import dataclasses
import math
import textwrap
from dataclasses import dataclass, field

import torch
from trl import RLOOConfig

from .conditioning.config import CONDITIONING_VARIANTS
from .conditioning.prompts import DEFAULT_PROMPT_TEMPLATE
from .sampling import SIMPLEX_TOLERANCE, WEIGHT_DISTRIBUTIONS
from .scalarization import SCALARIZATIONS

REWARD_NORMALIZATIONS = ("none", "running")


@dataclass
class ConditioningFields:
    """The fields CLP adds to a TRL online trainer's config, and their checks.

    Mixed into `MultiObjectiveConfig` (RLOO) and `MultiObjectiveGRPOConfig` (GRPO) ahead of the TRL config class:
    `__post_init__` checks these fields, then calls the TRL config's.
    """

    objective_names: list[str] | None = field(
        default=None,
        metadata={
            "help": "One name per reward function, in order; they label metrics, saved metadata and evaluation "
            "tables. Defaults to the reward functions' names."
        },
    )
    conditioning: str = field(
        default="full",
        metadata={
            "help": "Which parameters depend on the weighting: 'full' (every LoRA layer), 'attn' (attention "
            "projections; the rest is a shared LoRA), 'logit' (only the output layer), or 'prompt' (the weighting is "
            "written into the prompt and one shared LoRA is trained: the prompting baseline).",
            "choices": list(CONDITIONING_VARIANTS),
        },
    )
    conditioned_target_modules: list[str] | None = field(
        default=None,
        metadata={
            "help": "Module-name suffixes that get one LoRA block per objective. Defaults: every LoRA target for "
            "'full'; q_proj, k_proj, v_proj, o_proj for 'attn'; lm_head for 'logit'. Set it for architectures with "
            "other names (e.g. c_attn for GPT-2)."
        },
    )
    weight_distribution: str = field(
        default="dirichlet",
        metadata={
            "help": "How each prompt group's weighting w is drawn: 'dirichlet' (with `dirichlet_concentration`), "
            "'uniform' (uniform on the simplex), 'one_hot' (a random corner: trains each objective's block alone, "
            "i.e. Rewarded Soups), 'fixed' (uniform choice among `fixed_weights`).",
            "choices": list(WEIGHT_DISTRIBUTIONS),
        },
    )
    dirichlet_concentration: float = field(
        default=1.0,
        metadata={
            "help": "Concentration of the symmetric Dirichlet; below 1 favours the corners, above 1 the centre."
        },
    )
    fixed_weights: list[str] | None = field(
        default=None,
        metadata={
            "help": "Weightings for weight_distribution='fixed', each a comma-separated string such as '0.3,0.7' "
            "(lists of floats are accepted from Python). Kept as given; the parsed `(K, m)` weightings are "
            "`parsed_fixed_weights`."
        },
    )
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
            "`reward_normalization`). Default: the running per-objective maxima of the training rewards."
        },
    )
    tchebycheff_augmentation: float = field(
        default=0.0,
        metadata={
            "help": "For scalarization='tchebycheff': ρ >= 0 of the augmented form, which subtracts ρ·Σ_i (z_i − R_i); "
            "a small ρ (e.g. 0.01) makes every optimum Pareto-optimal, not only weakly."
        },
    )
    prompt_template: str = field(
        default=DEFAULT_PROMPT_TEMPLATE,
        metadata={
            "help": "For conditioning='prompt': the text put before each prompt; '{weights}' becomes "
            "'name1=0.30 name2=0.70'."
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
    # TRL fields whose defaults CLP changes.
    learning_rate: float = field(
        default=1e-4,
        metadata={
            "help": "The initial learning rate for AdamW. CLP trains LoRA adapters only, and LoRA needs a learning "
            "rate about 10 times that of full fine-tuning (TRL's 'LoRA Without Regret' guide): TRL's default, 1e-6, is "
            "meant for full fine-tuning and barely moves an adapter. 1e-4 suits LoRA on pretrained models (the "
            "recipes in examples/configs); tiny models trained from scratch take more (the offline demo uses 3e-3)."
        },
    )
    gradient_checkpointing: bool | None = field(
        default=None,
        metadata={
            "help": "Deprecated alias of `activation_checkpointing` in transformers 5 (setting it warns). Left unset, "
            "activations are checkpointed as by TRL's default, without the deprecation warning TRL's default of this "
            "field raises; `activation_checkpointing=False` turns checkpointing off."
        },
    )
    dataloader_pin_memory: bool | None = field(
        default=None,
        metadata={
            "help": "Pin the data loader's memory, for faster copies to an accelerator. Default: True where an "
            "accelerator (e.g. a CUDA GPU) is present, else False (pinning does nothing there, and torch warns)."
        },
    )

    def __post_init__(self):
        if self.bf16 is None and not self.fp16:
            # TRL turns bf16 on when unset, which raises where bf16 cannot run (a CPU, an older GPU): default to it
            # only where it runs. An explicit `bf16=True` there still fails, with transformers' message.
            from transformers.utils import is_torch_bf16_gpu_available

            self.bf16 = self.use_cpu or is_torch_bf16_gpu_available()
        if self.gradient_checkpointing is None and self.activation_checkpointing is None:
            # TRL's default (on), under the name transformers 5 reads without a FutureWarning; a value the user gave
            # to either name is left to transformers, which warns about the old one.
            self.activation_checkpointing = True
        if self.dataloader_pin_memory is None:
            self.dataloader_pin_memory = torch.accelerator.is_available()
        # Ours come first (they need none of the values TRL's config derives), then the TRL config's.
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
        if self.conditioning not in CONDITIONING_VARIANTS:
            raise ValueError(f"`conditioning` must be one of {CONDITIONING_VARIANTS}, got {self.conditioning!r}.")
        if self.weight_distribution not in WEIGHT_DISTRIBUTIONS:
            raise ValueError(
                f"`weight_distribution` must be one of {WEIGHT_DISTRIBUTIONS}, got {self.weight_distribution!r}."
            )
        if self.reward_normalization not in REWARD_NORMALIZATIONS:
            raise ValueError(
                f"`reward_normalization` must be one of {REWARD_NORMALIZATIONS}, got {self.reward_normalization!r}."
            )
        if self.steerability_window < 0:
            raise ValueError(
                f"`steerability_window` must be >= 0 (a number of completions), got {self.steerability_window}."
            )
        if not self.dirichlet_concentration > 0:
            raise ValueError(f"`dirichlet_concentration` must be > 0, got {self.dirichlet_concentration}.")
        self._check_objective_names()
        self._parse_fixed_weights()
        self._check_kl_weights()
        if self.conditioning == "prompt" and self.conditions_on_kl_weight:
            raise ValueError(
                "The prompting baseline does not condition on the KL weight. Unset `kl_weights`/`kl_weight_range` or "
                "choose conditioning='full', 'attn' or 'logit'."
            )
        self._check_scalarization()
        if "{weights}" not in self.prompt_template:
            raise ValueError(f"`prompt_template` must contain '{{weights}}', got {self.prompt_template!r}.")
        super().__post_init__()

    @property
    def conditions_on_kl_weight(self) -> bool:
        return self.kl_weights is not None or self.kl_weight_range is not None

    def _check_objective_names(self):
        if self.objective_names is None:
            return
        duplicates = sorted({name for name in self.objective_names if self.objective_names.count(name) > 1})
        if duplicates:
            raise ValueError(f"`objective_names` has duplicates {duplicates}: give each objective a unique name.")

    def _parse_fixed_weights(self):
        """Set `parsed_fixed_weights`, the `(K, m)` float weightings of `fixed_weights` (None unless 'fixed')."""
        self.parsed_fixed_weights: list[list[float]] | None = None
        if self.weight_distribution != "fixed":
            if self.fixed_weights is not None:
                raise ValueError(
                    "`fixed_weights` is only used with weight_distribution='fixed': set that, or remove it."
                )
            return
        if not self.fixed_weights:
            raise ValueError("weight_distribution='fixed' needs `fixed_weights`, e.g. ['1,0', '0.5,0.5', '0,1'].")
        rows = []
        for row in self.fixed_weights:
            try:
                values = [float(v) for v in row.split(",")] if isinstance(row, str) else [float(v) for v in row]
            except ValueError as error:
                raise ValueError(
                    f"`fixed_weights` entry {row!r} is not a list of numbers such as '0.3,0.7'."
                ) from error
            if any(not math.isfinite(v) or v < 0 for v in values) or abs(sum(values) - 1) > SIMPLEX_TOLERANCE:
                raise ValueError(
                    f"`fixed_weights` entry {row!r} is not on the simplex: weights must be >= 0, finite, and sum to 1."
                )
            rows.append(values)
        if len({len(row) for row in rows}) != 1:
            raise ValueError(
                f"`fixed_weights` rows have different lengths: {rows}. Give one weight per objective each."
            )
        self.parsed_fixed_weights = rows

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


def parameters_docstring(fields_class: type) -> str:
    """A TRL-style `Parameters:` docstring block for the fields `fields_class` declares, written from their `help`.

    Appended to each trainer config's docstring, so that `help(MultiObjectiveConfig)` and docs/api.md show the
    field docs without a second copy to keep in sync.
    """
    lines = ["", "    Parameters:"]
    for f in dataclasses.fields(fields_class):
        if f.default is not dataclasses.MISSING:
            default = f.default
        else:
            default = f.default_factory()
        kind = str(f.type).replace(" | None", "` or `None")
        lines.append(f"        {f.name} (`{kind}`, *optional*, defaults to `{default!r}`):")
        help_text = f.metadata["help"]
        if "choices" in f.metadata:
            help_text += " One of " + ", ".join(repr(choice) for choice in f.metadata["choices"]) + "."
        lines += textwrap.wrap(help_text, 116, initial_indent=" " * 12, subsequent_indent=" " * 12)
    return "\n".join(lines) + "\n"


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


MultiObjectiveConfig.__doc__ += parameters_docstring(ConditioningFields)
