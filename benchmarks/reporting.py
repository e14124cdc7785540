"""How every benchmark reports a figure: a paired ratio against its baseline, a `RATIO` line and a JSON record.

A figure's repeats are interleaved with its baseline's (baseline, candidate, baseline, candidate, ...), so repeat k
of both saw the same machine state; the ratio quoted is the median over repeats of the per-repeat ratios, which
cancels slow drift that a ratio of two medians would not.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from dataclasses import asdict, dataclass, field

import torch


@dataclass
class Measurement:
    """One configuration's value in each repeat (seconds, bytes, tokens per second, ...)."""

    label: str
    unit: str
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


@dataclass
class Figure:
    """`candidate / baseline`, paired per repeat. `target` is `("<=", 1.10)` or `(">=", 5.0)`, or None."""

    name: str
    baseline: Measurement
    candidate: Measurement
    target: tuple[str, float] | None = None
    notes: str = ""

    @property
    def ratios(self) -> list[float]:
        return [c / b for b, c in zip(self.baseline.samples, self.candidate.samples, strict=True)]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        op, bound = self.target
        return self.ratio <= bound if op == "<=" else self.ratio >= bound

    def line(self) -> str:
        target = "" if self.target is None else f" | target {self.target[0]} {self.target[1]:.2f}: "
        if self.target is not None:
            target += "met" if self.met else "MISSED"
        return (
            f"RATIO {self.name} {self.ratio:.3f}{target} | baseline {self.baseline.label}: "
            f"{_format(self.baseline.median, self.baseline.unit)} | {self.candidate.label}: "
            f"{_format(self.candidate.median, self.candidate.unit)} | medians of {len(self.ratios)} repeats"
        )

    def record(self) -> dict:
        return {
            "name": self.name,
            "ratio": self.ratio,
            "ratios": self.ratios,
            "target": list(self.target) if self.target else None,
            "met": self.met,
            "baseline": {**asdict(self.baseline), "median": self.baseline.median},
            "candidate": {**asdict(self.candidate), "median": self.candidate.median},
            "notes": self.notes,
        }


def _format(value: float, unit: str) -> str:
    if unit == "bytes":
        return f"{value / 2**20:.1f} MiB"
    if unit == "s":
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.3f} s"
    return f"{value:.1f} {unit}"


def describe_machine() -> dict:
    """What the numbers were measured on: CPU model and cores, torch threads, GPU if any, library versions."""
    import peft
    import transformers
    import trl

    import trl_clp

    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return {
        "cpu": cpu,
        "cpu_cores_visible": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "peft": peft.__version__,
        "trl_clp": os.path.dirname(trl_clp.__file__),
    }


def machine_line(machine: dict) -> str:
    device = machine["gpu"] or f"CPU only ({machine['cpu_cores_visible']} cores, {machine['torch_threads']} threads)"
    return (
        f"MACHINE {device} | {machine['cpu']} | torch {machine['torch']} trl {machine['trl']} peft {machine['peft']}"
    )


def write_report(path: str, figures: list[Figure], machine: dict, settings: dict, extra: dict | None = None) -> None:
    """Write every figure, the machine, the settings and the exact command as JSON."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    report = {
        "command": "python " + " ".join(sys.argv),
        "machine": machine,
        "settings": settings,
        "figures": [figure.record() for figure in figures],
        **(extra or {}),
    }
    with open(path, "w") as handle:
        json.dump(report, handle, indent=2)
    print(f"wrote {path}")
