"""DPO's β and learning rate on the demo task: how far DPO-CLP's policy moves from the reference (KL) and how well it
still steers, per (β, learning rate), on the pairs of `examples/compare_dpo.py`.

On the demo, DPO-CLP at compare_dpo's settings (β 0.1, learning rate 3e-3) drifts 5–29 nats per completion from the
reference where online CLP stays at 1–5 (docs/preference.md, "Measured front"). This screen trains dpo-clp-full (or
any of compare_dpo's DPO methods) at each (β, learning rate) of a grid on ONE seed's base model and pairs, and reports
per configuration:

- the KL to the reference, nats per completion, lowest–highest over the weightings (`evaluate_front`);
- each objective's margin: its mean true reward where its weight is 1 minus where it is 0, and the hypervolume;
- the held-out pairs (the reference's samples on the evaluation prompts, labelled as the training pairs): the
  implicit reward's accuracy at the corners, each objective's accuracy from weight 0 to weight 1, and the mean
  log-ratio margin at the corners (`evaluate_preferences`);
- the training log's `rewards/margins` and `rewards/accuracies` (averaged over the run).

    python benchmarks/dpo_tuning.py                                     # the default grid, one after another
    python benchmarks/dpo_tuning.py --betas 0.3 --learning_rates 1e-3  # one configuration, added to the results
    python benchmarks/dpo_tuning.py --methods online-clp-full          # online CLP on the same base, for reference
    python benchmarks/dpo_tuning.py --quick --output_dir /tmp/t         # tiny sizes: a smoke run, not evidence

Every configuration is appended to `<output_dir>/tuning.json` and the table is printed from it: configurations
already there are not trained again, so a grid can be run one configuration at a time (the base model and the pairs
are built once, saved in `output_dir` and read back).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import compare_baselines  # noqa: E402
import compare_dpo  # noqa: E402
from datasets import load_dataset  # noqa: E402
from reporting import describe_machine, machine_line  # noqa: E402
from trl import TrlParser  # noqa: E402

from trl_clp import demo, simplex_grid  # noqa: E402
from trl_clp.evaluation import evaluate_front  # noqa: E402
from trl_clp.preference_evaluation import evaluate_preferences  # noqa: E402
from trl_clp.preference_sampling import pairs_from_reward_functions, sample_completions  # noqa: E402


@dataclass
class DPOTuningArguments:
    betas: list[float] = field(default_factory=lambda: [0.1, 0.3, 1.0], metadata={"help": "DPO's β values."})
    learning_rates: list[float] = field(default_factory=lambda: [1e-3, 3e-3], metadata={"help": "Learning rates."})
    methods: list[str] = field(
        default_factory=lambda: ["dpo-clp-full"],
        metadata={
            "help": f"Among {compare_dpo.METHODS}; each DPO method at every (β, learning rate), online-clp-full once "
            "(at the demo's settings)."
        },
    )
    seed: int = field(default=0, metadata={"help": "The seed of the base model, the pairs and the runs."})
    output_dir: str = field(default="outputs/dpo_tuning", metadata={"help": "Base model, pairs, tuning.json."})
    max_steps: int = field(default=60, metadata={"help": "Training steps (compare_dpo's budget)."})
    pairs_per_step: int = field(default=8, metadata={"help": "Pairs per step."})
    num_train_prompts: int = field(default=480, metadata={"help": "Training prompts, 2 reference samples each."})
    pretrain_steps: int = field(default=200, metadata={"help": "Pre-training steps of the base model."})
    num_eval_prompts: int = field(default=24, metadata={"help": "Held-out prompts (front, and held-out pairs)."})
    eval_samples_per_prompt: int = field(default=2, metadata={"help": "Completions per (prompt, weighting)."})
    eval_grid_points: int = field(default=5, metadata={"help": "Weightings on the simplex edge."})
    output_json: str | None = field(
        default=None, metadata={"help": "Where the results go (default: <output_dir>/tuning.json)."}
    )
    quick: bool = field(default=False, metadata={"help": "Tiny sizes, 4 steps: a smoke run for the tests."})


def compare_arguments(args: DPOTuningArguments, beta: float, learning_rate: float) -> compare_dpo.CompareDPOArguments:
    """compare_dpo's arguments for one configuration: its runs, pairs and evaluation sizes."""
    return compare_dpo.CompareDPOArguments(
        output_dir=args.output_dir,
        seeds=[args.seed],
        max_steps=args.max_steps,
        pairs_per_step=args.pairs_per_step,
        learning_rate=learning_rate,
        dpo_beta=beta,
        num_train_prompts=args.num_train_prompts,
        pretrain_steps=args.pretrain_steps,
        num_eval_prompts=args.num_eval_prompts,
        eval_samples_per_prompt=args.eval_samples_per_prompt,
        eval_grid_points=args.eval_grid_points,
    )


