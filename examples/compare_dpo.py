# Copyright 2026 The trl-clp developers. Apache-2.0.
"""
DPO-CLP on a task with known rewards: preference pairs sampled from the demo's reference policy and labelled with the
true reward functions, several ways of training a steerable policy on them at an equal budget, and the online CLP
front on the same task, all measured with the true rewards.

    python examples/compare_dpo.py            # 3 seeds, 60 steps per method
    python examples/compare_dpo.py --quick    # 1 seed, 4 steps, tiny sizes: a smoke run for the tests, not evidence
    python examples/compare_dpo.py --reuse --seeds 0 1    # the report from the runs already there, nothing trained
    python examples/compare_dpo.py --reuse --methods dpo-clp-full-scores ...   # add a method to those runs

Per seed: the demo's tiny Llama is pre-trained (`demo.pretrain_demo_model`, as `compare_baselines.py` does, so the
base models are the same); it is the reference policy. `completions_per_prompt` completions are sampled from it for
each of `num_train_prompts` training prompts, and every two completions of a prompt form a pair, labelled per
objective by the sign of the true rewards' difference (`pairs_from_reward_functions`; the scores layout keeps the
reward values). Methods, all `MultiObjectiveDPOTrainer` with the same pairs, steps, batch, learning rate, β and
rank-8 LoRA per objective on every linear layer:

- dpo-clp-full, dpo-clp-attn: DPO-CLP, Dirichlet(1) weightings per pair;
- dpo-prompting: one shared LoRA, the weighting written into the prompt;
- dpo-rewarded-soups: full conditioning trained on one-hot weightings only (each objective's block learns alone from
  its own labels), the blocks mixed in parameter space at inference: Rewarded Soups as `compare_baselines.py` builds
  it;
- dpo-clp-full-scores: dpo-clp-full on the scores layout (the same pairs with the reward values);
- online-clp-full: `compare_baselines.py`'s clp-full (`MultiObjectiveTrainer`, RLOO) for the same number of steps,
  16 completions per step: as many sampled completions as the DPO methods' pairs hold, but sampled from the policy
  being trained.

Each policy is evaluated with the true rewards on held-out prompts over a weighting grid (`evaluate_front`; KL to
the base model beside each point). Writes `<output_dir>/report.md`, `results.json`, `fronts.png`, the pairs of each
seed (`pairs/seed<s>.jsonl`) and every evaluation with its completions (`fronts/<method>-s<seed>.json`,
`.samples.jsonl`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch  # noqa: E402
from peft import LoraConfig  # noqa: E402
from transformers import AutoModelForCausalLM, HfArgumentParser  # noqa: E402

from trl_clp import MultiObjectiveDPOConfig, MultiObjectiveDPOTrainer, demo, simplex_grid  # noqa: E402
from trl_clp.comparison import compare_fronts, load_evaluation, paired_section, save_evaluation  # noqa: E402
from trl_clp.evaluation import evaluate_front  # noqa: E402
from trl_clp.plotting import plot_mean_fronts  # noqa: E402
from trl_clp.preference_sampling import pairs_from_reward_functions, sample_completions  # noqa: E402
from trl_clp.rewards import lowercase_reward, uppercase_reward  # noqa: E402

# The online comparison's runner, reused rather than copied.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare_baselines  # noqa: E402

DPO_METHODS = {
    "dpo-clp-full": dict(conditioning="full"),
    "dpo-clp-attn": dict(conditioning="attn"),
    "dpo-prompting": dict(conditioning="prompt"),
    "dpo-rewarded-soups": dict(conditioning="full", weight_distribution="one_hot"),
    "dpo-clp-full-scores": dict(conditioning="full", preference_layout="scores"),
}
ONLINE_METHOD = "online-clp-full"
METHODS = [*DPO_METHODS, ONLINE_METHOD]
REWARDS = [lowercase_reward, uppercase_reward]
REFERENCE_POINT = [0.0, 0.0]  # both rewards live in [0, 1]; fixed before any run


@dataclass
class CompareDPOArguments:
    output_dir: str = field(default="outputs/compare_dpo", metadata={"help": "Where the report and figures go."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "One full run per seed."})
    methods: list[str] = field(
        default_factory=lambda: [m for m in METHODS if m != "dpo-clp-full-scores"],
        metadata={"help": f"Among {METHODS}."},
    )
    max_steps: int = field(default=60, metadata={"help": "Training steps of every method (equal budget)."})
    pairs_per_step: int = field(
        default=8, metadata={"help": "Pairs per DPO step (2 completions each); online CLP samples 16 per step."}
    )
    learning_rate: float = field(default=3e-3, metadata={"help": "Every method's learning rate (the demo's)."})
    dpo_beta: float = field(default=0.1, metadata={"help": "DPO's β, for every DPO method."})
    num_train_prompts: int = field(
        default=480, metadata={"help": "Training prompts; `completions_per_prompt` reference samples each."}
    )
    completions_per_prompt: int = field(default=2, metadata={"help": "k: every two of them form a pair."})
    pretrain_steps: int = field(default=200, metadata={"help": "Pre-training steps of each seed's base model."})
    num_eval_prompts: int = field(default=24, metadata={"help": "Held-out prompts per evaluation."})
    eval_samples_per_prompt: int = field(default=2, metadata={"help": "Completions per (prompt, weighting)."})
    eval_grid_points: int = field(default=5, metadata={"help": "Weightings on the simplex edge."})
    num_resamples: int = field(
        default=1000, metadata={"help": "Bootstrap resamples (seeds and prompts, trl_clp.paired_bootstrap)."}
    )
    reuse: bool = field(
        default=False,
        metadata={
            "help": "Read back the evaluations already in `output_dir` and train only the methods missing there (on "
            "the same base model and pairs)."
        },
    )
    quick: bool = field(default=False, metadata={"help": "1 seed, 4 steps, tiny sizes: a smoke run for the tests."})


def make_pairs(base_model, tokenizer, seed: int, args: CompareDPOArguments) -> dict:
    """The reference policy's completions for the training prompts, and the pairs in both layouts."""
    prompts = list(demo.make_prompt_dataset(args.num_train_prompts, seed=seed)["prompt"])
    completions, completion_ids = sample_completions(
        base_model,
        tokenizer,
        prompts,
        num_completions=args.completions_per_prompt,
        max_new_tokens=demo.DEMO_TRAINING_ARGS["max_completion_length"],
        seed=seed,
    )
    return {
        "completions": completions,
        **{
            layout: pairs_from_reward_functions(prompts, completions, REWARDS, layout, completion_ids=completion_ids)
            for layout in ("labels", "scores")
        },
    }


