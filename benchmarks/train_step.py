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

At the Qwen shape every variant has the ≤ 1.10 targets; `logit-unfused` is logit-CLP through the materialised
`(B, C, V)` logits (the path before the tiled head), measured beside it for comparison, without a target.

Figures (one `RATIO` line each, then the JSON in `--output_json`):

1. `step_time/<variant>/m<m>`: median seconds per optimizer step (generation, rewards, old and reference
   log-probs, loss, backward, optimizer), timed from `on_step_begin` to `on_step_end` after the warm-up steps.
   Repeats are interleaved: in each repeat, the baseline of an m runs right before its CLP variants.
2. `peak_memory/<variant>/m<m>`: peak memory of a short run of each configuration in a fresh subprocess of its own,
   counted from just before the base model is built: `torch.cuda.max_memory_allocated` on a GPU; on CPU, the peak
   of live tensor bytes summed from the torch profiler's allocation events (see `memory_probe`).
   `--quick` probes only the largest m (each probe pays the ~8 s import of a fresh interpreter).
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

# Offline and quiet: the hub is never contacted, no telemetry is sent (read when huggingface_hub is imported).
# Measure this checkout's trl_clp, not a copy installed in site-packages.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from reporting import Figure, Measurement, write_report
from trl import TrlParser
from workload import (
    LORA,
    TrainingRun,
    TrainingSettings,
    announce_training_benchmark,
    build_trainer,
    interleaved_step_times,
)

MEMORY_PREFIX = "MEMORY_PROBE "
TRAINING_RANGE = "trl_clp_benchmark_training"
VARIANTS = ("full", "attn", "logit", "logit-unfused")


@dataclass
class BenchmarkArguments(TrainingSettings):
    num_objectives: list[int] = field(default_factory=lambda: [2, 3, 5], metadata={"help": "m values to measure."})
    variants: list[str] = field(
        default_factory=lambda: ["full", "attn", "logit"],
        metadata={"help": f"CLP variants among {VARIANTS}; 'logit-unfused' materialises the logits (comparison)."},
    )
    timing: bool = field(default=True, metadata={"help": "Measure step times."})
    memory: bool = field(default=True, metadata={"help": "Measure peak memory (one subprocess per configuration)."})
    memory_repeats: int = field(
        default=1, metadata={"help": "Probes per configuration (the profiled peak repeats exactly)."}
    )
    memory_workers: int = field(
        default=1,
        metadata={
            "help": "Probes run at once: each is a process of its own and its peak does not depend on the load."
        },
    )
    memory_steps: int = field(
        default=2, metadata={"help": "Steps of each memory probe: the second holds activations and optimizer state."}
    )
    output_json: str | None = field(
        default=None, metadata={"help": "Default: benchmarks/results/train_step[_quick].json."}
    )
    memory_probe: str | None = field(
        default=None, metadata={"help": "Internal: run one configuration 'variant,m,batch' and print its peak memory."}
    )

    def __post_init__(self):
        if self.output_json is None:
            shape = "" if self.shape == "20m" else f"_{self.shape}"
            self.output_json = os.path.join(
                "benchmarks", "results", f"train_step{shape}{'_quick' if self.quick else ''}.json"
            )
        unknown = set(self.variants) - set(VARIANTS)
        if unknown:
            raise ValueError(f"Unknown variants {sorted(unknown)}: choose among {VARIANTS}.")


# ------------------------------------------------------------------------------------------------ peak memory


