"""Score a steerable model over a grid of weightings: the mean of each reward and the KL to the reference."""

from __future__ import annotations

import csv
import json
import math
import os
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from .conditioning.config import format_weighted_prompt
from .conditioning.model import SteerableModel


@dataclass
class WeightingResult:
    """Evaluation of one weighting: per-objective mean rewards and the mean sequence KL to the reference."""

    weights: list[float]
    rewards: dict[str, float]
    kl: float
    num_completions: int


def completion_log_probs(model, sequences: torch.Tensor, attention_mask: torch.Tensor, prompt_length: int) -> torch.Tensor:
    """`(B, C)` log-probability of each completion token (positions after `prompt_length`) under `model`."""
    logits = model(input_ids=sequences, attention_mask=attention_mask).logits[:, prompt_length - 1 : -1]  # (B, C, V)
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, sequences[:, prompt_length:, None]).squeeze(-1)


def _mask_after_eos(completion_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """`(B, C)` 1 up to and including the first EOS, 0 after it."""
    is_eos = completion_ids == eos_token_id
    first_eos = torch.where(is_eos.any(1), is_eos.int().argmax(1), completion_ids.size(1))  # (B,)
    return (torch.arange(completion_ids.size(1), device=completion_ids.device)[None] <= first_eos[:, None]).long()


@torch.no_grad()
def evaluate_weightings(
    model: SteerableModel,
    tokenizer,
    prompts: list[str],
    reward_funcs: list,
    weightings: torch.Tensor,
    num_samples: int = 1,
    max_new_tokens: int = 32,
    batch_size: int = 64,
    seed: int = 0,
    reward_kwargs: dict[str, list] | None = None,
    **generation_kwargs,
) -> list[WeightingResult]:
    """Sample completions for every (prompt, weighting) pair and score them.

    Rows with different weightings share each `generate` call. Sampling is seeded, so two calls with the same
    arguments give the same completions.

    Args:
        model: the steerable model.
        tokenizer: its tokenizer (left padding is used).
        prompts: P held-out prompts (standard, non-conversational text).
        reward_funcs: m callables with TRL's signature `f(prompts, completions, completion_ids, **kwargs)`.
        weightings: `(K, m)` weightings to evaluate, e.g. `trl_clp.simplex_grid(2, 5)`.
        num_samples: completions per (prompt, weighting) pair.
        reward_kwargs: extra per-prompt columns passed to the reward functions (length P each).
        **generation_kwargs: passed to `generate` (`do_sample=True` by default).

    Returns:
        K results, in the order of `weightings`.
    """
    variant = model.conditioning_config.variant
    names = model.objective_names
    eos_token_id = tokenizer.eos_token_id
    # Full-distribution sampling, as in training (transformers would otherwise default to top_k=50).
    generation_kwargs = {"do_sample": True, "top_k": 0, "top_p": 1.0, "pad_token_id": tokenizer.pad_token_id, **generation_kwargs}
    rows = [(k, p) for k in range(len(weightings)) for p in range(len(prompts)) for _ in range(num_samples)]
    torch.manual_seed(seed)
    completions, completion_ids, kls = [], [], []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        row_weights = weightings[[k for k, _ in chunk]]  # (b, m)
        texts = [prompts[p] for _, p in chunk]
        if variant == "prompt":
            texts = [
                format_weighted_prompt(text, w.tolist(), names, model.conditioning_config.prompt_template)
                for text, w in zip(texts, row_weights, strict=True)
            ]
            context = nullcontext()
        else:
            context = model.conditioner.condition(model.conditioning_vector(row_weights))
        encoded = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left").to(model.device)
        prompt_length = encoded["input_ids"].size(1)
        with context:
            sequences = model.model.generate(**encoded, max_new_tokens=max_new_tokens, **generation_kwargs)
            mask = torch.cat([encoded["attention_mask"], _mask_after_eos(sequences[:, prompt_length:], eos_token_id)], 1)
            policy = completion_log_probs(model.model, sequences, mask, prompt_length)
        with model.model.disable_adapter():
            reference = completion_log_probs(model.model, sequences, mask, prompt_length)
        completion_mask = mask[:, prompt_length:]
        kls.append(((policy - reference) * completion_mask).sum(1).cpu())  # (b,)
        for ids, row_mask in zip(sequences[:, prompt_length:], completion_mask, strict=True):
            kept = ids[row_mask.bool()].tolist()
            completion_ids.append(kept)
            completions.append(tokenizer.decode(kept, skip_special_tokens=True))
    kl = torch.cat(kls)  # (R,)
    row_prompts = [prompts[p] for _, p in rows]
    extra = {key: [values[p] for _, p in rows] for key, values in (reward_kwargs or {}).items()}
    scores = torch.tensor(
        [
            [math.nan if v is None else float(v) for v in f(prompts=row_prompts, completions=completions, completion_ids=completion_ids, **extra)]
            for f in reward_funcs
        ]
    ).T  # (R, m)
    row_weighting = torch.tensor([k for k, _ in rows])
    results = []
    for k, weights in enumerate(weightings):
        selected = row_weighting == k
        results.append(
            WeightingResult(
                weights=[round(float(w), 6) for w in weights],
                rewards={name: torch.nanmean(scores[selected, i]).item() for i, name in enumerate(names)},
                kl=kl[selected].mean().item(),
                num_completions=int(selected.sum()),
            )
        )
    return results


def format_results_table(results: list[WeightingResult]) -> str:
    """A fixed-width text table: one line per weighting, one column per reward, then KL."""
    names = list(results[0].rewards)
    header = ["weights"] + names + ["kl"]
    lines = [header] + [
        ["(" + ", ".join(f"{w:.2f}" for w in r.weights) + ")"] + [f"{r.rewards[n]:.4f}" for n in names] + [f"{r.kl:.3f}"]
        for r in results
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)) for line in lines)


def save_results(results: list[WeightingResult], directory: str, stem: str = "front") -> tuple[str, str]:
    """Write `<stem>.json` and `<stem>.csv` to `directory`; return their paths."""
    os.makedirs(directory, exist_ok=True)
    json_path, csv_path = os.path.join(directory, f"{stem}.json"), os.path.join(directory, f"{stem}.csv")
    names = list(results[0].rewards)
    with open(json_path, "w") as handle:
        json.dump([r.__dict__ for r in results], handle, indent=2)
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([f"w_{n}" for n in names] + [f"reward_{n}" for n in names] + ["kl", "num_completions"])
        for r in results:
            writer.writerow(r.weights + [r.rewards[n] for n in names] + [r.kl, r.num_completions])
    return json_path, csv_path


__all__ = ["WeightingResult", "evaluate_weightings", "format_results_table", "save_results"]
