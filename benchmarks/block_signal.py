"""Each block's learning signal on the demo task: how well a step's rows agree on each conditioned block's gradient.

For block i and the rows b of one training batch, the per-row gradients `g_{b,i}` (one backward per row) give

    agreement_i = ||Σ_b g_{b,i}|| / Σ_b ||g_{b,i}||     (`trl_clp.conditioning.block_signal.gradient_agreement`)

1 when the rows push block i the same way, about 1/√B in random directions. With linear mixing row b reaches block i
as `w_i(b) · A(b) · ∇log π`: under Dirichlet(0.3) draws, where the demo's rewards conflict, its sign flips with w.
The script trains one policy on the demo task (the pre-trained tiny Llama, lowercase vs uppercase, full-CLP,
Dirichlet(0.3)) for each number of `--train_steps`, then measures, on the same policy, batches drawn under each
`--settings` entry (`<weight distribution>/<block signal>`), and prints one table.

    python benchmarks/block_signal.py            # about 2 minutes on 2 CPU cores
    python benchmarks/block_signal.py --train_steps 0 100 --num_batches 8

`--output_json` keeps every batch's numbers: per block, the agreement, the mean per-row gradient norm and the norm of
the summed gradient.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from peft import LoraConfig  # noqa: E402
from reporting import describe_machine, machine_line  # noqa: E402
from trl import TrlParser  # noqa: E402

from trl_clp import MultiObjectiveConfig, MultiObjectiveTrainer, demo  # noqa: E402
from trl_clp.conditioning.block_signal import block_gradients, gradient_agreement  # noqa: E402
from trl_clp.conditioning.steerable import SteerableModel  # noqa: E402
from trl_clp.evaluation import evaluate_front  # noqa: E402
from trl_clp.pareto import bootstrap_mean_ci  # noqa: E402
from trl_clp.rewards import lowercase_reward, uppercase_reward  # noqa: E402


@dataclass
class BlockSignalArguments:
    train_steps: list[int] = field(
        default_factory=lambda: [0, 50, 150],
        metadata={"help": "Measure after this many training steps (Dirichlet(0.3), today's signal); one run each."},
    )
    settings: list[str] = field(
        default_factory=lambda: ["dirichlet/mixed", "dirichlet/own", "one_hot/mixed"],
        metadata={"help": "`<weight_distribution>/<block_signal>` pairs measured on each trained policy."},
    )
    num_batches: int = field(default=4, metadata={"help": "Batches measured per setting (averaged)."})
    dirichlet_concentration: float = field(default=0.3, metadata={"help": "Concentration of the Dirichlet draws."})
    pretrain_steps: int = field(default=300, metadata={"help": "Next-token pre-training steps of the demo model."})
    seed: int = field(default=0, metadata={"help": "Seed of the model, the prompts and the draws."})
    compare_steps: int = field(
        default=150, metadata={"help": "Steps of each demo training compared by per-objective margins; 0 skips it."}
    )
    compare_methods: list[str] = field(
        default_factory=lambda: ["mixed", "own:0:1", "own:0.5:1"],
        metadata={
            "help": "Trainings compared, Dirichlet(0.3) each: 'mixed' (today's signal) or "
            "'own:<cross_term_start>:<cross_term_end>'."
        },
    )
    num_eval_prompts: int = field(default=48, metadata={"help": "Held-out prompts of the margins."})
    eval_samples_per_prompt: int = field(default=2, metadata={"help": "Completions per prompt and weighting."})
    output_json: str = field(
        default=os.path.join("benchmarks", "results", "block_signal.json"),
        metadata={"help": "Where to write every batch's numbers."},
    )


def pretrained_demo_model(folder: str, steps: int, seed: int) -> str:
    """The demo's tiny Llama pre-trained on mixed-case answers, saved with its tokenizer in `folder`."""
    tokenizer = demo.make_byte_tokenizer()
    model = demo.pretrain_demo_model(demo.make_tiny_llama(seed=seed), tokenizer, steps=steps, seed=seed)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_trainer(base_path: str, output_dir: str, args: BlockSignalArguments, max_steps: int, **overrides):
    config = MultiObjectiveConfig(
        output_dir=output_dir,
        seed=args.seed,
        disable_tqdm=True,
        **{
            **demo.DEMO_TRAINING_ARGS,
            "max_steps": max(max_steps, 1),
            "weight_distribution": "dirichlet",
            "objective_names": ["lower", "upper"],
            "dirichlet_concentration": args.dirichlet_concentration,
            **overrides,
        },
    )
    return MultiObjectiveTrainer(
        model=base_path,
        reward_funcs=[lowercase_reward, uppercase_reward],
        args=config,
        train_dataset=demo.make_prompt_dataset(512, seed=args.seed),
        processing_class=demo.make_byte_tokenizer(),
        peft_config=LoraConfig(**demo.DEMO_LORA),
    )


