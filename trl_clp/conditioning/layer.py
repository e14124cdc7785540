"""Layer behaviour of a conditioned LoRA: per-row mixing of its blocks, and `WeightConditioner`, the hooks doing it.

A conditioned LoRA layer has rank K·r: rows `[k·r, (k+1)·r)` of `lora_A` and columns of `lora_B` form block k. With
the default features (`linear`) there is one block θ_i per entry of the conditioning vector v (n = m objectives, plus
the KL entry with multi-α) and K = n; other features add blocks (`features.py`). Scaling block k of `lora_A`'s output
by its coefficient `c_k(v(b))` for batch row b (`block_coefficients`: `n·v_i` for a linear block) gives, with the
layer's LoRA scale α·K/n / (K·r) = α / (n·r) (`model.py` sets `lora_alpha` to α·K/n),

    W x + (α / (n·r)) · Σ_k c_k(v(b)) · B_k A_k x  =  W x + (α / r) · Σ_i v_i(b) · B_i A_i x  (+ the other features),

i.e. exactly the layer with parameters `Σ_i v_i θ_i` (plus the other features' blocks) for that row, so rows with
different weightings share one forward pass. Every coefficient is 1 at the centre of the simplex, so a plain PEFT
load (no conditioning, every block scaled by 1) equals the uniform weighting, not the sum of the objectives.

The scaling is a forward pre-hook on `lora_B[adapter]`, a public torch extension point: PEFT's layer code is
left untouched.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch
from peft.tuners.lora import LoraLayer
from torch import nn

from ..sampling import check_weights
from .features import block_coefficients, check_conditioning_features, num_blocks_of

# The attribute of a model that holds its `WeightConditioner` (one per model: a second would scale twice).
CONDITIONER_ATTRIBUTE = "clp_conditioner"


def block_scale(vectors: torch.Tensor, total_rank: int, features: Sequence[str] = ("linear",)) -> torch.Tensor:
    """The factor of every rank of block k, per row: the block's coefficient `c_k(v)` (`n · v_i` for a linear one).

    Args:
        vectors: `(B, n)` conditioning vectors on the simplex.
        total_rank: K·r, the rank of the conditioned LoRA.
        features: the conditioning features, which give K (`block_coefficients`).

    Returns:
        `(B, K·r)`.
    """
    coefficients = block_coefficients(vectors, features)  # (B, K)
    return coefficients.repeat_interleave(total_rank // coefficients.size(-1), dim=-1)


def scale_lora_blocks(
    lora_a_output: torch.Tensor, weights: torch.Tensor, features: Sequence[str] = ("linear",)
) -> torch.Tensor:
    """Scale rank-block k of each row by its coefficient `c_k(v)` for that row's conditioning vector.

    Args:
        lora_a_output: `(B, ..., K·r)`, the output of `lora_A` (after dropout).
        weights: `(B, n)` conditioning vectors on the simplex.
        features: the conditioning features.

    Returns:
        `(B, ..., K·r)`.
    """
    scale = block_scale(weights, lora_a_output.size(-1), features)  # (B, K·r)
    scale = scale.view(weights.size(0), *([1] * (lora_a_output.dim() - 2)), -1)  # (B, 1, ..., K·r)
    return lora_a_output * scale.to(lora_a_output.dtype)


@dataclass
class _Conditioning:
    """One weighting and its block scalings, built once and reused by every conditioned layer and decoding step."""

    vectors: torch.Tensor  # (B, n)
    # keyed by (K·r, dtype, device, dim) of the `lora_A` output
    scales: dict[tuple, torch.Tensor] = field(default_factory=dict)


class WeightConditioner:
    """Applies per-row weightings to the conditioned LoRA layers of one model.

    A weighting reaches the layers by one of two paths:

    - **per call** (inference): `condition(weights)` keeps it in a `contextvars.ContextVar` of this conditioner for
      the duration of the `with` block, so concurrent threads and asyncio tasks using the same model each see their
      own weighting, and nothing is left set after the block.
    - **training**: `set_conditioning_vectors` / `clear`, a state shared by every thread, which the trainer sets for a step and
      clears in a `finally`. It exists because a forward and its backward can run in different threads: under
      gradient checkpointing backward recomputes the forward, and on CUDA autograd runs backward in its own device
      thread, where a context variable set in the main thread is not visible. A conditioned layer reads the per-call
      weighting first and falls back to the training one; use the training path only where one caller owns the
      model (a training loop), never to serve concurrent requests.

    A conditioned layer called with neither set raises instead of silently using some default. A weighting is read
    when it is set (its block scaling is computed once, then shared by every conditioned layer and decoding step):
    set a new tensor rather than modifying the current one in place.

    One model has at most one conditioner: `attach` records it on the model (see `attached_to`), so that a second
    `SteerableModel` over the same `PeftModel` reuses it instead of stacking a second set of hooks.

    Args:
        vector_size: n, the entries of a conditioning vector (the objectives, plus one with multi-α).
        features: the conditioning features (`trl_clp.conditioning.features`), which give the blocks per layer,
            `num_blocks`.
    """

    def __init__(self, vector_size: int, features: Sequence[str] = ("linear",)):
        self.vector_size = vector_size
        self.features = check_conditioning_features(features)
        self.num_blocks = num_blocks_of(self.features, vector_size)
        self._per_call: ContextVar[_Conditioning | None] = ContextVar(f"clp_conditioning_{id(self)}", default=None)
        self._training: _Conditioning | None = None
        self.conditioned_module_names: list[str] = []
        self._handles = []
        self._model: nn.Module | None = None  # the model `attach` recorded this conditioner on

    def __deepcopy__(self, memo) -> WeightConditioner:
        # A deep-copied model (e.g. by `SteerableModel.merge`) carries its hooks, bound to this conditioner: the copy
        # gets a conditioner of its own, with no weighting set (a ContextVar cannot be copied).
        copied = WeightConditioner(self.vector_size, self.features)
        copied.conditioned_module_names = list(self.conditioned_module_names)
        memo[id(self)] = copied
        return copied

    @staticmethod
    def attached_to(model: nn.Module) -> WeightConditioner | None:
        """The conditioner whose hooks are on `model`, if any."""
        return getattr(model, CONDITIONER_ATTRIBUTE, None)

    def _current(self) -> _Conditioning | None:
        state = self._per_call.get()
        return self._training if state is None else state

    @property
    def conditioning_vectors(self) -> torch.Tensor | None:
        """`(B, n)` conditioning vectors the conditioned layers use here and now (per call, else training), or None."""
        state = self._current()
        return None if state is None else state.vectors

    @property
    def weights(self) -> torch.Tensor | None:
        """Deprecated name of `conditioning_vectors` (they include the KL block when there is one)."""
        warnings.warn(
            "`WeightConditioner.weights` is renamed `conditioning_vectors`; the old name goes in the next release.",
            FutureWarning,
            stacklevel=2,
        )
        return self.conditioning_vectors

    def attach(self, model: nn.Module, module_names: list[str], adapter_name: str = "default") -> None:
        """Register the block-scaling hook on `lora_B[adapter_name]` of each named LoRA layer.

        Raises:
            ValueError: a name is not a LoRA layer of `model`, or its rank is not a multiple of `num_blocks`, or
                another conditioner is already attached to `model`.
        """
        attached = self.attached_to(model)
        if attached is not None and attached is not self:
            raise ValueError(
                "This model already has a WeightConditioner attached: a second one would scale its LoRA blocks twice. "
                "Reuse it (`WeightConditioner.attached_to(model)`, or `SteerableModel(model, config)` finds it)."
            )
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
        for name in module_names:
            if name not in self.conditioned_module_names:
                self._handles.append(modules[name].lora_B[adapter_name].register_forward_pre_hook(self._scale_hook))
                self.conditioned_module_names.append(name)
        setattr(model, CONDITIONER_ATTRIBUTE, self)
        self._model = model

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.conditioned_module_names.clear()
        if self._model is not None and self.attached_to(self._model) is self:
            delattr(self._model, CONDITIONER_ATTRIBUTE)
        self._model = None

    def _scale_hook(self, module: nn.Module, args: tuple) -> tuple:
        state = self._current()
        if state is None:
            raise RuntimeError(
                "A conditioned LoRA layer ran without a weighting. Wrap the call in `with model.condition(weights):` "
                "or pass `weights=` to `generate`."
            )
        (lora_a_output,) = args
        if lora_a_output.size(0) != state.vectors.size(0):
            raise RuntimeError(
                f"The batch has {lora_a_output.size(0)} rows but {state.vectors.size(0)} weightings are set: give one "
                f"weighting per row (or a single one for the whole batch)."
            )
        return (lora_a_output * self._block_scale(state, lora_a_output),)

    def _block_scale(self, state: _Conditioning, lora_a_output: torch.Tensor) -> torch.Tensor:
        """`(B, 1, ..., K·r)` factors of `scale_lora_blocks` for `state`'s weighting, cached in `state`."""
        key = (lora_a_output.size(-1), lora_a_output.dtype, lora_a_output.device, lora_a_output.dim())
        scale = state.scales.get(key)
        if scale is None:
            scale = block_scale(state.vectors.to(lora_a_output.device), lora_a_output.size(-1), self.features)
            scale = scale.view(scale.size(0), *([1] * (lora_a_output.dim() - 2)), -1).to(lora_a_output.dtype)
            if not state.vectors.requires_grad:  # a graph through the weighting must be rebuilt for every forward
                state.scales[key] = scale
        return scale

    def set_conditioning_vectors(self, conditioning_vectors: torch.Tensor | None) -> None:
        """Set the training conditioning vectors `(B, n)` (or None), unvalidated, until `clear`; see the class docs."""
        self._training = None if conditioning_vectors is None else _Conditioning(conditioning_vectors)

    def set_weights(self, weights: torch.Tensor | None) -> None:
        """Deprecated name of `set_conditioning_vectors`."""
        warnings.warn(
            "`WeightConditioner.set_weights` is renamed `set_conditioning_vectors`; the old name goes in the next "
            "release.",
            FutureWarning,
            stacklevel=2,
        )
        self.set_conditioning_vectors(weights)

    def clear(self) -> None:
        """Clear the training weighting."""
        self._training = None

    @contextmanager
    def condition(self, weights: torch.Tensor, batch_size: int | None = None):
        """Condition every forward of this thread or task inside the block on `weights`; restored on exit.

        Args:
            weights: conditioning vectors on the simplex, `(n,)` for all rows, or `(B, n)` one per row.
            batch_size: rows to broadcast a single weighting to; required with a `(n,)` weighting when the batch size
                is not 1.
        """
        weights = check_weights(weights, self.vector_size)
        if weights.dim() == 1:
            weights = weights.unsqueeze(0).expand(batch_size or 1, -1)
        token = self._per_call.set(_Conditioning(weights))
        try:
            yield
        finally:
            self._per_call.reset(token)
