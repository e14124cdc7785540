"""Peak memory of a training configuration, each measured by a short run in a fresh subprocess of its own.

A benchmark script that has a `--memory_probe KEY` flag (see `MemorySettings`) runs one configuration, prints its
peak as a `MEMORY_PROBE` line and exits; `probe_in_subprocesses` starts one such interpreter per configuration, so
peaks (and allocator caches) cannot mix. The figure counts from just before the base model is built:
`torch.cuda.max_memory_allocated` on a GPU; on CPU, the peak of live tensor bytes summed from the torch profiler's
allocation events (see `peak_live_tensor_bytes`).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
from reporting import Figure, Measurement

MEMORY_PREFIX = "MEMORY_PROBE "
TRAINING_RANGE = "trl_clp_benchmark_training"


@dataclass
class MemorySettings:
    """The peak-memory flags of a training benchmark."""

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
    memory_probe: str | None = field(
        default=None, metadata={"help": "Internal: run one configuration 'variant,m,batch' and print its peak memory."}
    )


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


def base_parameters(model: torch.nn.Module) -> int:
    """Distinct parameters of the model under the adapter (a tied output layer counts once, LoRA not at all)."""
    return sum(p.numel() for name, p in model.named_parameters() if "lora_" not in name)


def training_peak_memory(build: Callable[[str], object]) -> dict:
    """Peak memory of `build(output_dir).train()`, counted from just before `build` makes the model. Meant for a
    fresh process. `build` returns a transformers `Trainer`; the probe also records how many base-model parameters it
    trained (`model_parameters`), so a caller can check which model the subprocess loaded.

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
            trainer = build(output_dir)
            trainer.train()
        return {
            "peak_bytes": torch.cuda.max_memory_allocated() - start,
            "method": "torch.cuda.max_memory_allocated",
            "model_parameters": base_parameters(trainer.model),
        }
    with open("/proc/self/clear_refs", "w") as handle:  # "5" resets the peak RSS (VmHWM) to the current RSS
        handle.write("5")
    start_rss = read_proc_status("VmRSS")
    with (
        torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profiler,
        tempfile.TemporaryDirectory() as output_dir,
    ):
        trainer = build(output_dir)
        with torch.profiler.record_function(TRAINING_RANGE):
            trainer.train()
    # From the start of training: building a model with a 151,936-entry tied embedding peaks above any training step
    # (a temporary the size of the embedding), which would hide every difference between the trainers.
    return {
        "peak_bytes": peak_live_tensor_bytes(profiler, since=TRAINING_RANGE),
        "method": "peak live CPU tensor bytes during training, model included (torch profiler allocation events)",
        "peak_rss_delta_bytes": read_proc_status("VmHWM") - start_rss,
        "model_parameters": base_parameters(trainer.model),
    }


def command_line(args) -> list[str]:
    """The flags that parse back to the dataclass `args` (through `TrlParser`); None values and the probe left out."""
    flags = []
    for spec in dataclasses.fields(args):
        value = getattr(args, spec.name)
        if value is None or spec.name == "memory_probe":
            continue
        flags += [f"--{spec.name}", *map(str, value)] if isinstance(value, list) else [f"--{spec.name}", str(value)]
    return flags


def probe_in_subprocess(script: str, args, run) -> dict:
    """The `--memory_probe` of `run` (a `TrainingRun`) by `script` in a fresh interpreter given `args`."""
    command = [sys.executable, os.path.abspath(script), *command_line(args), "--memory_probe", run.key()]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in result.stdout.splitlines() if line.startswith(MEMORY_PREFIX)]
    if result.returncode or not lines:
        raise RuntimeError(f"The memory probe of {run.label} failed:\n{result.stderr[-3000:]}")
    return json.loads(lines[-1][len(MEMORY_PREFIX) :])


def peak_memory_figures(
    script: str, args, cells: dict[int, list], target: Callable[[object], tuple[str, float] | None]
) -> tuple[list[Figure], dict[str, list[dict]]]:
    """Probe every run of `cells` (per m: the baseline first, then its candidates) `args.memory_repeats` times,
    `args.memory_workers` subprocesses at a time.

    Returns:
        one `peak_memory/<variant>/m<m>[/<features>]` figure per candidate (against its m's baseline, target `target(run)`), and
        every probe's record by run key.
    """
    probed = [run for runs in cells.values() for _ in range(args.memory_repeats) for run in runs]
    probes: dict[str, list[dict]] = {}
    with ThreadPoolExecutor(max_workers=args.memory_workers) as pool:
        for run, probe in zip(probed, pool.map(lambda r: probe_in_subprocess(script, args, r), probed), strict=True):
            probes.setdefault(run.key(), []).append(probe)
    figures = []
    for m, runs in cells.items():
        peaks = {run: Measurement(run.label, "bytes", [p["peak_bytes"] for p in probes[run.key()]]) for run in runs}
        for run in runs[1:]:
            notes = probes[run.key()][0]["method"] + ", one fresh subprocess per probe"
            name = f"peak_memory/{run.variant}/m{m}{args.features_suffix}"
            figures.append(Figure(name, peaks[runs[0]], peaks[run], target(run), notes))
    return figures, probes