def data_spread(completions: list[list[str]]) -> dict:
    """What the pairs can show: the reference samples' mean rewards, and per objective the mean over prompts of the
    best of a prompt's completions (the most a policy that picks among them could reach)."""
    scores = torch.tensor([[f(group) for f in REWARDS] for group in completions], dtype=torch.float64)  # (P, m, k)
    names = [f.__name__ for f in REWARDS]
    return {
        "mean": dict(zip(names, scores.mean((0, 2)).tolist(), strict=True)),
        "best_of_k": dict(zip(names, scores.max(2).values.mean(0).tolist(), strict=True)),
    }


def train_dpo(method: str, seed: int, base_path: str, dataset, args: CompareDPOArguments, eval_dataset=None):
    """Train one DPO method on the seed's pairs (`dataset[layout]`); `eval_dataset`: held-out pairs the trainer
    tokenizes with them (benchmarks/dpo_tuning.py scores them)."""
    config = {"preference_layout": "labels", **DPO_METHODS[method]}
    training_args = MultiObjectiveDPOConfig(
        output_dir=os.path.join(args.output_dir, "runs", f"{method}-seed{seed}"),
        objective_names=[f.__name__ for f in REWARDS],
        seed=seed,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.pairs_per_step,
        learning_rate=args.learning_rate,
        beta=args.dpo_beta,
        loss_type="sigmoid",
        logging_steps=args.max_steps,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        bf16=False,
        gradient_checkpointing=False,
        **config,
    )
    trainer = MultiObjectiveDPOTrainer(
        model=base_path,
        args=training_args,
        train_dataset=dataset[config["preference_layout"]],
        eval_dataset=eval_dataset,
        processing_class=demo.make_byte_tokenizer(),
        peft_config=LoraConfig(**demo.DEMO_LORA),
    )
    trainer.train()
    return trainer


def train_online(seed: int, base_path: str, args: CompareDPOArguments):
    online_args = compare_baselines.CompareArguments(
        output_dir=os.path.join(args.output_dir, "runs"), max_steps=args.max_steps
    )
    return compare_baselines.train(
        compare_baselines.METHODS["clp-full"], seed, base_path, REWARDS, online_args, f"{ONLINE_METHOD}-seed{seed}"
    )


