"""Per-row mixing of m LoRA blocks inside PEFT's LoRA layers.

A conditioned LoRA layer has rank m·r: rows `[i·r, (i+1)·r)` of `lora_A` and columns of `lora_B` form the block
θ_i of objective i. Scaling block i of `lora_A`'s output by `m·w_i(b)` for batch row b gives

    W x + (α / (m·r)) · Σ_i m·w_i(b) · B_i A_i x  =  W x + (α / r) · Σ_i w_i(b) · B_i A_i x,

i.e. exactly the layer with parameters `Σ_i w_i θ_i` for that row, so rows with different weightings share one
forward pass. The factor m keeps a plain PEFT load (no conditioning, every block scaled by 1) equal to the
uniform weighting instead of the sum of the objectives.

The scaling is a forward pre-hook on `lora_B[adapter]`, a public torch extension point: PEFT's layer code is
left untouched.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import torch
from peft import LoraConfig, PeftModel, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import nn

from ..sampling import check_weights
from .config import matches_target


def block_scale(weights: torch.Tensor, total_rank: int) -> torch.Tensor:
    """The factor `m · w_i` of every rank of block i, per row.

    Args:
        weights: `(B, m)` weightings on the simplex.
        total_rank: m·r, the rank of the conditioned LoRA.

    Returns:
        `(B, m·r)`.
    """
    num_objectives = weights.size(-1)
    return (num_objectives * weights).repeat_interleave(total_rank // num_objectives, dim=-1)


def scale_lora_blocks(lora_a_output: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Scale rank-block i of each row by `m · w_i` of that row.

    Args:
        lora_a_output: `(B, ..., m·r)`, the output of `lora_A` (after dropout).
        weights: `(B, m)` weightings on the simplex.

    Returns:
        `(B, ..., m·r)`.
    """
    scale = block_scale(weights, lora_a_output.size(-1))  # (B, m·r)
    scale = scale.view(weights.size(0), *([1] * (lora_a_output.dim() - 2)), -1)  # (B, 1, ..., m·r)
    return lora_a_output * scale.to(lora_a_output.dtype)


def find_conditioned_layers(model: nn.Module, conditioned_targets: list[str] | None) -> list[str]:
    """Names of the LoRA layers of `model` matched by `conditioned_targets` (every LoRA layer if None).

    Raises:
        ValueError listing the model's LoRA layer names when nothing matches.
    """
    lora_names = [name for name, module in model.named_modules() if isinstance(module, LoraLayer)]
    names = [n for n in lora_names if conditioned_targets is None or any(matches_target(n, t) for t in conditioned_targets)]
    if not names:
        suffixes = sorted({n.split(".")[-1] for n in lora_names})
        raise ValueError(
            f"No LoRA layer matches `conditioned_target_modules={conditioned_targets}`. The model's LoRA layers are "
            f"named {suffixes}: set `conditioned_target_modules` to some of them."
        )
    return names


