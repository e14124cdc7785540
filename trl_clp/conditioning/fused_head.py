"""Log-probabilities through a LoRA-adapted output layer without materialising the `(N, V)` logits (logit-CLP).

TRL's fused LM head (`trl.trainer.utils.add_fused_lm_head`) multiplies the hidden states by `lm_head.weight` in
tiles, so it never holds the logits, but it reads the base weight only and would skip a LoRA on the output layer.
Here the adapted layer is written as the base projection plus its low-rank update,

    logits = h·Wᵀ + b + u·Bᵀ,     u = s · (c(row) ⊙ (dropout(h)·Aᵀ))     (block coefficients of `layer.py`),

and the log-softmax is folded over `(token_chunk, vocab_chunk)` tiles with an online log-sum-exp, in the forward
and again in the backward, which recomputes each tile instead of saving it. Peak memory is a few tiles plus the
`(V, m·r)` gradient of `B`, whatever the vocabulary size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.distributed.tensor import DTensor, Partial
from torch.nn import functional as F

from .layer import scale_lora_blocks

# Tiles of (1024 tokens, 16384 vocabulary entries): 64 MiB in fp32. Smaller than TRL's (4096, 32768) because the
# fold below runs in torch (a few tile-sized temporaries) where TRL folds in place in a Triton kernel.
TOKEN_CHUNK_SIZE = 1024
VOCAB_CHUNK_SIZE = 16384

# Config attributes under which the model transforms its logits after the output layer (TRL's fused head reads the
# same ones): such models keep the materialising path.
LOGIT_TRANSFORM_ATTRIBUTES = (
    "final_logit_softcapping",
    "logit_scale",
    "output_multiplier",
    "lm_head_multiplier",
    "logits_scaling",
)


def _full(parameter: torch.Tensor | None) -> torch.Tensor | None:
    """The whole of a parameter that FSDP2 keeps sharded as a DTensor outside its module's forward, else itself.

    The head's weights are read after the model's forward has returned, where FSDP2 may have resharded them (an
    output layer in its own FSDP unit), as TRL's fused head reads `lm_head.weight` (`.full_tensor()`). The gather is
    differentiable: each rank's gradient of the whole tensor comes back averaged over the ranks and sharded
    (`Partial("avg")`), which is what FSDP2's reduce-scatter gives the gradients of the parameters it gathers itself.
    """
    if isinstance(parameter, DTensor):
        return parameter.full_tensor(grad_placements=[Partial("avg")] * parameter.device_mesh.ndim)
    return parameter


def _compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    if torch.is_autocast_enabled(tensor.device.type):
        return torch.get_autocast_dtype(tensor.device.type)
    return tensor.dtype


def _tile(hidden, lora_hidden, weight, bias, lora_b, start, end, dtype) -> torch.Tensor:
    """`(n, end - start)` float32 logits of vocabulary entries `[start, end)`."""
    tile = hidden.to(dtype) @ weight[start:end].to(dtype).t()
    if lora_hidden is not None:
        tile += lora_hidden.to(dtype) @ lora_b[start:end].to(dtype).t()
    if bias is not None:
        tile += bias[start:end].to(dtype)
    return tile.float()


class _LowRankHeadLogProbs(torch.autograd.Function):
    """`log_softmax(logits / T)[target]` and the entropy of `softmax(logits / T)`, tile by tile; see the module."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, lora_hidden, lora_b, targets, temperature, compute_entropy, chunks):
        ctx.set_materialize_grads(False)  # entropies are often only logged: no gradient, no backward work for them
        token_chunk, vocab_chunk = chunks
        dtype = _compute_dtype(hidden)
        num_tokens, vocab_size = hidden.size(0), weight.size(0)
        log_z = hidden.new_empty(num_tokens, dtype=torch.float32)
        target_logits = hidden.new_empty(num_tokens, dtype=torch.float32)
        entropies = hidden.new_empty(num_tokens, dtype=torch.float32) if compute_entropy else None
        for first in range(0, num_tokens, token_chunk):
            rows = slice(first, first + token_chunk)
            h, u, t = hidden[rows], None if lora_hidden is None else lora_hidden[rows], targets[rows]
            running_max = h.new_full((h.size(0),), -torch.inf, dtype=torch.float32)
            sum_exp = torch.zeros_like(running_max)  # Σ exp(z - max)
            z_sum_exp = torch.zeros_like(running_max)  # Σ z·exp(z - max), for the entropy
            target_z = torch.zeros_like(running_max)
            for start in range(0, vocab_size, vocab_chunk):
                end = min(start + vocab_chunk, vocab_size)
                z = _tile(h, u, weight, bias, lora_b, start, end, dtype).div_(temperature)  # (n, v)
                in_tile = (t >= start) & (t < end)
                picked = z.gather(1, (t - start).clamp(0, end - start - 1).unsqueeze(1)).squeeze(1)
                target_z = torch.where(in_tile, picked, target_z)
                new_max = torch.maximum(running_max, z.amax(1))
                rescale = torch.exp(running_max - new_max)
                e = (z - new_max.unsqueeze(1)).exp_()  # (n, v)
                sum_exp = sum_exp * rescale + e.sum(1)
                if compute_entropy:
                    z_sum_exp = z_sum_exp * rescale + torch.einsum("nv,nv->n", e, z)
                running_max = new_max
                del z, e
            log_z[rows] = running_max + sum_exp.log()
            target_logits[rows] = target_z
            if compute_entropy:
                entropies[rows] = log_z[rows] - z_sum_exp / sum_exp  # H = log Z - E_p[z]
        logps = target_logits - log_z
        ctx.save_for_backward(hidden, weight, bias, lora_hidden, lora_b, targets, log_z, entropies)
        ctx.temperature, ctx.chunks, ctx.dtype = temperature, chunks, dtype
        return logps.to(hidden.dtype), None if entropies is None else entropies.to(hidden.dtype)

    @staticmethod
    def backward(ctx, grad_logps, grad_entropies):
        hidden, weight, bias, lora_hidden, lora_b, targets, log_z, entropies = ctx.saved_tensors
        token_chunk, vocab_chunk = ctx.chunks
        temperature, dtype = ctx.temperature, ctx.dtype
        needs = ctx.needs_input_grad
        num_tokens, vocab_size = hidden.size(0), weight.size(0)

        def zeros(like, needed):  # gradients accumulate in fp32 whatever the compute dtype
            return torch.zeros(like.shape, dtype=torch.float32, device=like.device) if needed else None

        grad_hidden, grad_weight, grad_bias = zeros(hidden, needs[0]), zeros(weight, needs[1]), zeros(bias, needs[2])
        grad_lora_hidden, grad_lora_b = zeros(lora_hidden, needs[3]), zeros(lora_b, needs[4])
        for first in range(0, num_tokens, token_chunk):
            rows = slice(first, first + token_chunk)
            h, u, t = hidden[rows], None if lora_hidden is None else lora_hidden[rows], targets[rows]
            for start in range(0, vocab_size, vocab_chunk):
                end = min(start + vocab_chunk, vocab_size)
                log_p = _tile(h, u, weight, bias, lora_b, start, end, dtype)
                log_p.div_(temperature).sub_(log_z[rows].unsqueeze(1))  # (n, v)
                p = log_p.exp()
                # d H / d z_j = -p_j (log p_j + H);  d log p_t / d z_j = 1[j = t] - p_j;  then d z / d logits = 1 / T
                if grad_entropies is not None:
                    grad = log_p.add_(entropies[rows].unsqueeze(1)).mul_(p).mul_(-grad_entropies[rows].unsqueeze(1))
                else:
                    grad = log_p.zero_()
                if grad_logps is not None:
                    g = grad_logps[rows].float()
                    grad.addcmul_(p, g.unsqueeze(1), value=-1)
                    in_tile = ((t >= start) & (t < end)).nonzero().squeeze(1)
                    grad[in_tile, t[in_tile] - start] += g[in_tile]
                del p
                grad = grad.div_(temperature).to(dtype)  # (n, v): gradient of the tile's logits
                if grad_hidden is not None:
                    grad_hidden[rows] += (grad @ weight[start:end].to(dtype)).float()
                if grad_weight is not None:
                    grad_weight[start:end] += (grad.t() @ h.to(dtype)).float()
                if grad_bias is not None:
                    grad_bias[start:end] += grad.sum(0, dtype=torch.float32)
                if grad_lora_hidden is not None:
                    grad_lora_hidden[rows] += (grad @ lora_b[start:end].to(dtype)).float()
                if grad_lora_b is not None:
                    grad_lora_b[start:end] += (grad.t() @ u.to(dtype)).float()

        def cast(grad, like):
            return None if grad is None else grad.to(like.dtype)

        return (
            cast(grad_hidden, hidden),
            cast(grad_weight, weight),
            cast(grad_bias, bias),
            cast(grad_lora_hidden, lora_hidden),
            cast(grad_lora_b, lora_b),
            None,
            None,
            None,
            None,
        )


