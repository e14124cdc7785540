# Copyright 2026 The trl-clp developers. Apache-2.0.
"""
Compare steerable models trained on a real model (CLP variants, prompting, Rewarded Soups) on held-out chat prompts,
with the rewards they were trained on: fronts, hypervolume and steerability margins with bootstrap confidence
intervals over prompts, the KL to the base model beside each front, a figure, and sample generations.

    python examples/compare_real_model.py \
        --runs attn-CLP=outputs/tone-attn-s0,outputs/tone-attn-s1 full-CLP=outputs/tone-full-s0 \
               prompting=outputs/tone-prompt-s0 "Rewarded Soups=outputs/tone-rs-s0" \
        --prompts examples/data/tone_prompts/test.jsonl --reward_funcs sentiment objectivity \
        --output_dir outputs/tone-comparison

Each `label=path[,path...]` is one method; several paths are its seeds (the fronts are averaged over seeds). The
base model (every adapter off) is evaluated once, as the point the methods start from. Sampling: the training
recipe's temperature and completion length by default. Writes `comparison.json`, `report.md` (the table),
`fronts.png`, `generations.md` and each run's evaluation (`<label>-s<i>.json`, its completions in `<label>-s<i>.samples.jsonl`; spaces in a label become dashes) to `--output_dir`;
`--reuse` reads those back instead of sampling again (to add a method to a comparison).

The hypervolume's reference point is fixed before any run: `--reference 0 0` (both rewards live in [0, 1]). Its
confidence interval resamples prompts (the same resampled prompts for every weighting of a front).

KL weight α (TRL's `beta`). A model trained conditioned on α (`--kl_weights 0.02 0.2 1.0`) is evaluated at chosen α
with `--kl_weights_for LABEL 0.02 0.2 1.0`: one front per α, labelled "LABEL (α=0.02)" (files `<label>-a0.02-s<i>.*`);
a model not trained so is refused before any sampling. Those fronts form a KL series; `--kl_series NAME LABEL
LABEL...` makes one of separately trained runs (one method at several α). Beside each front's KL: its language and
degeneracy guards (English share, (near-)empty share, distinct-word ratio, see `text_guards`). The equal-KL view
(`equal_kl.png`, a section of `report.md`) gives, per front and weighting w, the scalarised gain over the base model
w·R̄ − w·R̄_base beside the KL, the gain per nat pooled over weightings, and for each KL series the gain
interpolated at another front's KL, with bootstrap intervals over prompts. With several α, `report.md` has an α
section: per front its α, hypervolume, margins, KL and guards.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import time
from typing import NamedTuple

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import numpy  # noqa: E402
import torch  # noqa: E402

from trl_clp import SteerableModel, simplex_grid  # noqa: E402
from trl_clp.cli import read_prompts  # noqa: E402
from trl_clp.conditioning.config import CLP_CONFIG_NAME, ConditioningConfig  # noqa: E402
from trl_clp.evaluation import Front, evaluate_front  # noqa: E402
from trl_clp.gaming_guards import (  # noqa: E402, F401 (the names the docs and tests read from this script)
    ENGLISH_WORD_SHARE,
    NEAR_EMPTY_WORDS,
    distinct_word_ratio,
    english_word_share,
    text_guards,
    words,
)
from trl_clp.pareto import additive_epsilon, fraction_dominated, hypervolume  # noqa: E402
from trl_clp.rewards import resolve_reward_function  # noqa: E402
from trl_clp.scripts import limit_cpu_threads  # noqa: E402

# ------------------------------------------------------------------------------------------------- what to evaluate


class Evaluation(NamedTuple):
    """One front to evaluate: a `--runs` entry, at one α if it comes from `--kl_weights_for`."""

    label: str  # the front's name in the report
    run: str  # its `--runs` label
    paths: tuple[str, ...]  # one per seed
    kl_weight: float | None = None  # the α a KL-conditioned model is steered to; None: the model's own

    def stem(self, seed: int) -> str:
        """File name stem of one seed's evaluation (no spaces in file names)."""
        alpha = "" if self.kl_weight is None else f"-a{self.kl_weight:g}"
        return f"{self.run.replace(' ', '-')}{alpha}-s{seed}"


