"""The fields every CLP trainer's config adds, whatever the TRL trainer: `SharedConditioningFields`.

Online configs (`ConditioningFields` in `trl_clp.rloo_config`, for RLOO and GRPO) and the DPO config
(`trl_clp.dpo_config`) add their own fields on top. Each config's `Parameters:` docstring block is generated from the
fields' `help` by `parameters_docstring`, so a field is documented in one place.
"""

from __future__ import annotations

import dataclasses
import math
import textwrap
from dataclasses import dataclass, field

import torch

from .conditioning.config import CONDITIONING_VARIANTS
from .conditioning.features import CONDITIONING_FEATURES, check_conditioning_features
from .conditioning.prompts import DEFAULT_PROMPT_TEMPLATE
from .sampling import SIMPLEX_TOLERANCE, WEIGHT_DISTRIBUTIONS


@dataclass
class SharedConditioningFields:
    """The fields of the conditioned policy and its weighting draws, shared by every CLP trainer's config.

    Mixed in ahead of the TRL config class (through `ConditioningFields` for the online trainers, directly for DPO):
    `__post_init__` checks these fields, then calls the TRL config's.
    """

    objective_names: list[str] | None = field(
        default=None,
        metadata={
            "help": "One name per objective (reward function, or preference signal for DPO), in order; they label "
            "metrics, saved metadata and evaluation tables. Defaults to the reward functions' names (required for "
            "DPO)."
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
    conditioning_features: list[str] = field(
        default_factory=lambda: ["linear"],
        metadata={
            "help": "The features φ(w) the conditioned layers' LoRA blocks are mixed with, each block of rank r: "
            "'linear' (always; one block per objective, scaled by w_i: the blocks of CLP and Rewarded Soups), "
            "'shared' (one block scaled by 1 at every w: capacity every weighting trains), 'pairwise' (one block per "
            "pair of objectives, scaled by w_i·w_j: zero at the corners, capacity of the interior's own). With "
            "`kl_weights`/`kl_weight_range` the KL entry counts as one more objective. Each feature is normalised to "
            "1 at the uniform weighting (pairwise: 4·w_1·w_2 for two objectives), which a plain PEFT load computes. "
            "Blocks per layer: m (+1 with the KL entry) linear, 1 shared, n(n−1)/2 pairwise; generation stays one "
            "LoRA of rank (blocks)·r.",
            "choices": list(CONDITIONING_FEATURES),
        },
    )
    weight_distribution: str = field(
        default="dirichlet",
        metadata={
            "help": "How each prompt group's (DPO: each pair's) weighting w is drawn: 'dirichlet' (with `dirichlet_concentration`), "
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
    one_hot_fraction: float = field(
        default=0.0,
        metadata={
            "help": "Weighting schedule, corners first: the fraction of training steps (of max_steps) at the start in "
            "which every weighting is a one-hot corner, so that each objective's block is trained alone first "
            "(PaLoRA, arXiv 2407.08056); then the weightings spread out (`one_hot_anneal_fraction`). 0 (default): "
            "no corners-first phase."
        },
    )
    one_hot_anneal_fraction: float = field(
        default=0.0,
        metadata={
            "help": "Weighting schedule: the fraction of training steps after `one_hot_fraction` over which the "
            "probability p that a weighting is a one-hot corner falls linearly from 1 to `one_hot_final_probability`; "
            "the other weightings are drawn from `weight_distribution` (p·one-hot + (1 − p)·weight_distribution). "
            "The p of each step is logged as `weights/one_hot_probability`."
        },
    )
    one_hot_final_probability: float = field(
        default=0.0,
        metadata={
            "help": "Weighting schedule: p, the probability that a weighting is a one-hot corner, once the anneal is "
            "over (and in evaluation draws). 0 (default): from then on every weighting is drawn from "
            "`weight_distribution`."
        },
    )
    prompt_template: str = field(
        default=DEFAULT_PROMPT_TEMPLATE,
        metadata={
            "help": "For conditioning='prompt': the text put before each prompt; '{weights}' becomes "
            "'name1=0.30 name2=0.70'."
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
        if self.conditioning not in CONDITIONING_VARIANTS:
            raise ValueError(f"`conditioning` must be one of {CONDITIONING_VARIANTS}, got {self.conditioning!r}.")
        if self.weight_distribution not in WEIGHT_DISTRIBUTIONS:
            raise ValueError(
                f"`weight_distribution` must be one of {WEIGHT_DISTRIBUTIONS}, got {self.weight_distribution!r}."
            )
        if not self.dirichlet_concentration > 0:
            raise ValueError(f"`dirichlet_concentration` must be > 0, got {self.dirichlet_concentration}.")
        self._check_objective_names()
        self._parse_fixed_weights()
        self._check_conditioning_features()
        self._check_weighting_schedule()
        if "{weights}" not in self.prompt_template:
            raise ValueError(f"`prompt_template` must contain '{{weights}}', got {self.prompt_template!r}.")
        super().__post_init__()

    def _check_objective_names(self):
        if self.objective_names is None:
            return
        duplicates = sorted({name for name in self.objective_names if self.objective_names.count(name) > 1})
        if duplicates:
            raise ValueError(f"`objective_names` has duplicates {duplicates}: give each objective a unique name.")

    @property
    def conditions_on_kl_weight(self) -> bool:
        """Whether the conditioning vector has a KL entry (multi-α); the online configs' KL fields set it."""
        return False

    def _check_conditioning_features(self):
        check_conditioning_features(self.conditioning_features, self.conditioning)
        draws_only_corners = self.weight_distribution == "one_hot" or (
            self.weight_distribution == "fixed" and all(max(row) == 1 for row in self.parsed_fixed_weights)
        )
        if "pairwise" in self.conditioning_features and draws_only_corners and not self.conditions_on_kl_weight:
            raise ValueError(
                "'pairwise' blocks are scaled by w_i·w_j, zero at every corner of the simplex, and this "
                f"weight_distribution={self.weight_distribution!r} draws only corners: they would never train. Remove "
                "'pairwise' from `conditioning_features`, or draw weightings inside the simplex (e.g. 'dirichlet')."
            )

    @property
    def has_weighting_schedule(self) -> bool:
        """Whether some weightings are one-hot corners mixed into `weight_distribution` (`one_hot_*` fields)."""
        return self.one_hot_fraction > 0 or self.one_hot_final_probability > 0

    def _check_weighting_schedule(self):
        for name in ("one_hot_fraction", "one_hot_anneal_fraction", "one_hot_final_probability"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(
                    f"`{name}` must be in [0, 1] (a fraction of training, or a probability), got {value}."
                )
        if self.one_hot_fraction + self.one_hot_anneal_fraction > 1:
            raise ValueError(
                f"`one_hot_fraction` + `one_hot_anneal_fraction` = {self.one_hot_fraction + self.one_hot_anneal_fraction}"
                " exceeds the whole training (1): shorten one of them."
            )
        if self.one_hot_anneal_fraction > 0 and not self.has_weighting_schedule:
            raise ValueError(
                "`one_hot_anneal_fraction` anneals p from 1 after the corners-first phase, but there is none: set "
                "`one_hot_fraction` > 0 (or `one_hot_final_probability` > 0), or remove `one_hot_anneal_fraction`."
            )
        if not self.has_weighting_schedule:
            return
        if self.weight_distribution == "one_hot":
            raise ValueError(
                "The weighting schedule mixes one-hot corners into `weight_distribution`, which is already 'one_hot' "
                "(Rewarded Soups): choose 'dirichlet', 'uniform' or 'fixed' to spread to, or remove the `one_hot_*` "
                "fields."
            )
        if self.one_hot_final_probability == 1:
            raise ValueError(
                "`one_hot_final_probability`=1 puts every weighting after the anneal on a corner, so the weightings "
                "never spread: lower it, or train on corners only with weight_distribution='one_hot'."
            )

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
        # No break at a hyphen: "corners-first" must read back as written when the lines are joined.
        lines += textwrap.wrap(
            help_text, 116, initial_indent=" " * 12, subsequent_indent=" " * 12, break_on_hyphens=False
        )
    return "\n".join(lines) + "\n"