def rows_of(output: dict, row: int) -> dict:
    """One row of the trainer's output dict (every per-row tensor sliced, the rest kept)."""
    num_rows = output["advantages"].size(0)
    return {
        key: value[row : row + 1]
        if isinstance(value, torch.Tensor) and value.dim() and value.size(0) == num_rows
        else value
        for key, value in output.items()
    }


def per_row_block_gradients(trainer, output: dict) -> torch.Tensor:
    """`(B, num_blocks, P)`: each row's gradient of each conditioned block, from the trainer's own loss (one backward
    per row, the row's weighting set as in training)."""
    model = trainer.model
    conditioner = trainer.conditioner
    gradients = []
    for row in range(output["advantages"].size(0)):
        model.zero_grad(set_to_none=True)
        try:
            trainer.compute_loss(model, rows_of(output, row)).backward()
        finally:
            trainer.conditioner.clear()
            if trainer.gradient_coefficients is not None:
                trainer.gradient_coefficients.clear()
        gradients.append(block_gradients(model, conditioner.conditioned_module_names, conditioner.num_blocks))
    model.zero_grad(set_to_none=True)
    return torch.stack(gradients)


def use_signal(trainer, signal: str) -> None:
    """Switch a trainer's block signal: 'mixed' (today) or 'own' with λ = 0 (each block from its own advantage)."""
    if signal == "own":
        trainer.args.block_signal, trainer.args.cross_term_start, trainer.args.cross_term_end = (
            "own",
            math.inf,
            math.inf,
        )
        if getattr(trainer, "_own_signal_hooks", None) is None:
            trainer._own_signal_hooks = trainer._attach_gradient_coefficients()
        trainer.gradient_coefficients = trainer._own_signal_hooks
    else:  # the hooks stay attached, inert: no coefficients are generated or set
        trainer.args.block_signal, trainer.gradient_coefficients = "mixed", None


def measure(trainer, setting: str, args: BlockSignalArguments) -> list[dict]:
    """Per batch: each block's agreement, mean per-row gradient norm and summed-gradient norm under `setting`."""
    distribution, signal = setting.split("/")
    trainer.args.weight_distribution = distribution
    use_signal(trainer, signal)
    trainer.model.train()
    num_rows = trainer.args.per_device_train_batch_size
    prompts = demo.make_prompt_dataset(num_rows * args.num_batches, seed=args.seed + 1)["prompt"]
    batches = []
    for batch in range(args.num_batches):
        group_prompts = prompts[batch * num_rows : (batch + 1) * num_rows : trainer.num_generations]
        inputs = [{"prompt": prompt} for prompt in group_prompts for _ in range(trainer.num_generations)]
        trainer._step = batch  # a fresh weighting draw for each batch
        output = trainer._generate_and_score_completions(inputs)
        gradients = per_row_block_gradients(trainer, output)  # (B, k, P)
        batches.append(
            {
                "agreement": gradient_agreement(gradients).tolist(),
                "row_norm": gradients.norm(dim=-1).mean(dim=0).tolist(),
                "summed_norm": gradients.sum(dim=0).norm(dim=-1).tolist(),
            }
        )
    return batches


def method_overrides(method: str) -> dict:
    if method == "mixed":
        return {}
    _, start, end = method.split(":")
    return {"block_signal": "own", "cross_term_start": float(start), "cross_term_end": float(end)}


def per_prompt_margins(front) -> torch.Tensor:
    """`(P, m)` each prompt's margin of objective i: its reward at w = e_i minus its reward at the other corner (m = 2),
    each averaged over the prompt's samples."""
    by_prompt = {}
    for sample in front.samples:
        by_prompt.setdefault(sample["prompt"], {}).setdefault(tuple(sample["weights"]), []).append(sample["rewards"])
    margins = []
    for corners in by_prompt.values():
        mean = {
            w: [statistics.fmean(r[name] for r in rows) for name in front.objective_names]
            for w, rows in corners.items()
        }
        first, second = mean[(1.0, 0.0)], mean[(0.0, 1.0)]
        margins.append([first[0] - second[0], second[1] - first[1]])
    return torch.tensor(margins)


def compare_trainings(base_path: str, folder: str, args: BlockSignalArguments) -> dict:
    """Train each method for `compare_steps` on the same seed and prompts; per-objective margins on held-out prompts,
    and each method's margins paired with today's signal over the same prompts."""
    prompts = demo.make_prompt_dataset(args.num_eval_prompts, seed=args.seed + 100)["prompt"]
    corners = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    results, margins = {}, {}
    for method in args.compare_methods:
        started = time.perf_counter()
        trainer = build_trainer(
            base_path,
            os.path.join(folder, method.replace(":", "-")),
            args,
            args.compare_steps,
            **method_overrides(method),
        )
        trainer.train()
        model = trainer.accelerator.unwrap_model(trainer.model).eval()
        steerable = SteerableModel(model, trainer.conditioning_config, trainer.processing_class, trainer.conditioner)
        front = evaluate_front(
            steerable,
            trainer.processing_class,
            prompts,
            [lowercase_reward, uppercase_reward],
            corners,
            num_samples=args.eval_samples_per_prompt,
            max_new_tokens=demo.DEMO_TRAINING_ARGS["max_completion_length"],
            seed=args.seed,
        )
        margins[method] = per_prompt_margins(front)  # (P, 2)
        results[method] = {
            "rewards": [r.rewards for r in front.results],
            "kl": [r.kl for r in front.results],
            "margins": margins[method].mean(0).tolist(),
            "margin_ci": [bootstrap_mean_ci(margins[method][:, i], seed=args.seed) for i in range(2)],
            "wall_seconds": time.perf_counter() - started,
        }
        if method != "mixed" and "mixed" in margins:
            paired = margins[method] - margins["mixed"]
            results[method]["paired_vs_mixed"] = paired.mean(0).tolist()
            results[method]["paired_vs_mixed_ci"] = [bootstrap_mean_ci(paired[:, i], seed=args.seed) for i in range(2)]
    return results