def plan_evaluations(runs: list[str], kl_weights_for: list[list[str]]) -> list[Evaluation]:
    """The fronts to evaluate, from `--runs label=path[,path...]` and `--kl_weights_for LABEL α [α...]`.

    A run named in `--kl_weights_for` gives one front per α instead of one at its default α. Raises before any
    sampling when a label is unknown, an α is not a number, or a model cannot be steered to an α: not trained with
    KL-weight conditioning, or α below the smallest KL weight it was trained on.
    """
    methods = {}
    for run in runs:
        label, separator, paths = run.partition("=")
        if not separator or not paths:
            raise ValueError(f"--runs {run!r}: write each method as label=path[,path...] (several paths: seeds).")
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
        for path in methods[label]:
            config = ConditioningConfig.load(os.path.join(path, CLP_CONFIG_NAME))
            if config.min_kl_weight is None:
                raise ValueError(
                    f"--kl_weights_for {label}: {path} was not trained with KL-weight conditioning (its "
                    f"{CLP_CONFIG_NAME} has no min_kl_weight), so it cannot be steered to an α. Drop it from "
                    f"--kl_weights_for (it is evaluated at its training α, {config.kl_weight}), or train it with "
                    "`--kl_weights 0.02 0.2 1.0`."
                )
            too_small = [alpha for alpha in alphas[label] if alpha < config.min_kl_weight]
            if too_small:
                raise ValueError(
                    f"--kl_weights_for {label}: α = {too_small[0]:g} is below {config.min_kl_weight:g}, the smallest KL "
                    f"weight {path} was trained on: use α >= {config.min_kl_weight:g}."
                )
    evaluations = []
    for label, paths in methods.items():
        if label in alphas:
            evaluations += [Evaluation(f"{label} (α={alpha:g})", label, paths, alpha) for alpha in alphas[label]]
        else:
            evaluations.append(Evaluation(label, label, paths))
    labels = [evaluation.label for evaluation in evaluations]
    if len(set(labels)) != len(labels):
        raise ValueError(f"Two fronts share a label in {labels}: rename a run in --runs.")
    return evaluations


def plan_kl_series(evaluations: list[Evaluation], kl_series: list[list[str]]) -> dict[str, list[str]]:
    """KL series, one method at several α (name → front labels): each `--kl_weights_for` run given 2+ α, and each
    `--kl_series NAME LABEL LABEL...` (separately trained runs)."""
    series = {}
    for evaluation in evaluations:
        if evaluation.kl_weight is not None:
            series.setdefault(evaluation.run, []).append(evaluation.label)
    series = {name: labels for name, labels in series.items() if len(labels) > 1}
    labels = [evaluation.label for evaluation in evaluations]
    for name, *members in kl_series:
        if name in series or len(members) < 2 or not set(members) <= set(labels):
            raise ValueError(f"--kl_series {name}: give a new series name, then two or more of the fronts {labels}.")
        placed = {label for chosen in series.values() for label in chosen}
        if placed & set(members):
            raise ValueError(f"--kl_series {name}: {sorted(placed & set(members))} already belong to a KL series.")
        series[name] = members
    return series


# ----------------------------------------------------------------------------------------- per-prompt means, bootstrap


def per_prompt_means(front: Front, prompts: list, columns) -> torch.Tensor:
    """`(K, P, c)` mean of `columns(sample)` (c values, None skipped) over each prompt's samples at each weighting."""
    index = {json.dumps(prompt): p for p, prompt in enumerate(prompts)}
    weightings = [tuple(r.weights) for r in front.results]
    totals = None
    for sample in front.samples:
        values = columns(sample)
        if totals is None:
            totals = torch.zeros(len(weightings), len(prompts), len(values), dtype=torch.float64)
            counts = torch.zeros_like(totals)
        k, p = weightings.index(tuple(sample["weights"])), index[json.dumps(sample["prompt"])]
        for i, value in enumerate(values):
            if value is not None:
                totals[k, p, i] += value
                counts[k, p, i] += 1
    return totals / counts


def per_prompt_rewards(front: Front, prompts: list) -> torch.Tensor:
    """`(K, P, m)` mean reward of each prompt's samples at each weighting of `front`, from `front.samples`."""
    return per_prompt_means(front, prompts, lambda sample: [sample["rewards"][n] for n in front.objective_names])