def add_conditioned_output_layer(peft_model: PeftModel, peft_config: LoraConfig, num_blocks: int) -> str:
    """Give the output layer a LoRA of rank `num_blocks · r` in the model's adapter (logit-CLP).

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
    head_config = LoraConfig(
        r=num_blocks * peft_config.r,
        lora_alpha=peft_config.lora_alpha,
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
    saved_config.rank_pattern = {**saved_config.rank_pattern, suffix: num_blocks * peft_config.r}
    return name


class WeightConditioner:
    """Holds the per-row weightings of the current forward pass and applies them to conditioned LoRA layers.

    The weighting is always set explicitly, by `condition(...)` (restored on exit) or, where a forward and its
    backward span two calls (gradient checkpointing recomputes the forward during backward), by `set_weights` and a
    `clear` in the caller's `finally`. A conditioned layer called with no weighting set raises instead of silently
    using some default. The weighting is read when it is set (its block scaling is computed once, then shared by
    every conditioned layer and decoding step): set a new tensor rather than modifying the current one in place.
    """

    def __init__(self, num_blocks: int):
        self.num_blocks = num_blocks
        self._weights: torch.Tensor | None = None  # (B, num_blocks)
        # The block scaling of the current weighting, built once and reused by every conditioned layer and every
        # decoding step: keyed by (m·r, dtype, device, dim) of the `lora_A` output.
        self._scales: dict[tuple, torch.Tensor] = {}
        self.conditioned_module_names: list[str] = []
        self._handles = []

    @property
    def weights(self) -> torch.Tensor | None:
        """`(B, num_blocks)` weightings of the current forward pass, or None."""
        return self._weights

    @weights.setter
    def weights(self, weights: torch.Tensor | None) -> None:
        self._weights = weights
        self._scales = {}

    def attach(self, model: nn.Module, module_names: list[str], adapter_name: str = "default") -> None:
        """Register the block-scaling hook on `lora_B[adapter_name]` of each named LoRA layer.

        Raises:
            ValueError: a name is not a LoRA layer of `model`, or its rank is not a multiple of `num_blocks`.
        """
        modules = dict(model.named_modules())
        for name in module_names:
            layer = modules.get(name)
            if not isinstance(layer, LoraLayer) or adapter_name not in layer.lora_B:
                raise ValueError(
                    f"Module {name!r} is not a LoRA layer with adapter {adapter_name!r}: the conditioning metadata "
                    f"does not match this model. Load the adapter onto the base model it was trained on."
                )
            rank = layer.r[adapter_name]
            if rank % self.num_blocks:
                raise ValueError(
                    f"LoRA layer {name!r} has rank {rank}, not a multiple of the {self.num_blocks} conditioned blocks."
                )
            self._handles.append(layer.lora_B[adapter_name].register_forward_pre_hook(self._scale_hook))
            self.conditioned_module_names.append(name)

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.conditioned_module_names.clear()

    def _scale_hook(self, module: nn.Module, args: tuple) -> tuple:
        if self.weights is None:
            raise RuntimeError(
                "A conditioned LoRA layer ran without a weighting. Wrap the call in `with model.condition(weights):` "
                "or pass `weights=` to `generate`."
            )
        (lora_a_output,) = args
        if lora_a_output.size(0) != self.weights.size(0):
            raise RuntimeError(
                f"The batch has {lora_a_output.size(0)} rows but {self.weights.size(0)} weightings are set: give one "
                f"weighting per row (or a single one for the whole batch)."
            )
        return (lora_a_output * self._block_scale(lora_a_output),)

    def _block_scale(self, lora_a_output: torch.Tensor) -> torch.Tensor:
        """`(B, 1, ..., m·r)` factors of `scale_lora_blocks` for the current weighting, cached until it changes."""
        key = (lora_a_output.size(-1), lora_a_output.dtype, lora_a_output.device, lora_a_output.dim())
        scale = self._scales.get(key)
        if scale is None:
            scale = block_scale(self._weights.to(lora_a_output.device), lora_a_output.size(-1))  # (B, m·r)
            scale = scale.view(scale.size(0), *([1] * (lora_a_output.dim() - 2)), -1).to(lora_a_output.dtype)
            if not self._weights.requires_grad:  # a graph through the weighting must be rebuilt for every forward
                self._scales[key] = scale
        return scale

    def set_weights(self, weights: torch.Tensor | None) -> None:
        """Set `(B, num_blocks)` weightings (or None) without validation; see `condition` for the checked path."""
        self.weights = weights

    def clear(self) -> None:
        self.weights = None

    @contextmanager
    def condition(self, weights: torch.Tensor, batch_size: int | None = None):
        """Condition every forward inside the block on `weights`, restoring the previous weighting on exit.

        Args:
            weights: `(num_blocks,)` for all rows, or `(B, num_blocks)` one per row.
            batch_size: rows to broadcast a single weighting to; required with a `(num_blocks,)` weighting
                when the batch size is not 1.
        """
        weights = check_weights(weights, self.num_blocks)
        if weights.dim() == 1:
            weights = weights.unsqueeze(0).expand(batch_size or 1, -1)
        previous = self.weights
        self.weights = weights
        try:
            yield
        finally:
            self.weights = previous
