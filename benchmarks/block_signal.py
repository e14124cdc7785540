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
from trl_clp.rewards import lowercase_reward, uppercase_reward  # noqa: E402


@dataclass
class BlockSignalArguments:
    train_steps: list[int] = field(
        default_factory=lambda: [0, 50, 150],
        metadata={"help": "Measure after this many training steps (Dirichlet(0.3), today's signal); one run each."},
    )
    settings: list[str] = field(
        default_factory=lambda: ["dirichlet/mixed", "one_hot/mixed"],
        metadata={"help": "`<weight_distribution>/<block_signal>` pairs measured on each trained policy."},
    )
    num_batches: int = field(default=4, metadata={"help": "Batches measured per setting (averaged)."})
    dirichlet_concentration: float = field(default=0.3, metadata={"help": "Concentration of the Dirichlet draws."})
    pretrain_steps: int = field(default=300, metadata={"help": "Next-token pre-training steps of the demo model."})
    seed: int = field(default=0, metadata={"help": "Seed of the model, the prompts and the draws."})
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
        gradients.append(block_gradients(model, conditioner.conditioned_module_names, conditioner.num_blocks))
    model.zero_grad(set_to_none=True)
    return torch.stack(gradients)


def measure(trainer, setting: str, args: BlockSignalArguments) -> list[dict]:
    """Per batch: each block's agreement, mean per-row gradient norm and summed-gradient norm under `setting`."""
    distribution, signal = setting.split("/")
    trainer.args.weight_distribution = distribution
    if signal != "mixed":
        trainer.args.block_signal = signal
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


def mean_over_batches(batches: list[dict], key: str) -> list[float]:
    columns = zip(*(batch[key] for batch in batches), strict=True)
    return [
        statistics.fmean(v for v in column if v == v) if any(v == v for v in column) else float("nan")
        for column in map(list, columns)
    ]


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
            names = trainer.objective_names
            for setting in args.settings:
                batches = measure(trainer, setting, args)
                results["measurements"].append(
                    {"train_steps": steps, "setting": setting, "blocks": names, "batches": batches}
                )
    rows = trainer.args.per_device_train_batch_size
    print(
        f"\nPer-block gradient agreement ||Σ_b g_b|| / Σ_b ||g_b|| over the {rows} rows of a batch (random: ~{rows**-0.5:.2f})"
    )
    print(
        f"mean of {args.num_batches} batches; policy trained with Dirichlet({args.dirichlet_concentration:g}), today's signal\n"
    )
    header = f"{'steps':>5}  {'setting':<22}" + "".join(f"{'agree ' + n:>14}{'|g| ' + n:>12}" for n in names)
    print(header)
    for measurement in results["measurements"]:
        agreement = mean_over_batches(measurement["batches"], "agreement")
        norms = mean_over_batches(measurement["batches"], "row_norm")
        cells = "".join(f"{a:>14.3f}{g:>12.4f}" for a, g in zip(agreement, norms, strict=True))
        print(f"{measurement['train_steps']:>5}  {measurement['setting']:<22}{cells}")
    results["wall_seconds"] = time.perf_counter() - started
    os.makedirs(os.path.dirname(args.output_json) or ".", exist_ok=True)
    with open(args.output_json, "w") as handle:
        json.dump(results, handle, indent=1)
    print(f"\n{results['wall_seconds']:.0f} s; every batch in {args.output_json}")
    return results


if __name__ == "__main__":
    warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*")
    main(TrlParser(BlockSignalArguments).parse_args_and_config()[0])