def per_prompt_kl(front: Front, prompts: list) -> torch.Tensor:
    """`(K, P, 1)` mean KL to the base model (nats per completion) of each prompt's samples at each weighting."""
    return per_prompt_means(front, prompts, lambda sample: [sample["kl"]])


def save_evaluation(front: Front, stem: str) -> None:
    """`<stem>.json`/`.csv` (the summary) and `<stem>.samples.jsonl` (every completion)."""
    front.save(os.path.dirname(stem), stem=os.path.basename(stem))
    front.save_samples(stem + ".samples.jsonl")


def load_evaluation(stem: str) -> Front | None:
    """The evaluation `save_evaluation` wrote to `stem`, with its samples; None if there is none."""
    if not (os.path.isfile(stem + ".json") and os.path.isfile(stem + ".samples.jsonl")):
        return None
    front = Front.load(stem + ".json")
    with open(stem + ".samples.jsonl") as handle:
        front.samples = [json.loads(line) for line in handle]
    return front


def bootstrap_joint(statistic, per_prompt: list[torch.Tensor], num_resamples: int, seed: int):
    """`statistic([(K, c) means, ...])` on all prompts, and its 95% percentile interval over resampled prompts.

    Each tensor of `per_prompt` is `(S, K, P, c)` (S seeds, its own K and c, the same P prompts); a resample draws P
    prompts with replacement, shared by every tensor, seed and weighting, averages them, then averages the seeds.
    Resamples where the statistic is NaN are left out of the interval.
    """
    generator = torch.Generator().manual_seed(seed)
    num_prompts = per_prompt[0].size(2)
    point = statistic([tensor.nanmean(2).mean(0) for tensor in per_prompt])
    values = []
    for _ in range(num_resamples):
        chosen = torch.randint(num_prompts, (num_prompts,), generator=generator)
        values.append(statistic([tensor[:, :, chosen].nanmean(2).mean(0) for tensor in per_prompt]))
    values = torch.tensor(values)
    return point, torch.nanquantile(values, 0.025).item(), torch.nanquantile(values, 0.975).item()


def bootstrap(statistic, per_prompt: torch.Tensor, num_resamples: int, seed: int) -> tuple[float, float, float]:
    """`bootstrap_joint` of one `(S, K, P, m)` tensor: `statistic((K, m) means)` and its 95% interval."""
    return bootstrap_joint(lambda means: statistic(means[0]), [per_prompt], num_resamples, seed)


def margins(weights: torch.Tensor):
    """Per objective i: mean R_i where w_i = 1 minus mean R_i where w_i = 0 (how far the weighting moves it)."""

    def statistic(means: torch.Tensor, i: int) -> float:  # means: (K, m)
        return (means[weights[:, i] == 1, i].mean() - means[weights[:, i] == 0, i].mean()).item()

    return statistic


# ------------------------------------------------------------------------------------------- language and degeneracy

# The guards live in the library (`trl_clp.gaming_guards`); this script reports their aggregate, `text_guards`.


# --------------------------------------------------------------------------------------------------- equal-KL view


