"""`ConditioningConfig`: the conditioning metadata saved beside a CLP adapter as `clp_config.json`."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass, field

from .features import check_conditioning_features, num_blocks_of
from .prompts import DEFAULT_PROMPT_TEMPLATE

CONDITIONING_VARIANTS = ("full", "attn", "logit", "prompt")
CLP_CONFIG_NAME = "clp_config.json"


@dataclass
class ConditioningConfig:
    """Everything needed to steer a saved CLP adapter, written as `clp_config.json` beside it.

    A model trained from preferences (`MultiObjectiveDPOTrainer`) records `scalarization={"method": "preference",
    "preference_layout", "loss_type", "beta"}` (and for the scores layout `score_temperature`, `score_margin`): the
    objective it was trained with (see `trl_clp.preference_loss`); files written before those keys say only
    `{"method": "preference"}`.

    Args:
        objective_names: one name per reward objective, in the order of the weight vector.
        conditioning: the conditioning variant, `"full"`, `"attn"`, `"logit"` or `"prompt"` (as the config field of
            the same name). Older files call it `variant`: `load` reads both.
        conditioned_modules: full module names of the LoRA layers that carry one block per conditioned dimension.
        num_blocks: blocks per conditioned layer, K: one per entry of the conditioning vector (the objectives, plus one
            with KL-weight conditioning) for `linear`, and those of the other `conditioning_features`.
        min_kl_weight: α0 of KL-weight conditioning (see `trl_clp.sampling.kl_conditioning_vector`); None without it.
        kl_weight: the fixed KL weight the policy was trained with, when it is not conditioned on α.
        prompt_template: for `"prompt"`: how the weighting is written in front of the prompt.
        reward_normalization: per-objective running statistics used in training (`count`, `mean`, `sum_sq`), if any.
        scalarization: how the rewards were scalarised in training: `{"method": "linear"}` (w·R; also what files
            written before this field mean), or `{"method": "tchebycheff", "ideal_point": z, "given": bool,
            "augmentation": ρ, "ideal_point_units": "raw" or "normalized"}` (see `trl_clp.scalarization`): a running
            z is of the raw rewards, a given one in the units after `reward_normalization`.
        chat_template_kwargs: the training config's `chat_template_kwargs` (e.g. `{"enable_thinking": False}`), so
            that conversations are templated at inference as they were in training; None if there were none.
        conditioning_features: the features the blocks are mixed with (`trl_clp.conditioning.features`), in block
            order; files written before this field mean `["linear"]`.
    """

    objective_names: list[str]
    conditioning: str
    conditioned_modules: list[str] = field(default_factory=list)
    num_blocks: int = 0
    min_kl_weight: float | None = None
    kl_weight: float | None = None
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    reward_normalization: dict | None = None
    scalarization: dict = field(default_factory=lambda: {"method": "linear"})
    chat_template_kwargs: dict | None = None
    conditioning_features: list[str] = field(default_factory=lambda: ["linear"])
    format_version: int = 1

    def __post_init__(self):
        self.conditioning_features = list(check_conditioning_features(self.conditioning_features, self.conditioning))
        if self.num_blocks and self.conditioning != "prompt":
            expected = num_blocks_of(self.conditioning_features, self.vector_size)
            if self.num_blocks != expected:
                raise ValueError(
                    f"This conditioning config records {self.num_blocks} blocks per layer, but its features "
                    f"{self.conditioning_features} over a conditioning vector of {self.vector_size} entries make "
                    f"{expected}: the file does not describe its adapter. Save it again from the trained model."
                )

    @property
    def num_objectives(self) -> int:
        return len(self.objective_names)

    @property
    def vector_size(self) -> int:
        """n, the entries of a conditioning vector: the objectives, plus one with KL-weight conditioning."""
        return self.num_objectives + int(self.min_kl_weight is not None)

    @property
    def variant(self) -> str:
        """Deprecated name of `conditioning`."""
        warnings.warn(
            "`ConditioningConfig.variant` is renamed `conditioning`; the old name goes in the next release.",
            FutureWarning,
            stacklevel=2,
        )
        return self.conditioning

    def save(self, directory: str) -> None:
        with open(os.path.join(directory, CLP_CONFIG_NAME), "w") as handle:
            json.dump(asdict(self), handle, indent=2)

    @classmethod
    def load(cls, path: str) -> ConditioningConfig:
        with open(path) as handle:
            values = json.load(handle)
        if "variant" in values:  # the key's name in files written before it was renamed after the config field
            values["conditioning"] = values.pop("variant")
        return cls(**values)
