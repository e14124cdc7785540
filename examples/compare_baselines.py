# Copyright 2026 The trl-clp developers. Apache-2.0.
"""
Check the paper's claims at our scale: CLP against Rewarded Soups and prompting on the offline demo task, at an
equal budget (same steps, same number of sampled completions), over several seeds.

    python examples/compare_baselines.py            # 3 seeds, 240 steps: 23 minutes on 2 CPU cores
    python examples/compare_baselines.py --quick    # 1 seed, 30 steps: under 3 minutes (a smoke run, not evidence)

Methods (all `MultiObjectiveTrainer`, rank-8 LoRA per objective on every linear layer):

- clp-full, clp-attn, clp-logit: CLP variants, Dirichlet(1) weightings;
- rewarded-soups: full conditioning trained on one-hot weightings only, so each objective's block learns alone
  from its own half of the samples; at inference the blocks are mixed in parameter space (exactly, per layer);
- prompting: one shared LoRA, the weighting written into the prompt.

Writes `<output_dir>/report.md` (tables and verdicts), `results.json`, and PNG figures.

`--experiments concave` (not in the default) compares scalarisations where the trade-off is concave: the rewards are
the *squared* lowercase and uppercase shares, so a completion's reward pair (l², u²) with l + u ≤ 1 lies on a front
that bulges inwards, and every weighting of the weighted sum of one completion's rewards is maximised at an end.
Methods: clp-linear (w·R), clp-tchebycheff (augmented, ρ = 0.01, running ideal point), rewarded-soups (one-hot
weightings). Reference point of the hypervolume: (0, 0), fixed before any run. Writes `concave.md`:

    python examples/compare_baselines.py --experiments concave --max_steps 120 --early_step 60
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch  # noqa: E402
from peft import LoraConfig  # noqa: E402
from transformers import HfArgumentParser  # noqa: E402
from trl import RLOOConfig, RLOOTrainer  # noqa: E402

from trl_clp import MultiObjectiveConfig, MultiObjectiveTrainer, SteerableModel, demo, simplex_grid  # noqa: E402
from trl_clp.callbacks import FrontEvaluationCallback  # noqa: E402
from trl_clp.comparison import compare_fronts, paired_section  # noqa: E402
from trl_clp.conditioning import ConditioningConfig  # noqa: E402
from trl_clp.decoding import dera_components, expert_mixture_components, generate_with_mixed_logits  # noqa: E402
from trl_clp.evaluation import Front, evaluate_front  # noqa: E402
from trl_clp.paired_bootstrap import describe_verdict  # noqa: E402
from trl_clp.pareto import additive_epsilon, fraction_dominated  # noqa: E402
from trl_clp.plotting import plot_fronts, plot_fronts_over_steps, plot_reward_kl, plot_value_ratio  # noqa: E402
from trl_clp.rewards import lowercase_reward, titlecase_reward, uppercase_reward  # noqa: E402


def squared_lowercase_reward(completions, **kwargs) -> list[float]:
    """(lowercase share)²: with the squared uppercase share, a concave trade-off per completion."""
    return [value**2 for value in lowercase_reward(completions)]


def squared_uppercase_reward(completions, **kwargs) -> list[float]:
    return [value**2 for value in uppercase_reward(completions)]


CONCAVE_METHODS = {
    "clp-linear": dict(conditioning="full"),
    "clp-tchebycheff": dict(conditioning="full", scalarization="tchebycheff", tchebycheff_augmentation=0.01),
    "rewarded-soups": dict(conditioning="full", weight_distribution="one_hot"),
}
CONCAVE_REFERENCE_POINT = [0.0, 0.0]

METHODS = {
    "clp-full": dict(conditioning="full"),
    "clp-attn": dict(conditioning="attn"),
    "clp-logit": dict(conditioning="logit"),
    "rewarded-soups": dict(conditioning="full", weight_distribution="one_hot"),
    "prompting": dict(conditioning="prompt"),
}
# Two-sided 95% Student t quantiles for n − 1 degrees of freedom (n seeds).
T_QUANTILE = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


@dataclass
class CompareArguments:
    output_dir: str = field(default="outputs/compare", metadata={"help": "Where the report and figures go."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "One full run per seed."})
    methods: list[str] = field(default_factory=lambda: list(METHODS), metadata={"help": f"Among {list(METHODS)}."})
    max_steps: int = field(default=240, metadata={"help": "Training steps of every method (equal budget)."})
    pretrain_steps: int = field(default=300, metadata={"help": "Pre-training steps of each seed's base model."})
    early_step: int = field(default=60, metadata={"help": "Step at which early steerability is measured."})
    num_eval_prompts: int = field(default=32, metadata={"help": "Held-out prompts per evaluation."})
    eval_samples_per_prompt: int = field(default=2, metadata={"help": "Completions per (prompt, weighting)."})
    eval_grid_points: int = field(default=5, metadata={"help": "Points per simplex edge (2 objectives)."})
    three_objective_grid_points: int = field(default=4, metadata={"help": "Points per edge with 3 objectives."})
    kl_weights: list[float] = field(
        default_factory=lambda: [0.02, 0.05, 0.1, 0.2, 0.5],
        metadata={"help": "KL weights of the DeRA comparison (claim 3); the smallest is DeRA's aligned model's."},
    )
    experiments: list[str] = field(
        default_factory=lambda: ["two", "three", "kl", "fixed"],
        metadata={
            "help": "two: 2 rewards, all methods (claims 1, 2, 5); three: 3 rewards (claim 4); kl: DeRA (3); "
            "fixed: plain RLOOTrainer, one model per weighting, each with 1/K of the budget; mixing: Rewarded "
            "Soups' experts mixed in parameter space vs in logit space (Theorem 1), not in the default; concave: "
            "linear vs Tchebycheff CLP vs Rewarded Soups on a concave trade-off, not in the default."
        },
    )
    num_resamples: int = field(
        default=1000,
        metadata={
            "help": "Bootstrap resamples of the paired comparison of the two-reward methods (seeds and prompts, "
            "trl_clp.comparison)."
        },
    )
    quick: bool = field(default=False, metadata={"help": "1 seed, 30 steps, 8 prompts: a smoke run for CI."})


def paired_hypervolume(comparison: dict, a: str, b: str) -> dict:
    """The paired hypervolume difference a − b of `compare_fronts`' results (which list each pair once, in label
    order): `{"difference": [point, low, high], "verdict"}`."""
    if f"{a} − {b}" in comparison["paired"]:
        return comparison["paired"][f"{a} − {b}"]["hypervolume"]
    entry = comparison["paired"][f"{b} − {a}"]["hypervolume"]
    point, low, high = entry["difference"]
    flipped = {"A beats B": "B beats A", "B beats A": "A beats B"}
    return {"difference": [-point, -high, -low], "verdict": flipped.get(entry["verdict"], entry["verdict"])}


def mean_and_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval over seeds (NaN with one seed)."""
    values = [v for v in values if not math.isnan(v)]
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, T_QUANTILE.get(n - 1, 1.96) * sd / math.sqrt(n)


