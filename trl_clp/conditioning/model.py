"""Building and attaching the conditioned adapter: its LoRA config, the module surgery, and the hooks.

A conditioned model is built in two steps around PEFT's own: `build_conditioned_lora_config` before (the ranks of the
conditioned targets), `attach_conditioning` after (logit-CLP's output layer, the block-scaling hooks). Loading one for
inference is `trl_clp.conditioning.steerable.SteerableModel`; where its files are, `trl_clp.conditioning.paths`.
"""

from __future__ import annotations

import copy
import warnings
from collections import Counter
from collections.abc import Sequence

from peft import LoraConfig, PeftModel, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import nn

from .features import num_blocks_of
from .layer import WeightConditioner

DEFAULT_ATTENTION_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]


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
        problems.append(
            "`use_dora=True` (DoRA's magnitude normalisation is not linear in the blocks): set it to False"
        )
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


def resolve_conditioned_targets(conditioning: str, conditioned_target_modules: list[str] | None) -> list[str] | None:
    """The module-name suffixes to condition; None means every LoRA target (the `"full"` default)."""
    if conditioned_target_modules is not None:
        return list(conditioned_target_modules)
    return {"attn": DEFAULT_ATTENTION_MODULES, "logit": ["lm_head"]}.get(conditioning)


def conditioned_lora_alpha(lora_alpha: float, vector_size: int, features: Sequence[str] = ("linear",)) -> float:
    """The `lora_alpha` of a conditioned layer: α·K/n, so that its LoRA scale is α/(n·r) at rank K·r.

    A linear block's coefficient `n·v_i` then gives it the scale `v_i·α/r` of the per-objective LoRA, whatever other
    features the layer has (see `layer.py`). With the linear features only (K = n) it is α itself, unchanged.

    Args:
        lora_alpha: α of the per-objective LoRA.
        vector_size: n, the entries of the conditioning vector.
        features: the conditioning features.
    """
    num_blocks = num_blocks_of(features, vector_size)
    if num_blocks == vector_size:
        return lora_alpha
    return lora_alpha * num_blocks / vector_size


def build_conditioned_lora_config(
    peft_config: LoraConfig,
    conditioning: str,
    conditioned_target_modules: list[str] | None,
    vector_size: int,
    features: Sequence[str] = ("linear",),
) -> LoraConfig:
    """Turn a per-objective LoRA configuration into the CLP one.

    Conditioned targets get rank `K · r` and `lora_alpha` α·K/n (`conditioned_lora_alpha`: each block has scale
    α/(n·r) and the conditioning multiplies it by its coefficient, `n·v_i` for a linear block, see `layer.py`); the
    other targets stay a shared rank-r LoRA.

    Args:
        peft_config: the per-objective LoRA (rank r, alpha α, targets), validated by `check_linear_lora_config`.
        conditioning: one of `CONDITIONING_VARIANTS`.
        conditioned_target_modules: module-name suffixes to condition; None means every target for `"full"`.
        vector_size: n, the entries of the conditioning vector: m (+1 with KL-weight conditioning).
        features: the conditioning features, which give K (`trl_clp.conditioning.features`).
    """
    config = copy.deepcopy(peft_config)
    if conditioning in ("prompt", "logit"):  # logit: the output layer's blocks are added after TRL builds the model
        return config
    rank = num_blocks_of(features, vector_size) * peft_config.r
    alpha = conditioned_lora_alpha(peft_config.lora_alpha, vector_size, features)
    if conditioning == "full" and conditioned_target_modules is None:
        config.r, config.lora_alpha = rank, alpha
        return config
    targets = config.target_modules
    if isinstance(targets, str) and targets != "all-linear":
        raise ValueError(
            f"With conditioning={conditioning!r}, give `target_modules` as a list (or 'all-linear'), not the regex "
            f"{targets!r}, so the conditioned modules can be added to it."
        )
    if isinstance(targets, (list, set, tuple)):
        config.target_modules = sorted(set(targets) | set(conditioned_target_modules))
    config.rank_pattern = dict.fromkeys(conditioned_target_modules, rank)
    if alpha != peft_config.lora_alpha:
        config.alpha_pattern = dict.fromkeys(conditioned_target_modules, alpha)
    return config


def matches_target(module_name: str, target: str) -> bool:
    """PEFT's suffix rule: `target` names the module itself or its last dotted components."""
    return module_name == target or module_name.endswith("." + target)


def find_conditioned_layers(model: nn.Module, conditioned_targets: list[str] | None) -> list[str]:
    """Names of the LoRA layers of `model` matched by `conditioned_targets` (every LoRA layer if None).

    Raises:
        ValueError listing the model's LoRA layer names when nothing matches, or when some entries of
        `conditioned_targets` match no LoRA layer (a typo would otherwise leave those modules shared, silently).
    """
    lora_names = [name for name, module in model.named_modules() if isinstance(module, LoraLayer)]
    suffixes = sorted({n.split(".")[-1] for n in lora_names})
    if conditioned_targets is None:
        names = lora_names
        unmatched = []
    else:
        names = [n for n in lora_names if any(matches_target(n, t) for t in conditioned_targets)]
        unmatched = [t for t in conditioned_targets if not any(matches_target(n, t) for n in lora_names)]
    if not names:
        raise ValueError(
            f"No LoRA layer matches `conditioned_target_modules={conditioned_targets}`. The model's LoRA layers are "
            f"named {suffixes}: set `conditioned_target_modules` to some of them."
        )
    if unmatched:
        raise ValueError(
            f"`conditioned_target_modules` entries {unmatched} match no LoRA layer (of {conditioned_targets}). The "
            f"model's LoRA layers are named {suffixes}: remove those entries or correct their names."
        )
    return names


