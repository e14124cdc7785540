"""Evaluate a steerable model over a grid of weightings: its Pareto front, with confidence intervals."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from functools import partial

import torch
from accelerate.utils import gather_object
from transformers import BatchEncoding

from .conditioning.prompts import check_prompts, format_weighted_prompt, tokenize_left_padded
from .conditioning.steerable import SteerableModel
from .decoding import generate_with_mixed_logits, mixture_log_probs
from .pareto import bootstrap_mean_ci, hypervolume, steerability

# The held-out preference accuracy lived here before it got its own module: its names stay importable from here.
from .preference_evaluation import PreferenceAccuracy, evaluate_preferences, format_preference_table  # noqa: F401
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

    A pipeline of steps, each a function of this module: the rows (`evaluation_rows`), in batches of `batch_size`,
    each with its seed (`batch_seeds`); each batch (`sample_batch`, on the process `share_batches` gives it to)
    rendered (`render_prompts`), sampled (a `Sampler`: `sample_conditioned`, the model conditioned on each row's
    weighting, or with `decoding`, `sample_mixture`) and measured against the reference (`kl_to_reference`); then
    every completion scored (`score_completions`) and the front summarised (`summarise_front`).

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
    check_prompts(prompts)
    config = model.conditioning_config
    if kl_weight is None:
        kl_weight = config.min_kl_weight if config.min_kl_weight is not None else (config.kl_weight or 0.0)
    # Full-distribution sampling, as in training (transformers would otherwise default to top_k=50).
    generation_kwargs = {
        "do_sample": True,
        "top_k": 0,
        "top_p": 1.0,
        "pad_token_id": tokenizer.pad_token_id,
        **generation_kwargs,
    }
    if decoding is None:
        sampler = partial(
            sample_conditioned,
            model,
            kl_weight=kl_weight if config.min_kl_weight is not None else None,
            max_new_tokens=max_new_tokens,
            eos_token_id=tokenizer.eos_token_id,
            generation_kwargs=generation_kwargs,
        )
    else:
        sampler = partial(
            sample_mixture,
            model,
            decoding=decoding,
            max_new_tokens=max_new_tokens,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            temperature=generation_kwargs.get("temperature", 1.0),
        )
    rows = evaluation_rows(len(weightings), len(prompts), num_samples)
    batches = [rows[start : start + batch_size] for start in range(0, len(rows), batch_size)]
    seeds = batch_seeds(len(batches), seed)

    def sample(index: int) -> tuple[list[list[int]], list[float]]:
        batch = batches[index]
        return sample_batch(
            model, tokenizer, sampler, [prompts[p] for _, p in batch], weightings[[k for k, _ in batch]], seeds[index]
        )

    sampled = share_batches(sample, len(batches), accelerator)
    completion_ids = [ids for batch_ids, _ in sampled for ids in batch_ids]
    kl = torch.tensor([value for _, batch_kl in sampled for value in batch_kl])  # (R,)
    texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in completion_ids]
    scores = score_completions(
        reward_funcs,
        [prompts[p] for _, p in rows],
        texts,
        completion_ids,
        {key: [values[p] for _, p in rows] for key, values in (reward_kwargs or {}).items()},
    )
    return summarise_front(
        model.objective_names,
        weightings,
        prompts,
        num_samples,
        texts,
        scores,
        kl,
        kl_weight,
        num_resamples=num_resamples,
        confidence=confidence,
        seed=seed,
    )


# ---------------------------------------------------------------- the steps of `evaluate_front`


def evaluation_rows(num_weightings: int, num_prompts: int, num_samples: int) -> list[tuple[int, int]]:
    """`(weighting index, prompt index)` of every completion to sample, ordered by weighting, then prompt, then
    sample: `num_weightings · num_prompts · num_samples` rows, which `evaluate_front` cuts into batches in this order."""
    return [(k, p) for k in range(num_weightings) for p in range(num_prompts) for _ in range(num_samples)]


def batch_seeds(num_batches: int, seed: int) -> list[int]:
    """One seed per batch, drawn from `seed`: a batch samples the same completions whichever process runs it."""
    return torch.randint(2**62, (num_batches,), generator=torch.Generator().manual_seed(seed)).tolist()


def render_prompts(model: SteerableModel, tokenizer, prompts: list, weights: torch.Tensor) -> BatchEncoding:
    """Each row's prompt as the trainer tokenized it for generation (TRL's `_tokenize_prompts`), on the model's device.

    The prompting baseline's weighting is written into the prompt first (`format_weighted_prompt`, with the model's
    `prompt_template`); conversations are rendered with the chat template and the training config's
    `chat_template_kwargs` (saved in `clp_config.json`). This is `SteerableModel.tokenize_prompts` with the
    tokenizer given (the trainer's, during training) and one weighting per row.

    Args:
        prompts: b strings, or b conversations.
        weights: `(b, m)` each row's weighting.

    Returns:
        `input_ids` and `attention_mask`, `(b, T)`, left-padded.
    """
    config = model.conditioning_config
    if config.conditioning == "prompt":
        prompts = [
            format_weighted_prompt(prompt, w.tolist(), config.objective_names, config.prompt_template)
            for prompt, w in zip(prompts, weights, strict=True)
        ]
    return tokenize_left_padded(tokenizer, prompts, config.chat_template_kwargs).to(model.device)


@dataclass
class SampledBatch:
    """A sampler's output: the sampled sequences and their log-probabilities under the policy that sampled them.

    Attributes:
        sequences: `(b, T + C)` prompts (left-padded) and completions.
        attention_mask: `(b, T + C)` the prompts' mask, then 1 up to and including each completion's first EOS.
        prompt_length: T.
        policy_log_probs: `(b, C)` log-probability of each completion token under the sampling policy, at the
            sampling temperature (positions after EOS are there too: `completion_mask` leaves them out).
        temperature: the sampling temperature, at which the reference is scored too (`kl_to_reference`).
    """

    sequences: torch.Tensor
    attention_mask: torch.Tensor
    prompt_length: int
    policy_log_probs: torch.Tensor
    temperature: float = 1.0

    @property
    def completion_mask(self) -> torch.Tensor:
        """`(b, C)` 1 on each completion's tokens up to and including its first EOS."""
        return self.attention_mask[:, self.prompt_length :]

    def completion_ids(self) -> list[list[int]]:
        """Each row's completion token ids, up to and including its first EOS."""
        return [
            ids[row_mask.bool()].tolist()
            for ids, row_mask in zip(self.sequences[:, self.prompt_length :], self.completion_mask, strict=True)
        ]


# A sampler: `(encoded prompts, (b, m) weightings) -> SampledBatch`; `sample_conditioned` or `sample_mixture` with
# their other arguments bound (`functools.partial`).
Sampler = Callable[[BatchEncoding, torch.Tensor], SampledBatch]


def sample_conditioned(
    model: SteerableModel,
    encoded: BatchEncoding,
    weights: torch.Tensor,
    *,
    kl_weight: float | None,
    max_new_tokens: int,
    eos_token_id: int,
    generation_kwargs: dict,
) -> SampledBatch:
    """Sample from the model conditioned on each row's weighting (the prompting baseline reads it in its prompt).

    Args:
        encoded: `(b, T)` prompts from `render_prompts`.
        weights: `(b, m)` each row's weighting.
        kl_weight: the α a KL-conditioned model is steered to; None for a model not conditioned on α.
        generation_kwargs: `generate`'s keyword arguments (their `temperature` also scores the policy).
    """
    if model.conditioning_config.conditioning == "prompt":
        context = nullcontext()
    else:
        context = model.conditioner.condition(model.conditioning_vector(weights, kl_weight))
    temperature = generation_kwargs.get("temperature", 1.0)
    prompt_length = encoded["input_ids"].size(1)
    with context:
        sequences = model.model.generate(**encoded, max_new_tokens=max_new_tokens, **generation_kwargs)
        mask = torch.cat([encoded["attention_mask"], _mask_after_eos(sequences[:, prompt_length:], eos_token_id)], 1)
        policy = completion_log_probs(model.model, sequences, mask, prompt_length, temperature)
    return SampledBatch(sequences, mask, prompt_length, policy, temperature)


def sample_mixture(
    model: SteerableModel,
    encoded: BatchEncoding,
    weights: torch.Tensor,
    *,
    decoding,
    max_new_tokens: int,
    eos_token_id: int,
    pad_token_id: int,
    temperature: float = 1.0,
) -> SampledBatch:
    """Sample from a decoding-time logit mixture of the model's conditionings (`trl_clp.decoding`).

    Full-distribution sampling at `temperature` (`generate_with_mixed_logits`); the policy's log-probabilities are the
    mixture's (`mixture_log_probs`).

    Args:
        encoded: `(b, T)` prompts from `render_prompts`.
        weights: `(b, m)` each row's weighting.
        decoding: maps the rows' `(b, m)` weightings to the mixture's components, e.g.
            `trl_clp.decoding.expert_mixture_components`.
    """
    components = decoding(weights.to(model.device))
    prompt_length = encoded["input_ids"].size(1)
    sequences = generate_with_mixed_logits(
        model,
        encoded["input_ids"],
        encoded["attention_mask"],
        components,
        max_new_tokens,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        temperature=temperature,
    )
    mask = torch.cat([encoded["attention_mask"], _mask_after_eos(sequences[:, prompt_length:], eos_token_id)], 1)
    policy = mixture_log_probs(model, sequences, mask, prompt_length, components, temperature)
    return SampledBatch(sequences, mask, prompt_length, policy, temperature)


def kl_to_reference(model: SteerableModel, batch: SampledBatch) -> torch.Tensor:
    """`(b,)` sequence KL of each completion to the reference, the base model (adapter disabled):
    `Σ_t log π(y_t) − log π_ref(y_t)` over its tokens up to and including EOS, both at the sampling temperature."""
    with model.model.disable_adapter():
        reference = completion_log_probs(
            model.model, batch.sequences, batch.attention_mask, batch.prompt_length, batch.temperature
        )
    return ((batch.policy_log_probs - reference) * batch.completion_mask).sum(1)


def sample_batch(
    model: SteerableModel, tokenizer, sampler: Sampler, prompts: list, weights: torch.Tensor, seed: int
) -> tuple[list[list[int]], list[float]]:
    """One batch of rows, sampled from `seed`: each row's completion ids (up to and including EOS) and sequence KL.

    Args:
        prompts: b prompts, one per row.
        weights: `(b, m)` each row's weighting.
    """
    torch.manual_seed(seed)
    sampled = sampler(render_prompts(model, tokenizer, prompts, weights), weights)
    return sampled.completion_ids(), kl_to_reference(model, sampled).tolist()


def share_batches(sample: Callable[[int], object], num_batches: int, accelerator=None) -> list:
    """`[sample(0), …, sample(num_batches − 1)]`, the batches shared between the processes of `accelerator`.

    Process k runs batches k, k + n, k + 2n, ...; in the last round a process without a batch reruns batch 0 and
    drops it, so that every process makes the same sequence of forward calls (each is collective under ZeRO-3 and
    FSDP, where a process that stopped early would leave the others waiting). The results are gathered: every process
    returns all of them, in batch order.
    """
    process_index, num_processes = (
        (0, 1) if accelerator is None else (accelerator.process_index, accelerator.num_processes)
    )
    ran = []  # (batch index, result) of the batches this process ran
    for first in range(0, num_batches, num_processes):
        index = first + process_index
        result = sample(index % num_batches)
        if index < num_batches:
            ran.append((index, result))
    if num_processes > 1:
        ran = sorted(gather_object(ran), key=lambda item: item[0])
    return [result for _, result in ran]


def score_completions(
    reward_funcs: list,
    prompts: list,
    completions: list[str],
    completion_ids: list[list[int]],
    reward_kwargs: dict[str, list] | None = None,
) -> torch.Tensor:
    """`(R, m)` each reward function's score of each completion, NaN where it returns None.

    Each function is called once on all R rows, with TRL's signature `f(prompts=, completions=, completion_ids=,
    **reward_kwargs)`; as in training, conversational prompts give conversational completions, `[{"role":
    "assistant", "content": text}]`.

    Args:
        prompts: R prompts, one per completion (strings or conversations).
        completions: R decoded completions (text).
        completion_ids: R completions' token ids.
        reward_kwargs: extra columns, R values each.
    """
    if not isinstance(prompts[0], str):
        completions = [[{"role": "assistant", "content": text}] for text in completions]
    return torch.tensor(
        [
            [
                math.nan if v is None else float(v)
                for v in f(
                    prompts=prompts, completions=completions, completion_ids=completion_ids, **(reward_kwargs or {})
                )
            ]
            for f in reward_funcs
        ]
    ).T


def summarise_front(
    objective_names: list[str],
    weightings: torch.Tensor,
    prompts: list,
    num_samples: int,
    completions: list[str],
    scores: torch.Tensor,
    kl: torch.Tensor,
    kl_weight: float,
    num_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Front:
    """The `Front` of scored completions: each weighting's means with bootstrap intervals over prompts, and samples.

    Each completion's value is `w·R − α·KL` exactly as training scalarises it (`scalarize_rewards`: NaN terms
    skipped, NaN if every reward is NaN). Means are over prompts of each prompt's mean over its samples (NaN skipped).

    Args:
        weightings: `(K, m)`; prompts: P prompts.
        completions: R = K·P·num_samples texts, in the order of `evaluation_rows`.
        scores: `(R, m)` rewards, NaN where unscored (`score_completions`).
        kl: `(R,)` sequence KLs to the reference.
        kl_weight: α of the value.
        num_resamples, confidence, seed: the bootstrap's.
    """
    rows = evaluation_rows(len(weightings), len(prompts), num_samples)
    kl = kl.to(scores)
    row_values = scalarize_rewards(
        scores, weightings[[k for k, _ in rows]].to(scores), kl, torch.full_like(kl, kl_weight)
    )  # (R,)
    # (K, P, S, ·): rows are ordered by weighting, then prompt, then sample.
    shape = (len(weightings), len(prompts), num_samples)
    per_prompt_scores = scores.view(*shape, -1).nanmean(2)  # (K, P, m)
    per_prompt_kl = kl.view(*shape).mean(2)  # (K, P)
    per_prompt_values = row_values.view(*shape).nanmean(2)  # (K, P); NaN for a prompt with no scorable completion
    samples = [
        {
            "prompt": prompts[p],
            "weights": [round(float(w), 6) for w in weightings[k]],
            "sample": i % num_samples,
            "completion": text,
            "rewards": {
                name: None if math.isnan(v) else v for name, v in zip(objective_names, row_scores, strict=True)
            },
            "kl": row_kl,
            "value": None if math.isnan(row_value) else row_value,
        }
        for i, ((k, p), text, row_scores, row_kl, row_value) in enumerate(
            zip(rows, completions, scores.tolist(), kl.tolist(), row_values.tolist(), strict=True)
        )
    ]
    results = []
    for k, weights in enumerate(weightings):
        rewards, reward_ci = {}, {}
        for i, name in enumerate(objective_names):
            rewards[name], reward_ci[name] = _mean_and_ci(per_prompt_scores[k, :, i], num_resamples, confidence, seed)
        kl_mean, kl_ci = _mean_and_ci(per_prompt_kl[k], num_resamples, confidence, seed)
        value, value_ci = _mean_and_ci(per_prompt_values[k], num_resamples, confidence, seed)
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
    return Front(list(objective_names), float(kl_weight), results, samples)


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
