"""Training cost of CLP on GRPO: step time of `MultiObjectiveGRPOTrainer` against plain `GRPOTrainer` + one LoRA.

Every figure is a ratio `MultiObjectiveGRPOTrainer / GRPOTrainer` on the same base model, prompts, reward functions,
seed, KL weight, completion length and GRPO defaults (`loss_type="dapo"`, `scale_rewards="group"`). The baseline is
plain TRL `GRPOTrainer` with ONE LoRA of the per-objective rank r on the same targets and its fixed unit
`reward_weights`; CLP gets the same `peft_config` and one rank-r block per objective in its conditioned layers. With
`beta > 0` both score the completions under the reference; GRPO puts β·KL in its loss, GRPO-CLP puts α·KL in each
row's reward and so also scores them under the sampling policy (GRPO skips that forward when generation and updates
align): the figure includes that cost.

    python benchmarks/grpo_step.py            # 20.7M-parameter Llama
    python benchmarks/grpo_step.py --quick    # the demo's tiny Llama, about a minute on 2 CPU cores

Figures (one `RATIO` line each, then the JSON in `--output_json`): `step_time/grpo-<variant>/m<m>/beta<β>`, the
median seconds per optimizer step (generation included), timed from `on_step_begin` to `on_step_end` after the
warm-up steps, repeats interleaved (in each repeat, the baseline runs right before its CLP variants).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import warnings
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from reporting import Figure, write_report  # noqa: E402
from trl import TrlParser  # noqa: E402
from workload import LORA, TrainingRun, TrainingSettings, announce_training_benchmark, interleaved_step_times  # noqa: E402


@dataclass
class BenchmarkArguments(TrainingSettings):
    num_objectives: list[int] = field(default_factory=lambda: [2], metadata={"help": "m values to measure."})
    variants: list[str] = field(default_factory=lambda: ["full"], metadata={"help": "CLP variants."})
    betas: list[float] = field(default_factory=lambda: [0.0, 0.05], metadata={"help": "KL weights to measure."})
    output_json: str | None = field(
        default=None, metadata={"help": "Default: benchmarks/results/grpo_step[_quick].json."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.output_json is None:
            self.output_json = os.path.join("benchmarks", "results", f"grpo_step{'_quick' if self.quick else ''}.json")


def main(args: BenchmarkArguments):
    started = time.perf_counter()
    machine, parameters = announce_training_benchmark(args)
    figures = []
    for beta in args.betas:
        settings = dataclasses.replace(args, beta=beta)
        runs = {
            m: [TrainingRun(v, m, args.batch_size) for v in ("grpo-baseline", *(f"grpo-{v}" for v in args.variants))]
            for m in args.num_objectives
        }
        step_times = interleaved_step_times([run for cell in runs.values() for run in cell], settings)
        figures += [
            Figure(f"step_time/{run.variant}/m{m}/beta{beta:g}", step_times[cell[0]], step_times[run], ("<=", 1.10))
            for m, cell in runs.items()
            for run in cell[1:]
        ]
    for figure in figures:
        print(figure.line())
    settings = {**vars(args), "model_parameters": parameters, "lora": LORA}
    write_report(args.output_json, figures, machine, settings, {"wall_seconds": time.perf_counter() - started})


if __name__ == "__main__":
    warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*")
    main(TrlParser(BenchmarkArguments).parse_args_and_config()[0])
