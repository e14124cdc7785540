"""Training cost of DPO-CLP against plain TRL DPO: step time and peak memory of `MultiObjectiveDPOTrainer` (full-
and attn-CLP) against `DPOTrainer` + one LoRA, for m = 2 and 3.

Every figure is a ratio `MultiObjectiveDPOTrainer / DPOTrainer` on the same base model, preference pairs, batch,
lengths, seed, β and loss (`sigmoid`). The baseline is plain TRL `DPOTrainer` with ONE LoRA of the per-objective rank
r on the same targets; DPO-CLP gets the same `peft_config` and gives its conditioned layers one rank-r block per
objective. The pairs carry one label per objective (`preference_layout="labels"`, each ±1, drawn from a seed); TRL's
DPO drops that column with the other unused ones. Both trainers compute the reference log-probabilities the same
way: in every step, through the base model with the adapter disabled (no `ref_model`,
`precompute_ref_log_probs=False`).

    python benchmarks/dpo_step.py            # 20.7M-parameter Llama, the shape of train_step.py
    python benchmarks/dpo_step.py --quick    # the demo's tiny Llama, about a minute on 2 CPU cores
    python benchmarks/dpo_step.py --model_path models/smollm2-135m-instruct --batch_size 4 \
        --num_objectives 2                   # a real model from a local folder (its own tokenizer)

Figures (one `RATIO` line each, then the JSON in `--output_json`), each with the target ≤ 1.10:

1. `step_time/dpo-<variant>/m<m>`: median seconds per optimizer step (the policy forward of the chosen and rejected
   rows, the reference forward, loss, backward, optimizer), timed from `on_step_begin` to `on_step_end` after the
   warm-up steps. Repeats are interleaved: in each repeat, the baseline of an m runs right before its CLP variants.
2. `peak_memory/dpo-<variant>/m<m>`: peak memory of a short run of each configuration in a fresh subprocess of its
   own, measured as `train_step.py` does (`benchmarks/peak_memory.py`). `--quick` probes only the largest m.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
import warnings
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from datasets import Dataset
from peak_memory import MEMORY_PREFIX, MemorySettings, peak_memory_figures, training_peak_memory
from reporting import write_report
from transformers import PrinterCallback
from trl import DPOConfig, DPOTrainer, TrlParser
from workload import (
    LORA,
    StepSettings,
    TrainingRun,
    announce_training_benchmark,
    base_model,
    base_tokenizer,
    lora_config,
    step_time_figures,
    timed_run_config,
)

from trl_clp import MultiObjectiveDPOConfig, MultiObjectiveDPOTrainer, demo

VARIANTS = ("full", "attn")  # DPO-CLP refuses logit-CLP (DPO reads `lm_head.weight` directly)
TARGET = ("<=", 1.10)
REFERENCE = "adapter disabled, recomputed in every step (no ref_model, precompute_ref_log_probs=False), both trainers"


@dataclass
class BenchmarkArguments(MemorySettings, StepSettings):
    batch_size: int = field(
        default=8,
        metadata={"help": "Pairs per step (`per_device_train_batch_size`); each forward holds twice as many rows."},
    )
    completion_length: int = field(
        default=32,
        metadata={"help": "Tokens of every chosen and rejected response (before the EOS that TRL appends)."},
    )
    beta: float = field(default=0.1, metadata={"help": "DPO's β, in both trainers (TRL's default)."})
    num_objectives: list[int] = field(default_factory=lambda: [2, 3], metadata={"help": "m values to measure."})
    variants: list[str] = field(
        default_factory=lambda: list(VARIANTS), metadata={"help": f"DPO-CLP variants among {VARIANTS}."}
    )
    timing: bool = field(default=True, metadata={"help": "Measure step times."})
    output_json: str | None = field(
        default=None, metadata={"help": "Default: benchmarks/results/dpo_step[_<model folder>][_quick].json."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.output_json is None:
            shape = "" if self.shape == "20m" else f"_{self.shape}"
            shape = f"_{os.path.basename(os.path.normpath(self.model_path))}" if self.model_path else shape
            self.output_json = os.path.join(
                "benchmarks", "results", f"dpo_step{shape}{'_quick' if self.quick else ''}.json"
            )
        unknown = set(self.variants) - set(VARIANTS)
        if unknown:
            raise ValueError(
                f"Unknown variants {sorted(unknown)}: choose among {VARIANTS} (DPO-CLP has no logit-CLP)."
            )


def preference_pairs(num_pairs: int, num_objectives: int, completion_length: int, tokenizer, seed: int = 0):
    """`num_pairs` rows in the labels layout: the demo's prompts, two responses of random words in random case cut to
    `completion_length` tokens of `tokenizer`, and one label ±1 per objective. TRL's DPO reads only the first three
    columns, so both trainers see the same pairs in the same order (the sampler is seeded)."""
    rng = random.Random(seed)
    rows = []
    for prompt in demo.make_prompt_dataset(num_pairs, seed=seed)["prompt"]:
        row = {"prompt": prompt}
        for key in ("chosen", "rejected"):
            words = [rng.choice([str.lower, str.upper])(rng.choice(demo.WORDS)) for _ in range(completion_length)]
            ids = tokenizer(" ".join(words), add_special_tokens=False)["input_ids"][:completion_length]
            row[key] = tokenizer.decode(ids)
        row["objective_labels"] = [rng.choice([-1, 1]) for _ in range(num_objectives)]
        rows.append(row)
    return Dataset.from_list(rows)


def build_dpo_trainer(run: TrainingRun, settings: BenchmarkArguments, max_steps: int, output_dir: str, callbacks=()):
    """`DPOTrainer` (baseline) or `MultiObjectiveDPOTrainer` for `run`; everything but the trainer class is shared."""
    config_values = {
        "output_dir": output_dir,
        "per_device_train_batch_size": run.batch_size,
        "precompute_ref_log_probs": False,
        **timed_run_config(settings, max_steps),
    }
    if not torch.cuda.is_available():
        config_values.update(bf16=False, dataloader_pin_memory=False)
    tokenizer = base_tokenizer(settings.model_path)
    common = {
        "model": base_model(settings.model_size, settings.num_layers, settings.model_path),
        "train_dataset": preference_pairs(
            max_steps * run.batch_size, run.num_objectives, settings.completion_length, tokenizer
        ),
        "processing_class": tokenizer,
        "peft_config": lora_config(),
        "callbacks": list(callbacks),
    }
    if run.variant == "dpo-baseline":
        trainer = DPOTrainer(args=DPOConfig(**config_values), **common)
    else:
        config = MultiObjectiveDPOConfig(
            **config_values,
            objective_names=[f"objective_{i}" for i in range(run.num_objectives)],
            conditioning=run.variant.removeprefix("dpo-"),
            conditioning_features=settings.conditioning_features,
        )
        trainer = MultiObjectiveDPOTrainer(args=config, **common)
    trainer.remove_callback(PrinterCallback)  # the benchmark prints its own lines
    return trainer


def memory_probe(run: TrainingRun, args: BenchmarkArguments) -> dict:
    """Peak memory of a short run of `run`, counted from just before the model is built. Meant for a fresh process."""
    return training_peak_memory(lambda output_dir: build_dpo_trainer(run, args, args.memory_steps, output_dir))


def main(args: BenchmarkArguments):
    started = time.perf_counter()
    machine, parameters = announce_training_benchmark(args)
    runs = {
        m: [TrainingRun(v, m, args.batch_size) for v in ("dpo-baseline", *(f"dpo-{v}" for v in args.variants))]
        for m in args.num_objectives
    }
    figures = step_time_figures(runs, args, lambda run: TARGET, build_dpo_trainer) if args.timing else []
    probes = {}
    if args.memory:
        probed = {m: runs[m] for m in (args.num_objectives[-1:] if args.quick else args.num_objectives)}
        memory_figures, probes = peak_memory_figures(__file__, args, probed, lambda run: TARGET)
        figures += memory_figures
        print(f"memory probes done ({time.perf_counter() - started:.0f} s)", flush=True)

    for figure in figures:
        print(figure.line())
    settings = {
        **{k: v for k, v in vars(args).items() if k != "memory_probe"},
        "model_parameters": parameters,
        "lora": LORA,
        "loss_type": "sigmoid",
        "reference_log_probs": REFERENCE,
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