def print_comparison(results: dict, args: BlockSignalArguments) -> None:
    print(
        f"\nDemo training, {args.compare_steps} steps, Dirichlet({args.dirichlet_concentration:g}), seed {args.seed} "
        f"(one seed: a screen); margins on {args.num_eval_prompts} held-out prompts × {args.eval_samples_per_prompt} "
        "samples, 95% bootstrap intervals over prompts\n"
    )
    print(
        f"{'method':<12}{'margin lower':>24}{'margin upper':>24}{'KL at corners':>18}{'paired vs mixed (lower, upper)':>44}"
    )
    for method, result in results.items():
        cells = "".join(
            f"{m:>+8.3f} [{lo:+.3f}, {hi:+.3f}]"
            for m, (lo, hi) in zip(result["margins"], result["margin_ci"], strict=True)
        )
        kl = f"{result['kl'][0]:.2f} / {result['kl'][2]:.2f}"
        paired = ""
        if "paired_vs_mixed" in result:
            paired = "  ".join(
                f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
                for d, (lo, hi) in zip(result["paired_vs_mixed"], result["paired_vs_mixed_ci"], strict=True)
            )
        print(f"{method:<12}{cells}{kl:>18}    {paired}")


def mean_over_batches(batches: list[dict], key: str) -> list[float]:
    columns = zip(*(batch[key] for batch in batches), strict=True)
    return [
        statistics.fmean(v for v in column if v == v) if any(v == v for v in column) else float("nan")
        for column in map(list, columns)
    ]


def print_agreement(results: dict, args: BlockSignalArguments) -> None:
    rows = demo.DEMO_TRAINING_ARGS["per_device_train_batch_size"]
    print(
        f"\nPer-block gradient agreement ||Σ_b g_b|| / Σ_b ||g_b|| over the {rows} rows of a batch (random: ~{rows**-0.5:.2f}),"
    )
    print(
        f"mean of {args.num_batches} batches, and mean per-row gradient norm |g|; each policy trained with "
        f"Dirichlet({args.dirichlet_concentration:g}) and today's signal for `steps`; 'own' measured at λ = 0\n"
    )
    names = results["measurements"][0]["blocks"]
    print(f"{'steps':>5}  {'setting':<18}" + "".join(f"{'agree ' + n:>13}{'|g| ' + n:>11}" for n in names))
    for measurement in results["measurements"]:
        agreement = mean_over_batches(measurement["batches"], "agreement")
        norms = mean_over_batches(measurement["batches"], "row_norm")
        cells = "".join(f"{a:>13.3f}{g:>11.4f}" for a, g in zip(agreement, norms, strict=True))
        print(f"{measurement['train_steps']:>5}  {measurement['setting']:<18}{cells}")


def main(args: BlockSignalArguments) -> dict:
    started = time.perf_counter()
    machine = describe_machine()
    print(machine_line(machine))
    results = {"settings": vars(args), "machine": machine, "measurements": []}
    with tempfile.TemporaryDirectory() as folder:
        base_path = pretrained_demo_model(os.path.join(folder, "base"), args.pretrain_steps, args.seed)
        for steps in args.train_steps:
            trainer = build_trainer(base_path, os.path.join(folder, f"run-{steps}"), args, steps)
            if steps:
                trainer.train()
            for setting in args.settings:
                batches = measure(trainer, setting, args)
                results["measurements"].append(
                    {"train_steps": steps, "setting": setting, "blocks": trainer.objective_names, "batches": batches}
                )
        if results["measurements"]:
            print_agreement(results, args)
        if args.compare_steps:
            results["comparison"] = compare_trainings(base_path, folder, args)
            print_comparison(results["comparison"], args)
    results["wall_seconds"] = time.perf_counter() - started
    os.makedirs(os.path.dirname(args.output_json) or ".", exist_ok=True)
    with open(args.output_json, "w") as handle:
        json.dump(results, handle, indent=1)
    print(f"\n{results['wall_seconds']:.0f} s; every batch in {args.output_json}")
    return results


if __name__ == "__main__":
    warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*")
    main(TrlParser(BlockSignalArguments).parse_args_and_config()[0])
