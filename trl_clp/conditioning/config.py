"""Conditioning metadata saved beside a CLP adapter, and the LoRA configuration it implies."""

from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict, dataclass, field

from peft import LoraConfig

CONDITIONING_VARIANTS = ("full", "attn", "logit", "prompt")
CLP_CONFIG_NAME = "clp_config.json"
DEFAULT_ATTENTION_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]
DEFAULT_PROMPT_TEMPLATE = "[weights: {weights}] "


@dataclass
class ConditioningConfig:
    """Everything needed to steer a saved CLP adapter, written as `clp_config.json` beside it.

    Args:
        objective_names: one name per reward objective, in the order of the weight vector.
        variant: `"full"`, `"attn"`, `"logit"` or `"prompt"`.
        conditioned_modules: full module names of the LoRA layers that carry one block per conditioned dimension.
        num_blocks: blocks per conditioned layer: the number of objectives, plus one with KL-weight conditioning.
        min_kl_weight: α0 of KL-weight conditioning (see `trl_clp.sampling.kl_conditioning_vector`); None without it.
        kl_weight: the fixed KL weight the policy was trained with, when it is not conditioned on α.
        prompt_template: for `"prompt"`: how the weighting is written in front of the prompt.
        reward_normalization: per-objective running statistics used in training (`count`, `mean`, `sum_sq`), if any.
        scalarization: how the rewards were scalarised in training: `{"method": "linear"}` (w·R; also what files
            written before this field mean), or `{"method": "tchebycheff", "ideal_point": z, "given": bool,
            "augmentation": ρ}` (see `trl_clp.scalarization`).
    """

    objective_names: list[str]
    variant: str
    conditioned_modules: list[str] = field(default_factory=list)
    num_blocks: int = 0
    min_kl_weight: float | None = None
    kl_weight: float | None = None
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    reward_normalization: dict | None = None
    scalarization: dict = field(default_factory=lambda: {"method": "linear"})
    format_version: int = 1

    @property
    def num_objectives(self) -> int:
        return len(self.objective_names)

    def save(self, directory: str) -> None:
        with open(os.path.join(directory, CLP_CONFIG_NAME), "w") as handle:
            json.dump(asdict(self), handle, indent=2)

    @classmethod
    def load(cls, path: str) -> ConditioningConfig:
        with open(path) as handle:
            return cls(**json.load(handle))


def format_weighted_prompt(prompt, weights, objective_names: list[str], template: str = DEFAULT_PROMPT_TEMPLATE):
    """Write a weighting in front of a prompt (the prompting baseline).

    Args:
        prompt: a string, or a conversation (list of `{"role", "content"}` messages): the first user message gets
            the prefix.
        weights: `(m,)` sequence of floats.
    Returns:
        the prompt of the same kind, with e.g. `"[weights: coverage=0.30 brevity=0.70] "` in front.
    """
    text = " ".join(f"{name}={float(w):.2f}" for name, w in zip(objective_names, weights, strict=True))
    prefix = template.format(weights=text)
    if isinstance(prompt, str):
        return prefix + prompt
    messages = copy.deepcopy(prompt)
    for message in messages:
        if message["role"] == "user":
            message["content"] = prefix + message["content"]
            break
    else:
        raise ValueError("A conversational prompt needs a user message to carry the weighting.")
    return messages


def check_linear_lora_config(peft_config: LoraConfig) -> None:
    """Reject LoRA options under which mixing the blocks' parameters is not mixing their outputs.

    Raises:
        ValueError naming the option to turn off.
    """
    if not isinstance(peft_config, LoraConfig):
        raise TypeError(
            f"CLP conditions LoRA adapters: pass a `peft.LoraConfig` as `peft_config`, got {type(peft_config).__name__}."
        )
    problems = []
    if peft_config.use_dora:
        problems.append("`use_dora=True` (DoRA's magnitude normalisation is not linear in the blocks): set it to False")
    if peft_config.use_rslora:
        problems.append("`use_rslora=True` (rescales by 1/sqrt(rank), which changes with m): set it to False")
    if peft_config.init_lora_weights not in (True, False, "gaussian"):
        problems.append(
            f"`init_lora_weights={peft_config.init_lora_weights!r}` (a data-driven init moves the base weights or "
            f"ties the blocks): use True or 'gaussian'"
        )
    if peft_config.rank_pattern or peft_config.alpha_pattern:
        problems.append("`rank_pattern`/`alpha_pattern` (trl-clp sets the ranks of conditioned layers): remove them")
    if peft_config.lora_bias:
        problems.append(
            "`lora_bias=True` (the bias of `lora_B` is not a block: exporting one weighting would rescale it, and "
            "merging needs a biased base layer, which most LLMs lack): set it to False"
        )
    if peft_config.target_parameters:
        problems.append("`target_parameters` (parameter-level LoRA has no lora_A module to condition): remove it")
    if problems:
        raise ValueError("This LoRA configuration cannot be conditioned:\n- " + "\n- ".join(problems))


def resolve_conditioned_targets(variant: str, conditioned_target_modules: list[str] | None) -> list[str] | None:
    """The module-name suffixes to condition; None means every LoRA target (the `"full"` default)."""
    if conditioned_target_modules is not None:
        return list(conditioned_target_modules)
    return {"attn": DEFAULT_ATTENTION_MODULES, "logit": ["lm_head"]}.get(variant)


def build_conditioned_lora_config(
    peft_config: LoraConfig, variant: str, conditioned_target_modules: list[str] | None, num_blocks: int
) -> LoraConfig:
    """Turn a per-objective LoRA configuration into the CLP one.

    Conditioned targets get rank `num_blocks · r` with the same `lora_alpha` (each block then has scale α/(m·r) and
    the conditioning multiplies it by m·w_i, see `layer.py`); the other targets stay a shared rank-r LoRA.

    Args:
        peft_config: the per-objective LoRA (rank r, alpha α, targets), validated by `check_linear_lora_config`.
        variant: one of `CONDITIONING_VARIANTS`.
        conditioned_target_modules: module-name suffixes to condition; None means every target for `"full"`.
        num_blocks: m (+1 with KL-weight conditioning).
    """
    config = copy.deepcopy(peft_config)
    if variant in ("prompt", "logit"):  # logit: the output layer's blocks are added after TRL builds the model
        return config
    if variant == "full" and conditioned_target_modules is None:
        config.r = num_blocks * peft_config.r
        return config
    targets = config.target_modules
    if isinstance(targets, str) and targets != "all-linear":
        raise ValueError(
            f"With conditioning={variant!r}, give `target_modules` as a list (or 'all-linear'), not the regex "
            f"{targets!r}, so the conditioned modules can be added to it."
        )
    if isinstance(targets, (list, set, tuple)):
        config.target_modules = sorted(set(targets) | set(conditioned_target_modules))
    config.rank_pattern = {name: num_blocks * peft_config.r for name in conditioned_target_modules}
    return config


def matches_target(module_name: str, target: str) -> bool:
    """PEFT's suffix rule: `target` names the module itself or its last dotted components."""
    return module_name == target or module_name.endswith("." + target)
