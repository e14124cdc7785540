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

import torch
from torch import nn


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
