"""Compare steerable models on held-out prompts: `trl-clp compare`, and the analysis behind it.

Each method is one or more trained runs (its seeds). Every run is evaluated on the same prompts, weightings and
sampling seed (`evaluate_front`), and so is the base model (every adapter off). `compare_fronts` turns the evaluations
into the numbers a reviewer reads: per method its seed-averaged front, hypervolume and steerability margins, KL, the
language guards and the equal-KL view; for every two methods the paired differences of hypervolume, margins and
each weighting's w·R (and KL), each with a verdict; the gaming guards against the base model, and each front again
with flagged completions scored 0 (the guarded front). Intervals come from one two-way bootstrap over seeds and
prompts (`trl_clp.paired_bootstrap`). A run can also be compared as the logit mixture of its corner specialists (MOD,
`--logit_mix_for`). `write_comparison` writes `comparison.json`, `report.md`, the figures and
`generations.md`; `compare_runs` does it all from run folders, as `trl-clp compare` does.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import partial

import numpy
import torch

from .conditioning.config import CLP_CONFIG_NAME, ConditioningConfig
from .decoding import specialist_components
from .evaluation import Front, evaluate_front
from .gaming_guards import (  # noqa: F401 (the language guards are read from here too)
    ENGLISH_WORD_SHARE,
    NEAR_EMPTY_WORDS,
    compare_guard_rates,
    distinct_word_ratio,
    english_word_share,
    english_words,
    guarded_samples,
    text_guards,
    words,
)
from .paired_bootstrap import Estimate, PairedBootstrap, describe_verdict, verdict
from .pareto import additive_epsilon, fraction_dominated, hypervolume

BASE_MODEL = "base model"  # the base model's key among the bootstrap's tables; no method may take this label
LOGIT_MIX = "logit mix"  # the label suffix of a run evaluated as a logit mixture of its corner specialists

# ------------------------------------------------------------------------------------------------- what to evaluate


@dataclass(frozen=True)
class ComparedFront:
    """One front of a comparison: a `--runs` entry, at one α if it comes from `--kl_weights_for`, or sampled from the
    logit mixture of its corner specialists if it comes from `--logit_mix_for`."""

    label: str  # the front's name in the report
    run: str  # its `--runs` label
    paths: tuple[str, ...]  # one run folder per seed
    kl_weight: float | None = None  # the α a KL-conditioned model is steered to; None: the model's own
    logit_mix: bool = False  # sample softmax(Σ_i w_i · logits(e_i)) (`specialist_components`), not the model at w

    def stem(self, seed: int) -> str:
        """File name stem of one seed's evaluation, `<run>[-a<α>][-logit-mix]-s<seed>` (spaces in the label become
        dashes)."""
        alpha = "" if self.kl_weight is None else f"-a{self.kl_weight:g}"
        mix = "-" + LOGIT_MIX.replace(" ", "-") if self.logit_mix else ""
        return f"{self.run.replace(' ', '-')}{alpha}{mix}-s{seed}"


def plan_fronts(
    runs: Sequence[str], kl_weights_for: Sequence[Sequence[str]] = (), logit_mix_for: Sequence[str] = ()
) -> list[ComparedFront]:
    """The fronts to compare, from `label=path[,path...]` entries, `[LABEL, α, α...]` entries and run labels.

    A run named in `kl_weights_for` gives one front per α, labelled "LABEL (α=…)", instead of one at its training α.
    A run named in `logit_mix_for` gives, after its own front, "LABEL (logit mix)": the same folders sampled from the
    logit mixture of their corner specialists. Reads no file: `check_kl_weights` and `check_logit_mix` check that the
    models can be steered to the α asked for and mixed.
    """
    methods = {}
    for run in runs:
        label, separator, paths = run.partition("=")
        if not separator or not label or not paths:
            raise ValueError(f"--runs {run!r}: write each method as label=path[,path...] (several paths: seeds).")
        if label in methods:
            raise ValueError(f"--runs: the label {label!r} is given twice; give its seeds as label=path,path.")
        methods[label] = tuple(paths.split(","))
    alphas = {}
    for entry in kl_weights_for:
        label, values = entry[0], entry[1:]
        if label not in methods:
            raise ValueError(
                f"--kl_weights_for {label!r}: no run has that label; the labels of --runs are {sorted(methods)}."
            )
        try:
            alphas[label] = [float(value) for value in values]
        except ValueError:
            raise ValueError(
                f"--kl_weights_for {' '.join(entry)}: each value after the label must be an α (a number)."
            ) from None
        if not alphas[label]:
            raise ValueError(
                f"--kl_weights_for {label}: give the α values after the label, e.g. {label} 0.02 0.2 1.0."
            )
    for label in logit_mix_for:
        if label not in methods:
            raise ValueError(
                f"--logit_mix_for {label!r}: no run has that label; the labels of --runs are {sorted(methods)}."
            )
        if label in alphas:
            raise ValueError(
                f"--logit_mix_for {label}: the logit mixture is sampled at the run's own α, not at the α of "
                f"--kl_weights_for {label}. Drop {label} from one of them, or list its folders a second time in --runs "
                "under another label and name that one in --logit_mix_for."
            )
    fronts = []
    for label, paths in methods.items():
        if label in alphas:
            fronts += [ComparedFront(f"{label} (α={alpha:g})", label, paths, alpha) for alpha in alphas[label]]
        else:
            fronts.append(ComparedFront(label, label, paths))
        if label in logit_mix_for:
            fronts.append(ComparedFront(f"{label} ({LOGIT_MIX})", label, paths, logit_mix=True))
    labels = [front.label for front in fronts]
    if len(set(labels)) != len(labels):
        raise ValueError(f"Two fronts share a label in {labels}: rename a run in --runs.")
    stems = [front.stem(0) for front in fronts]
    if len(set(stems)) != len(stems):
        raise ValueError(
            f"Two fronts would save their evaluations under one file name in {stems} (a label's spaces become "
            "dashes): rename a run in --runs."
        )
    if BASE_MODEL in labels:
        raise ValueError(f"{BASE_MODEL!r} names the base model in the report: give that run another label.")
    return fronts


def check_kl_weights(fronts: Sequence[ComparedFront]) -> None:
    """Refuse, before any sampling, a front steered to an α its model cannot take: a model not trained with KL-weight
    conditioning, or α below the smallest KL weight it was trained on (reads each run's `clp_config.json`)."""
    for front in fronts:
        if front.kl_weight is None:
            continue
        for path in front.paths:
            config = ConditioningConfig.load(os.path.join(path, CLP_CONFIG_NAME))
            if config.min_kl_weight is None:
                raise ValueError(
                    f"--kl_weights_for {front.run}: {path} was not trained with KL-weight conditioning (its "
                    f"{CLP_CONFIG_NAME} has no min_kl_weight), so it cannot be steered to an α. Drop it from "
                    f"--kl_weights_for (it is evaluated at its training α, {config.kl_weight}), or train it with "
                    "`--kl_weights 0.02 0.2 1.0`."
                )
            if front.kl_weight < config.min_kl_weight:
                raise ValueError(
                    f"--kl_weights_for {front.run}: α = {front.kl_weight:g} is below {config.min_kl_weight:g}, the "
                    f"smallest KL weight {path} was trained on: use α >= {config.min_kl_weight:g}."
                )


def check_logit_mix(fronts: Sequence[ComparedFront], sampling: Mapping | None = None) -> None:
    """Refuse, before any sampling, a logit mixture that cannot be sampled as asked: a prompting run (its weighting
    is text in the prompt, so it has no specialists in parameter space to mix), or `top_p`/`top_k` truncation (the
    mixture samples the full distribution at `temperature`). Reads each mixed run's `clp_config.json`."""
    mixed = [front for front in fronts if front.logit_mix]
    sampling = dict(sampling or {})
    if mixed and (sampling.get("top_p", 1.0) < 1.0 or sampling.get("top_k", 0)):
        raise ValueError(
            f"--logit_mix_for {mixed[0].run}: the logit mixture samples the full distribution at --temperature, but "
            f"--top_p {sampling.get('top_p', 1.0)} --top_k {sampling.get('top_k', 0)} truncate it for every other "
            "front. Compare with --top_p 1.0 --top_k 0, or drop --logit_mix_for."
        )
    for front in mixed:
        for path in front.paths:
            config = ConditioningConfig.load(os.path.join(path, CLP_CONFIG_NAME))
            if config.conditioning == "prompt":
                raise ValueError(
                    f"--logit_mix_for {front.run}: {path} is a prompting run (conditioning 'prompt'): its weighting is "
                    "written in the prompt, so it has no single-objective specialists in its parameters to mix. Drop "
                    f"{front.run} from --logit_mix_for; mix a run conditioned in its parameters (e.g. Rewarded Soups)."
                )


def plan_kl_series(fronts: Sequence[ComparedFront], kl_series: Sequence[Sequence[str]] = ()) -> dict[str, list[str]]:
    """KL series, one method at several α (name → front labels): each `--kl_weights_for` run given 2+ α, and each
    `[NAME, LABEL, LABEL...]` of `kl_series` (separately trained runs)."""
    series = {}
    for front in fronts:
        if front.kl_weight is not None:
            series.setdefault(front.run, []).append(front.label)
    series = {name: labels for name, labels in series.items() if len(labels) > 1}
    labels = [front.label for front in fronts]
    for name, *members in kl_series:
        if name in series or len(members) < 2 or not set(members) <= set(labels):
            raise ValueError(f"--kl_series {name}: give a new series name, then two or more of the fronts {labels}.")
        placed = {label for chosen in series.values() for label in chosen}
        if placed & set(members):
            raise ValueError(f"--kl_series {name}: {sorted(placed & set(members))} already belong to a KL series.")
        series[name] = members
    return series


# ------------------------------------------------------------------------------------------- evaluations on disk


def save_evaluation(front: Front, stem: str) -> None:
    """`<stem>.json`/`.csv` (the summary) and `<stem>.samples.jsonl` (every completion)."""
    front.save(os.path.dirname(stem) or ".", stem=os.path.basename(stem))
    front.save_samples(stem + ".samples.jsonl")


def load_evaluation(stem: str) -> Front | None:
    """The evaluation `save_evaluation` wrote to `stem`, with its samples; None if there is none."""
    if not (os.path.isfile(stem + ".json") and os.path.isfile(stem + ".samples.jsonl")):
        return None
    front = Front.load(stem + ".json")
    with open(stem + ".samples.jsonl") as handle:
        front.samples = [json.loads(line) for line in handle]
    return front


def evaluate_runs(
    planned: Sequence[ComparedFront],
    output_dir: str,
    prompts: list | None = None,
    reward_funcs: list | None = None,
    weightings: torch.Tensor | None = None,
    reuse: bool = False,
    base_samples_per_prompt: int = 4,
    reward_kwargs: dict[str, list] | None = None,
    **sampling,
) -> tuple[dict[str, list[Front]], Front, dict[str, float]]:
    """Every planned front's evaluation per seed, and the base model's, sampled or read back.

    With `reuse`, an evaluation already in `output_dir` (`<stem>.json` + `<stem>.samples.jsonl`, and `base.*`) is read
    back and its run folder is not opened: a comparison of saved evaluations needs neither the models nor the reward
    functions. Any other is sampled with `evaluate_front(..., **sampling)` and saved there. Models that cannot be
    steered to their α, or mixed in logits, are refused before anything is sampled. A `logit_mix` front is sampled
    from `specialist_components` of its model (`evaluate_front(..., decoding=...)`), its KL from the mixture's own
    log-probabilities.

    Returns:
        `{label: [Front per seed]}`, the base model's front (its samples at the first weighting, adapters off), and
        the seconds each evaluation took (`{stem: seconds}`).
    """
    os.makedirs(output_dir, exist_ok=True)
    saved = {
        (front.label, s): load_evaluation(os.path.join(output_dir, front.stem(s))) if reuse else None
        for front in planned
        for s in range(len(front.paths))
    }
    base_front = load_evaluation(os.path.join(output_dir, "base")) if reuse else None
    missing = [front for front in planned if any(saved[front.label, s] is None for s in range(len(front.paths)))]
    if missing or base_front is None:
        if prompts is None or reward_funcs is None or weightings is None:
            stems = [front.stem(s) for front in missing for s in range(len(front.paths))] or ["base"]
            raise ValueError(
                f"No saved evaluation for {stems} in {output_dir}: give the prompts, reward functions and weightings "
                "to sample them (or point --output_dir at a comparison that has them, with --reuse)."
            )
        check_kl_weights(missing)
        check_logit_mix(missing, sampling)
    fronts, seconds = {}, {}
    for front in planned:
        fronts[front.label] = []
        for s, path in enumerate(front.paths):
            started = time.perf_counter()
            evaluated = saved[front.label, s]
            if evaluated is None:
                steer = _load_model(path)
                evaluated = evaluate_front(
                    steer,
                    steer.tokenizer,
                    prompts,
                    reward_funcs,
                    weightings,
                    kl_weight=front.kl_weight,
                    reward_kwargs=reward_kwargs,
                    decoding=partial(specialist_components, steer) if front.logit_mix else None,
                    **sampling,
                )
                save_evaluation(evaluated, os.path.join(output_dir, front.stem(s)))
                del steer
            fronts[front.label].append(evaluated)
            seconds[front.stem(s)] = time.perf_counter() - started
            print(f"{front.label} seed {s} ({path}): {'read back' if saved[front.label, s] else 'evaluated'}")
            print(evaluated.format_table())
    if base_front is None:  # every adapter off, under a method that does not rewrite the prompt
        path = next(
            (
                front.paths[0]
                for front in planned
                if ConditioningConfig.load(os.path.join(front.paths[0], CLP_CONFIG_NAME)).conditioning != "prompt"
            ),
            None,
        )
        if path is None:
            raise ValueError(
                "The base model is sampled from a run that does not write the weighting into the prompt; every run "
                "here is a prompting run: add one that is not, or reuse a saved base.json."
            )
        steer = _load_model(path)
        with steer.model.disable_adapter():
            base_front = evaluate_front(
                steer,
                steer.tokenizer,
                prompts,
                reward_funcs,
                weightings[:1],
                reward_kwargs=reward_kwargs,
                **{**sampling, "num_samples": base_samples_per_prompt},
            )
        save_evaluation(base_front, os.path.join(output_dir, "base"))
    return fronts, base_front, seconds


def _load_model(path: str):
    from .conditioning.steerable import SteerableModel

    steer = SteerableModel.from_pretrained(path)
    if steer.tokenizer is None:
        raise ValueError(f"{path} has no tokenizer files: save the tokenizer beside the adapter.")
    return steer.to("cuda" if torch.cuda.is_available() else "cpu")


# ------------------------------------------------------------------------------------------------ per-prompt tables


def prompts_of(front: Front) -> list:
    """The prompts of `front.samples`, in the order they first appear (the order they were given to
    `evaluate_front`)."""
    seen, prompts = set(), []
    for sample in front.samples:
        key = json.dumps(sample["prompt"])
        if key not in seen:
            seen.add(key)
            prompts.append(sample["prompt"])
    return prompts


def per_prompt_table(front: Front, prompts: list | None = None) -> torch.Tensor:
    """`(K, P, m + 1)` per weighting and prompt, the mean of each reward, then of the KL (nats per completion), over
    that prompt's samples (None rewards left out; NaN where none is left).

    Args:
        front: an evaluation with its `samples`.
        prompts: the P prompts in the order of the table (default: `prompts_of(front)`).
    """
    prompts = prompts_of(front) if prompts is None else prompts
    index = {json.dumps(prompt): p for p, prompt in enumerate(prompts)}
    weightings = [tuple(result.weights) for result in front.results]
    names = front.objective_names
    totals = torch.zeros(len(weightings), len(prompts), len(names) + 1, dtype=torch.float64)
    counts = torch.zeros_like(totals)
    for sample in front.samples:
        k, p = weightings.index(tuple(sample["weights"])), index[json.dumps(sample["prompt"])]
        for i, value in enumerate([sample["rewards"][name] for name in names] + [sample["kl"]]):
            if value is not None:
                totals[k, p, i] += value
                counts[k, p, i] += 1
    return totals / counts


def _with_samples(front: Front, samples: list[dict]) -> Front:
    return Front(front.objective_names, front.kl_weight, front.results, samples)


# ---------------------------------------------------------------------------------------------- language guards

LANGUAGE_GUARDS = {"english": "English share", "empty": "(near-)empty share", "distinct": "distinct-word ratio"}


def front_guards(runs: Sequence[Front]) -> dict[str, list[float]]:
    """`text_guards` at each weighting, over the completions of every seed of a front: `{guard: [K values]}`."""
    per_weighting = [
        text_guards([s["completion"] for front in runs for s in front.samples if s["weights"] == result.weights])
        for result in runs[0].results
    ]
    return {guard: [values[guard] for values in per_weighting] for guard in LANGUAGE_GUARDS}


# --------------------------------------------------------------------------------------------- front statistics


def margin(means: torch.Tensor, weights: torch.Tensor, i: int) -> torch.Tensor:
    """Objective i's steerability margin: mean R_i over the weightings with w_i = 1 minus over those with w_i = 0.

    Args:
        means: `(..., K, c)` mean rewards at the K weightings (objective i in column i; any leading dimensions,
            e.g. bootstrap resamples).
        weights: `(K, m)` the weightings.

    Returns:
        `(...)` the margins.
    """
    return means[..., weights[:, i] == 1, i].mean(-1) - means[..., weights[:, i] == 0, i].mean(-1)


def scalarised_gain(means: torch.Tensor, base: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """`(..., K)` w·R̄(w) − w·R̄_base: how much more of what each weighting asks for a front gets than the base model.

    Args:
        means: `(..., K, m)` the front's mean rewards at its K weightings (leading dimensions: e.g. resamples).
        base: `(m,)` the base model's mean rewards, or anything that broadcasts with `means`, e.g. `(..., 1, m)`.
        weights: `(K, m)` the weightings.
    """
    return (weights * (means - base)).sum(-1)


def gain_per_nat(gain: torch.Tensor, kl: torch.Tensor) -> torch.Tensor:
    """`(...)` Σ_k gain_k / Σ_k KL_k over `(..., K)` gains and KLs: scalarised gain per nat of KL, pooled over
    weightings.

    A straight line from the base model (gain 0 at KL 0) to the front: it favours fronts that stay close when the
    gain flattens out with KL (it usually does), so read it with the matched-KL comparison.
    """
    return gain.sum(-1) / kl.sum(-1)


def gain_at_kl(kls: torch.Tensor, gains: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`(K,)` a KL series' gain at `target` KLs, interpolated linearly in KL per weighting; NaN outside its range.

    Args:
        kls: `(A, K)` the series' KL at each of its A fronts (α values) and K weightings.
        gains: `(A, K)` its scalarised gains there.
        target: `(K,)` the KL at which to read the gain, per weighting.
    """
    out = torch.full(target.shape, math.nan, dtype=torch.float64)
    for k in range(target.numel()):
        x, order = kls[:, k].sort()
        out[k] = float(numpy.interp(target[k], x, gains[order, k], left=math.nan, right=math.nan))
    return out


def matched_gain_difference(
    series: Sequence[torch.Tensor], other: torch.Tensor, base: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """`(K,)` a KL series' gain interpolated at another front's KL, minus that front's gain, per weighting (NaN where
    the other front's KL is outside the series' KL range).

    Args:
        series: the series' A fronts, each `(K, m + 1)` means (rewards, then KL).
        other: `(K, m + 1)` the other front's means.
        base: `(m,)` the base model's mean rewards.
        weights: `(K, m)`.
    """
    m = weights.size(1)
    series_gain = torch.stack([scalarised_gain(means[:, :m], base, weights) for means in series])  # (A, K)
    series_kl = torch.stack([means[:, m] for means in series])  # (A, K)
    return gain_at_kl(series_kl, series_gain, other[:, m]) - scalarised_gain(other[:, :m], base, weights)


# -------------------------------------------------------------------------------------------------- the analysis


def _decided(difference: Estimate) -> dict:
    return {"difference": difference.as_list(), "verdict": verdict(difference.low, difference.high)}


def _front_statistics(bootstrap: PairedBootstrap, label: str, weights: torch.Tensor, reference: torch.Tensor) -> dict:
    """Every per-method statistic of one method, as `Estimate`s on the bootstrap's resamples."""
    m = weights.size(1)
    return {
        "hypervolume": bootstrap.estimate(lambda means: hypervolume(means[label][:, :m], reference)),
        "margins": [
            bootstrap.estimate(lambda means, i=i: margin(means[label], weights, i), batched=True) for i in range(m)
        ],
        "scalarised": [
            bootstrap.estimate(lambda means, k=k: (weights[k] * means[label][:, k, :m]).sum(-1), batched=True)
            for k in range(len(weights))
        ],
        "kl": [
            bootstrap.estimate(lambda means, k=k: means[label][:, k, m], batched=True) for k in range(len(weights))
        ],
        "kl_mean": bootstrap.estimate(lambda means: means[label][:, :, m].mean(-1), batched=True),
    }


def _paired_differences(bootstrap: PairedBootstrap, statistics: dict, names, weights) -> dict:
    """`A − B` of every statistic for every two methods (in label order), with verdicts (none for the KL)."""
    labels = list(statistics)
    pairs = {}
    for i, a in enumerate(labels):
        for b in labels[i + 1 :]:
            first, second = statistics[a], statistics[b]
            hv = bootstrap.difference(first["hypervolume"], second["hypervolume"])
            pairs[f"{a} − {b}"] = {
                "a": a,
                "b": b,
                "hypervolume": _decided(hv),
                "margins": {
                    name: _decided(bootstrap.difference(first["margins"][j], second["margins"][j]))
                    for j, name in enumerate(names)
                },
                "scalarised": [
                    {"weights": w, **_decided(bootstrap.difference(first["scalarised"][k], second["scalarised"][k]))}
                    for k, w in enumerate(weights.tolist())
                ],
                "kl": [
                    {"weights": w, "difference": bootstrap.difference(first["kl"][k], second["kl"][k]).as_list()}
                    for k, w in enumerate(weights.tolist())
                ],
                "kl_mean": bootstrap.difference(first["kl_mean"], second["kl_mean"]).as_list(),
            }
    return pairs


def compare_fronts(
    fronts: Mapping[str, Sequence[Front]],
    base: Front | Sequence[Front] | None = None,
    prompts: list | None = None,
    reference_point: Sequence[float] | None = None,
    kl_series: Mapping[str, list[str]] | None = None,
    num_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    pair_seeds: bool = True,
    significance: float = 0.05,
    guards: bool = True,
) -> dict:
    """The comparison of several methods' evaluations: per-method fronts and statistics, paired differences with
    verdicts, gaming guards and guarded fronts, the equal-KL view. Every interval comes from one `PairedBootstrap`
    over seeds and prompts (the guarded fronts' from the same index draws).

    Args:
        fronts: label → one `Front` per seed, each with its `samples`, all on the same objectives and weightings.
        base: the base model's evaluation (one front, or one per seed where each seed has its own base model), with
            its samples at one weighting. None leaves out what needs it (the equal-KL view, the gaming guards).
        prompts: the P held-out prompts every front was evaluated on; None takes each front's own, in the order of
            its samples (then prompt p pairs the p-th prompt of each seed's set, where seeds have their own).
        reference_point: `(m,)` of the hypervolume, fixed before any run; default 0 for every objective.
        kl_series: name → labels of fronts of one method at several α, for the matched-KL comparison.
        num_resamples, confidence, seed, pair_seeds: of the bootstrap (`trl_clp.paired_bootstrap`).
        significance: a gaming guard is flagged when its Fisher test against the base model gives p below it.
        guards: compute the language guards, the gaming guards and the guarded fronts (they read English prose:
            False for other text, such as the demo task's character strings).

    Returns:
        a JSON-ready dict: `objective_names`, `weightings`, `bootstrap` (its settings), `methods` (per label: seeds,
        kl_weight, rewards `(K, m)`, kl per weighting, hypervolume, hypervolume_per_seed, margins, scalarised w·R
        per weighting, language guards, gaming_guards per weighting, guarded front, dominance, additive ε),
        `paired` (per "A − B": hypervolume, margins and w·R per weighting with `difference` [point, low, high] and
        `verdict`, KL per weighting and mean without one), `guarded_paired` (the same on guarded fronts),
        `base_model` and `equal_kl` when `base` is given. Intervals are `[point, low, high]`.
    """
    first = next(iter(fronts.values()))[0]
    names, weights = first.objective_names, first.weights().double()
    for label, runs in fronts.items():
        for front in runs:
            if front.objective_names != names or not torch.equal(front.weights().double(), weights):
                raise ValueError(
                    f"{label}: every front must be evaluated on the same objectives {names} and weightings "
                    f"{weights.tolist()}; got {front.objective_names} at {front.weights().tolist()}."
                )
    reference = torch.as_tensor(reference_point or [0.0] * len(names), dtype=torch.float64)
    bases = [] if base is None else [base] if isinstance(base, Front) else list(base)
    if BASE_MODEL in fronts:
        raise ValueError(f"{BASE_MODEL!r} names the base model: give that method another label.")

    def tables(guarded: bool) -> dict[str, torch.Tensor]:
        def table(front: Front) -> torch.Tensor:
            if guarded:
                front = _with_samples(front, guarded_samples(front.samples))
            return per_prompt_table(front, prompts)

        out = {label: torch.stack([table(front) for front in runs]) for label, runs in fronts.items()}
        if bases:
            out[BASE_MODEL] = torch.stack([per_prompt_table(front, prompts) for front in bases])  # (S_b, 1, P, m+1)
        return out

    settings = dict(num_resamples=num_resamples, seed=seed, confidence=confidence, pair_seeds=pair_seeds)
    bootstrap = PairedBootstrap(tables(guarded=False), **settings)
    guarded_bootstrap = PairedBootstrap(tables(guarded=True), **settings) if bases and guards else None
    statistics = {label: _front_statistics(bootstrap, label, weights, reference) for label in fronts}
    results = {
        "objective_names": names,
        "weightings": weights.tolist(),
        "reference_point": reference.tolist(),
        "bootstrap": {
            **settings,
            "resampled": "seeds and prompts",
            "seeds_paired_by_index": pair_seeds,
            "prompts_shared_by_every_method": True,
        },
        "methods": {},
    }
    m = len(names)
    for label, runs in fronts.items():
        stats = statistics[label]
        results["methods"][label] = {
            "seeds": len(runs),
            "kl_weight": runs[0].kl_weight,
            "rewards": bootstrap.means[label][:, :m].tolist(),
            "kl": [sum(front.results[k].kl for front in runs) / len(runs) for k in range(len(weights))],
            "hypervolume": stats["hypervolume"].as_list(),
            "hypervolume_per_seed": [front.hypervolume(reference) for front in runs],
            "margins": {name: stats["margins"][i].as_list() for i, name in enumerate(names)},
            "scalarised": [estimate.as_list() for estimate in stats["scalarised"]],
        }
        if guards:
            results["methods"][label]["guards"] = front_guards(runs)
    for label in fronts:
        means = bootstrap.means[label][:, :m]
        others = {other: bootstrap.means[other][:, :m] for other in fronts if other != label}
        results["methods"][label]["dominates_fraction_of"] = {
            other: fraction_dominated(means, other_means) for other, other_means in others.items()
        }
        results["methods"][label]["additive_epsilon_to"] = {
            other: additive_epsilon(means, other_means) for other, other_means in others.items()
        }
    results["paired"] = _paired_differences(bootstrap, statistics, names, weights)
    if bases:
        base_samples = [sample for front in bases for sample in front.samples]
        results["base_model"] = _base_model_summary(base_samples, names, guards)
        results["equal_kl"] = equal_kl_view(bootstrap, fronts, weights, dict(kl_series or {}))
    if bases and guards:
        results["significance"] = significance
        guarded_statistics = {
            label: _front_statistics(guarded_bootstrap, label, weights, reference) for label in fronts
        }
        for label, runs in fronts.items():
            samples = [sample for front in runs for sample in front.samples]
            rates = []
            for w in weights.tolist():
                at_w = [sample for sample in samples if sample["weights"] == w]
                rates.append(
                    {
                        "weights": w,
                        "guards": {
                            guard: asdict(rate)
                            for guard, rate in compare_guard_rates(at_w, base_samples, significance).items()
                        },
                    }
                )
            stats = guarded_statistics[label]
            results["methods"][label]["gaming_guards"] = rates
            results["methods"][label]["guarded"] = {
                "rewards": guarded_bootstrap.means[label][:, :m].tolist(),
                "hypervolume": stats["hypervolume"].as_list(),
                "margins": {name: stats["margins"][i].as_list() for i, name in enumerate(names)},
                "scalarised": [estimate.as_list() for estimate in stats["scalarised"]],
            }
        results["guarded_paired"] = _paired_differences(guarded_bootstrap, guarded_statistics, names, weights)
    return results


def _base_model_summary(samples: list[dict], names: list[str], guards: bool) -> dict:
    scores = torch.tensor(
        [[math.nan if s["rewards"][n] is None else s["rewards"][n] for n in names] for s in samples],
        dtype=torch.float64,
    )
    summary = {
        name: {"mean": scores[:, i].nanmean().item(), "std": scores[:, i].std().item()} for i, name in enumerate(names)
    }
    summary["pearson"] = {
        f"{names[i]}~{names[j]}": torch.corrcoef(scores[:, [i, j]].T)[0, 1].item()
        for i in range(len(names))
        for j in range(i + 1, len(names))
    }
    if guards:
        summary["guards"] = text_guards([sample["completion"] for sample in samples])
    return summary


def equal_kl_view(
    bootstrap: PairedBootstrap,
    fronts: Mapping[str, Sequence[Front]],
    weights: torch.Tensor,
    series: Mapping[str, list[str]],
) -> dict:
    """Per front and weighting, the scalarised gain over the base model beside the KL; the gain per nat; and each KL
    series' gain at the other fronts' KL (matched KL): estimates on `bootstrap`'s resamples (its tables hold the base
    model under `BASE_MODEL`)."""
    m = weights.size(1)

    def gains(means, label):  # (B, K) over (B, K, c) means
        return scalarised_gain(means[label][..., :m], means[BASE_MODEL][..., :1, :m], weights)

    view = {"series": dict(series), "per_front": {}, "matched_kl": {}}
    for label, runs in fronts.items():
        view["per_front"][label] = {
            "kl_weight": runs[0].kl_weight,
            "gain": [
                bootstrap.estimate(lambda means, k=k, label=label: gains(means, label)[:, k], batched=True).as_list()
                for k in range(len(weights))
            ],
            "kl": [sum(front.results[k].kl for front in runs) / len(runs) for k in range(len(weights))],
            "gain_per_nat": bootstrap.estimate(
                lambda means, label=label: gain_per_nat(gains(means, label), means[label][..., m]), batched=True
            ).as_list(),
        }
    for name, members in series.items():
        view["matched_kl"][name] = {}
        for other in (label for label in fronts if label not in members):

            def gap(means, members=members, other=other):  # (K,)
                return matched_gain_difference(
                    [means[label] for label in members], means[other], means[BASE_MODEL][0, :m], weights
                )

            matched = [k for k, value in enumerate(gap(bootstrap.means).tolist()) if not math.isnan(value)]
            view["matched_kl"][name][other] = {
                "weightings": [weights[k].tolist() for k in matched],
                "gain_difference": bootstrap.estimate(
                    lambda means, gap=gap, matched=matched: gap(means)[matched].nanmean().item()
                ).as_list()
                if matched
                else None,
            }
    return view


# ---------------------------------------------------------------------------------------------------- the report


def _interval_text(values, digits=3, signed=False) -> str:
    point, low, high = values
    sign = "+" if signed else ""
    return f"{point:{sign}.{digits}f} [{low:{sign}.{digits}f}, {high:{sign}.{digits}f}]"


def _span(values, digits=2) -> str:  # lowest–highest over the weightings
    values = [v for v in values if not math.isnan(v)]
    return f"{min(values):.{digits}f}–{max(values):.{digits}f}" if values else "–"


def _table(header, rows) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(row) + " |" for row in rows
    ]


def _weighting(w) -> str:
    return "(" + ", ".join(f"{x:g}" for x in w) + ")"


def alpha_family(label: str) -> str:
    """A front's label without its " (α=…)" suffix: the run it comes from."""
    return label.split(" (α=")[0]


def format_report(results: dict) -> str:
    """`report.md`, from `compare_fronts`' results: one row per front (hypervolume, margins, KL, guards, dominance),
    the paired differences with their verdicts, the gaming guards and guarded fronts, the α section when fronts at
    several KL weights are present, and the equal-KL view."""
    names, methods = results["objective_names"], results["methods"]
    boot = results["bootstrap"]
    language = "guards" in next(iter(methods.values()))
    shown_guards = LANGUAGE_GUARDS if language else {}
    confidence = f"{boot['confidence']:.0%}"
    interval = f"{confidence} CI"
    header = ["method", "seeds", f"hypervolume [{interval}]"] + [f"{name} margin [{interval}]" for name in names]
    header += ["KL (nats per completion)", *shown_guards.values(), "dominates (share of each other front's points)"]
    rows = []
    for label, method in methods.items():
        dominated = ", ".join(f"{other} {share:.0%}" for other, share in method["dominates_fraction_of"].items())
        row = [label, str(method["seeds"]), _interval_text(method["hypervolume"])]
        row += [_interval_text(method["margins"][name]) for name in names]
        row += [_span(method["kl"], 1)] + [_span(method["guards"][guard]) for guard in shown_guards] + [dominated]
        rows.append(row)
    lines = _table(header, rows)
    lines += [
        "",
        f"Hypervolume above {tuple(results['reference_point'])} of the seed-averaged front; margin of an objective: its "
        "mean reward where its weight is 1 minus where it is 0. Intervals: "
        f"{confidence} percentile intervals of a two-way bootstrap over seeds and prompts ({boot['num_resamples']} "
        "resamples; each draws the held-out prompts with replacement, the same for every method, and each method's "
        "seeds with replacement"
        + (", paired by index between methods with as many seeds" if boot["pair_seeds"] else "")
        + "; a method with one seed: prompts only).",
    ]
    if "base_model" in results:
        base = results["base_model"]
        lines += [
            "",
            "Base model: "
            + ", ".join(f"{name} {base[name]['mean']:.3f} ± {base[name]['std']:.3f}" for name in names)
            + "; Pearson "
            + ", ".join(f"{pair} {value:+.2f}" for pair, value in base["pearson"].items())
            + "".join(f"; {LANGUAGE_GUARDS[guard]} {base['guards'][guard]:.2f}" for guard in shown_guards)
            + ".",
        ]
    if language:
        lines += [
            "",
            f"KL and language guards: lowest–highest over the weightings. {LANGUAGE_GUARDS['empty']}: completions of "
            f"fewer than {NEAR_EMPTY_WORDS} words; over the others, {LANGUAGE_GUARDS['english']}: those with at least "
            f"{ENGLISH_WORD_SHARE:.0%} of their words in an English lexicon (Brill's, shipped with TextBlob, foreign "
            f"words left out), and {LANGUAGE_GUARDS['distinct']}: distinct words over words, averaged (repetition "
            "lowers it).",
        ]
    lines += ["", *paired_section(results)]
    if "guarded_paired" in results:
        lines += ["", *guards_section(results)]
    if len({method["kl_weight"] for method in methods.values()}) > 1:
        lines += ["", *alpha_section(results)]
    if "equal_kl" in results:
        lines += ["", *equal_kl_section(results["equal_kl"], results["weightings"], confidence)]
    return "\n".join(lines) + "\n"


def paired_section(results: dict) -> list[str]:
    """The paired differences of `report.md`: per pair of methods, the verdicts in a sentence, then the table."""
    names = results["objective_names"]
    lines = [
        "## Paired differences",
        "",
        "A − B of each statistic on the same bootstrap resamples (same drawn prompts and seeds), with its interval. "
        "The verdict reads the interval alone: A beats B when it lies above 0, B beats A when below, else no "
        "difference detected. Higher is better for every statistic with a verdict; the KL difference is context "
        "(nats per completion).",
    ]
    guarded = results.get("guarded_paired", {})
    if guarded:
        lines[-1] += (
            " Guarded: the same on the guarded fronts (a completion any gaming guard flags scores 0 on every reward)."
        )
    for key, pair in results["paired"].items():
        a, b = pair["a"], pair["b"]

        def statistic_rows(pair):
            rows = [("hypervolume", pair["hypervolume"])]
            rows += [(f"{name} margin", pair["margins"][name]) for name in names]
            rows += [(f"w·R at {_weighting(entry['weights'])}", entry) for entry in pair["scalarised"]]
            return rows

        decided = [
            f"{statistic}: {describe_verdict(entry['verdict'], a, b)}"
            for statistic, entry in statistic_rows(pair)
            if entry["verdict"] != "no difference detected"
        ]
        lines += ["", f"### {key}", ""]
        if decided:
            lines.append("Decided: " + "; ".join(decided) + ". Every other statistic: no difference detected.")
        else:
            lines.append("No difference detected on any statistic.")
        lines.append("")
        header = ["statistic", f"A − B [{results['bootstrap']['confidence']:.0%} CI]", "verdict"]
        if guarded:
            header += ["guarded A − B", "guarded verdict"]
        rows = []
        guarded_rows = statistic_rows(guarded[key]) if guarded else None
        for index, (statistic, entry) in enumerate(statistic_rows(pair)):
            row = [
                statistic,
                _interval_text(entry["difference"], signed=True),
                describe_verdict(entry["verdict"], a, b),
            ]
            if guarded_rows:
                other = guarded_rows[index][1]
                row += [_interval_text(other["difference"], signed=True), describe_verdict(other["verdict"], a, b)]
            rows.append(row)
        kl_rows = [(f"KL at {_weighting(e['weights'])}", e["difference"]) for e in pair["kl"]]
        kl_rows.append(("KL, mean over weightings", pair["kl_mean"]))
        for statistic, difference in kl_rows:
            row = [statistic, _interval_text(difference, digits=2, signed=True), "–"]
            if guarded:
                row += ["–", "–"]
            rows.append(row)
        lines += _table(header, rows)
    return lines


def guards_section(results: dict) -> list[str]:
    """The gaming guards of `report.md`: each guard's rate per method and weighting against the base model's, and the
    guarded fronts."""
    names, methods = results["objective_names"], results["methods"]
    first = next(iter(methods.values()))["gaming_guards"][0]["guards"]
    guards = list(first)
    lines = [
        "## Gaming guards",
        "",
        "Share of completions each guard flags, per method (seeds pooled) and weighting; the base model's share in its "
        f"own row. **Bold**: worse than the base model, Fisher's exact test p < {results['significance']:g} (p in "
        "brackets).",
        "",
    ]
    rows = [["base model", "–"] + [f"{first[guard]['base_rate']:.3f}" for guard in guards]]
    for label, method in methods.items():
        for entry in method["gaming_guards"]:
            cells = []
            for guard in guards:
                rate = entry["guards"][guard]
                text = f"{rate['rate']:.3f}"
                cells.append(f"**{text}** (p {rate['p_value']:.3g})" if rate["worse"] else text)
            rows.append([label, _weighting(entry["weights"])] + cells)
    lines += _table(["method", "weighting", *guards], rows)
    lines += [
        "",
        "### Guarded fronts",
        "",
        "Each front again with every flagged completion scored 0 on every reward, so that gaming cannot raise it.",
        "",
    ]
    header = ["method", "guarded hypervolume [CI]"] + [f"guarded {name} margin [CI]" for name in names]
    header += ["raw hypervolume"]
    rows = []
    for label, method in methods.items():
        guarded = method["guarded"]
        row = [label, _interval_text(guarded["hypervolume"])]
        row += [_interval_text(guarded["margins"][name]) for name in names]
        row.append(f"{method['hypervolume'][0]:.3f}")
        rows.append(row)
    return lines + _table(header, rows)


def alpha_section(results: dict) -> list[str]:
    """The α section of `report.md`: per front its α, hypervolume, margins, KL and language guards, a KL series'
    fronts together, by α."""
    names, methods = results["objective_names"], results["methods"]
    lines = ["## KL weight α", ""]
    shown_guards = LANGUAGE_GUARDS if "guards" in next(iter(methods.values())) else {}
    interval = f"{results['bootstrap']['confidence']:.0%} CI"
    header = ["method", "α", f"hypervolume [{interval}]"] + [f"{name} margin [{interval}]" for name in names]
    header += ["KL (nats per completion)", *shown_guards.values()]
    series = results.get("equal_kl", {}).get("series", {})
    groups = list(series) + [alpha_family(label) for label in methods]  # a KL series, or one run's fronts

    def order(item):
        label, method = item
        group = next((name for name, members in series.items() if label in members), alpha_family(label))
        return groups.index(group), method["kl_weight"]

    rows = []
    for label, method in sorted(methods.items(), key=order):
        row = [label, f"{method['kl_weight']:g}", _interval_text(method["hypervolume"])]
        row += [_interval_text(method["margins"][name]) for name in names]
        row += [_span(method["kl"], 1)] + [_span(method["guards"][guard]) for guard in shown_guards]
        rows.append(row)
    lines += _table(header, rows)
    lines += [
        "",
        "A small α lets the policy drift from the base model (high KL); read the guards beside it: an English share or "
        "distinct-word ratio below the base model's, or a rising (near-)empty share, is reward hacking rather than "
        "steering.",
    ]
    return lines


def equal_kl_section(view: dict, weightings: list[list[float]], confidence: str = "95%") -> list[str]:
    """The equal-KL view of `report.md` (Markdown lines), from `results["equal_kl"]`."""
    lines = [
        "## Equal KL",
        "",
        "Gain: w·R̄ − w·R̄_base, the scalarised reward a front gets at weighting w above the base model's, with the KL "
        "(nats per completion) it travelled for it. Gain per nat: Σ_w gain / Σ_w KL over the weightings (a straight "
        "line from the base model; gains usually flatten as KL grows, so it favours fronts that stay close). "
        f"Intervals: {confidence}, the bootstrap over seeds and prompts.",
        "",
    ]
    header = ["method", "α"] + [f"gain @ KL, w = {_weighting(w)}" for w in weightings] + ["gain per nat"]
    rows = []
    for label, front in view["per_front"].items():
        row = [label, f"{front['kl_weight']:g}"]
        row += [
            f"{_interval_text(gain, signed=True)} @ {kl:.1f}"
            for gain, kl in zip(front["gain"], front["kl"], strict=True)
        ]
        row.append(_interval_text(front["gain_per_nat"], digits=4, signed=True))
        rows.append(row)
    lines += _table(header, rows)
    if view["matched_kl"]:
        lines += [
            "",
            "Matched KL: a KL series (one method at several α) read at another front's KL. Per weighting, the series' "
            "gain interpolated linearly in KL between its fronts, at the other front's KL, minus the other front's "
            "gain; averaged over the weightings where that KL lies inside the series' range (chosen on all prompts). "
            "Positive: the series gets more at the same distance from the base model.",
            "",
            "| KL series | compared with | weightings matched | gain difference [CI] |",
            "|---|---|---|---|",
        ]
        for name, others in view["matched_kl"].items():
            for other, match in others.items():
                shown = ", ".join(_weighting(w) for w in match["weightings"]) or "none"
                difference = match["gain_difference"]
                value = "–" if difference is None else _interval_text(difference, signed=True)
                lines.append(f"| {name} | {other} | {shown} | {value} |")
    return lines


def format_generations(front: Front, base_samples: list[dict], label: str, num_prompts: int = 3) -> str:
    """Markdown: the first sample of `num_prompts` prompts from the base model, and from `front` at the ends and the
    middle of the grid."""
    names = front.objective_names
    chosen = [tuple(r.weights) for r in front.results if max(r.weights) == 1.0 or len(set(r.weights)) == 1]
    lines = [f"Generations of {label} (first sample of each prompt; rewards: {', '.join(names)}).", ""]
    for prompt in prompts_of(front)[:num_prompts]:
        shown = prompt[-1]["content"] if isinstance(prompt, list) else prompt
        lines += [
            f"**Prompt:** {shown}",
            "",
            "| weighting | completion | " + " | ".join(names) + " |",
            "|---|---|" + "---|" * len(names),
        ]
        rows = [(("base model",), s) for s in base_samples if s["prompt"] == prompt and s["sample"] == 0][:1]
        rows += [
            (w, s)
            for w in chosen
            for s in front.samples
            if s["prompt"] == prompt and tuple(s["weights"]) == w and s["sample"] == 0
        ]
        for w, s in rows:
            text = s["completion"].replace("\n", " ").replace("|", "\\|")
            scores = " | ".join("–" if s["rewards"][n] is None else f"{s['rewards'][n]:.2f}" for n in names)
            lines.append(f"| {', '.join(str(x) for x in w)} | {text} | {scores} |")
        lines.append("")
    return "\n".join(lines)


def write_comparison(
    results: dict,
    output_dir: str,
    fronts: Mapping[str, Sequence[Front]] | None = None,
    base: Front | None = None,
    generations_for: str | None = None,
) -> list[str]:
    """Write `comparison.json`, `report.md` and the figures (`fronts.png`, and `equal_kl.png` with a base model) to
    `output_dir`, and `generations.md` when `fronts` and `base` are given; return the paths written."""
    from .plotting import plot_equal_kl, plot_mean_fronts

    os.makedirs(output_dir, exist_ok=True)
    paths = [os.path.join(output_dir, "comparison.json"), os.path.join(output_dir, "report.md")]
    with open(paths[0], "w") as handle:
        json.dump(results, handle, indent=2)
    with open(paths[1], "w") as handle:
        handle.write(format_report(results))
    paths.append(plot_mean_fronts(results, os.path.join(output_dir, "fronts.png")))
    if "equal_kl" in results:
        paths.append(plot_equal_kl(results, os.path.join(output_dir, "equal_kl.png")))
    if fronts and base is not None:
        label = generations_for or next(iter(fronts))
        if label not in fronts:
            raise ValueError(f"--generations_for {label!r}: not a compared front; the fronts are {list(fronts)}.")
        paths.append(os.path.join(output_dir, "generations.md"))
        with open(paths[-1], "w") as handle:
            handle.write(format_generations(fronts[label][0], base.samples, label))
    return paths


def compare_runs(
    runs: Sequence[str],
    output_dir: str,
    prompts: list | None = None,
    reward_funcs: list | None = None,
    reward_kwargs: dict[str, list] | None = None,
    grid_points: int = 5,
    reuse: bool = False,
    kl_weights_for: Sequence[Sequence[str]] = (),
    logit_mix_for: Sequence[str] = (),
    kl_series: Sequence[Sequence[str]] = (),
    reference_point: Sequence[float] | None = None,
    base_samples_per_prompt: int = 4,
    generations_for: str | None = None,
    num_resamples: int = 1000,
    confidence: float = 0.95,
    bootstrap_seed: int = 0,
    pair_seeds: bool = True,
    significance: float = 0.05,
    guards: bool = True,
    **sampling,
) -> dict:
    """`trl-clp compare`: evaluate (or, with `reuse`, read back) every run and the base model, compare them with
    `compare_fronts`, and write everything with `write_comparison`.

    Args:
        runs: `label=path[,path...]` per method; several paths are its seeds.
        output_dir: where the evaluations (`<label>-s<i>.json` and `.samples.jsonl`, `base.*`) and the comparison go.
        prompts: the held-out prompts (strings or conversations); with `reuse` and every evaluation saved, None takes
            them from the saved samples.
        reward_funcs: one per objective, in training's order (callables with TRL's signature); not needed when every
            evaluation is read back.
        reward_kwargs: extra per-prompt columns for the reward functions.
        grid_points: weightings per simplex edge (`simplex_grid`).
        reuse: read back the evaluations already in `output_dir`; sample only the missing ones.
        kl_weights_for: `[LABEL, α, ...]` entries: evaluate a run trained conditioned on α at each α.
        logit_mix_for: run labels to evaluate also as the logit mixture of their corner specialists (MOD), as the
            front "LABEL (logit mix)" (files `<label>-logit-mix-s<i>.*`).
        kl_series: `[NAME, LABEL, LABEL, ...]` entries: fronts of one method trained at several α.
        reference_point, num_resamples, confidence, pair_seeds, significance, guards: as in `compare_fronts`
            (`bootstrap_seed` is its `seed`).
        base_samples_per_prompt: completions of the base model per prompt.
        generations_for: the label whose completions fill `generations.md` (default: the first).
        **sampling: `evaluate_front`'s sampling arguments (`num_samples`, `max_new_tokens`, `temperature`, `seed`…).
    """
    planned = plan_fronts(runs, kl_weights_for, logit_mix_for)
    series = plan_kl_series(planned, kl_series)
    weightings = None
    if reward_funcs is not None:
        from .sampling import simplex_grid

        weightings = simplex_grid(len(reward_funcs), grid_points)
    fronts, base, seconds = evaluate_runs(
        planned,
        output_dir,
        prompts,
        reward_funcs,
        weightings,
        reuse=reuse,
        base_samples_per_prompt=base_samples_per_prompt,
        reward_kwargs=reward_kwargs,
        **sampling,
    )
    results = compare_fronts(
        fronts,
        base,
        prompts=prompts if prompts is not None else prompts_of(base),
        reference_point=reference_point,
        kl_series=series,
        num_resamples=num_resamples,
        confidence=confidence,
        seed=bootstrap_seed,
        pair_seeds=pair_seeds,
        significance=significance,
        guards=guards,
    )
    results["settings"] = {
        "runs": list(runs),
        "num_prompts": len(prompts_of(base)),
        "grid_points": grid_points,
        "kl_weights_for": [list(entry) for entry in kl_weights_for],
        "logit_mix_for": list(logit_mix_for),
        "kl_series": [list(entry) for entry in kl_series],
        "base_samples_per_prompt": base_samples_per_prompt,
        "reuse": reuse,
        **sampling,
    }
    results["evaluation_seconds"] = seconds
    write_comparison(results, output_dir, fronts, base, generations_for)
    return results
