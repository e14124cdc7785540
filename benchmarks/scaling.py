"""How a CLP training step scales: step time as the number of objectives m grows (2 → 5 → 10) and as the batch
grows, for full-CLP (the variant whose cost grows with m everywhere) and for plain TRL `RLOOTrainer` with one LoRA.

    python benchmarks/scaling.py            # 20.7M-parameter Llama: the figures of docs/benchmarks.md
    python benchmarks/scaling.py --quick    # the demo's tiny Llama, under 2 minutes on 2 CPU cores

The baseline of each point is plain RLOO with one rank-r LoRA on the same m rewards, so its time barely depends on
m (only the reward functions do); full-CLP's conditioned layers have rank m·r. Output:

- `RATIO step_time/scaling_m/full/m<m>` and `RATIO step_time/scaling_batch/full/m<m>/b<B>`: full-CLP / baseline at
  each point (medians of interleaved repeats, as in `train_step.py`).
- `SLOPE scaling_m` and `SLOPE scaling_batch`: least-squares seconds per extra objective (per extra batch row) of
  full-CLP and of the baseline, and full-CLP's slope as a fraction of the baseline's step time at the smallest point.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from dataclasses import dataclass, field

# Measure this checkout's trl_clp, not a copy installed in site-packages.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from reporting import Figure, write_report
from trl import TrlParser
from workload import LORA, TrainingRun, TrainingSettings, announce_training_benchmark, interleaved_step_times


@dataclass
class BenchmarkArguments(TrainingSettings):
    scaling_num_objectives: list[int] = field(
        default_factory=lambda: [2, 5, 10], metadata={"help": "m values, at `--batch_size`."}
    )
    scaling_batch_sizes: list[int] = field(
        default_factory=lambda: [8, 16, 32], metadata={"help": "Batch sizes (multiples of `--num_generations`)."}
    )
    batch_scaling_num_objectives: int = field(default=5, metadata={"help": "m of the batch-size sweep."})
    output_json: str | None = field(
        default=None, metadata={"help": "Default: benchmarks/results/scaling[_quick].json."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.output_json is None:
            self.output_json = os.path.join("benchmarks", "results", f"scaling{'_quick' if self.quick else ''}.json")


def least_squares_slope(xs: list[float], ys: list[float]) -> float:
    x_mean, y_mean = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - x_mean) * (y - y_mean) for x, y in zip(xs, ys, strict=True)) / sum((x - x_mean) ** 2 for x in xs)


def slope_record(name: str, unit: str, xs: list[int], clp: list[float], baseline: list[float]) -> dict:
    """Fit and print `SLOPE <name>`: seconds per extra `unit` of full-CLP and of the baseline."""
    clp_slope, baseline_slope = least_squares_slope(xs, clp), least_squares_slope(xs, baseline)
    relative = clp_slope / baseline[0]
    print(
        f"SLOPE {name} full-clp {clp_slope * 1000:+.1f} ms per {unit} ({relative:+.1%} of the baseline step at "
        f"{xs[0]}) | baseline rloo+lora {baseline_slope * 1000:+.1f} ms per {unit} | medians full-clp "
        f"{[round(t, 3) for t in clp]} s, baseline {[round(t, 3) for t in baseline]} s at {unit}s {xs}"
    )
    return {
        "name": name,
        "x": xs,
        "clp_seconds": clp,
        "baseline_seconds": baseline,
        "clp_slope_seconds": clp_slope,
        "baseline_slope_seconds": baseline_slope,
        "clp_slope_relative_to_first_baseline_step": relative,
    }


def main(args: BenchmarkArguments):
    started = time.perf_counter()
    machine, parameters = announce_training_benchmark(args)

    m_points = [(m, args.batch_size) for m in args.scaling_num_objectives]
    batch_points = [(args.batch_scaling_num_objectives, b) for b in args.scaling_batch_sizes]
    order = [
        TrainingRun(variant, m, batch)
        for m, batch in dict.fromkeys(m_points + batch_points)  # each point once, baseline right before full-CLP
        for variant in ("baseline", "full")
    ]
    step_times = interleaved_step_times(order, args)

    def pair(m, batch):
        return step_times[TrainingRun("baseline", m, batch)], step_times[TrainingRun("full", m, batch)]

    figures = [Figure(f"step_time/scaling_m/full/m{m}", *pair(m, b)) for m, b in m_points]
    figures += [Figure(f"step_time/scaling_batch/full/m{m}/b{b}", *pair(m, b)) for m, b in batch_points]
    for figure in figures:
        print(figure.line())
    slopes = [
        slope_record(
            "scaling_m",
            "objective",
            args.scaling_num_objectives,
            [pair(*p)[1].median for p in m_points],
            [pair(*p)[0].median for p in m_points],
        ),
        slope_record(
            f"scaling_batch_m{args.batch_scaling_num_objectives}",
            "row",
            args.scaling_batch_sizes,
            [pair(*p)[1].median for p in batch_points],
            [pair(*p)[0].median for p in batch_points],
        ),
    ]
    settings = {**vars(args), "model_parameters": parameters, "lora": LORA}
    write_report(
        args.output_json, figures, machine, settings, {"slopes": slopes, "wall_seconds": time.perf_counter() - started}
    )


if __name__ == "__main__":
    # transformers 5 deprecates `gradient_checkpointing`, which TRL's configs still set.
    warnings.filterwarnings("ignore", category=FutureWarning)
    (benchmark_args,) = TrlParser(BenchmarkArguments).parse_args_and_config()
    main(benchmark_args)
