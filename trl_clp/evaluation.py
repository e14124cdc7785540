"""Evaluate a steerable model over a grid of weightings: its Pareto front, with confidence intervals."""

from __future__ import annotations

import csv
import json
import math
import os
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

import torch
from accelerate.utils import gather_object

from .conditioning.prompts import check_prompts, format_weighted_prompt, tokenize_left_padded
from .conditioning.steerable import SteerableModel
from .decoding import generate_with_mixed_logits, mixture_log_probs
from .pareto import bootstrap_mean_ci, hypervolume, steerability
from .scalarization import scalarize_rewards


@dataclass
class WeightingResult:
    """One weighting's scores: per-objective mean rewards, the mean sequence KL to the reference, and the
    KL-regularised value `V = w·R − α·KL`, each mean with a bootstrap confidence interval over prompts.

    V is each completion's `w·R − α·KL` computed by training's own `trl_clp.scalarization.scalarize_rewards` (a NaN
    reward term is skipped; a completion whose rewards are all NaN has no value and is left out), then averaged.
    """

    weights: list[float]
    rewards: dict[str, float]
    kl: float
    value: float
    num_completions: int
    reward_ci: dict[str, list[float]] = field(default_factory=dict)
    kl_ci: list[float] = field(default_factory=list)
    value_ci: list[float] = field(default_factory=list)