def scalarised_gain(means: torch.Tensor, base: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """`(K,)` w·R̄(w) − w·R̄_base: how much more of what each weighting asks for a front gets than the base model.

    Args:
        means: `(K, m)` the front's mean rewards at its K weightings.
        base: `(m,)` the base model's mean rewards.
        weights: `(K, m)` the weightings.
    """
    return (weights * (means - base)).sum(-1)


def gain_per_nat(gain: torch.Tensor, kl: torch.Tensor) -> float:
    """Σ_k gain_k / Σ_k KL_k over `(K,)` gains and KLs: scalarised gain per nat of KL, pooled over weightings.

    A straight line from the base model (gain 0 at KL 0) to the front: it favours fronts that stay close when the
    gain flattens out with KL (it usually does), so read it with the matched-KL comparison.
    """
    return (gain.sum() / kl.sum()).item()


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


def front_guards(runs: list[Front], weights: torch.Tensor) -> dict[str, list[float]]:
    """`text_guards` at each of the K `weights`, over the completions of every seed of a front: `{guard: [K]}`."""
    per_weighting = [
        text_guards([s["completion"] for front in runs for s in front.samples if s["weights"] == w])
        for w in weights.tolist()
    ]
    return {guard: [values[guard] for values in per_weighting] for guard in per_weighting[0]}


def matched_gain_difference(means: list[torch.Tensor], weights: torch.Tensor, matched: list[int] | None = None):
    """A KL series' gain interpolated at another front's KL, minus that front's gain, per weighting.

    Args:
        means: `[(K, m) rewards, (K, 1) KL]` for each of the series' A fronts, then the same for the other front,
            then the base model's `(1, m)` rewards.
        weights: `(K, m)`.
        matched: None gives the `(K,)` differences (NaN where the other front's KL is outside the series' KL range);
            indices of weightings give the mean difference over them (a float).
    """
    base = means[-1][0]  # (m,)
    series = [(means[i], means[i + 1]) for i in range(0, len(means) - 3, 2)]
    series_gain = torch.stack([scalarised_gain(rewards, base, weights) for rewards, _ in series])  # (A, K)
    series_kl = torch.stack([kl[:, 0] for _, kl in series])  # (A, K)
    other_rewards, other_kl = means[-3], means[-2][:, 0]
    gap = gain_at_kl(series_kl, series_gain, other_kl) - scalarised_gain(other_rewards, base, weights)  # (K,)
    return gap if matched is None else gap[matched].nanmean().item()


def equal_kl_view(fronts, base_front, prompts, weights, series, num_resamples, seed) -> dict:
    """Scalarised gains over the base model beside the KL, per front and weighting, gain per nat, and each KL
    series' gain at the other fronts' KL (matched KL), each with a bootstrap interval over prompts."""
    base = per_prompt_rewards(base_front, prompts).unsqueeze(0)  # (1, 1, P, m)
    tensors = {  # front → [(S, K, P, m) rewards, (S, K, P, 1) KL]
        label: [
            torch.stack([per_prompt_rewards(front, prompts) for front in runs]),
            torch.stack([per_prompt_kl(front, prompts) for front in runs]),
        ]
        for label, runs in fronts.items()
    }

    def gains(means):  # [(K, m) rewards, (K, 1) KL, (1, m) base] → (K,) gains
        return scalarised_gain(means[0], means[2][0], weights)

    view = {"series": series, "per_front": {}, "matched_kl": {}}
    for label, (rewards, kl) in tensors.items():
        joint = [rewards, kl, base]
        view["per_front"][label] = {
            "kl_weight": fronts[label][0].kl_weight,
            "gain": [
                bootstrap_joint(lambda m, k=k: gains(m)[k].item(), joint, num_resamples, seed)
                for k in range(len(weights))
            ],
            "kl": kl.nanmean(2).mean(0)[:, 0].tolist(),
            "gain_per_nat": bootstrap_joint(lambda m: gain_per_nat(gains(m), m[1][:, 0]), joint, num_resamples, seed),
        }
    for name, members in series.items():
        view["matched_kl"][name] = {}
        for other in (label for label in fronts if label not in members):
            joint = [tensor for label in members for tensor in tensors[label]] + tensors[other] + [base]
            gap = matched_gain_difference([tensor.nanmean(2).mean(0) for tensor in joint], weights)  # (K,)
            matched = [k for k in range(len(weights)) if not math.isnan(gap[k])]
            statistic = functools.partial(matched_gain_difference, weights=weights, matched=matched)
            view["matched_kl"][name][other] = {
                "weightings": [weights[k].tolist() for k in matched],
                "gain_difference": bootstrap_joint(statistic, joint, num_resamples, seed) if matched else None,
            }
    return view


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, help="label=path[,path...] per method (paths: seeds)")
    parser.add_argument("--prompts", required=True, help="held-out prompts (JSONL with a `prompt` column)")
    parser.add_argument("--reward_funcs", nargs="+", required=True, help="one per objective, in training's order")
    parser.add_argument("--num_prompts", type=int, default=None, help="first N prompts only (default: all)")
    parser.add_argument("--grid_points", type=int, default=5)
    parser.add_argument("--samples_per_prompt", type=int, default=2)
    parser.add_argument("--max_new_tokens", type=int, default=24)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--reference", nargs="+", type=float, default=None, help="hypervolume reference (default 0s)")
    parser.add_argument("--num_resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--base_samples_per_prompt", type=int, default=4, help="samples of the base model per prompt")
    parser.add_argument(
        "--reuse", action="store_true", help="load evaluations already written to --output_dir instead of sampling"
    )
    parser.add_argument(
        "--kl_weights_for",
        nargs="+",
        action="append",
        default=[],
        metavar=("LABEL", "ALPHA"),
        help="LABEL α [α...]: evaluate a run trained conditioned on the KL weight at each α (one front per α)",
    )
    parser.add_argument(
        "--kl_series",
        nargs="+",
        action="append",
        default=[],
        metavar=("NAME", "LABEL"),
        help="NAME LABEL LABEL [...]: fronts of one method trained at several α, compared at matched KL",
    )
    parser.add_argument("--generations_for", default=None, help="label whose sample texts fill generations.md")
    parser.add_argument("--output_dir", required=True)
    args = parser.parse_args()
    limit_cpu_threads()
    os.makedirs(args.output_dir, exist_ok=True)

    prompts = read_prompts(args.prompts)["prompt"][: args.num_prompts]
    reward_funcs = [resolve_reward_function(spec) for spec in args.reward_funcs]
    grid = simplex_grid(len(reward_funcs), args.grid_points)
    reference = torch.tensor(args.reference or [0.0] * len(reward_funcs), dtype=torch.float64)
    sampling = dict(
        num_samples=args.samples_per_prompt,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=0,
        seed=args.seed,
    )
    evaluations = plan_evaluations(args.runs, args.kl_weights_for)  # refuses bad α before any sampling
    series = plan_kl_series(evaluations, args.kl_series)
    fronts: dict[str, list[Front]] = {}
    timings = {}
    for evaluation in evaluations:
        fronts[evaluation.label] = []
        for s, path in enumerate(evaluation.paths):
            started = time.perf_counter()
            stem = evaluation.stem(s)
            front = load_evaluation(os.path.join(args.output_dir, stem)) if args.reuse else None
            if front is None:
                steer = SteerableModel.from_pretrained(path)
                front = evaluate_front(
                    steer, steer.tokenizer, prompts, reward_funcs, grid, kl_weight=evaluation.kl_weight, **sampling
                )
                save_evaluation(front, os.path.join(args.output_dir, stem))
                del steer
            fronts[evaluation.label].append(front)
            timings[stem] = time.perf_counter() - started
            print(f"{evaluation.label} seed {s} ({path}), evaluated in {timings[stem]:.0f} s")
            print(front.format_table())
    base_front = load_evaluation(os.path.join(args.output_dir, "base")) if args.reuse else None
    if base_front is None:  # the base model: every adapter off, under a method that does not rewrite the prompt
        path = next(
            evaluation.paths[0]
            for evaluation in evaluations
            if ConditioningConfig.load(os.path.join(evaluation.paths[0], CLP_CONFIG_NAME)).conditioning != "prompt"
        )
        steer = SteerableModel.from_pretrained(path)
        with steer.model.disable_adapter():
            base_front = evaluate_front(
                steer,
                steer.tokenizer,
                prompts,
                reward_funcs,
                grid[:1],
                **{**sampling, "num_samples": args.base_samples_per_prompt},
            )
        save_evaluation(base_front, os.path.join(args.output_dir, "base"))
        del steer

    names = fronts[next(iter(fronts))][0].objective_names
    weights = fronts[next(iter(fronts))][0].weights()
    base_samples = base_front.samples
    base_scores = torch.tensor([[s["rewards"][n] for n in names] for s in base_samples], dtype=torch.float64)
    results = {
        "settings": {**vars(args), "num_prompts": len(prompts), "weightings": weights.tolist()},
        "base_model": {  # over every base-model completion
            name: {"mean": base_scores[:, i].nanmean().item(), "std": base_scores[:, i].std().item()}
            for i, name in enumerate(names)
        },
        "methods": {},
    }
    results["base_model"]["pearson"] = {
        f"{names[i]}~{names[j]}": torch.corrcoef(base_scores[:, [i, j]].T)[0, 1].item()
        for i in range(len(names))
        for j in range(i + 1, len(names))
    }
    results["base_model"]["guards"] = text_guards([sample["completion"] for sample in base_samples])
    mean_fronts = {}
    margin = margins(weights)
    for label, runs in fronts.items():
        per_prompt = torch.stack([per_prompt_rewards(front, prompts) for front in runs])  # (S, K, P, m)
        means = per_prompt.nanmean(2).mean(0)  # (K, m)
        mean_fronts[label] = means
        hv = bootstrap(lambda m: hypervolume(m, reference), per_prompt, args.num_resamples, args.seed)
        results["methods"][label] = {
            "seeds": len(runs),
            "kl_weight": runs[0].kl_weight,
            "rewards": means.tolist(),
            "kl": [sum(front.results[k].kl for front in runs) / len(runs) for k in range(len(weights))],
            "hypervolume": hv,
            "hypervolume_per_seed": [front.hypervolume(reference) for front in runs],
            "margins": {
                name: bootstrap(lambda m, i=i: margin(m, i), per_prompt, args.num_resamples, args.seed)
                for i, name in enumerate(names)
            },
            "guards": front_guards(runs, weights),
        }
    for label, means in mean_fronts.items():
        results["methods"][label]["dominates_fraction_of"] = {
            other: fraction_dominated(means, other_means)
            for other, other_means in mean_fronts.items()
            if other != label
        }
        results["methods"][label]["additive_epsilon_to"] = {
            other: additive_epsilon(means, other_means) for other, other_means in mean_fronts.items() if other != label
        }
    results["equal_kl"] = equal_kl_view(fronts, base_front, prompts, weights, series, args.num_resamples, args.seed)
    results["evaluation_seconds"] = timings
    with open(os.path.join(args.output_dir, "comparison.json"), "w") as handle:
        json.dump(results, handle, indent=2)
    print(
        json.dumps(
            {label: {k: v for k, v in r.items() if k != "rewards"} for label, r in results["methods"].items()},
            indent=1,
        )
    )

    plot(mean_fronts, results, names, weights, os.path.join(args.output_dir, "fronts.png"))
    plot_equal_kl(results, weights, os.path.join(args.output_dir, "equal_kl.png"))
    write_report(results, names, os.path.join(args.output_dir, "report.md"))
    label = args.generations_for or next(iter(fronts))
    write_generations(fronts[label][0], base_samples, label, os.path.join(args.output_dir, "generations.md"))