def base_model_and_pairs(args: DPOTuningArguments):
    """The seed's pre-trained base model (saved to `<output_dir>/base-seed<s>`), its training pairs in both layouts
    and its held-out pairs (2 reference samples per evaluation prompt, labels layout); built once, then read back."""
    base_path = os.path.join(args.output_dir, f"base-seed{args.seed}")
    pairs_dir = os.path.join(args.output_dir, "pairs")
    files = {name: os.path.join(pairs_dir, f"{name}.jsonl") for name in ("labels", "scores", "held_out")}
    if all(os.path.isfile(path) for path in files.values()):
        data = {name: load_dataset("json", data_files=path, split="train") for name, path in files.items()}
        return base_path, data
    tokenizer = demo.make_byte_tokenizer()
    base_model = demo.pretrain_demo_model(
        demo.make_tiny_llama(seed=args.seed), tokenizer, args.pretrain_steps, seed=args.seed
    )
    base_model.save_pretrained(base_path)
    tokenizer.save_pretrained(base_path)
    data = compare_dpo.make_pairs(base_model, tokenizer, args.seed, compare_arguments(args, 0.1, 1e-3))
    prompts = held_out_prompts(args)
    completions, completion_ids = sample_completions(
        base_model,
        tokenizer,
        prompts,
        num_completions=2,
        max_new_tokens=demo.DEMO_TRAINING_ARGS["max_completion_length"],
        seed=args.seed + 1,
    )
    data["held_out"] = pairs_from_reward_functions(
        prompts, completions, compare_dpo.REWARDS, "labels", completion_ids=completion_ids
    )
    os.makedirs(pairs_dir, exist_ok=True)
    for name, path in files.items():
        data[name].to_json(path)
    return base_path, {name: data[name] for name in files}


def held_out_prompts(args: DPOTuningArguments) -> list[str]:
    """compare_dpo's held-out prompts of the seed: those its fronts are measured on."""
    return list(demo.make_prompt_dataset(args.num_eval_prompts, seed=1000 + args.seed)["prompt"])


def run_configuration(method: str, beta: float | None, learning_rate: float | None, base_path, data, args) -> dict:
    """Train one method at one (β, learning rate), then measure its front and its held-out pairs."""
    started = time.perf_counter()
    grid = simplex_grid(len(compare_dpo.REWARDS), args.eval_grid_points)
    names = [f.__name__ for f in compare_dpo.REWARDS]
    if method == compare_dpo.ONLINE_METHOD:
        trainer = compare_dpo.train_online(args.seed, base_path, compare_arguments(args, 0.1, 1e-3))
    else:
        trainer = compare_dpo.train_dpo(
            method,
            args.seed,
            base_path,
            data,
            compare_arguments(args, beta, learning_rate),
            eval_dataset=data["held_out"],
        )
    train_seconds = time.perf_counter() - started
    steer = compare_baselines.steerable_view(trainer)
    front = evaluate_front(
        steer,
        steer.tokenizer,
        held_out_prompts(args),
        compare_dpo.REWARDS,
        grid,
        seed=args.seed,
        num_samples=args.eval_samples_per_prompt,
        max_new_tokens=demo.DEMO_TRAINING_ARGS["max_completion_length"],
        kl_weight=demo.DEMO_TRAINING_ARGS["beta"],
    )
    rewards = [[r.rewards[name] for name in names] for r in front.results]  # (K, m), weight of objective 1 falling
    entry = {
        "method": method,
        "beta": beta,
        "learning_rate": learning_rate,
        "kl": [r.kl for r in front.results],
        "rewards": rewards,
        "margins": {
            name: rewards[0][i] - rewards[-1][i] if i == 0 else rewards[-1][i] - rewards[0][i]
            for i, name in enumerate(names)
        },
        "hypervolume": front.hypervolume(compare_dpo.REFERENCE_POINT),
        "train_seconds": train_seconds,
    }
    if method != compare_dpo.ONLINE_METHOD:
        held_out = evaluate_preferences(steer, trainer.eval_dataset, grid, preference_layout="labels")
        corners = (held_out[0], held_out[-1])  # w = (1, 0), (0, 1)
        entry["held_out"] = {
            "accuracy_at_corners": [c.accuracy for c in corners],
            "margin_at_corners": [c.margin for c in corners],  # nats, towards the corner's preferred response
            # each objective's accuracy from weight 0 to weight 1
            "objective_accuracy": {
                name: [corners[1 - i].objective_accuracy[name], corners[i].objective_accuracy[name]]
                for i, name in enumerate(names)
            },
            "num_pairs": len(trainer.eval_dataset),
        }
        logged = [log for log in trainer.state.log_history if "rewards/margins" in log]
        entry["train"] = {key: logged[-1][key] for key in ("rewards/margins", "rewards/accuracies")} if logged else {}
    return entry