def main(args: CompareDPOArguments) -> dict:
    if args.quick:
        args.seeds, args.max_steps, args.num_train_prompts, args.pretrain_steps = args.seeds[:1], 4, 24, 20
        args.num_eval_prompts, args.eval_samples_per_prompt, args.eval_grid_points = 3, 1, 3
        args.num_resamples = 50
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        raise ValueError(f"Unknown methods {unknown}; choose among {METHODS}.")
    started = time.perf_counter()
    os.makedirs(os.path.join(args.output_dir, "pairs"), exist_ok=True)
    grid = simplex_grid(len(REWARDS), args.eval_grid_points)
    evaluation = dict(
        num_samples=args.eval_samples_per_prompt,
        max_new_tokens=demo.DEMO_TRAINING_ARGS["max_completion_length"],
        kl_weight=demo.DEMO_TRAINING_ARGS["beta"],
    )
    fronts = {method: [] for method in args.methods}
    reference_fronts, spreads, prompts_per_seed, seconds = [], [], [], {method: [] for method in args.methods}
    for seed in args.seeds:
        prompts = list(demo.make_prompt_dataset(args.num_eval_prompts, seed=1000 + seed)["prompt"])
        prompts_per_seed.append(prompts)
        stems = {m: os.path.join(args.output_dir, "fronts", f"{m}-s{seed}") for m in [*args.methods, "reference"]}
        spread_path = os.path.join(args.output_dir, "pairs", f"seed{seed}.spread.json")
        saved, previous = {}, None
        if args.reuse and os.path.isfile(spread_path):
            saved = {m: load_evaluation(stem) for m, stem in stems.items()}
            with open(spread_path) as handle:
                previous = json.load(handle)
        seed_started = time.perf_counter()
        tokenizer = demo.make_byte_tokenizer()
        base_path = os.path.join(args.output_dir, f"base-seed{seed}")
        if saved.get("reference") is not None:
            reference_fronts.append(saved["reference"])
        if all(saved.get(m) is not None for m in stems):
            print(f"seed {seed}: read back from {args.output_dir}", flush=True)
        elif previous is not None:  # some methods to add: the same base model, the same pairs (seeded sampling)
            base_model = AutoModelForCausalLM.from_pretrained(base_path).eval()
        else:
            base_model = demo.pretrain_demo_model(
                demo.make_tiny_llama(seed=seed), tokenizer, args.pretrain_steps, seed=seed
            )
            base_model.save_pretrained(base_path)
            tokenizer.save_pretrained(base_path)
        if all(saved.get(m) is not None for m in stems):
            dataset = None
        else:
            dataset = make_pairs(base_model, tokenizer, seed, args)
            dataset["labels"].to_json(os.path.join(args.output_dir, "pairs", f"seed{seed}.jsonl"))
            print(
                f"[{time.perf_counter() - started:6.0f} s] seed {seed}: {len(dataset['labels'])} pairs from "
                f"{args.num_train_prompts} prompts",
                flush=True,
            )
        spread = previous or data_spread(dataset["completions"])
        for method in args.methods:
            if saved.get(method) is not None:
                fronts[method].append(saved[method])
                seconds[method].append(previous["seconds"][method])
                continue
            method_started = time.perf_counter()
            if method == ONLINE_METHOD:
                trainer = train_online(seed, base_path, args)
            else:
                trainer = train_dpo(method, seed, base_path, dataset, args)
            steer = compare_baselines.steerable_view(trainer)
            front = evaluate_front(steer, steer.tokenizer, prompts, REWARDS, grid, seed=seed, **evaluation)
            save_evaluation(front, stems[method])
            fronts[method].append(front)
            seconds[method].append(time.perf_counter() - method_started)
            if len(reference_fronts) < len(prompts_per_seed) and steer.conditioning_config.conditioning != "prompt":
                with steer.model.disable_adapter():  # the reference: the base model, adapter off
                    reference = evaluate_front(
                        steer, steer.tokenizer, prompts, REWARDS, grid[:1], seed=seed, **evaluation
                    )
                save_evaluation(reference, stems["reference"])
                reference_fronts.append(reference)
            del trainer, steer
            print(
                f"[{time.perf_counter() - started:6.0f} s] seed {seed} {method}: hypervolume "
                f"{front.hypervolume(REFERENCE_POINT):.4f} ({seconds[method][-1]:.0f} s)",
                flush=True,
            )
        spreads.append(
            {
                "mean": spread["mean"],
                "best_of_k": spread["best_of_k"],
                "seconds": {
                    **(previous or {}).get("seconds", {}),
                    **{method: seconds[method][-1] for method in args.methods},
                },
                # the time spent on this seed, over every pass that trained some of its methods
                "seed_seconds": (previous or {}).get("seed_seconds", 0.0) + time.perf_counter() - seed_started,
            }
        )
        with open(spread_path, "w") as handle:
            json.dump(spreads[-1], handle, indent=2)
    results = summarize(args, fronts, reference_fronts, spreads, seconds)
    results["wall_seconds"] = sum(spread["seed_seconds"] for spread in spreads)  # the runs read back included
    write_report(args, results)
    return results