def plot(mean_fronts, results, names, weights, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 5))
    for label, means in mean_fronts.items():
        axis.plot(
            means[:, 0],
            means[:, 1],
            marker="o",
            label=f"{label} (KL {min(results['methods'][label]['kl']):.1f}–{max(results['methods'][label]['kl']):.1f})",
        )
        for w, (x, y) in zip(weights.tolist(), means[:, :2].tolist(), strict=True):
            if w[0] in (0.0, 0.5, 1.0):
                axis.annotate(f"{w[0]:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    base = results["base_model"]
    axis.plot(
        [base[names[0]]["mean"]],
        [base[names[1]]["mean"]],
        marker="*",
        markersize=12,
        color="black",
        linestyle="",
        label="base model",
    )
    axis.set_xlabel(f"{names[0]} (mean over held-out prompts)")
    axis.set_ylabel(f"{names[1]} (mean over held-out prompts)")
    axis.set_title(f"Fronts over w = ({names[0]} weight, 1 − it); labels: {names[0]} weight")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def plot_equal_kl(results, weights, path) -> None:
    """One panel per weighting: each front's scalarised gain over the base model (95% interval) against its KL; the
    fronts of a KL series share a colour and a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    view = results["equal_kl"]
    figure, axes = plt.subplots(1, len(weights), figsize=(3.2 * len(weights), 3.6), sharey=True, squeeze=False)
    groups = list(view["series"].values()) + [  # a KL series, or one front alone
        [label] for label in view["per_front"] if not any(label in m for m in view["series"].values())
    ]
    markers = "osD^v<>pPX*h"
    for g, members in enumerate(groups):
        color = f"C{g % 10}"
        for k, axis in enumerate(axes[0]):
            points = sorted(  # (KL, gain, label), along the KL
                (view["per_front"][label]["kl"][k], view["per_front"][label]["gain"][k], label) for label in members
            )
            if len(points) > 1:
                axis.plot([x for x, _, _ in points], [gain[0] for _, gain, _ in points], color=color, linewidth=1)
            for i, (x, (point, low, high), label) in enumerate(points):
                axis.errorbar(
                    [x],
                    [point],
                    yerr=[[point - low], [high - point]],
                    color=color,
                    marker=markers[i % len(markers)],
                    capsize=2,
                    label=label if k == 0 else None,
                )
    for k, axis in enumerate(axes[0]):
        axis.axhline(0.0, color="black", linewidth=0.5)
        axis.set_title("w = (" + ", ".join(f"{x:g}" for x in weights[k].tolist()) + ")", fontsize=9)
        axis.set_xlabel("KL to the base model (nats)")
    axes[0][0].set_ylabel("w·R̄ − w·R̄_base")
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


GUARDS = {"english": "English share", "empty": "(near-)empty share", "distinct": "distinct-word ratio"}


def write_report(results: dict, names: list[str], path: str) -> None:
    """`report.md`, copied from `results`: one row per front (hypervolume, margins, KL, guards, dominance), the α
    section when fronts at several KL weights are present, and the equal-KL view."""

    def interval(values, digits=3):
        point, low, high = values
        return f"{point:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"

    def span(values, digits=2):  # lowest–highest over the weightings
        values = [v for v in values if not math.isnan(v)]
        return f"{min(values):.{digits}f}–{max(values):.{digits}f}" if values else "–"

    def table(header, rows):
        return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
            "| " + " | ".join(row) + " |" for row in rows
        ]

    methods = results["methods"]
    header = ["method", "seeds", "hypervolume [95% CI]"] + [f"{name} margin [95% CI]" for name in names]
    header += ["KL (nats per completion)", *GUARDS.values(), "dominates (share of each other front's points)"]
    rows = []
    for label, method in methods.items():
        dominated = ", ".join(f"{other} {share:.0%}" for other, share in method["dominates_fraction_of"].items())
        row = [label, str(method["seeds"]), interval(method["hypervolume"])]
        row += [interval(method["margins"][name]) for name in names]
        row += [span(method["kl"], 1)] + [span(method["guards"][guard]) for guard in GUARDS] + [dominated]
        rows.append(row)
    lines = table(header, rows)
    base = results["base_model"]
    lines += [
        "",
        "Base model: "
        + ", ".join(f"{name} {base[name]['mean']:.3f} ± {base[name]['std']:.3f}" for name in names)
        + "; Pearson "
        + ", ".join(f"{pair} {value:+.2f}" for pair, value in base["pearson"].items())
        + "; "
        + ", ".join(f"{GUARDS[guard]} {base['guards'][guard]:.2f}" for guard in GUARDS)
        + ".",
        "",
        f"KL and guards: lowest–highest over the weightings. {GUARDS['empty']}: completions of fewer than "
        f"{NEAR_EMPTY_WORDS} words; over the others, {GUARDS['english']}: those with at least "
        f"{ENGLISH_WORD_SHARE:.0%} of their words in an English lexicon (Brill's, shipped with TextBlob, foreign "
        f"words left out), and {GUARDS['distinct']}: distinct words over words, averaged (repetition lowers it).",
    ]
    if len({method["kl_weight"] for method in methods.values()}) > 1:
        lines += ["", "## KL weight α", ""]
        header = ["method", "α", "hypervolume [95% CI]"] + [f"{name} margin [95% CI]" for name in names]
        header += ["KL (nats per completion)", *GUARDS.values()]
        rows = []
        series = results["equal_kl"]["series"]
        groups = list(series) + [alpha_family(label) for label in methods]  # a KL series, or one run's fronts

        def order(item):
            label, method = item
            group = next((name for name, members in series.items() if label in members), alpha_family(label))
            return groups.index(group), method["kl_weight"]

        for label, method in sorted(methods.items(), key=order):
            row = [label, f"{method['kl_weight']:g}", interval(method["hypervolume"])]
            row += [interval(method["margins"][name]) for name in names]
            row += [span(method["kl"], 1)] + [span(method["guards"][guard]) for guard in GUARDS]
            rows.append(row)
        lines += table(header, rows)
        lines += [
            "",
            "A small α lets the policy drift from the base model (high KL); read the guards beside it: an English "
            "share or distinct-word ratio below the base model's, or a rising (near-)empty share, is reward "
            "hacking rather than steering.",
        ]
    lines += ["", *equal_kl_section(results["equal_kl"], results["settings"]["weightings"])]
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")


def alpha_family(label: str) -> str:
    """A front's label without its " (α=…)" suffix: the run it comes from."""
    return label.split(" (α=")[0]


def equal_kl_section(view: dict, weightings: list[list[float]]) -> list[str]:
    """The equal-KL view of `report.md` (Markdown lines), from `results["equal_kl"]`."""
    fronts = view["per_front"]
    lines = [
        "## Equal KL",
        "",
        "Gain: w·R̄ − w·R̄_base, the scalarised reward a front gets at weighting w above the base model's, with the "
        "KL (nats per completion) it travelled for it. Gain per nat: Σ_w gain / Σ_w KL over the weightings (a "
        "straight line from the base model; gains usually flatten as KL grows, so it favours fronts that stay "
        "close). Intervals: 95% bootstrap over prompts (seeds averaged).",
        "",
    ]
    header = (
        ["method", "α"]
        + ["gain @ KL, w = (" + ", ".join(f"{x:g}" for x in w) + ")" for w in weightings]
        + ["gain per nat"]
    )
    rows = []
    for label, front in fronts.items():
        row = [label, f"{front['kl_weight']:g}"]
        row += [
            f"{gain[0]:+.3f} [{gain[1]:+.3f}, {gain[2]:+.3f}] @ {kl:.1f}"
            for gain, kl in zip(front["gain"], front["kl"], strict=True)
        ]
        row.append(
            f"{front['gain_per_nat'][0]:+.4f} [{front['gain_per_nat'][1]:+.4f}, {front['gain_per_nat'][2]:+.4f}]"
        )
        rows.append(row)
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(r) + " |" for r in rows
    ]
    if view["matched_kl"]:
        lines += [
            "",
            "Matched KL: a KL series (one method at several α) read at another front's KL. Per weighting, the "
            "series' gain interpolated linearly in KL between its fronts, at the other front's KL, minus the other "
            "front's gain; averaged over the weightings where that KL lies inside the series' range (chosen on all "
            "prompts). Positive: the series gets more at the same distance from the base model.",
            "",
            "| KL series | compared with | weightings matched | gain difference [95% CI] |",
            "|---|---|---|---|",
        ]
        for name, others in view["matched_kl"].items():
            for other, match in others.items():
                shown = ", ".join("(" + ", ".join(f"{x:g}" for x in w) + ")" for w in match["weightings"]) or "none"
                difference = match["gain_difference"]
                value = (
                    "–" if difference is None else f"{difference[0]:+.3f} [{difference[1]:+.3f}, {difference[2]:+.3f}]"
                )
                lines.append(f"| {name} | {other} | {shown} | {value} |")
    return lines


def write_generations(front: Front, base_samples: list[dict], label: str, path: str, num_prompts: int = 3) -> None:
    """A Markdown table: the first sample of `num_prompts` prompts at the two ends and the middle of the grid."""
    names = front.objective_names
    chosen = [tuple(r.weights) for r in front.results if max(r.weights) == 1.0 or len(set(r.weights)) == 1]
    prompts = []
    for sample in front.samples:
        if sample["prompt"] not in prompts:
            prompts.append(sample["prompt"])
    lines = [f"Generations of {label} (first sample of each prompt; rewards: {', '.join(names)}).", ""]
    for prompt in prompts[:num_prompts]:
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
            scores = " | ".join(f"{s['rewards'][n]:.2f}" for n in names)
            lines.append(f"| {', '.join(str(x) for x in w)} | {text} | {scores} |")
        lines.append("")
    with open(path, "w") as handle:
        handle.write("\n".join(lines))


if __name__ == "__main__":
    main()