def add_conditioned_output_layer(
    peft_model: PeftModel, peft_config: LoraConfig, vector_size: int, features: Sequence[str] = ("linear",)
) -> str:
    """Give the output layer a conditioned LoRA (rank K·r, alpha α·K/n) in the model's adapter (logit-CLP).

    TRL builds the PEFT model without it (it refuses adapters on `lm_head`, which its fused head would bypass), so
    it is injected afterwards into the same adapter, and the adapter's config is updated so that a saved adapter
    reloads with it.

    Returns:
        the full module name of the output layer.
    """
    adapter_name = peft_model.active_adapter
    output_layer = peft_model.get_output_embeddings()
    name = next(n for n, module in peft_model.named_modules() if module is output_layer)
    suffix = name.split(".")[-1]
    rank = num_blocks_of(features, vector_size) * peft_config.r
    alpha = conditioned_lora_alpha(peft_config.lora_alpha, vector_size, features)
    head_config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=peft_config.lora_dropout,
        init_lora_weights=peft_config.init_lora_weights,
        target_modules=[suffix],
    )
    saved_config = peft_model.peft_config[adapter_name]
    with warnings.catch_warnings():
        # PEFT warns that the model already has an adapter: adding to it is the point. With tied embeddings it warns
        # that the output layer's LoRA is not mirrored on the input embeddings: it must not be (the conditioning
        # steers the output distribution only), and `SteerableModel.merge` unties the merged weight.
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        warnings.filterwarnings("ignore", message="Model has `tie_word_embeddings=True` and a tied layer")
        inject_adapter_in_model(head_config, peft_model.get_base_model(), adapter_name=adapter_name)
    # The injection registers `head_config` under the same name in the config dict PEFT shares with the model.
    peft_model.peft_config[adapter_name] = saved_config
    targets = saved_config.target_modules
    if isinstance(targets, str):  # "all-linear" was resolved at injection; keep the resolved names
        targets = {n.split(".")[-1] for n, m in peft_model.named_modules() if isinstance(m, LoraLayer)}
    saved_config.target_modules = set(targets) | {suffix}
    saved_config.rank_pattern = {**saved_config.rank_pattern, suffix: rank}
    if alpha != peft_config.lora_alpha:
        saved_config.alpha_pattern = {**saved_config.alpha_pattern, suffix: alpha}
    return name


def attach_conditioning(
    peft_model: PeftModel,
    peft_config: LoraConfig,
    conditioning: str,
    conditioned_targets: list[str] | None,
    vector_size: int,
    features: Sequence[str] = ("linear",),
) -> WeightConditioner:
    """Finish building a conditioned model: the one place that turns a conditioning variant into conditioned layers.

    `peft_model` was built from `build_conditioned_lora_config(peft_config, ...)`, by `get_peft_model`
    (`SteerableModel.from_base_model`) or by the TRL trainer (`ConditionedTrainerMixin`). logit-CLP gets its output
    layer's blocks here (TRL refuses a LoRA on `lm_head` at build time); the prompting baseline has no conditioned
    layer.

    Args:
        peft_model: the PEFT model, modified in place for `"logit"`.
        peft_config: the LoRA of one objective.
        conditioning: one of `CONDITIONING_VARIANTS`.
        conditioned_targets: from `resolve_conditioned_targets`.
        vector_size: n, the entries of the conditioning vector: m (+1 with KL-weight conditioning).
        features: the conditioning features (`trl_clp.conditioning.features`).

    Returns:
        a `WeightConditioner` with its hooks on the conditioned layers (`conditioned_module_names`).
    """
    conditioner = WeightConditioner(vector_size, features)
    if conditioning == "logit":
        output_layer = add_conditioned_output_layer(peft_model, peft_config, vector_size, conditioner.features)
        conditioner.attach(peft_model, [output_layer])
    elif conditioning != "prompt":
        conditioner.attach(peft_model, find_conditioned_layers(peft_model, conditioned_targets))
    return conditioner


def untie_adapted_weights(model: nn.Module) -> bool:
    """Give every LoRA layer's base weight its own copy when another module shares it (tied embeddings).

    Merging adds the LoRA delta to the base weight in place: on an output layer tied to the input embeddings it
    would change the embeddings too.

    Returns:
        whether any weight was untied.
    """
    owners = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    untied = False
    for module in model.modules():
        if isinstance(module, LoraLayer):
            base_layer = module.get_base_layer()
            if owners[id(base_layer.weight)] > 1:
                base_layer.weight = nn.Parameter(base_layer.weight.detach().clone(), base_layer.weight.requires_grad)
                untied = True
    return untied


def __getattr__(name: str):
    # `SteerableModel` lived here before it got `steerable.py`; imported on first use, as `steerable` imports this.
    if name == "SteerableModel":
        from .steerable import SteerableModel

        return SteerableModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
