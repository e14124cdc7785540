"""Training cost of CLP against plain TRL: step time and peak memory per conditioning variant, for m = 2, 3, 5.

Every figure is a ratio `MultiObjectiveTrainer / RLOOTrainer` on the same base model, prompts, reward functions,
seed, KL weight and completion length. The baseline is plain TRL `RLOOTrainer` with ONE LoRA of the per-objective
rank r on the same targets, trained on the same m rewards; CLP gets the same `peft_config` and gives its conditioned
layers one rank-r block per objective.

    python benchmarks/train_step.py            # 20.7M-parameter Llama: the figures of docs/benchmarks.md
    python benchmarks/train_step.py --quick    # the demo's tiny Llama, under 2 minutes on 2 CPU cores
    python benchmarks/train_step.py --shape qwen2.5-0.5b --batch_size 4 --completion_length 8 \
        --num_objectives 2 5 --variants full attn logit logit-unfused --memory false
                                               # the Qwen2.5-0.5B shape (151,936 vocabulary, 24 layers)
    python benchmarks/train_step.py --model_path models/smollm2-135m-instruct --batch_size 12 \
        --num_generations 3 --completion_length 24 --num_objectives 2 --variants full attn
                                               # a real model from a local folder (its own tokenizer)

At the Qwen shape and with `--model_path` every variant has the ≤ 1.10 targets; `logit-unfused` is logit-CLP through the materialised
`(B, C, V)` logits (the path before the tiled head), measured beside it for comparison, without a target.

Figures (one `RATIO` line each, then the JSON in `--output_json`):

1. `step_time/<variant>/m<m>`: median seconds per optimizer step (generation, rewards, old and reference
   log-probs, loss, backward, optimizer), timed from `on_step_begin` to `on_step_end` after the warm-up steps.
   Repeats are interleaved: in each repeat, the baseline of an m runs right before its CLP variants.
2. `peak_memory/<variant>/m<m>`: peak memory of a short run of each configuration in a fresh subprocess of its own,
   counted from just before the base model is built: `torch.cuda.max_memory_allocated` on a GPU; on CPU, the peak
   of live tensor bytes summed from the torch profiler's allocation events (`benchmarks/peak_memory.py`).
   `--quick` probes only the largest m (each probe pays the ~8 s import of a fresh interpreter).
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from dataclasses import dataclass, field

# Offline and quiet: the hub is never contacted, no telemetry is sent (read when huggingface_hub is imported).
# Measure this checkout's trl_clp, not a copy installed in site-packages.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from peak_memory import MEMORY_PREFIX, MemorySettings, peak_memory_figures, training_peak_memory
from reporting import write_report
from trl import TrlParser
from workload import (
    LORA,
    TrainingRun,
    TrainingSettings,
    announce_training_benchmark,
    build_trainer,
    step_time_figures,
)

VARIANTS = ("full", "attn", "logit", "logit-unfused")


@dataclass
class BenchmarkArguments(MemorySettings, TrainingSettings):
    num_objectives: list[int] = field(default_factory=lambda: [2, 3, 5], metadata={"help": "m values to measure."})
    variants: list[str] = field(
        default_factory=lambda: ["full", "attn", "logit"],
        metadata={"help": f"CLP variants among {VARIANTS}; 'logit-unfused' materialises the logits (comparison)."},
    )
    timing: bool = field(default=True, metadata={"help": "Measure step times."})
    output_json: str | None = field(
        default=None, metadata={"help": "Default: benchmarks/results/train_step[_quick].json."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.output_json is None:
            shape = "" if self.shape == "20m" else f"_{self.shape}"
            shape = f"_{os.path.basename(os.path.normpath(self.model_path))}" if self.model_path else shape
            self.output_json = os.path.join(
                "benchmarks", "results", f"train_step{shape}{'_quick' if self.quick else ''}.json"
            )
        unknown = set(self.variants) - set(VARIANTS)
        if unknown:
            raise ValueError(f"Unknown variants {sorted(unknown)}: choose among {VARIANTS}.")


def memory_probe(run: TrainingRun, args: BenchmarkArguments) -> dict:
    """Peak memory of a short run of `run`, counted from just before the model is built. Meant for a fresh process."""
    return training_peak_memory(lambda output_dir: build_trainer(run, args, args.memory_steps, output_dir))


# ------------------------------------------------------------------------------------------------ the figures


def time_target(variant: str, num_objectives: int, shape: str) -> tuple[str, float] | None:
    """The issues' targets: ≤ 1.10× for attn- and logit-CLP, ≤ 1.25× for full-CLP at m = 5 (none at other m) on the
    20M Llama; ≤ 1.10× for every variant at the Qwen shape and on a real model (`shape` "model_path"). None for the
    materialising comparison path."""
    if variant == "logit-unfused":
        return None
    if shape != "20m":
        return ("<=", 1.10)
    if variant == "full":
        return ("<=", 1.25) if num_objectives == 5 else None
    return ("<=", 1.10)


def main(args: BenchmarkArguments):
    started = time.perf_counter()
    machine, parameters = announce_training_benchmark(args)

    runs = {m: [TrainingRun(v, m, args.batch_size) for v in ("baseline", *args.variants)] for m in args.num_objectives}

    def timing_target(run: TrainingRun) -> tuple[str, float] | None:
        return time_target(run.variant, run.num_objectives, "model_path" if args.model_path else args.shape)

    figures = step_time_figures(runs, args, timing_target) if args.timing else []

    probes = {}
    if args.memory:
        probed = {m: runs[m] for m in (args.num_objectives[-1:] if args.quick else args.num_objectives)}
        memory_figures, probes = peak_memory_figures(
            __file__, args, probed, lambda run: None if run.variant == "logit-unfused" else ("<=", 1.10)
        )
        figures += memory_figures
        print(f"memory probes done ({time.perf_counter() - started:.0f} s)", flush=True)

    for figure in figures:
        print(figure.line())
    settings = {
        **{k: v for k, v in vars(args).items() if k != "memory_probe"},
        "model_parameters": parameters,
        "lora": LORA,
    }
    write_report(
        args.output_json,
        figures,
        machine,
        settings,
        {"memory_probes": probes, "wall_seconds": time.perf_counter() - started},
    )


if __name__ == "__main__":
    # transformers 5 deprecates `gradient_checkpointing`, which TRL's configs still set.
    warnings.filterwarnings("ignore", category=FutureWarning)
    (benchmark_args,) = TrlParser(BenchmarkArguments).parse_args_and_config()
    if benchmark_args.memory_probe is not None:
        probe = memory_probe(TrainingRun.parse(benchmark_args.memory_probe), benchmark_args)
        print(MEMORY_PREFIX + json.dumps(probe))
    else:
        main(benchmark_args)