def summarize(args, fronts, reference_fronts, spreads, seconds) -> dict:
    """The library's comparison of the methods' fronts (`trl_clp.comparison.compare_fronts`: seed-averaged fronts,
    hypervolume and margins with intervals over seeds and prompts, KL, dominance, and the paired differences of every
    two methods with verdicts), plus what this experiment adds: the hypervolume per seed and its t-interval, the run
    times, and the training pairs' rewards. Seed s's prompts and base model are its own: seed s of every method is
    paired with seed s of every other, and prompt p with the p-th prompt of that seed."""
    names = [f.__name__ for f in REWARDS]
    comparison = compare_fronts(
        fronts,
        reference_fronts,
        reference_point=REFERENCE_POINT,
        num_resamples=args.num_resamples,
        guards=False,  # the demo's completions are character strings, not English prose
    )
    results = {"args": asdict(args), **comparison}
    for method in fronts:
        entry = results["methods"][method]
        entry["hypervolume_over_seeds"] = compare_baselines.mean_and_ci(entry["hypervolume_per_seed"])
        entry["seconds_per_run"] = sum(seconds[method]) / len(seconds[method])
    results["base_model"]["kl"] = sum(front.results[0].kl for front in reference_fronts) / len(reference_fronts)
    results["training_pairs"] = {
        key: {name: sum(s[key][name] for s in spreads) / len(spreads) for name in names}
        for key in ("mean", "best_of_k")
    }
    return results


def write_report(args: CompareDPOArguments, results: dict) -> None:
    names = [f.__name__ for f in REWARDS]
    out = args.output_dir
    with open(os.path.join(out, "results.json"), "w") as handle:
        json.dump(results, handle, indent=2)
    plot_mean_fronts(results, os.path.join(out, "fronts.png"))

    def interval(values, digits=3):
        point, low, high = values
        return f"{point:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"

    lines = [
        "# DPO-CLP against its baselines and online CLP on the demo task (true rewards)",
        "",
        f"Seeds {args.seeds}; every method {args.max_steps} steps (DPO: {args.pairs_per_step} pairs per step from the "
        f"same {args.completions_per_prompt} reference samples per prompt of {args.num_train_prompts} prompts; online "
        f"CLP: 16 completions per step from its own policy); learning rate {args.learning_rate:g}, DPO β "
        f"{args.dpo_beta:g}, online KL weight {demo.DEMO_TRAINING_ARGS['beta']:g}; evaluation on "
        f"{args.num_eval_prompts} held-out prompts × {args.eval_samples_per_prompt} samples at "
        f"{args.eval_grid_points} weightings. Hypervolume above {tuple(REFERENCE_POINT)} of the seed-averaged front "
        "with a 95% bootstrap interval over seeds and prompts, and mean ± 95% t-interval of the per-seed "
        "hypervolumes; margin of an objective = its mean reward at weight 1 minus at weight 0. "
        f"Wall time {results['wall_seconds'] / 60:.1f} min on 2 shared CPU cores.",
        "",
        "| method | seeds | hypervolume [95% CI] | hypervolume over seeds | "
        + " | ".join(f"{name} margin [95% CI]" for name in names)
        + " | KL (nats per completion) | s per run | dominates |",
        "|---|---|---|---|" + "---|" * len(names) + "---|---|---|",
    ]
    for method, entry in results["methods"].items():
        dominated = ", ".join(f"{other} {share:.0%}" for other, share in entry["dominates_fraction_of"].items())
        row = [method, str(entry["seeds"]), interval(entry["hypervolume"])]
        row.append(compare_baselines.fmt(entry["hypervolume_over_seeds"]))
        row += [interval(entry["margins"][name]) for name in names]
        row += [f"{min(entry['kl']):.2f}–{max(entry['kl']):.2f}", f"{entry['seconds_per_run']:.0f}", dominated]
        lines.append("| " + " | ".join(row) + " |")
    base, pairs = results["base_model"], results["training_pairs"]
    lines += [
        "",
        "Reference policy (the base, adapter off) on the held-out prompts: "
        + ", ".join(f"{name} {base[name]['mean']:.3f}" for name in names)
        + ". Its training samples: mean "
        + ", ".join(f"{name} {pairs['mean'][name]:.3f}" for name in names)
        + f"; best of {args.completions_per_prompt} per prompt "
        + ", ".join(f"{name} {pairs['best_of_k'][name]:.3f}" for name in names)
        + ".",
    ]
    lines.append("")
    for method, entry in results["methods"].items():
        points = ", ".join(
            f"{w[0]:g}: ({r[0]:.3f}, {r[1]:.3f})" for w, r in zip(results["weightings"], entry["rewards"], strict=True)
        )
        lines.append(f"- {method}, mean rewards by weight of {names[0]}: {points}.")
    lines += ["", *paired_section(results)]
    with open(os.path.join(out, "report.md"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    (compare_args,) = HfArgumentParser(CompareDPOArguments).parse_args_into_dataclasses()
    main(compare_args)