def read_proc_status(field_name: str) -> int:
    """A `/proc/self/status` field in bytes (VmRSS: resident now, VmHWM: peak resident)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field_name}.")


def peak_live_tensor_bytes(profiler, since: str | None = None) -> int:
    """Peak of the bytes held by CPU tensors over a `profile_memory=True` profile (what `torch.cuda.max_memory_allocated`
    reports on a GPU; CPU torch keeps no such counter).

    Each op's own net allocation (`self_cpu_memory_usage`, children excluded so nothing counts twice) and each free
    outside an op (`[memory]` events) are summed in time order; a temporary freed inside the op that made it is not
    seen (by either trainer). With `since`, the name of a `record_function` range, bytes allocated before it still
    count as live but the peak is taken from its start on.
    """
    events = profiler.events()
    start = min((e.time_range.start for e in events if e.name == since), default=None) if since else None
    if since and start is None:
        raise ValueError(f"The profile has no range named {since!r}.")
    deltas = sorted((e.time_range.start, e.self_cpu_memory_usage) for e in events if e.self_cpu_memory_usage)
    live = peak = 0
    for time_, delta in deltas:
        live += delta
        if start is None or time_ >= start:
            peak = max(peak, live)
    return peak


def memory_probe(run: TrainingRun, args: BenchmarkArguments) -> dict:
    """Peak memory of a short run, counted from just before the model is built. Meant for a fresh process.

    On CPU the figure is the peak of live tensor bytes (from the profiler's allocation events); the peak resident
    set size of the process (`VmHWM`, reset through `/proc/self/clear_refs`) is recorded too but not used as the
    figure: it also counts allocator caching and files mapped by lazy imports, and varied from 538 to 861 MiB over
    identical baseline runs.
    """
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        with tempfile.TemporaryDirectory() as output_dir:
            build_trainer(run, args, args.memory_steps, output_dir).train()
        return {"peak_bytes": torch.cuda.max_memory_allocated() - start, "method": "torch.cuda.max_memory_allocated"}
    with open("/proc/self/clear_refs", "w") as handle:  # "5" resets the peak RSS (VmHWM) to the current RSS
        handle.write("5")
    start_rss = read_proc_status("VmRSS")
    with (
        torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profiler,
        tempfile.TemporaryDirectory() as output_dir,
    ):
        trainer = build_trainer(run, args, args.memory_steps, output_dir)
        with torch.profiler.record_function(TRAINING_RANGE):
            trainer.train()
    # From the start of training: building a model with a 151,936-entry tied embedding peaks above any training step
    # (a temporary the size of the embedding), which would hide every difference between the trainers.
    return {
        "peak_bytes": peak_live_tensor_bytes(profiler, since=TRAINING_RANGE),
        "method": "peak live CPU tensor bytes during training, model included (torch profiler allocation events)",
        "peak_rss_delta_bytes": read_proc_status("VmHWM") - start_rss,
    }


def measure_memory_in_subprocess(run: TrainingRun) -> dict:
    """`memory_probe(run)` in a fresh interpreter given this script's own arguments, so peaks cannot mix."""
    command = [sys.executable, os.path.abspath(__file__), *sys.argv[1:], "--memory_probe", run.key()]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in result.stdout.splitlines() if line.startswith(MEMORY_PREFIX)]
    if result.returncode or not lines:
        raise RuntimeError(f"The memory probe of {run.label} failed:\n{result.stderr[-3000:]}")
    return json.loads(lines[-1][len(MEMORY_PREFIX) :])


# ------------------------------------------------------------------------------------------------ the figures


def time_target(variant: str, num_objectives: int, shape: str) -> tuple[str, float] | None:
    """The issues' targets: ≤ 1.10× for attn- and logit-CLP, ≤ 1.25× for full-CLP at m = 5 (none at other m) on the
    20M Llama; ≤ 1.10× for every variant at the Qwen shape. None for the materialising comparison path."""
    if variant == "logit-unfused":
        return None
    if shape != "20m":
        return ("<=", 1.10)
    if variant == "full":
        return ("<=", 1.25) if num_objectives == 5 else None
    return ("<=", 1.10)


def main(args: BenchmarkArguments):
    started = time.perf_counter()
    machine, parameters = announce_training_benchmark(args.model_size, args.quick, args.num_layers)

    runs = {m: [TrainingRun(v, m, args.batch_size) for v in ("baseline", *args.variants)] for m in args.num_objectives}
    figures = []
    if args.timing:
        step_times = interleaved_step_times([run for cell in runs.values() for run in cell], args)
        figures += [
            Figure(
                f"step_time/{run.variant}/m{m}",
                step_times[cell[0]],
                step_times[run],
                time_target(run.variant, m, args.shape),
            )
            for m, cell in runs.items()
            for run in cell[1:]
        ]

    probes = {}
    if args.memory:
        probed = [
            run
            for m in (args.num_objectives[-1:] if args.quick else args.num_objectives)
            for _ in range(args.memory_repeats)
            for run in runs[m]
        ]
        with ThreadPoolExecutor(max_workers=args.memory_workers) as pool:
            for run, probe in zip(probed, pool.map(measure_memory_in_subprocess, probed), strict=True):
                probes.setdefault(run.key(), []).append(probe)
        for m in args.num_objectives[-1:] if args.quick else args.num_objectives:
            peaks = {
                run: Measurement(run.label, "bytes", [p["peak_bytes"] for p in probes[run.key()]]) for run in runs[m]
            }
            baseline = peaks[runs[m][0]]
            for run in runs[m][1:]:
                notes = probes[run.key()][0]["method"] + ", one fresh subprocess per probe"
                target = None if run.variant == "logit-unfused" else ("<=", 1.10)
                figures.append(Figure(f"peak_memory/{run.variant}/m{m}", baseline, peaks[run], target, notes))
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
