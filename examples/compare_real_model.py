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
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch  # noqa: E402

from trl_clp import SteerableModel, simplex_grid  # noqa: E402
from trl_clp.cli import read_prompts  # noqa: E402
from trl_clp.conditioning.config import CLP_CONFIG_NAME, ConditioningConfig  # noqa: E402
from trl_clp.evaluation import Front, evaluate_front  # noqa: E402
from trl_clp.pareto import additive_epsilon, fraction_dominated, hypervolume  # noqa: E402
from trl_clp.rewards import resolve_reward_function  # noqa: E402
from trl_clp.scripts import limit_cpu_threads  # noqa: E402


def per_prompt_rewards(front: Front, prompts: list) -> torch.Tensor:
    """`(K, P, m)` mean reward of each prompt's samples at each weighting of `front`, from `front.samples`."""
    keys = [json.dumps(prompt) for prompt in prompts]
    index = {key: p for p, key in enumerate(keys)}
    weightings = [tuple(r.weights) for r in front.results]
    totals = torch.zeros(len(weightings), len(prompts), len(front.objective_names), dtype=torch.float64)
    counts = torch.zeros_like(totals)
    for sample in front.samples:
        k = weightings.index(tuple(sample["weights"]))
        p = index[json.dumps(sample["prompt"])]
        for i, name in enumerate(front.objective_names):
            if sample["rewards"][name] is not None:
                totals[k, p, i] += sample["rewards"][name]
                counts[k, p, i] += 1
    return totals / counts


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


def bootstrap(statistic, per_prompt: torch.Tensor, num_resamples: int, seed: int) -> tuple[float, float, float]:
    """`statistic((K, m) means)` on all prompts, and its 95% percentile interval over resampled prompts.

    `per_prompt` is `(S, K, P, m)` (S seeds); a resample draws P prompts with replacement, shared by seeds and
    weightings, averages them, then averages the seeds.
    """
    generator = torch.Generator().manual_seed(seed)
    num_prompts = per_prompt.size(2)
    point = statistic(per_prompt.nanmean(2).mean(0))
    values = []
    for _ in range(num_resamples):
        chosen = torch.randint(num_prompts, (num_prompts,), generator=generator)
        values.append(statistic(per_prompt[:, :, chosen].nanmean(2).mean(0)))
    values = torch.tensor(values)
    return point, torch.quantile(values, 0.025).item(), torch.quantile(values, 0.975).item()


def margins(weights: torch.Tensor):
    """Per objective i: mean R_i where w_i = 1 minus mean R_i where w_i = 0 (how far the weighting moves it)."""

    def statistic(means: torch.Tensor, i: int) -> float:  # means: (K, m)
        return (means[weights[:, i] == 1, i].mean() - means[weights[:, i] == 0, i].mean()).item()

    return statistic


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
    methods = dict(run.split("=", 1) for run in args.runs)
    fronts: dict[str, list[Front]] = {}
    timings = {}
    for label, paths in methods.items():
        fronts[label] = []
        for s, path in enumerate(paths.split(",")):
            started = time.perf_counter()
            stem = os.path.join(args.output_dir, f"{label.replace(' ', '-')}-s{s}")  # no spaces in file names
            front = load_evaluation(stem) if args.reuse else None
            if front is None:
                steer = SteerableModel.from_pretrained(path)
                front = evaluate_front(steer, steer.tokenizer, prompts, reward_funcs, grid, **sampling)
                save_evaluation(front, stem)
                del steer
            fronts[label].append(front)
            timings[f"{label}-s{s}"] = time.perf_counter() - started
            print(f"{label} seed {s} ({path}), evaluated in {timings[f'{label}-s{s}']:.0f} s")
            print(front.format_table())
    base_front = load_evaluation(os.path.join(args.output_dir, "base")) if args.reuse else None
    if base_front is None:  # the base model: every adapter off, under a method that does not rewrite the prompt
        path = next(
            path.split(",")[0]
            for path in methods.values()
            if ConditioningConfig.load(os.path.join(path.split(",")[0], CLP_CONFIG_NAME)).conditioning != "prompt"
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
    mean_fronts = {}
    margin = margins(weights)
    for label, runs in fronts.items():
        per_prompt = torch.stack([per_prompt_rewards(front, prompts) for front in runs])  # (S, K, P, m)
        means = per_prompt.nanmean(2).mean(0)  # (K, m)
        mean_fronts[label] = means
        hv = bootstrap(lambda m: hypervolume(m, reference), per_prompt, args.num_resamples, args.seed)
        results["methods"][label] = {
            "seeds": len(runs),
            "rewards": means.tolist(),
            "kl": [sum(front.results[k].kl for front in runs) / len(runs) for k in range(len(weights))],
            "hypervolume": hv,
            "hypervolume_per_seed": [front.hypervolume(reference) for front in runs],
            "margins": {
                name: bootstrap(lambda m, i=i: margin(m, i), per_prompt, args.num_resamples, args.seed)
                for i, name in enumerate(names)
            },
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


def write_report(results: dict, names: list[str], path: str) -> None:
    """`report.md`: one Markdown row per method (hypervolume, margins, KL, dominance), copied from `results`."""

    def interval(values, digits=3):
        point, low, high = values
        return f"{point:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"

    methods = results["methods"]
    header = ["method", "seeds", "hypervolume [95% CI]"] + [f"{name} margin [95% CI]" for name in names]
    header += ["KL (nats per completion)", "dominates (share of each other front's points)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, method in methods.items():
        dominated = ", ".join(f"{other} {share:.0%}" for other, share in method["dominates_fraction_of"].items())
        row = [label, str(method["seeds"]), interval(method["hypervolume"])]
        row += [interval(method["margins"][name]) for name in names]
        row += [f"{min(method['kl']):.1f}–{max(method['kl']):.1f}", dominated]
        lines.append("| " + " | ".join(row) + " |")
    base = results["base_model"]
    lines += [
        "",
        "Base model: "
        + ", ".join(f"{name} {base[name]['mean']:.3f} ± {base[name]['std']:.3f}" for name in names)
        + "; Pearson "
        + ", ".join(f"{pair} {value:+.2f}" for pair, value in base["pearson"].items())
        + ".",
    ]
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")


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