def low_rank_head_logps_and_entropies(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    lora_hidden: torch.Tensor | None,
    lora_b: torch.Tensor | None,
    targets: torch.Tensor,
    temperature: float = 1.0,
    compute_entropy: bool = False,
    token_chunk_size: int = TOKEN_CHUNK_SIZE,
    vocab_chunk_size: int = VOCAB_CHUNK_SIZE,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probability of each target, and optionally the entropy, under `softmax((h·Wᵀ + b + u·Bᵀ) / T)`.

    Equal to `selective_log_softmax_and_entropy(logits, targets, temperature)` on the full logits, gradients
    included, without holding more than a `(token_chunk_size, vocab_chunk_size)` tile of them at a time.

    Args:
        hidden: `(N, H)` hidden states entering the output layer.
        weight: `(V, H)` output layer (the embedding matrix when they are tied).
        bias: `(V,)` or None.
        lora_hidden: `(N, R)` the low-rank activations `u`, every scaling already applied (LoRA scaling and the
            per-row block factors), or None for the plain head.
        lora_b: `(V, R)` the LoRA `B` matrix, or None with `lora_hidden`.
        targets: `(N,)` token ids.
        temperature: the logits are divided by it.
        compute_entropy: also return the entropies.

    Returns:
        logps `(N,)` and entropies `(N,)` or None, in the dtype of `hidden`; the statistics are kept in fp32.
    """
    if (lora_hidden is None) != (lora_b is None):
        raise ValueError("Pass both `lora_hidden` and `lora_b`, or neither.")
    return _LowRankHeadLogProbs.apply(
        hidden,
        weight,
        bias,
        lora_hidden,
        lora_b,
        targets,
        temperature,
        compute_entropy,
        (token_chunk_size, vocab_chunk_size),
    )


def fuses_output_layer(output_layer: nn.Module, config) -> bool:
    """Whether `conditioned_head_logps_and_entropies` reproduces `output_layer` of a model with this `config`.

    It needs a PEFT LoRA layer on a plain `nn.Linear` (not quantised), not merged, and a model that does not
    transform its logits afterwards (softcapping, logit scales: see `LOGIT_TRANSFORM_ATTRIBUTES`).
    """
    from peft.tuners.lora import Linear as LoraLinear

    text_config = config.get_text_config()
    return (
        isinstance(output_layer, LoraLinear)
        and type(output_layer.base_layer) is nn.Linear
        and not output_layer.merged
        and len(output_layer.active_adapters) == 1
        and all(getattr(text_config, name, None) is None for name in LOGIT_TRANSFORM_ATTRIBUTES)
    )


def conditioned_head_logps_and_entropies(
    model: nn.Module,
    output_layer: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    logits_to_keep: int,
    weights: torch.Tensor | None,
    temperature: float = 1.0,
    compute_entropy: bool = False,
    features: Sequence[str] = ("linear",),
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Completion log-probabilities of a causal LM whose output layer is a (conditioned) LoRA, without the logits.

    The model runs as usual (through any DDP or PEFT wrapper), but a forward pre-hook on its output layer keeps
    the hidden states and hands the layer zero positions, so the `(B, C, V)` logits are never built; the layer is
    then applied through `low_rank_head_logps_and_entropies`. Its weights are read after the forward: under FSDP2
    each one that is a sharded DTensor then is gathered (`.full_tensor()`), as TRL's fused head gathers
    `lm_head.weight`. DeepSpeed ZeRO-3 leaves them as empty partitions there: the trainers refuse logit-CLP under it.

    Args:
        model: the model to call (possibly wrapped); `output_layer` must be its output embeddings, a LoRA layer
            for which `fuses_output_layer` holds.
        input_ids, attention_mask: `(B, S)`.
        logits_to_keep: C, the number of completion tokens at the end of each row.
        weights: `(B, n)` per-row conditioning vectors of the output layer's LoRA (rank K·r, its blocks mixed with
            their `features`); None only while the adapter is disabled (e.g. reference log-probabilities).
        temperature: the logits are divided by it.
        compute_entropy: also return the entropies.
        features: the conditioning features of the output layer's blocks (`trl_clp.conditioning.features`).

    Returns:
        logps `(B, C)` and entropies `(B, C)` or None.
    """
    captured = {}

    def keep_hidden_states(module, args):
        (hidden_states,) = args
        captured["hidden"] = hidden_states  # (B, C + 1, H)
        return (hidden_states[:, :0],)

    handle = output_layer.register_forward_pre_hook(keep_hidden_states)
    try:
        model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=logits_to_keep + 1)
    finally:
        handle.remove()
    hidden = captured["hidden"][:, :-1]  # (B, C, H): position t predicts completion token t
    targets = input_ids[:, -logits_to_keep:]  # (B, C)
    batch_size, num_tokens = targets.shape

    lora_hidden = lora_b = None
    bias = _full(output_layer.base_layer.bias)
    (adapter,) = output_layer.active_adapters
    if not output_layer.disable_adapters and adapter in output_layer.lora_A:
        lora_a, lora_b_layer = output_layer.lora_A[adapter], output_layer.lora_B[adapter]
        scaling = output_layer.scaling[adapter]
        lora_a_weight = _full(lora_a.weight)  # (R, H)
        x = output_layer.lora_dropout[adapter](hidden.to(lora_a_weight.dtype))
        if weights is None or weights.size(0) != batch_size:
            raise RuntimeError(
                f"The conditioned output layer needs one weighting per row: the batch has {batch_size} rows, the "
                f"weightings are {None if weights is None else tuple(weights.shape)}."
            )
        lora_hidden = scale_lora_blocks(F.linear(x, lora_a_weight, _full(lora_a.bias)), weights, features)  # (B, C, R)
        lora_hidden = (lora_hidden * scaling).reshape(batch_size * num_tokens, -1)  # (N, R)
        lora_b = _full(lora_b_layer.weight)  # (V, R)
        if lora_b_layer.bias is not None:  # PEFT's `lora_bias`: a bias that the block scaling does not touch
            lora_bias = _full(lora_b_layer.bias) * scaling
            bias = lora_bias if bias is None else bias + lora_bias
    logps, entropies = low_rank_head_logps_and_entropies(
        hidden.reshape(batch_size * num_tokens, -1),
        _full(output_layer.base_layer.weight),
        bias,
        lora_hidden,
        lora_b,
        targets.reshape(-1),
        temperature,
        compute_entropy,
    )
    return logps.view(batch_size, num_tokens), None if entropies is None else entropies.view(batch_size, num_tokens)
