"""Decoding-time baselines: mix the next-token logits of several policies at every step.

- **Logit mixing** of single-objective experts (the CLP paper's Theorem 1; MOD, https://arxiv.org/abs/2406.18853):
  logits = Σ_i w_i · logits(expert_i), the experts a steerable model's corners (`specialist_components`).
- **DeRA** (decoding-time realignment, Liu et al., 2024, https://arxiv.org/abs/2402.02992): logits =
  λ · logits(aligned) + (1 − λ) · logits(reference), which approximates the policy aligned with KL weight α0 / λ.

Both cost one forward pass per component per token; a KL-conditioned CLP model reaches the same trade-offs with one.
Components are the steerable model conditioned on a weighting, or its reference (adapter disabled), so no extra
weights are loaded; each component keeps its own KV cache.
"""

from __future__ import annotations

import inspect

import torch
from transformers import DynamicCache

from .conditioning.steerable import SteerableModel


@torch.no_grad()
def generate_with_mixed_logits(
    model: SteerableModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    components: list[tuple[torch.Tensor | None, torch.Tensor]],
    max_new_tokens: int,
    eos_token_id: int,
    pad_token_id: int,
    temperature: float = 1.0,
    do_sample: bool = True,
) -> torch.Tensor:
    """Sample from `softmax(Σ_j c_j · logits_j / temperature)`, one forward pass per component per token.

    Args:
        model: the steerable model whose conditionings (or reference) form the components.
        input_ids: `(B, T)` left-padded prompts; attention_mask: `(B, T)`.
        components: `(vector, coefficient)` pairs: `vector` is a `(B, num_blocks)` conditioning vector, or None for
            the reference (adapter disabled); `coefficient` is `(B,)`, the row's weight on that component's logits.
        max_new_tokens, eos_token_id, pad_token_id, temperature, do_sample: as in `generate` (full-distribution
            sampling: no top-k or top-p).

    Returns:
        `(B, T + max_new_tokens)` sequences; rows that ended are padded with `pad_token_id` after their EOS.
    """
    caches = [DynamicCache() for _ in components]
    cache_keyword = _cache_keyword(model.model.get_base_model())
    sequences, mask = input_ids, attention_mask
    step_ids = input_ids
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # left padding: count real tokens only
    finished = torch.zeros(input_ids.size(0), dtype=torch.bool, device=input_ids.device)
    for _ in range(max_new_tokens):
        logits = 0.0
        for (vector, coefficient), cache in zip(components, caches, strict=True):
            context = model.model.disable_adapter() if vector is None else model.conditioner.condition(vector)
            with context:
                output = model.model(
                    input_ids=step_ids,
                    attention_mask=mask,
                    position_ids=position_ids,
                    use_cache=True,
                    **{cache_keyword: cache},
                )
            logits = logits + coefficient.to(output.logits).unsqueeze(-1) * output.logits[:, -1].float()  # (B, V)
        if do_sample:
            next_tokens = torch.multinomial(torch.softmax(logits / temperature, dim=-1), 1).squeeze(-1)  # (B,)
        else:
            next_tokens = logits.argmax(-1)
        next_tokens = torch.where(finished, torch.full_like(next_tokens, pad_token_id), next_tokens)
        finished |= next_tokens == eos_token_id
        sequences = torch.cat([sequences, next_tokens[:, None]], dim=1)
        mask = torch.cat([mask, (~finished | (next_tokens == eos_token_id)).long()[:, None]], dim=1)
        step_ids = next_tokens[:, None]
        position_ids = position_ids[:, -1:] + 1
        if finished.all():
            break
    return sequences


def _cache_keyword(model: torch.nn.Module) -> str:
    """The name `model.forward` takes its KV cache under: transformers 5.x renamed `past_key_values` to `cache` (the
    old name warns, and is to be removed), and earlier 5.x releases know only the old one."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def dera_components(aligned: torch.Tensor, strength: torch.Tensor) -> list[tuple[torch.Tensor | None, torch.Tensor]]:
    """DeRA's two components: the aligned conditioning `(B, num_blocks)` with weight λ `(B,)`, the reference with
    1 − λ."""
    return [(aligned, strength), (None, 1 - strength)]


def expert_mixture_components(weights: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Logit mixing of single-objective experts: expert i is the model at the corner e_i, weighted by w_i.

    Args:
        weights: `(B, m)` weightings.
    """
    batch, m = weights.shape
    corners = torch.eye(m, device=weights.device)
    return [(corners[i].expand(batch, -1), weights[:, i]) for i in range(m)]


def specialist_components(
    model: SteerableModel, weights: torch.Tensor, kl_weight: float | None = None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Logit mixing of a steerable model's single-objective specialists (MOD, Shi et al., 2024,
    https://arxiv.org/abs/2406.18853): component i is `model` conditioned on the corner e_i, weighted by w_i, so
    that tokens are drawn from `softmax(Σ_i w_i · logits(e_i))`.

    `expert_mixture_components` with each corner turned into the model's own conditioning vector: with KL-weight
    conditioning the corner at α (`kl_weight`, default the smallest trained on, as `evaluate_front` steers); any
    `conditioning_features` are applied by the conditioner as for any weighting. Use it as
    `evaluate_front(..., decoding=partial(specialist_components, model))`.

    Args:
        model: a steerable model conditioned in its parameters (not the prompting baseline).
        weights: `(B, m)` weightings.
        kl_weight: the α every specialist is steered to; None for the model's default.

    Returns:
        m `(vector, coefficient)` pairs: `vector` `(B, n)` the corner's conditioning vector, `coefficient` `(B,)` w_i.
    """
    # conditioning_vector builds the KL entry on the CPU; the conditioner moves vectors to each layer's device.
    return [
        (model.conditioning_vector(corner.cpu(), kl_weight).to(weights.device), coefficient)
        for corner, coefficient in expert_mixture_components(weights)
    ]


def mixture_log_probs(
    model: SteerableModel,
    sequences: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_length: int,
    components: list[tuple[torch.Tensor | None, torch.Tensor]],
    temperature: float = 1.0,
) -> torch.Tensor:
    """`(B, C)` log-probability of each completion token under the logit mixture of `components`."""
    logits = 0.0
    for vector, coefficient in components:
        context = model.model.disable_adapter() if vector is None else model.conditioner.condition(vector)
        with context:
            output = model.model(input_ids=sequences, attention_mask=attention_mask)
        logits = (
            logits + coefficient.to(output.logits)[:, None, None] * output.logits[:, prompt_length - 1 : -1].float()
        )
    log_probs = torch.log_softmax(logits / temperature, dim=-1)  # (B, C, V)
    return log_probs.gather(-1, sequences[:, prompt_length:, None]).squeeze(-1)