def fmt(mean_ci: tuple[float, float], digits: int = 3) -> str:
    mean, half = mean_ci
    return f"{mean:.{digits}f}" if math.isnan(half) else f"{mean:.{digits}f} ± {half:.{digits}f}"


def train(method_config: dict, seed, base_path, reward_funcs, args: CompareArguments, name: str, callbacks=()):
    """Train one method for one seed with the demo's settings and `method_config`; return the trainer."""
    training_args = MultiObjectiveConfig(
        output_dir=os.path.join(args.output_dir, name),
        seed=seed,
        disable_tqdm=True,
        bf16=False,
        **{**demo.DEMO_TRAINING_ARGS, "max_steps": args.max_steps, "logging_steps": args.max_steps, **method_config},
    )
    trainer = MultiObjectiveTrainer(
        model=base_path,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=demo.make_prompt_dataset(512, seed=seed),
        processing_class=demo.make_byte_tokenizer(),
        peft_config=LoraConfig(**demo.DEMO_LORA),
    )
    for make_callback in callbacks:
        trainer.add_callback(make_callback(trainer))
    trainer.train()
    return trainer


def train_and_evaluate(
    method,
    seed,
    base_path,
    reward_funcs,
    grid,
    prompts,
    args: CompareArguments,
    tag: str,
    method_config: dict | None = None,
):
    """Train one method (`METHODS[method]`, or `method_config`) for one seed; return its fronts at the early and the
    final step."""
    fronts = {}

    def make_callback(trainer):
        callback = FrontEvaluationCallback(
            trainer,
            prompts,
            reward_funcs,
            weightings=grid,
            eval_every_steps=args.early_step,
            num_samples=args.eval_samples_per_prompt,
            reference_point=[0.0] * len(reward_funcs),
            seed=seed,
        )
        fronts["callback"] = callback
        return callback

    train(
        method_config or METHODS[method],
        seed,
        base_path,
        reward_funcs,
        args,
        os.path.join(tag, f"{method}-seed{seed}"),
        [make_callback],
    )
    return fronts["callback"].fronts[args.early_step], fronts["callback"].fronts[args.max_steps]


def steerable_view(trainer) -> SteerableModel:
    """The trainer's policy as a `SteerableModel` (sharing its adapter and conditioning hooks)."""
    model = trainer.accelerator.unwrap_model(trainer.model).eval()
    return SteerableModel(model, trainer.conditioning_config, trainer.processing_class, trainer.conditioner)


