"""Each conditioned block's learning signal: its gradient, and how well a step's rows agree on it.

With linear mixing, row b's policy-gradient term reaches block i of a conditioned layer scaled by the block's
weight: `w_i(b) · A(b) · ∇log π(y_b)`, with `A(b)` the advantage of the mixed reward `w(b)·R`. Where two rewards
conflict (`A_2 ≈ −A_1`) that is `w_i (w_i − w_j) · A_i`, whose sign flips with w: rows of one step push block i in
directions that cancel. `gradient_agreement` measures it: for per-row gradients `g_b` of one block,

    agreement = ||Σ_b g_b|| / Σ_b ||g_b||,

1 when the rows push the same way, about `1/√B` for B rows in random directions, 0 when they cancel.
`block_gradients` reads each block's gradient off the conditioned LoRA layers (rows `[k·r, (k+1)·r)` of `lora_A` and
the same columns of `lora_B` form block k; see `layer.py`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .features import check_conditioning_features


def block_gradients(model: nn.Module, module_names: list[str], num_blocks: int, adapter_name: str = "default"):
    """The current gradient of each conditioned block, flattened and concatenated over the conditioned layers.

    Args:
        model: the conditioned model, after a backward.
        module_names: its conditioned LoRA layers (`WeightConditioner.conditioned_module_names`).
        num_blocks: the blocks of each conditioned layer (`WeightConditioner.num_blocks`).
        adapter_name: the LoRA adapter.

    Returns:
        `(num_blocks, P)`, P the parameters of one block summed over the layers; zeros where a parameter has no
        gradient.
    """
    modules = dict(model.named_modules())
    pieces = []
    for name in module_names:
        layer = modules[name]
        for weight, block_dim in ((layer.lora_A[adapter_name].weight, 0), (layer.lora_B[adapter_name].weight, 1)):
            grad = weight.grad if weight.grad is not None else torch.zeros_like(weight)
            blocks = grad.detach().float().unflatten(block_dim, (num_blocks, -1))  # A: (k, r, in); B: (out, k, r)
            pieces.append(blocks.movedim(block_dim, 0).reshape(num_blocks, -1))
    return torch.cat(pieces, dim=1)


def gradient_agreement(per_row_gradients: torch.Tensor) -> torch.Tensor:
    """`||Σ_b g_b|| / Σ_b ||g_b||` over the rows b of a step: 1 if aligned, ~1/√B if random, 0 if they cancel.

    Args:
        per_row_gradients: `(B, ..., P)` one gradient per row (e.g. `(B, num_blocks, P)`).

    Returns:
        `(...)`; NaN where every row's gradient is zero (a block no row trained).
    """
    summed = per_row_gradients.sum(dim=0).norm(dim=-1)  # (...)
    total = per_row_gradients.norm(dim=-1).sum(dim=0)  # (...)
    return torch.where(total > 0, summed / total.clamp(min=torch.finfo(total.dtype).tiny), torch.nan)


# ---------------------------------------------------------------- the own-advantage signal (beyond the CLP paper)


def cross_term_weight(progress: float, start: float, end: float) -> float:
    """λ, the share of the cross terms in the own-advantage signal, at a fraction `progress` of training.

    0 before `start`, 1 from `end` on, linear in between (a step at `start` when `start == end`).
    """
    if progress < start:
        return 0.0
    if progress >= end:
        return 1.0
    return (progress - start) / (end - start)


def objective_of_blocks(features: Sequence[str], vector_size: int, num_objectives: int) -> list[int | None]:
    """For each block of a conditioned layer, in block order, the objective whose linear block it is, else None.

    The own-advantage signal gives an objective's own advantage to its linear block only: the KL-weight entry's linear
    block (multi-α), the `shared` block and the `pairwise` blocks serve every objective and keep the mixed advantage.

    Args:
        features: the conditioning features (`trl_clp.conditioning.features`).
        vector_size: n, the entries of a conditioning vector (m, plus one with multi-α).
        num_objectives: m.
    """
    objectives = []
    for feature in check_conditioning_features(features):
        if feature == "linear":
            objectives += [*range(num_objectives), *[None] * (vector_size - num_objectives)]
        elif feature == "shared":
            objectives.append(None)
        else:
            objectives += [None] * (vector_size * (vector_size - 1) // 2)
    return objectives


def block_gradient_coefficients(
    objective_advantages: torch.Tensor,
    advantages: torch.Tensor,
    block_objectives: list[int | None],
    cross_term_weight: float,
) -> torch.Tensor:
    """Each row's coefficient on each conditioned block's gradient: `c_{b,k} = (1 − λ)·A_i(b) + λ·A(b)` for block k,
    the linear block of objective i, and `A(b)` for every other block (e.g. the KL-weight block).

    With `A(b) = Σ_i w_i(b)·A_i(b)` (`objective_rewards`), λ = 1 gives every block today's `A(b)`; a one-hot row
    gives its one trained block `A_i(b) = A(b)` at every λ.

    Args:
        objective_advantages: `(N, m)` each objective's advantage `A_i` at the row's (mixed) policy.
        advantages: `(N,)` the advantage `A` of the row's scalar reward.
        block_objectives: for each block, the objective whose linear block it is, or None.
        cross_term_weight: λ in [0, 1].

    Returns:
        `(N, num_blocks)`.
    """
    columns = [
        advantages
        if objective is None
        else (1 - cross_term_weight) * objective_advantages[:, objective] + cross_term_weight * advantages
        for objective in block_objectives
    ]
    return torch.stack(columns, dim=1)


class GradientCoefficients:
    """Per-row coefficients on the gradients of a model's LoRA parameters, leaving values and input gradients exact.

    In a training forward with coefficients set, every hooked LoRA layer keeps its output and the gradient that flows
    back into its input, while its parameters receive `Σ_b c_b · ∂loss_b/∂θ` instead of `Σ_b ∂loss_b/∂θ`: per block
    (`(B, num_blocks)` coefficients) in the conditioned layers, per row (`(B,)`) in the other LoRA layers. Forward
    hooks on `lora_A` and `lora_B` add a term whose value is exactly zero,

        lora_A:  u + (c − 1) ⊙ (A·sg(x) − sg(A·sg(x)))          (gradient to A scaled by c per row and rank)
        lora_B:  v + B·sg((c − 1) ⊙ z) − sg(B·sg((c − 1) ⊙ z))   (gradient to B: Σ_b g_b (c ⊙ z_b)ᵀ)

    (sg = detach), so with the loss's per-row advantage replaced by 1 the parameters get the advantage-weighted
    policy gradient with a different advantage per block. The coefficients are training state like
    `WeightConditioner.set_conditioning_vectors` (backward, and the forward gradient checkpointing re-runs in it, may
    run in another thread): the trainer sets them for a step and clears them in a `finally`; with none set the hooks
    change nothing.

    Args:
        num_blocks: the blocks of each conditioned layer.
    """

    def __init__(self, num_blocks: int):
        self.num_blocks = num_blocks
        self._coefficients: tuple[torch.Tensor, torch.Tensor] | None = None
        self._handles = []

    def __deepcopy__(self, memo) -> GradientCoefficients:
        copied = GradientCoefficients(self.num_blocks)  # a copied model (e.g. `SteerableModel.merge`) gets none set
        memo[id(self)] = copied
        return copied

    def attach(self, model: nn.Module, conditioned_module_names: list[str], adapter_name: str = "default") -> None:
        """Hook every LoRA layer of `model`; those named in `conditioned_module_names` get per-block coefficients.

        Raises:
            ValueError: a trainable parameter is not the `lora_A`/`lora_B` weight of a linear LoRA layer (its gradient
                would not carry the advantage), or a conditioned layer's rank is not a multiple of `num_blocks`.
        """
        from peft.tuners.lora import Linear as LoraLinear

        layers = {
            name: module
            for name, module in model.named_modules()
            if isinstance(module, LoraLinear) and adapter_name in module.lora_A
        }
        hooked = {
            id(part.weight)
            for module in layers.values()
            for part in (module.lora_A[adapter_name], module.lora_B[adapter_name])
        }
        others = [name for name, p in model.named_parameters() if p.requires_grad and id(p) not in hooked]
        if others:
            raise ValueError(
                f"block_signal='own' weights the gradients of linear LoRA layers only, but {others[:3]} "
                f"({len(others)} in all) are trainable too: their gradient would not carry the advantage. Remove "
                "`modules_to_save`, trainable embeddings or non-linear LoRA targets, or use block_signal='mixed'."
            )
        for name, module in layers.items():
            conditioned = name in conditioned_module_names
            if conditioned and module.r[adapter_name] % self.num_blocks:
                raise ValueError(
                    f"LoRA layer {name!r} has rank {module.r[adapter_name]}, not a multiple of {self.num_blocks} blocks."
                )
            lora_a, lora_b = module.lora_A[adapter_name], module.lora_B[adapter_name]
            self._handles.append(lora_a.register_forward_hook(self._scale_a_gradient(conditioned)))
            self._handles.append(lora_b.register_forward_hook(self._scale_b_gradient(conditioned)))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def set(self, block_coefficients: torch.Tensor, row_coefficients: torch.Tensor) -> None:
        """Set `(B, num_blocks)` coefficients for the conditioned layers and `(B,)` for the others, until `clear`."""
        self._coefficients = (block_coefficients.detach(), row_coefficients.detach())

    def clear(self) -> None:
        self._coefficients = None

    def _coefficient(self, conditioned: bool, like: torch.Tensor) -> torch.Tensor | None:
        """`(B, 1, ..., R or 1)` coefficients broadcastable to a LoRA activation `like` `(B, ..., R)`, or None."""
        if self._coefficients is None:
            return None
        blocks, rows = self._coefficients
        if like.size(0) != rows.size(0):
            raise RuntimeError(
                f"The batch has {like.size(0)} rows but {rows.size(0)} gradient coefficients are set: give one per row."
            )
        if conditioned:
            coefficient = blocks.repeat_interleave(like.size(-1) // self.num_blocks, dim=-1)  # (B, R)
        else:
            coefficient = rows.unsqueeze(-1)  # (B, 1)
        shape = (like.size(0), *([1] * (like.dim() - 2)), coefficient.size(-1))
        return coefficient.to(like.device, like.dtype).view(shape)

    def _scale_a_gradient(self, conditioned: bool):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            coefficient = self._coefficient(conditioned, output)
            if coefficient is None or not torch.is_grad_enabled():
                return None
            (x,) = args
            parameter_path = nn.functional.linear(x.detach(), module.weight, module.bias)
            return output + (coefficient - 1) * (parameter_path - parameter_path.detach())

        return hook

    def _scale_b_gradient(self, conditioned: bool):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            (z,) = args
            coefficient = self._coefficient(conditioned, z)
            if coefficient is None or not torch.is_grad_enabled():
                return None
            parameter_path = nn.functional.linear(((coefficient - 1) * z).detach(), module.weight)
            return output + (parameter_path - parameter_path.detach())

        return hook