def key_of(entry: dict) -> tuple:
    return (entry["method"], entry["beta"], entry["learning_rate"])


def format_table(entries: list[dict]) -> str:
    names = [f.__name__ for f in compare_dpo.REWARDS]
    lines = [
        "| method | β | lr | KL (nats/completion) | "
        + " | ".join(f"{n} margin" for n in names)
        + " | hypervolume | held-out acc. at (1,0), (0,1) | held-out "
        + " | held-out ".join(f"{n} acc. 0→1" for n in names)
        + " | held-out log-ratio margin at corners | train rewards/margins, accuracies | s |",
        "|---|---|---|---|" + "---|" * len(names) + "---|---|" + "---|" * len(names) + "---|---|---|",
    ]
    for entry in entries:
        row = [
            entry["method"],
            "—" if entry["beta"] is None else f"{entry['beta']:g}",
            "—" if entry["learning_rate"] is None else f"{entry['learning_rate']:g}",
            f"{min(entry['kl']):.1f}–{max(entry['kl']):.1f}",
            *(f"{entry['margins'][n]:.3f}" for n in names),
            f"{entry['hypervolume']:.3f}",
        ]
        held = entry.get("held_out")
        if held is None:
            row += ["—"] * (len(names) + 2) + ["—"]
        else:
            row.append(", ".join(f"{a:.2f}" for a in held["accuracy_at_corners"]))
            row += [f"{held['objective_accuracy'][n][0]:.2f} → {held['objective_accuracy'][n][1]:.2f}" for n in names]
            row.append(", ".join(f"{m:.1f}" for m in held["margin_at_corners"]))
            train = entry["train"]
            row.append(f"{train['rewards/margins']:.2f}, {train['rewards/accuracies']:.2f}" if train else "—")
        row.append(f"{entry['train_seconds']:.0f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(args: DPOTuningArguments) -> dict:
    if args.quick:
        args = replace(
            args,
            max_steps=4,
            num_train_prompts=24,
            pretrain_steps=20,
            num_eval_prompts=4,
            eval_samples_per_prompt=1,
            eval_grid_points=3,
        )
    unknown = sorted(set(args.methods) - set(compare_dpo.METHODS))
    if unknown:
        raise ValueError(f"Unknown methods {unknown}; choose among {compare_dpo.METHODS}.")
    os.makedirs(args.output_dir, exist_ok=True)
    path = args.output_json or os.path.join(args.output_dir, "tuning.json")
    report = {"configurations": []}
    if os.path.isfile(path):
        with open(path) as handle:
            report = json.load(handle)
    done = {key_of(entry) for entry in report["configurations"]}
    base_path, data = base_model_and_pairs(args)
    todo = []
    for method in args.methods:
        if method == compare_dpo.ONLINE_METHOD:
            todo.append((method, None, None))
        else:
            todo += [(method, beta, lr) for beta in args.betas for lr in args.learning_rates]
    for method, beta, learning_rate in todo:
        if (method, beta, learning_rate) in done:
            continue
        entry = run_configuration(method, beta, learning_rate, base_path, data, args)
        report["configurations"].append(entry)
        print(f"{method} β {beta} lr {learning_rate}: KL {min(entry['kl']):.1f}–{max(entry['kl']):.1f}", flush=True)
        # every configuration written as it ends: a grid run one configuration at a time loses nothing
        report["settings"] = {
            key: value for key, value in asdict(args).items() if key not in ("betas", "learning_rates", "methods")
        }
        report["machine"] = describe_machine()
        report["training_pairs"] = len(data["labels"])
        report["held_out_pairs"] = len(data["held_out"])
        with open(path, "w") as handle:
            json.dump(report, handle, indent=2)
    print(machine_line(report["machine"]) if "machine" in report else "")
    print(format_table(report["configurations"]))
    return report


if __name__ == "__main__":
    (tuning_args,) = TrlParser(DPOTuningArguments).parse_args_and_config()
    main(tuning_args)