@dataclass
class Front:
    """The evaluation of one model over a grid of weightings (one `WeightingResult` per weighting).

    `samples` holds every sampled completion of an `evaluate_front` call, one dict per completion: `prompt` (as
    given: a string or a conversation), `weights`, `sample` (its index among the prompt's samples at that
    weighting), `completion` (the decoded text), `rewards` (`{objective: value}`, None where unscored), `kl` (its
    sequence KL to the reference, nats) and `value` (`w·R − α·KL`, None if no reward applies). They are written
    apart, by `save_samples`: `save` and `load` keep to the summary.
    """

    objective_names: list[str]
    kl_weight: float
    results: list[WeightingResult]
    samples: list[dict] = field(default_factory=list, repr=False, compare=False)

    def weights(self) -> torch.Tensor:
        """`(K, m)` evaluated weightings."""
        return torch.tensor([r.weights for r in self.results])

    def rewards(self) -> torch.Tensor:
        """`(K, m)` mean reward of each objective at each weighting: the front's points."""
        return torch.tensor([[r.rewards[n] for n in self.objective_names] for r in self.results])

    def hypervolume(self, reference) -> float:
        """Exact hypervolume of the front's points above `reference` `(m,)`."""
        return hypervolume(self.rewards(), torch.as_tensor(reference, dtype=torch.float64))

    def steerability(self, tolerance: float = 0.0) -> dict[str, object]:
        """Per-objective range and rank correlation with the weight, and monotonicity violations."""
        return steerability(self.weights(), self.rewards(), tolerance)

    def format_table(self) -> str:
        """A fixed-width text table: one line per weighting, one column per reward, then KL and V."""
        header = ["weights"] + self.objective_names + ["kl", "value"]
        lines = [header] + [
            ["(" + ", ".join(f"{w:.2f}" for w in r.weights) + ")"]
            + [f"{r.rewards[n]:.4f}" for n in self.objective_names]
            + [f"{r.kl:.3f}", f"{r.value:.4f}"]
            for r in self.results
        ]
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        return "\n".join("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in lines)

    def table_legend(self) -> str:
        """What the columns of `format_table` mean, to print under it."""
        num = self.results[0].num_completions if self.results else 0
        return (
            f"Each row: one weighting of ({', '.join(self.objective_names)}), the mean reward of each objective over "
            f"{num} sampled completions; kl = mean KL to the base model (nats per completion); "
            f"value = w·rewards − α·kl with α = {self.kl_weight:g}, the objective the weighting asks for."
        )

    def save(self, directory: str, stem: str = "front") -> tuple[str, str]:
        """Write `<stem>.json` (everything) and `<stem>.csv` (one row per weighting) to `directory`."""
        os.makedirs(directory, exist_ok=True)
        json_path, csv_path = os.path.join(directory, f"{stem}.json"), os.path.join(directory, f"{stem}.csv")
        summary = {key: value for key, value in asdict(self).items() if key != "samples"}
        with open(json_path, "w") as handle:
            json.dump(summary, handle, indent=2)
        names = self.objective_names
        with open(csv_path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(
                [f"w_{n}" for n in names]
                + [f"reward_{n}" for n in names]
                + [f"reward_{n}_ci_{end}" for n in names for end in ("low", "high")]
                + ["kl", "kl_ci_low", "kl_ci_high", "value", "value_ci_low", "value_ci_high", "num_completions"]
            )
            for r in self.results:
                writer.writerow(
                    r.weights
                    + [r.rewards[n] for n in names]
                    + [bound for n in names for bound in r.reward_ci[n]]
                    + [r.kl, *r.kl_ci, r.value, *r.value_ci, r.num_completions]
                )
        return json_path, csv_path

    def save_samples(self, path: str) -> str:
        """Write `samples` to `path` as JSON lines, one completion per line (see the class docstring)."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as handle:
            for sample in self.samples:
                handle.write(json.dumps(sample, ensure_ascii=False) + "\n")
        return path

    @classmethod
    def load(cls, path: str) -> Front:
        """Read a front written by `save` (the JSON file)."""
        with open(path) as handle:
            data = json.load(handle)
        return cls(data["objective_names"], data["kl_weight"], [WeightingResult(**r) for r in data["results"]])


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
def evaluate_front(
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
    """Sample completions for every (prompt, weighting) pair, score them, and summarise each weighting.

    Rows with different weightings share each `generate` call (`batch_size` rows at a time). Each batch is sampled
    from its own seed, drawn from `seed`, so two calls with the same arguments give the same front, on one process
    or several. Confidence intervals are percentile bootstraps over prompts (each prompt's samples averaged first).

    On several processes (`accelerator` given), every process must call this function with the same arguments:
    each samples its share of the batches, the completions and KLs are gathered, every process scores all of them
    with `reward_funcs` and returns the same `Front`, equal to a one-process evaluation. Processes make the same
    sequence of forward calls, as ZeRO-3 and FSDP require (`generate` keeps them in step itself there, through
    `synced_gpus`).

    Args:
        model: the steerable model.
        tokenizer: its tokenizer (left padding is used).
        prompts: P held-out prompts, as in a TRL dataset's `prompt` column: strings, or conversations (lists of
            `{"role", "content"}` messages). They are tokenized as the trainer tokenized them, conversations with the
            chat template and the training config's `chat_template_kwargs` (saved in `clp_config.json`).
        reward_funcs: m callables with TRL's signature `f(prompts, completions, completion_ids, **kwargs)`. As in
            training, conversational prompts give conversational completions, `[{"role": "assistant", "content":
            text}]`.
        weightings: `(K, m)` weightings to evaluate, e.g. `trl_clp.simplex_grid(2, 5)`.
        kl_weight: α in `V = w·R − α·KL`, and the α a KL-conditioned model is steered to; defaults to the model's
            training KL weight (its smallest one if conditioned on α).
        num_samples: completions per (prompt, weighting) pair.
        reward_kwargs: extra per-prompt columns passed to the reward functions (length P each).
        decoding: for decoding-time baselines, a function mapping the rows' `(b, m)` weightings to logit-mixture
            components (see `trl_clp.decoding`, e.g. DeRA or a mixture of experts); completions are then sampled
            from the mixture and its KL is measured. Default: the model conditioned on each row's weighting. Its
            sampling loop stops when its rows end, which differs between processes: do not combine it with
            `accelerator` on a ZeRO-3 or FSDP model.
        accelerator: the `accelerate.Accelerator` (or `PartialState`) of a multi-process run, to share the
            sampling between processes; None evaluates everything in this process.
        **generation_kwargs: passed to `generate` (full-distribution sampling by default). With `temperature=T`,
            the KL is measured between the policy and the reference both at temperature T (logits divided by T), as
            in training with `MultiObjectiveConfig(temperature=T)`.

    Returns:
        a `Front` with K results, in the order of `weightings`, and every completion in `Front.samples`.
    """
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


# ---------------------------------------------------------------- held-out preference pairs (DPO-CLP)


@dataclass
class PreferenceAccuracy:
    """How one weighting's policy orders held-out preference pairs, by its implicit reward.

    The implicit reward of a response is DPO's log-ratio `log π_w(y | x) − log π_ref(y | x)`; a pair is ordered by
    the margin Δ = (chosen's log-ratio) − (rejected's). `accuracy` is the share of the pairs the weighting has a
    preference on where Δ's sign agrees with it; `objective_accuracy[name]` the share of the pairs that objective
    has an opinion on where Δ's sign agrees with that objective alone (a steerable model's rises with its weight);
    `margin` the mean Δ (nats) oriented to the response the weighting prefers; `num_pairs` the pairs the weighting
    prefers a response of. `accuracy` and `margin` are None when it prefers none (e.g. w = (0.5, 0.5) on pairs
    whose two objectives disagree).
    """

    weights: list[float]
    accuracy: float | None
    objective_accuracy: dict[str, float]
    margin: float | None
    num_pairs: int


def _sequence_log_probs(model, batch: dict) -> torch.Tensor:
    """`(R,)` summed log-probability of each row's completion tokens (`completion_mask`), rows right-padded."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    log_probs = torch.log_softmax(logits.float(), dim=-1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    return (log_probs * batch["completion_mask"][:, 1:]).sum(-1)


@torch.no_grad()
def evaluate_preferences(
    model: SteerableModel,
    pairs,
    weightings: torch.Tensor,
    preference_layout: str = "labels",
    score_margin: float = 0.0,
    batch_size: int = 16,
) -> list[PreferenceAccuracy]:
    """Held-out preference accuracy of a steerable model at each weighting: DPO-CLP's counterpart of `evaluate_front`
    when the objectives exist only as labels or scores of pairs (no reward function to score samples with).

    Args:
        model: the steerable model; its reference is its base model with the adapter disabled, as in training.
        pairs: tokenized pairs as `MultiObjectiveDPOTrainer` prepares them (e.g. its `eval_dataset`): columns
            `prompt_ids`, `chosen_ids`, `rejected_ids` and the layout's (`objective_labels`, or `chosen_scores` and
            `rejected_scores`); for a prompting-baseline model also `prompt`, the text the weighting is written into.
        weightings: `(K, m)` weightings, e.g. `trl_clp.simplex_grid(2, 5)`.
        preference_layout, score_margin: as in `MultiObjectiveDPOConfig`; they say which response a weighting
            prefers (`trl_clp.preference_loss.label_preference`, `score_preference`).
        batch_size: pairs per forward pass (each pass holds 2 × batch_size rows).

    Returns:
        one `PreferenceAccuracy` per weighting, in the order of `weightings`.
    """
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    from .preference_data import SIGNAL_COLUMNS, check_preference_dataset
    from .preference_loss import label_preference, score_preference

    weightings = torch.as_tensor(weightings, dtype=torch.float32)
    names = model.objective_names
    check_preference_dataset(pairs, preference_layout, names, "held-out")
    prompting = model.conditioning_config.conditioning == "prompt"
    tokenizer = model._require_tokenizer() if prompting else model.tokenizer
    pad_token_id = tokenizer.pad_token_id if tokenizer is not None else model.model.config.pad_token_id
    collate = DataCollatorForPreference(pad_token_id=pad_token_id)
    signals = {
        column: torch.tensor(pairs[column], dtype=torch.float32) for column in SIGNAL_COLUMNS[preference_layout]
    }
    if preference_layout == "labels":
        signs = signals["objective_labels"]  # (N, m)
    else:
        signs = torch.sign(signals["chosen_scores"] - signals["rejected_scores"])
    num_pairs = len(signs)
    device = model.device
    margins = torch.zeros(len(weightings), num_pairs)  # (K, N) Δ
    for start in range(0, num_pairs, batch_size):
        rows = [pairs[i] for i in range(start, min(start + batch_size, num_pairs))]
        keys = ("prompt_ids", "chosen_ids", "rejected_ids")
        batch = {k: v.to(device) for k, v in collate([{k: row[k] for k in keys} for row in rows]).items()}
        with model.model.disable_adapter():
            reference = _sequence_log_probs(model.model, batch)  # (2b,)
        for k, weights in enumerate(weightings):
            if prompting:  # the policy reads the weighting in its prompt, the reference the prompt of the data
                encoded = model.tokenize_prompts([row["prompt"] for row in rows], weights)
                prompt_ids = [
                    ids[mask.bool()].tolist()
                    for ids, mask in zip(encoded["input_ids"], encoded["attention_mask"], strict=True)
                ]
                examples = [
                    {**{k: row[k] for k in keys}, "prompt_ids": ids} for row, ids in zip(rows, prompt_ids, strict=True)
                ]
                policy = _sequence_log_probs(model.model, {k: v.to(device) for k, v in collate(examples).items()})
            else:
                with model.condition(weights, batch_size=2 * len(rows)):
                    policy = _sequence_log_probs(model.model, batch)
            chosen, rejected = (policy - reference).chunk(2)
            margins[k, start : start + len(rows)] = (chosen - rejected).cpu()
    results = []
    for k, weights in enumerate(weightings):
        rows_weights = weights.expand(num_pairs, -1)
        if preference_layout == "labels":
            preference, kept = label_preference(signs, rows_weights)
        else:
            preference, kept = score_preference(
                signals["chosen_scores"], signals["rejected_scores"], rows_weights, score_margin
            )
        orientation = torch.sign(2 * preference - 1) * kept  # (N,) +1: w prefers chosen, −1 rejected, 0 neither
        decided = orientation != 0
        agree = torch.sign(margins[k]) == orientation
        voiced = signs != 0  # (N, m)
        per_objective = (torch.sign(margins[k])[:, None] == signs) & voiced
        results.append(
            PreferenceAccuracy(
                weights=weights.tolist(),
                accuracy=(agree & decided).sum().item() / decided.sum().item() if decided.any() else None,
                objective_accuracy={
                    name: per_objective[:, i].sum().item() / max(voiced[:, i].sum().item(), 1)
                    for i, name in enumerate(names)
                },
                margin=(orientation * margins[k]).sum().item() / decided.sum().item() if decided.any() else None,
                num_pairs=int(decided.sum().item()),
            )
        )
    return results


def format_preference_table(results: list[PreferenceAccuracy]) -> str:
    """A fixed-width text table of `evaluate_preferences`' results: one line per weighting."""
    names = list(results[0].objective_accuracy)
    header = ["weights", "accuracy"] + [f"{name} acc." for name in names] + ["margin", "pairs"]
    lines = [header] + [
        ["(" + ", ".join(f"{w:.2f}" for w in r.weights) + ")", "—" if r.accuracy is None else f"{r.accuracy:.3f}"]
        + [f"{r.objective_accuracy[n]:.3f}" for n in names]
        + ["—" if r.margin is None else f"{r.margin:.3f}", str(r.num_pairs)]
        for r in results
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in lines)