def fixed_weights_front(seed, base_path, prompts, grid, args: CompareArguments) -> Front:
    """The fixed-weights baseline: plain `RLOOTrainer` with `reward_weights`, one model per grid weighting, each
    trained for `max_steps / K` steps (the same total budget), each evaluated at its own weighting."""
    rewards = [lowercase_reward, uppercase_reward]
    names = [reward.__name__ for reward in rewards]
    tokenizer = demo.make_byte_tokenizer()
    results = []
    for k, weights in enumerate(grid):
        training_args = RLOOConfig(
            output_dir=os.path.join(args.output_dir, "fixed", f"w{k}-seed{seed}"),
            seed=seed,
            disable_tqdm=True,
            bf16=False,
            reward_weights=weights.tolist(),
            **{**demo.DEMO_TRAINING_ARGS, "max_steps": args.max_steps // len(grid), "logging_steps": args.max_steps},
        )
        trainer = RLOOTrainer(
            model=base_path,
            reward_funcs=rewards,
            args=training_args,
            processing_class=tokenizer,
            train_dataset=demo.make_prompt_dataset(512, seed=seed),
            peft_config=LoraConfig(**demo.DEMO_LORA),
        )
        trainer.train()
        # A model without conditioned layers: `evaluate_front` then samples the plain policy.
        plain = SteerableModel(
            trainer.accelerator.unwrap_model(trainer.model).eval(),
            ConditioningConfig(names, "full", [], len(names), kl_weight=training_args.beta),
            tokenizer,
        )
        front = evaluate_front(
            plain,
            tokenizer,
            prompts,
            rewards,
            weights[None],
            seed=seed,
            num_samples=args.eval_samples_per_prompt,
            max_new_tokens=demo.DEMO_TRAINING_ARGS["max_completion_length"],
        )
        results.append(front.results[0])
    return Front(names, demo.DEMO_TRAINING_ARGS["beta"], results)


def mixing_fronts(seed, base_path, prompts, grid, args: CompareArguments) -> dict[str, Front]:
    """Rewarded Soups' single-objective experts, combined two ways: their parameters mixed (one forward pass per
    token) and their next-token logits mixed (the CLP paper's Theorem 1; one forward pass per expert per token)."""
    rewards = [lowercase_reward, uppercase_reward]
    soups = steerable_view(train(METHODS["rewarded-soups"], seed, base_path, rewards, args, f"mixing/rs-seed{seed}"))
    common = dict(
        num_samples=args.eval_samples_per_prompt,
        seed=seed,
        max_new_tokens=demo.DEMO_TRAINING_ARGS["max_completion_length"],
    )
    return {
        "parameter mixing": evaluate_front(soups, soups.tokenizer, prompts, rewards, grid, **common),
        "logit mixing": evaluate_front(
            soups, soups.tokenizer, prompts, rewards, grid, decoding=expert_mixture_components, **common
        ),
    }


def kl_experiment(seed, base_path, prompts, args: CompareArguments) -> dict:
    """Claim 3: KL-weight-conditioned CLP against DeRA on one reward (lowercase), at each KL weight α.

    CLP is trained with α drawn from `args.kl_weights` per group; DeRA's aligned model is trained at the smallest
    α0 and mixed with the reference at λ = α0/α. Both evaluate at w = (1, 0); decoding time is measured on the same
    prompts with the same sampler (one forward pass per token for CLP, two for DeRA).
    """
    rewards = [lowercase_reward, uppercase_reward]
    only_first = dict(conditioning="full", weight_distribution="fixed", fixed_weights=["1,0"])
    alpha0 = min(args.kl_weights)
    clp = steerable_view(
        train({**only_first, "kl_weights": args.kl_weights}, seed, base_path, rewards, args, f"kl/clp-seed{seed}")
    )
    aligned = steerable_view(
        train({**only_first, "beta": alpha0}, seed, base_path, rewards, args, f"kl/aligned-seed{seed}")
    )
    tokenizer = clp.tokenizer
    weightings = torch.tensor([[1.0, 0.0]])
    common = dict(
        num_samples=args.eval_samples_per_prompt,
        max_new_tokens=demo.DEMO_TRAINING_ARGS["max_completion_length"],
        seed=seed,
    )
    points = {"clp": [], "dera": []}
    for alpha in args.kl_weights:
        strength = alpha0 / alpha
        clp_front = evaluate_front(clp, tokenizer, prompts, rewards, weightings, kl_weight=alpha, **common)
        dera_front = evaluate_front(
            aligned,
            tokenizer,
            prompts,
            rewards,
            weightings,
            kl_weight=alpha,
            decoding=lambda w, s=strength: dera_components(aligned.conditioning_vector(w), torch.full((len(w),), s)),
            **common,
        )
        for name, front in (("clp", clp_front), ("dera", dera_front)):
            result = front.results[0]
            points[name].append(
                {
                    "kl_weight": alpha,
                    "reward": result.rewards["lowercase_reward"],
                    "kl": result.kl,
                    "value": result.value,
                }
            )
    encoded = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
    vector = clp.conditioning_vector(weightings.expand(len(prompts), -1), torch.full((len(prompts),), alpha0))
    seconds = {}
    for name, model, components in (
        ("clp", clp, [(vector, torch.ones(len(prompts)))]),
        (
            "dera",
            aligned,
            dera_components(
                aligned.conditioning_vector(weightings.expand(len(prompts), -1)), torch.full((len(prompts),), 0.5)
            ),
        ),
    ):
        started = time.perf_counter()
        generate_with_mixed_logits(
            model,
            encoded["input_ids"],
            encoded["attention_mask"],
            components,
            32,
            eos_token_id=-1,
            pad_token_id=tokenizer.pad_token_id,
        )  # no EOS: fixed length
        seconds[name] = time.perf_counter() - started
    return {"points": points, "decode_seconds": seconds}


def main(args: CompareArguments) -> dict:
    if args.quick:
        args.seeds, args.max_steps, args.early_step, args.num_eval_prompts = args.seeds[:1], 30, 10, 8
        args.eval_samples_per_prompt, args.three_objective_grid_points, args.pretrain_steps = 1, 3, 100
    if args.max_steps % args.early_step:
        raise ValueError(f"`max_steps` ({args.max_steps}) must be a multiple of `early_step` ({args.early_step}).")
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        raise ValueError(f"Unknown methods {unknown}; choose among {list(METHODS)}.")
    started = time.perf_counter()
    os.makedirs(args.output_dir, exist_ok=True)
    two = [lowercase_reward, uppercase_reward]
    three = [lowercase_reward, uppercase_reward, titlecase_reward]
    grid2 = simplex_grid(2, args.eval_grid_points)
    grid3 = simplex_grid(3, args.three_objective_grid_points)
    fronts = {method: {"early": [], "final": []} for method in args.methods} if "two" in args.experiments else {}
    fronts3 = {method: [] for method in ("clp-full", "rewarded-soups")} if "three" in args.experiments else {}
    kl_runs, fixed_fronts, mixing_runs = [], [], []
    concave = {method: [] for method in CONCAVE_METHODS} if "concave" in args.experiments else {}
    for seed in args.seeds:
        tokenizer = demo.make_byte_tokenizer()
        base_path = os.path.join(args.output_dir, f"base-seed{seed}")
        base_model = demo.pretrain_demo_model(
            demo.make_tiny_llama(seed=seed), tokenizer, args.pretrain_steps, seed=seed
        )
        base_model.save_pretrained(base_path)
        tokenizer.save_pretrained(base_path)
        prompts = list(demo.make_prompt_dataset(args.num_eval_prompts, seed=1000 + seed)["prompt"])
        for method in fronts:
            early, final = train_and_evaluate(method, seed, base_path, two, grid2, prompts, args, "two")
            fronts[method]["early"].append(early)
            fronts[method]["final"].append(final)
            print(
                f"[{time.perf_counter() - started:6.0f} s] seed {seed} {method}: "
                f"hypervolume {final.hypervolume([0, 0]):.4f}",
                flush=True,
            )
        for method in fronts3:
            _, final = train_and_evaluate(method, seed, base_path, three, grid3, prompts, args, "three")
            fronts3[method].append(final)
        if "fixed" in args.experiments:
            fixed_fronts.append(fixed_weights_front(seed, base_path, prompts, grid2, args))
            print(f"[{time.perf_counter() - started:6.0f} s] seed {seed} fixed weights done", flush=True)
        if "mixing" in args.experiments:
            mixing_runs.append(mixing_fronts(seed, base_path, prompts, grid2, args))
            print(f"[{time.perf_counter() - started:6.0f} s] seed {seed} mixing done", flush=True)
        for method, config in CONCAVE_METHODS.items() if concave else ():
            _, final = train_and_evaluate(
                method,
                seed,
                base_path,
                [squared_lowercase_reward, squared_uppercase_reward],
                grid2,
                prompts,
                args,
                "concave",
                config,
            )
            concave[method].append(final)
            print(
                f"[{time.perf_counter() - started:6.0f} s] seed {seed} concave {method}: "
                f"hypervolume {final.hypervolume(CONCAVE_REFERENCE_POINT):.4f}",
                flush=True,
            )
        if "kl" in args.experiments:
            kl_runs.append(kl_experiment(seed, base_path, prompts, args))
            print(f"[{time.perf_counter() - started:6.0f} s] seed {seed} KL experiment done", flush=True)
    results = summarize(args, fronts, fronts3, kl_runs, fixed_fronts, mixing_runs)
    if concave:
        results["concave"] = summarize_concave(args, concave)
    results["wall_seconds"] = time.perf_counter() - started
    write_report(args, results, fronts, fronts3, kl_runs, fixed_fronts, mixing_runs)
    return results


def summarize(args: CompareArguments, fronts, fronts3, kl_runs, fixed_fronts, mixing_runs) -> dict:
    summary = {"args": asdict(args), "methods": {}, "claims": {}}
    for method, by_stage in fronts.items():
        entry = {}
        for stage, per_seed in by_stage.items():
            steer = [f.steerability() for f in per_seed]
            entry[stage] = {
                "hypervolume": mean_and_ci([f.hypervolume([0, 0]) for f in per_seed]),
                "range": [mean_and_ci([s["range"][i] for s in steer]) for i in range(2)],
                "rank_correlation": [mean_and_ci([s["rank_correlation"][i] for s in steer]) for i in range(2)],
                "monotonicity_violations": mean_and_ci([float(s["monotonicity_violations"]) for s in steer]),
            }
        summary["methods"][method] = entry
    if fronts:
        # Each seed has its own base model and held-out prompts: seed s of every method is paired with seed s of the
        # others, prompt p with the p-th prompt of that seed (trl_clp.paired_bootstrap).
        summary["comparison"] = compare_fronts(
            {method: by_stage["final"] for method, by_stage in fronts.items()},
            reference_point=[0.0, 0.0],
            num_resamples=args.num_resamples,
            guards=False,  # the demo's completions are character strings, not English prose
        )
    claims = summary["claims"]
    if {"clp-full", "rewarded-soups"} <= set(fronts):
        clp, rs = fronts["clp-full"]["final"], fronts["rewarded-soups"]["final"]
        differences = [c.hypervolume([0, 0]) - r.hypervolume([0, 0]) for c, r in zip(clp, rs, strict=True)]
        claims["1_clp_dominates_rewarded_soups"] = {
            "paired_hypervolume_difference": paired_hypervolume(summary["comparison"], "clp-full", "rewarded-soups"),
            "hypervolume_difference": mean_and_ci(differences),
            "share_of_rs_points_dominated_by_clp": mean_and_ci(
                [fraction_dominated(c.rewards(), r.rewards()) for c, r in zip(clp, rs, strict=True)]
            ),
            "share_of_clp_points_dominated_by_rs": mean_and_ci(
                [fraction_dominated(r.rewards(), c.rewards()) for c, r in zip(clp, rs, strict=True)]
            ),
            "epsilon_clp_to_cover_rs": mean_and_ci(
                [additive_epsilon(c.rewards(), r.rewards()) for c, r in zip(clp, rs, strict=True)]
            ),
            "epsilon_rs_to_cover_clp": mean_and_ci(
                [additive_epsilon(r.rewards(), c.rewards()) for c, r in zip(clp, rs, strict=True)]
            ),
        }
    if {"clp-full", "prompting"} <= set(fronts):
        for stage, key in (("final", "2_clp_more_steerable_than_prompting"), ("early", "5_clp_steerable_early")):
            clp, prompt = summary["methods"]["clp-full"][stage], summary["methods"]["prompting"][stage]
            claims[key] = {
                "step": args.max_steps if stage == "final" else args.early_step,
                "clp_range": clp["range"],
                "prompting_range": prompt["range"],
                "clp_rank_correlation": clp["rank_correlation"],
                "prompting_rank_correlation": prompt["rank_correlation"],
            }
    if fronts3:
        claims["4_three_rewards_value_at_least_rs"] = summarize_three_rewards(fronts3)
    if kl_runs:
        claims["3_kl_conditioning_matches_dera"] = summarize_kl(kl_runs)
    if mixing_runs:
        summary["mixing"] = {
            label: {
                "hypervolume": mean_and_ci([run[label].hypervolume([0, 0]) for run in mixing_runs]),
                "value_per_weighting": [
                    {"weights": r.weights, "value": mean_and_ci([run[label].results[k].value for run in mixing_runs])}
                    for k, r in enumerate(mixing_runs[0][label].results)
                ],
            }
            for label in mixing_runs[0]
        }
    if fixed_fronts:
        summary["fixed_weights"] = {
            "hypervolume": mean_and_ci([f.hypervolume([0, 0]) for f in fixed_fronts]),
            "value_per_weighting": [
                {"weights": r.weights, "value": mean_and_ci([f.results[k].value for f in fixed_fronts])}
                for k, r in enumerate(fixed_fronts[0].results)
            ],
        }
    return summary


def summarize_concave(args: CompareArguments, concave: dict[str, list[Front]]) -> dict:
    """Hypervolume, steerability, mutual dominance and the balanced weighting's point of each method on the concave
    task; also writes `concave.md` and the fronts."""
    summary = {"reference_point": CONCAVE_REFERENCE_POINT, "methods": {}, "dominance": {}}
    for method, per_seed in concave.items():
        steer = [f.steerability() for f in per_seed]
        middle = [next(r for r in f.results if r.weights == [0.5, 0.5]) for f in per_seed]
        summary["methods"][method] = {
            "hypervolume": mean_and_ci([f.hypervolume(CONCAVE_REFERENCE_POINT) for f in per_seed]),
            "range": [mean_and_ci([s["range"][i] for s in steer]) for i in range(2)],
            "rank_correlation": [mean_and_ci([s["rank_correlation"][i] for s in steer]) for i in range(2)],
            "at_balanced_weighting": [mean_and_ci([list(r.rewards.values())[i] for r in middle]) for i in range(2)],
        }
        for seed, front in zip(args.seeds, per_seed, strict=True):
            front.save(os.path.join(args.output_dir, "fronts"), stem=f"concave-{method}-seed{seed}")
    methods = list(concave)
    for a in methods:
        for b in methods:
            if a != b:  # share of b's points dominated by a's front
                summary["dominance"][f"{a} over {b}"] = mean_and_ci(
                    [
                        fraction_dominated(fa.rewards(), fb.rewards())
                        for fa, fb in zip(concave[a], concave[b], strict=True)
                    ]
                )
    lines = [
        f"## Concave trade-off: squared lowercase vs squared uppercase share ({len(args.seeds)} seeds, "
        f"{args.max_steps} steps, hypervolume reference point {tuple(CONCAVE_REFERENCE_POINT)}, mean ± 95% CI)",
        "",
        "| method | hypervolume | range (R1, R2) | rank correlation (R1, R2) | (R1, R2) at w = (0.5, 0.5) |",
        "|---|---|---|---|---|",
    ]
    for method, entry in summary["methods"].items():
        lines.append(
            f"| {method} | {fmt(entry['hypervolume'], 4)} | {', '.join(fmt(v) for v in entry['range'])} | "
            f"{', '.join(fmt(v, 2) for v in entry['rank_correlation'])} | "
            f"{', '.join(fmt(v) for v in entry['at_balanced_weighting'])} |"
        )
    lines += ["", "| share of the second method's points dominated by the first's front | mean ± CI |", "|---|---|"]
    lines += [f"| {pair} | {fmt(value, 2)} |" for pair, value in summary["dominance"].items()]
    with open(os.path.join(args.output_dir, "concave.md"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return summary


def summarize_kl(kl_runs: list[dict]) -> dict:
    per_alpha = []
    for k, point in enumerate(kl_runs[0]["points"]["clp"]):
        entry = {"kl_weight": point["kl_weight"]}
        for name in ("clp", "dera"):
            for key in ("reward", "kl", "value"):
                entry[f"{name}_{key}"] = mean_and_ci([run["points"][name][k][key] for run in kl_runs])
        entry["value_difference"] = mean_and_ci(
            [run["points"]["clp"][k]["value"] - run["points"]["dera"][k]["value"] for run in kl_runs]
        )
        per_alpha.append(entry)
    return {
        "per_kl_weight": per_alpha,
        "dera_over_clp_decode_time": mean_and_ci(
            [run["decode_seconds"]["dera"] / run["decode_seconds"]["clp"] for run in kl_runs]
        ),
    }


def summarize_three_rewards(fronts3) -> dict:
    wins, per_weighting = [], []
    for clp, rs in zip(fronts3["clp-full"], fronts3["rewarded-soups"], strict=True):
        better = [c.value >= r.value for c, r in zip(clp.results, rs.results, strict=True)]
        wins.append(sum(better) / len(better))
        per_weighting.append([c.value - r.value for c, r in zip(clp.results, rs.results, strict=True)])
    return {
        "share_of_weightings_with_clp_value_at_least_rs": mean_and_ci(wins),
        "value_difference_per_weighting": [
            {"weights": r.weights, "difference": mean_and_ci([d[k] for d in per_weighting])}
            for k, r in enumerate(fronts3["clp-full"][0].results)
        ],
    }


def write_report(args: CompareArguments, results: dict, fronts, fronts3, kl_runs, fixed_fronts, mixing_runs) -> None:
    out = args.output_dir
    figures = []
    if fronts:
        for stage, step in (("final", args.max_steps), ("early", args.early_step)):
            figures.append(
                plot_fronts(
                    {m: by_stage[stage][0] for m, by_stage in fronts.items()},
                    os.path.join(out, f"fronts_{stage}.png"),
                    title=f"Seed {args.seeds[0]}, step {step}",
                )
            )
        for method, by_stage in fronts.items():
            for stage, per_seed in by_stage.items():
                for seed, front in zip(args.seeds, per_seed, strict=True):
                    front.save(os.path.join(out, "fronts"), stem=f"{method}-{stage}-seed{seed}")
    if fixed_fronts:
        for seed, front in zip(args.seeds, fixed_fronts, strict=True):
            front.save(os.path.join(out, "fronts"), stem=f"fixed-weights-seed{seed}")
        if fronts:
            figures.append(
                plot_fronts(
                    {**{m: by_stage["final"][0] for m, by_stage in fronts.items()}, "fixed-weights": fixed_fronts[0]},
                    os.path.join(out, "fronts_with_fixed.png"),
                    title=f"Seed {args.seeds[0]}",
                )
            )
    if mixing_runs:
        for seed, run in zip(args.seeds, mixing_runs, strict=True):
            for label, front in run.items():
                front.save(os.path.join(out, "fronts"), stem=f"rs-{label.replace(' ', '-')}-seed{seed}")
        figures.append(plot_fronts(mixing_runs[0], os.path.join(out, "mixing.png"), title=f"Seed {args.seeds[0]}"))
    if "clp-full" in fronts:
        figures.append(
            plot_fronts_over_steps(
                {args.early_step: fronts["clp-full"]["early"][0], args.max_steps: fronts["clp-full"]["final"][0]},
                os.path.join(out, "clp_steps.png"),
            )
        )
    if fronts3:
        figures.append(
            plot_value_ratio(
                fronts3["clp-full"][0], fronts3["rewarded-soups"][0], os.path.join(out, "three_rewards_value.png")
            )
        )
    if kl_runs:
        curves = {name: [(p["kl"], p["reward"]) for p in kl_runs[0]["points"][name]] for name in ("clp", "dera")}
        figures.append(
            plot_reward_kl(
                {"KL-conditioned CLP": curves["clp"], "DeRA": curves["dera"]},
                os.path.join(out, "kl_front.png"),
                reward_name="lowercase_reward",
            )
        )
    with open(os.path.join(out, "results.json"), "w") as handle:
        json.dump(results, handle, indent=2)

    lines = [
        "# CLP against its baselines on the demo task",
        "",
        f"Seeds {args.seeds}; {args.max_steps} steps × 16 completions for every method; evaluation on "
        f"{args.num_eval_prompts} held-out prompts × {args.eval_samples_per_prompt} samples at "
        f"{args.eval_grid_points} weightings; ± is the 95% t-interval over seeds. Wall time "
        f"{results['wall_seconds'] / 60:.1f} min on 2 CPU cores.",
        "",
    ]
    if results["methods"]:
        lines += [
            "| method | hypervolume (ref 0,0) | range lowercase | range uppercase | rank corr. lowercase | rank corr. "
            "uppercase | violations | hypervolume at step " + str(args.early_step) + " |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for method, entry in results["methods"].items():
            final, early = entry["final"], entry["early"]
            lines.append(
                f"| {method} | {fmt(final['hypervolume'])} | {fmt(final['range'][0])} | {fmt(final['range'][1])} | "
                f"{fmt(final['rank_correlation'][0], 2)} | {fmt(final['rank_correlation'][1], 2)} | "
                f"{fmt(final['monotonicity_violations'], 1)} | {fmt(early['hypervolume'])} |"
            )
    if "fixed_weights" in results:
        fixed = results["fixed_weights"]
        lines += [
            "",
            f"Fixed-weights baseline (plain `RLOOTrainer`, one model per weighting, {args.max_steps // args.eval_grid_points}"
            f" steps each): hypervolume {fmt(fixed['hypervolume'])}; V per weighting "
            + ", ".join(f"{tuple(e['weights'])}: {fmt(e['value'])}" for e in fixed["value_per_weighting"])
            + ".",
        ]
    for label, entry in results.get("mixing", {}).items():
        lines += [
            "",
            f"Rewarded Soups' experts, {label}: hypervolume {fmt(entry['hypervolume'])}; V per weighting "
            + ", ".join(f"{tuple(e['weights'])}: {fmt(e['value'])}" for e in entry["value_per_weighting"])
            + ".",
        ]
    lines += ["", "## The paper's claims, as measured", ""] + describe_claims(results["claims"])
    if "comparison" in results:
        lines += ["", "## Two rewards, final step: every two methods, paired", ""] + paired_section(
            results["comparison"]
        )[2:]
    lines += ["", "Figures: " + ", ".join(f"`{os.path.basename(f)}`" for f in figures) + "."]
    with open(os.path.join(out, "report.md"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(
        f"\nReport and figures written to {os.path.abspath(out)}: report.md, results.json, "
        + ", ".join(os.path.basename(f) for f in figures)
    )


def verdict(mean_ci: tuple[float, float], threshold: float = 0.0) -> str:
    """'holds' when the whole 95% interval is above `threshold`, 'fails' when it is below, else 'within noise'."""
    mean, half = mean_ci
    if math.isnan(half):
        return "holds on this seed" if mean > threshold else "fails on this seed"
    if mean - half > threshold:
        return "holds"
    if mean + half < threshold:
        return "fails"
    return "within noise"


def describe_claims(claims: dict) -> list[str]:
    lines = []
    if "1_clp_dominates_rewarded_soups" in claims:
        c = claims["1_clp_dominates_rewarded_soups"]
        paired = c["paired_hypervolume_difference"]
        point, low, high = paired["difference"]
        lines.append(
            f"1. **CLP's front dominates Rewarded Soups'** — {describe_verdict(paired['verdict'], 'CLP', 'RS')}: "
            f"hypervolume of the seed-averaged fronts CLP − RS {point:+.4f} [{low:+.4f}, {high:+.4f}] (paired "
            f"bootstrap over seeds and prompts). Per seed, CLP − RS: {fmt(c['hypervolume_difference'], 4)}; RS grid "
            "points dominated by CLP's front: "
            f"{fmt(c['share_of_rs_points_dominated_by_clp'], 2)}, CLP points dominated by RS's: "
            f"{fmt(c['share_of_clp_points_dominated_by_rs'], 2)}; additive ε for CLP to cover RS "
            f"{fmt(c['epsilon_clp_to_cover_rs'])}, for RS to cover CLP {fmt(c['epsilon_rs_to_cover_clp'])}."
        )
    for key, number, title in (
        ("2_clp_more_steerable_than_prompting", 2, "CLP spreads wider than prompting"),
        ("5_clp_steerable_early", 5, "CLP is steerable early, prompting not yet"),
    ):
        if key not in claims:
            continue
        c = claims[key]
        gaps = [
            (a[0] - b[0], math.sqrt(a[1] ** 2 + b[1] ** 2))
            for a, b in zip(c["clp_range"], c["prompting_range"], strict=True)
        ]
        overall = "holds" if all(verdict(g) == "holds" for g in gaps) else ", ".join(verdict(g) for g in gaps)
        lines.append(
            f"{number}. **{title}** (step {c['step']}) — range gap per objective: {overall}. Ranges CLP "
            f"{', '.join(fmt(r) for r in c['clp_range'])} vs prompting {', '.join(fmt(r) for r in c['prompting_range'])}; "
            f"rank correlation of w_i and R_i: CLP {', '.join(fmt(r, 2) for r in c['clp_rank_correlation'])} vs "
            f"prompting {', '.join(fmt(r, 2) for r in c['prompting_rank_correlation'])}."
        )
    if "3_kl_conditioning_matches_dera" in claims:
        c = claims["3_kl_conditioning_matches_dera"]
        differences = [entry["value_difference"] for entry in c["per_kl_weight"]]
        verdicts = [verdict(d) for d in differences]
        worse = [e["kl_weight"] for e, v in zip(c["per_kl_weight"], verdicts, strict=True) if v.startswith("fails")]
        # An interval spanning 0 neither confirms nor refutes "matches": say so rather than "holds".
        overall = (
            "fails at α = " + str(worse)
            if worse
            else "within noise (no α where CLP is significantly below)"
            if "within noise" in verdicts
            else "holds"
        )
        lines.append(
            f"3. **KL-conditioned CLP matches DeRA at half the decoding cost** — "
            f"{overall}: V_CLP − V_DeRA per α "
            + ", ".join(f"α={e['kl_weight']}: {fmt(d)}" for e, d in zip(c["per_kl_weight"], differences, strict=True))
            + f"; DeRA's decoding time / CLP's: {fmt(c['dera_over_clp_decode_time'], 2)}."
        )
    if "4_three_rewards_value_at_least_rs" in claims:
        c = claims["4_three_rewards_value_at_least_rs"]
        share = c["share_of_weightings_with_clp_value_at_least_rs"]
        worst = min(c["value_difference_per_weighting"], key=lambda d: d["difference"][0])
        lines.append(
            f"4. **With three rewards, CLP's V is at least RS's at every weighting** — "
            f"{'holds' if share[0] == 1.0 else 'fails'}: share of weightings with V_CLP ≥ V_RS {fmt(share, 2)}; "
            f"worst weighting {worst['weights']}: V_CLP − V_RS = {fmt(worst['difference'])}."
        )
    return lines


if __name__ == "__main__":
    (compare_args,) = HfArgumentParser(CompareArguments).parse_args_into_dataclasses()
    main(compare_args)
