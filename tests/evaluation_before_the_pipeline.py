"""`evaluate_front` as it was before it became a pipeline of named steps: a frozen copy, with its private helpers.

`tests/test_evaluation_steps.py` checks that the pipeline gives the same `Front` as this copy, bit for bit (results,
intervals and every sample), on the paths the steps split apart: a conditioned model, the prompting baseline, a
KL-conditioned model, a decoding-time mixture, conversations with a chat template, several processes. It is a drift
detector for the refactoring, not code to maintain: never edit it to make that test pass.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch
from accelerate.utils import gather_object

from trl_clp.conditioning.prompts import check_prompts, format_weighted_prompt, tokenize_left_padded
from trl_clp.conditioning.steerable import SteerableModel
from trl_clp.decoding import generate_with_mixed_logits, mixture_log_probs
from trl_clp.evaluation import Front, WeightingResult
from trl_clp.pareto import bootstrap_mean_ci
from trl_clp.scalarization import scalarize_rewards


def completion_log_probs(
    model, sequences: torch.Tensor, attention_mask: torch.Tensor, prompt_length: int, temperature: float = 1.0
) -> torch.Tensor:
    """`(B, C)` log-probability of each completion token (positions after `prompt_length`) under `model`.

    The logits are divided by `temperature` first, as TRL does for the policy and the reference during training: the
    log-probabilities are those of the distribution the completions were sampled from.
    """
    logits = model(input_ids=sequences, attention_mask=attention_mask).logits[:, prompt_length - 1 : -1]  # (B, C, V)
    log_probs = torch.log_softmax(logits.float() / temperature, dim=-1)  # (B, C, V)
    return log_probs.gather(-1, sequences[:, prompt_length:, None]).squeeze(-1)


def _mask_after_eos(completion_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """`(B, C)` 1 up to and including the first EOS, 0 after it."""
    is_eos = completion_ids == eos_token_id
    first_eos = torch.where(is_eos.any(1), is_eos.int().argmax(1), completion_ids.size(1))  # (B,)
    return (torch.arange(completion_ids.size(1), device=completion_ids.device)[None] <= first_eos[:, None]).long()


def _mean_and_ci(per_prompt: torch.Tensor, num_resamples: int, confidence: float, seed: int):
    return torch.nanmean(per_prompt).item(), list(bootstrap_mean_ci(per_prompt, num_resamples, confidence, seed))


@torch.no_grad()
def evaluate_front_before_the_pipeline(
    model: SteerableModel,
    tokenizer,
    prompts: list[str],
    reward_funcs: list,
    weightings: torch.Tensor,
    kl_weight: float | None = None,
    num_samples: int = 1,
    max_new_tokens: int = 32,
    batch_size: int = 64,
    seed: int = 0,
    reward_kwargs: dict[str, list] | None = None,
    num_resamples: int = 1000,
    confidence: float = 0.95,
    decoding=None,
    accelerator=None,
    **generation_kwargs,
) -> Front:
    """`evaluate_front` as it was before its steps had names (frozen copy; see the module docstring)."""
    conversational = check_prompts(prompts)
    config = model.conditioning_config
    names = model.objective_names
    if kl_weight is None:
        kl_weight = config.min_kl_weight if config.min_kl_weight is not None else (config.kl_weight or 0.0)
    conditioning_kl = kl_weight if config.min_kl_weight is not None else None
    # Full-distribution sampling, as in training (transformers would otherwise default to top_k=50).
    generation_kwargs = {
        "do_sample": True,
        "top_k": 0,
        "top_p": 1.0,
        "pad_token_id": tokenizer.pad_token_id,
        **generation_kwargs,
    }
    temperature = generation_kwargs.get("temperature", 1.0)
    rows = [(k, p) for k in range(len(weightings)) for p in range(len(prompts)) for _ in range(num_samples)]
    batches = [rows[start : start + batch_size] for start in range(0, len(rows), batch_size)]
    # One seed per batch, drawn from `seed`: a batch samples the same completions whichever process runs it.
    batch_seeds = torch.randint(2**62, (len(batches),), generator=torch.Generator().manual_seed(seed)).tolist()

    def sample(batch: list[tuple[int, int]], batch_seed: int) -> tuple[list[list[int]], list[float]]:
        """The batch's completion ids (up to and including EOS) and sequence KLs to the reference."""
        torch.manual_seed(batch_seed)
        row_weights = weightings[[k for k, _ in batch]]  # (b, m)
        texts = [prompts[p] for _, p in batch]
        if config.conditioning == "prompt":
            texts = [
                format_weighted_prompt(text, w.tolist(), names, config.prompt_template)
                for text, w in zip(texts, row_weights, strict=True)
            ]
            context = nullcontext()
        else:
            context = model.conditioner.condition(model.conditioning_vector(row_weights, conditioning_kl))
        # The trainer's tokenization (TRL's `_tokenize_prompts`), as `SteerableModel.tokenize_prompts` builds it.
        encoded = tokenize_left_padded(tokenizer, texts, config.chat_template_kwargs).to(model.device)
        prompt_length = encoded["input_ids"].size(1)
        if decoding is not None:
            components = decoding(row_weights.to(model.device))
            sequences = generate_with_mixed_logits(
                model,
                encoded["input_ids"],
                encoded["attention_mask"],
                components,
                max_new_tokens,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                temperature=temperature,
            )
            completion_mask = _mask_after_eos(sequences[:, prompt_length:], tokenizer.eos_token_id)
            mask = torch.cat([encoded["attention_mask"], completion_mask], 1)
            policy = mixture_log_probs(model, sequences, mask, prompt_length, components, temperature)
        else:
            with context:
                sequences = model.model.generate(**encoded, max_new_tokens=max_new_tokens, **generation_kwargs)
                completion_mask = _mask_after_eos(sequences[:, prompt_length:], tokenizer.eos_token_id)
                mask = torch.cat([encoded["attention_mask"], completion_mask], 1)
                policy = completion_log_probs(model.model, sequences, mask, prompt_length, temperature)
        with model.model.disable_adapter():
            reference = completion_log_probs(model.model, sequences, mask, prompt_length, temperature)
        kl = ((policy - reference) * completion_mask).sum(1)  # (b,)
        kept = [
            ids[row_mask.bool()].tolist()
            for ids, row_mask in zip(sequences[:, prompt_length:], completion_mask, strict=True)
        ]
        return kept, kl.tolist()

    process_index, num_processes = (
        (0, 1) if accelerator is None else (accelerator.process_index, accelerator.num_processes)
    )
    sampled = []  # (batch index, completion ids, KLs) of the batches this process ran
    # Process k runs batches k, k + n, k + 2n, ...; in the last round a process without a batch reruns batch 0 and
    # drops it, so that every process makes the same sequence of forward calls (each is collective under ZeRO-3 and
    # FSDP, where a process that stopped early would leave the others waiting).
    for first in range(0, len(batches), num_processes):
        index = first + process_index
        batch_ids, batch_kl = sample(batches[index % len(batches)], batch_seeds[index % len(batches)])
        if index < len(batches):
            sampled.append((index, batch_ids, batch_kl))
    if num_processes > 1:
        sampled = sorted(gather_object(sampled), key=lambda item: item[0])  # every process holds every batch
    completion_ids = [ids for _, batch_ids, _ in sampled for ids in batch_ids]
    texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in completion_ids]
    # TRL's shape for the reward functions: a conversation's completion is an assistant message.
    completions = [[{"role": "assistant", "content": text}] for text in texts] if conversational else texts
    kl = torch.tensor([value for _, _, batch_kl in sampled for value in batch_kl])  # (R,)

    row_prompts = [prompts[p] for _, p in rows]
    extra = {key: [values[p] for _, p in rows] for key, values in (reward_kwargs or {}).items()}
    scores = torch.tensor(
        [
            [
                math.nan if v is None else float(v)
                for v in f(prompts=row_prompts, completions=completions, completion_ids=completion_ids, **extra)
            ]
            for f in reward_funcs
        ]
    ).T  # (R, m)
    kl = kl.to(scores)
    # Each completion's value exactly as training scalarises it: NaN terms skipped, NaN if every reward is NaN.
    row_weights = weightings[[k for k, _ in rows]].to(scores)  # (R, m)
    row_values = scalarize_rewards(scores, row_weights, kl, torch.full_like(kl, kl_weight))  # (R,)
    # (K, P, S, ·): rows are ordered by weighting, then prompt, then sample.
    shape = (len(weightings), len(prompts), num_samples)
    per_prompt_scores = scores.view(*shape, -1).nanmean(2)  # (K, P, m)
    per_prompt_kl = kl.view(*shape).mean(2)  # (K, P)
    per_prompt_values = row_values.view(*shape).nanmean(2)  # (K, P); NaN for a prompt with no scorable completion
    samples = [
        {
            "prompt": prompts[p],
            "weights": [round(float(w), 6) for w in weightings[k]],
            "sample": s,
            "completion": text,
            "rewards": {name: None if math.isnan(v) else v for name, v in zip(names, row_scores, strict=True)},
            "kl": row_kl,
            "value": None if math.isnan(row_value) else row_value,
        }
        for (k, p), s, text, row_scores, row_kl, row_value in zip(
            rows,
            [i % num_samples for i in range(len(rows))],
            texts,
            scores.tolist(),
            kl.tolist(),
            row_values.tolist(),
            strict=True,
        )
    ]
    results = []
    for k, weights in enumerate(weightings):
        per_prompt_value = per_prompt_values[k]  # (P,)
        rewards, reward_ci = {}, {}
        for i, name in enumerate(names):
            rewards[name], reward_ci[name] = _mean_and_ci(per_prompt_scores[k, :, i], num_resamples, confidence, seed)
        kl_mean, kl_ci = _mean_and_ci(per_prompt_kl[k], num_resamples, confidence, seed)
        value, value_ci = _mean_and_ci(per_prompt_value, num_resamples, confidence, seed)
        results.append(
            WeightingResult(
                weights=[round(float(w), 6) for w in weights],
                rewards=rewards,
                kl=kl_mean,
                value=value,
                num_completions=len(prompts) * num_samples,
                reward_ci=reward_ci,
                kl_ci=kl_ci,
                value_ci=value_ci,
            )
        )
    return Front(list(names), float(kl_weight), results, samples)
