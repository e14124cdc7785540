"""GPU check: CLP against plain TRL at the Qwen2.5-0.5B shape, in bf16, on one CUDA GPU, in under 8 minutes.

    python benchmarks/gpu_check.py          # one CUDA GPU, no internet: writes benchmarks/results/gpu_check.json
    python benchmarks/gpu_check.py --cpu    # the same code on CPU at tiny sizes (what CI runs, about a minute)

Everything is built locally from seeds (random weights from a `Qwen2Config`: hidden 896, 24 layers, 14 heads,
2 KV heads, MLP 4864, vocabulary 151,936, tied embeddings); nothing is downloaded. Sections, each a key of the JSON:

1. `training`: bf16 RLOO steps of plain `RLOOTrainer` + LoRA and of every CLP variant (full, attn, logit, and
   logit-CLP through the materialised logits for comparison) at m = 2 and 5; per run the median step time and the
   peak memory (`torch.cuda.max_memory_allocated`), repeats interleaved; ratios against the plain run of the same
   repeat, with the ≤ 1.10 targets.
2. `qlora`: one 4-bit (bitsandbytes NF4, bf16 compute) training run of plain RLOO and of full-CLP: step time, peak
   memory, and a check that the base layers are `bnb.nn.Linear4bit` and that the LoRA blocks moved.
3. `generation`: tokens per second of one `SteerableModel.generate` with a different weighting per row against one
   plain PEFT LoRA, per variant and m.
4. `identities`: in bf16, a mixed batch (one weighting per row) = each row alone = the model merged for the row's
   weighting, and logit-CLP's tiled head = the materialised log-probabilities. The tolerance is what bf16 allows:
   twice the error of the same bf16 computation against an fp32 copy of the model (and at least 1e-2).

`--cpu` keeps every step of that code path but shrinks the model to 2 layers of width 64 (the vocabulary stays
151,936) and the batch to a few rows, in fp32 (CPU bf16 matmuls are emulated); its figures say nothing about a GPU.
"""

from __future__ import annotations

import copy
import gc
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field

# Offline and quiet; this checkout's trl_clp first on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
import workload
from generation import build_methods, timed
from peak_memory import peak_live_tensor_bytes
from reporting import Figure, Measurement, describe_machine, machine_line
from train_step import time_target
from trl import TrlParser
from trl.trainer.utils import selective_log_softmax
from workload import StepTimer, TrainingRun, TrainingSettings

from trl_clp import SteerableModel, demo
from trl_clp.conditioning.fused_head import conditioned_head_logps_and_entropies
from trl_clp.sampling import sample_group_weights

VARIANTS = ["full", "attn", "logit", "logit-unfused"]


@dataclass
class GpuCheckArguments:
    cpu: bool = field(default=False, metadata={"help": "Run on CPU at tiny sizes (CI): the same code path."})
    num_layers: int | None = field(default=None, metadata={"help": "Override the depth (default: 24; 2 with --cpu)."})
    num_objectives: list[int] = field(default_factory=lambda: [2, 5], metadata={"help": "m values to train."})
    variants: list[str] = field(default_factory=lambda: list(VARIANTS), metadata={"help": f"Among {VARIANTS}."})
    batch_size: int = field(default=16, metadata={"help": "Completions per step (GPU; 4 with --cpu)."})
    completion_length: int = field(default=64, metadata={"help": "Tokens per completion (GPU; 4 with --cpu)."})
    repeats: int = field(default=2, metadata={"help": "Interleaved repeats of every training run (1 with --cpu)."})
    new_tokens: int = field(default=64, metadata={"help": "Generated tokens per row (GPU; 4 with --cpu)."})
    num_prompts: int = field(default=16, metadata={"help": "Rows of the generation batch, one weighting each."})
    budget_minutes: float = field(
        default=6.5, metadata={"help": "Stop adding training repeats once this much time has gone (the rest runs)."}
    )
    output_json: str | None = field(
        default=None, metadata={"help": "Default: benchmarks/results/gpu_check[_cpu].json"}
    )

    def __post_init__(self):
        if not self.cpu and not torch.cuda.is_available():
            raise ValueError("No CUDA GPU is visible: run on a GPU machine, or pass --cpu for the tiny CPU run.")
        if self.cpu:
            self.num_layers = self.num_layers or 2
            self.batch_size, self.completion_length, self.repeats = 4, 4, 1
            self.new_tokens, self.num_prompts = 4, 4
        if self.output_json is None:
            self.output_json = os.path.join("benchmarks", "results", f"gpu_check{'_cpu' if self.cpu else ''}.json")
        unknown = set(self.variants) - set(VARIANTS)
        if unknown:
            raise ValueError(f"Unknown variants {sorted(unknown)}: choose among {VARIANTS}.")

    @property
    def device(self) -> torch.device:
        return torch.device("cpu" if self.cpu else "cuda")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32 if self.cpu else torch.bfloat16

    @property
    def model_size(self) -> str:
        return "qwen-tiny" if self.cpu else "qwen2.5-0.5b"

    def training_settings(self) -> TrainingSettings:
        return TrainingSettings(
            quick=self.cpu,
            shape="qwen2.5-0.5b",
            num_layers=self.num_layers,
            batch_size=self.batch_size,
            completion_length=self.completion_length,
            beta=0.05,
            repeats=self.repeats,
            warmup_steps=1,
            timed_steps=1 if self.cpu else 2,
        )


def base_model(args: GpuCheckArguments):
    """The base model in bf16 (as Qwen2.5 ships) on a GPU; in fp32 with `--cpu`, where bf16 matmuls are emulated
    (about 100× slower on CPUs without bf16 instructions)."""
    model = workload.make_base_model(args.model_size, seed=0, num_layers=args.num_layers)
    return model.to(args.dtype)


class PeakMemory:
    """Peak bytes allocated inside the block: `torch.cuda.max_memory_allocated` on a GPU, the profiler's live-tensor
    peak on CPU (as `train_step.py` measures it)."""

    def __init__(self, device: torch.device):
        self.device, self.peak_bytes = device, 0

    def __enter__(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self._start = torch.cuda.memory_allocated()
        else:
            self._profiler = torch.profiler.profile(
                activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
            )
            self._profiler.__enter__()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak_bytes = torch.cuda.max_memory_allocated() - self._start
        else:
            self._profiler.__exit__(*exc)
            self.peak_bytes = peak_live_tensor_bytes(self._profiler)
        return False


def train_run(run: TrainingRun, settings: TrainingSettings, model, args: GpuCheckArguments, quantization_config=None):
    """Median step time after one warm-up step, and peak memory, of a fresh bf16 trainer for `run`."""
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as output_dir, PeakMemory(args.device) as memory:
        trainer = workload.build_trainer(
            run,
            settings,
            settings.warmup_steps + settings.timed_steps,
            output_dir,
            [timer],
            model=model,
            bf16=not args.cpu,
            quantization_config=quantization_config,
        )
        trainer.train()
        # PEFT starts every LoRA `B` at zero: non-zero after training means the adapter trained.
        lora_moved = any(p.abs().sum() > 0 for n, p in trainer.model.named_parameters() if "lora_B" in n)
        quantized_layers = sum(type(m).__name__ == "Linear4bit" for m in trainer.model.modules())
        del trainer
    return {
        "step_seconds": statistics.median(timer.durations[settings.warmup_steps :]),
        "peak_bytes": memory.peak_bytes,
        "lora_moved": lora_moved,
        "linear4bit_layers": quantized_layers,
    }


def check_training(args: GpuCheckArguments, started: float) -> tuple[list[Figure], list[dict]]:
    settings = args.training_settings()
    base = base_model(args)
    order = [TrainingRun(v, m, args.batch_size) for m in args.num_objectives for v in ("baseline", *args.variants)]
    times = {run: Measurement(run.label, "s") for run in order}
    peaks = {run: Measurement(run.label, "bytes") for run in order}
    records = []
    for repeat in range(args.repeats):
        if repeat and time.perf_counter() - started > 60 * args.budget_minutes * 0.6:
            print(f"training: stopping after {repeat} repeats to stay within the budget", flush=True)
            break
        for run in order:
            result = train_run(run, settings, copy.deepcopy(base), args)
            times[run].samples.append(result["step_seconds"])
            peaks[run].samples.append(result["peak_bytes"])
            records.append({"run": run.label, "repeat": repeat, **result})
            print(
                f"  {run.label}: {result['step_seconds']:.3f} s/step, {result['peak_bytes'] / 2**20:.0f} MiB",
                flush=True,
            )
    figures = []
    for m in args.num_objectives:
        baseline = TrainingRun("baseline", m, args.batch_size)
        for variant in args.variants:
            run = TrainingRun(variant, m, args.batch_size)
            memory_target = None if variant == "logit-unfused" else ("<=", 1.10)
            figures.append(
                Figure(f"step_time/{variant}/m{m}", times[baseline], times[run], time_target(variant, m, "qwen"))
            )
            figures.append(Figure(f"peak_memory/{variant}/m{m}", peaks[baseline], peaks[run], memory_target))
    return figures, records


def check_qlora(args: GpuCheckArguments) -> dict:
    """Plain RLOO and full-CLP (m = 2) on the base model loaded in 4 bits (NF4, bf16 compute) by bitsandbytes."""
    import bitsandbytes as bnb
    from transformers import BitsAndBytesConfig

    quantization = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=args.dtype, bnb_4bit_use_double_quant=True
    )
    settings = args.training_settings()
    settings.timed_steps = 1
    results = {"bitsandbytes": bnb.__version__}
    with tempfile.TemporaryDirectory() as path:
        base_model(args).save_pretrained(path)
        demo.make_byte_tokenizer().save_pretrained(path)
        for variant in ("baseline", "full"):
            run = TrainingRun(variant, 2, args.batch_size)
            try:
                result = train_run(run, settings, path, args, quantization_config=quantization)
            except Exception as error:  # bitsandbytes without a usable backend (CPU builds): recorded, not fatal
                if not args.cpu:
                    raise
                return {**results, "skipped": f"{type(error).__name__}: {error}"[:300]}
            results[variant] = result
    results["step_time_ratio"] = results["full"]["step_seconds"] / results["baseline"]["step_seconds"]
    results["peak_memory_ratio"] = results["full"]["peak_bytes"] / results["baseline"]["peak_bytes"]
    results["passed"] = all(
        results[v]["lora_moved"] and results[v]["linear4bit_layers"] > 0 for v in ("baseline", "full")
    )
    return results


def check_generation(args: GpuCheckArguments) -> list[Figure]:
    base = base_model(args).to(args.device).eval()
    tokenizer = demo.make_byte_tokenizer()
    prompts = list(demo.make_prompt_dataset(args.num_prompts, seed=1)["prompt"])
    inputs = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left").to(args.device)
    method_args = argparse_like(new_tokens=args.new_tokens, baselines=["plain_lora"], conditioning_features=["linear"])
    tokens = args.num_prompts * args.new_tokens
    figures = []
    for m in args.num_objectives:
        weights = sample_group_weights("dirichlet", args.num_prompts, m, seed=0, stream=(2, 0))
        for variant in [v for v in args.variants if v != "logit-unfused"]:
            methods = build_methods(base, variant, m, inputs, weights, method_args)
            for method in methods.values():  # warm-up
                timed(method)
            throughput = {
                "plain_lora": Measurement("plain LoRA, one generate", "tokens/s"),
                "clp": Measurement(f"{variant}-CLP, per-row weightings, one generate", "tokens/s"),
            }
            for _ in range(3):
                for name in ("plain_lora", "clp"):
                    throughput[name].samples.append(tokens / timed(methods[name]))
            figures.append(
                Figure(
                    f"generation/{variant}/m{m}/vs_plain_lora",
                    throughput["plain_lora"],
                    throughput["clp"],
                    (">=", 0.9),
                )
            )
            del methods
    return figures


class argparse_like:  # noqa: N801 - stands in for the generation benchmark's arguments
    def __init__(self, **values):
        self.__dict__.update(values)


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def check_identities(args: GpuCheckArguments) -> dict:
    """Mixed batch = rows alone = merged model, and tiled head = materialised log-probs, in bf16."""
    names = workload.objective_names(2)
    weights = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.3, 0.7], [0.8, 0.2]])
    input_ids = torch.randint(3, 259, (4, 24), generator=torch.Generator().manual_seed(0)).to(args.device)
    results = {}
    for variant in ("full", "attn", "logit"):
        steer = SteerableModel.from_base_model(base_model(args), names, workload.lora_config(), variant)
        steer = steer.to(args.device).eval()
        generator = torch.Generator().manual_seed(1)
        for name, parameter in steer.named_parameters():
            if "lora_B" in name:  # PEFT starts B at zero, which would make every identity trivial
                parameter.data.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
        with torch.no_grad():
            with steer.condition(weights):
                mixed = steer(input_ids).logits  # (4, T, V), one forward with a weighting per row
            fp32 = copy.deepcopy(steer).float()
            with fp32.condition(weights):
                reference = fp32(input_ids).logits
            del fp32
            alone, merged = [], []
            for row in range(len(weights)):
                with steer.condition(weights[row : row + 1]):
                    alone.append(steer(input_ids[row : row + 1]).logits)
                merged_model = steer.merge(weights[row])
                merged.append(merged_model(input_ids[row : row + 1]).logits)
                del merged_model
            alone, merged = torch.cat(alone), torch.cat(merged)
            bf16_error = max_abs_diff(mixed, reference)
            tolerance = max(2 * bf16_error, 1e-2)
            checks = {
                "mixed_vs_alone": max_abs_diff(mixed, alone),
                "mixed_vs_merged": max_abs_diff(mixed, merged),
            }
            passed = all(value <= tolerance for value in checks.values())
            if variant == "logit":
                # Log-probabilities are ~log V ≈ 12 where bf16's spacing is 0.06: the tiled head (fp32 statistics)
                # must be no further from the fp32 model than the materialised bf16 logits are.
                logits_to_keep, targets = 8, input_ids[:, -8:]
                with steer.condition(weights):
                    tiled, _ = conditioned_head_logps_and_entropies(
                        steer.model,
                        steer.model.get_output_embeddings(),
                        input_ids,
                        torch.ones_like(input_ids),
                        logits_to_keep,
                        steer.conditioner.conditioning_vectors,
                    )
                positions = slice(-logits_to_keep - 1, -1)
                fp32_logps = selective_log_softmax(reference[:, positions].float(), targets)
                materialised_error = max_abs_diff(
                    selective_log_softmax(mixed[:, positions].float(), targets), fp32_logps
                )
                checks["materialised_logps_vs_fp32"] = materialised_error
                checks["tiled_head_logps_vs_fp32"] = max_abs_diff(tiled, fp32_logps)
                checks["logps_tolerance"] = max(2 * materialised_error, 1e-2)
                passed = passed and checks["tiled_head_logps_vs_fp32"] <= checks["logps_tolerance"]
        results[variant] = {"bf16_vs_fp32_logits": bf16_error, "tolerance": tolerance, **checks, "passed": passed}
        print(f"  identities {variant}: {results[variant]}", flush=True)
        del steer
    return results


def main(args: GpuCheckArguments) -> dict:
    started = time.perf_counter()
    machine = describe_machine()
    if not args.cpu:
        machine["gpu_memory_bytes"] = torch.cuda.get_device_properties(0).total_memory
        machine["cuda"] = torch.version.cuda
    print(machine_line(machine))
    print(workload.describe_model(args.model_size, args.num_layers))
    report = {"command": "python " + " ".join(sys.argv), "machine": machine, "settings": vars(args).copy()}
    report["settings"]["device"] = str(args.device)

    def section(name, function, *extra):
        section_started = time.perf_counter()
        print(f"== {name}", flush=True)
        value = function(args, *extra)
        report.setdefault("section_seconds", {})[name] = time.perf_counter() - section_started
        return value

    figures, report["training_runs"] = section("training", check_training, started)
    report["qlora"] = section("qlora", check_qlora)
    figures += section("generation", check_generation)
    report["identities"] = section("identities", check_identities)
    report["figures"] = [figure.record() for figure in figures]
    report["wall_seconds"] = time.perf_counter() - started
    for figure in figures:
        print(figure.line())
    print(f"QLORA {json.dumps({k: v for k, v in report['qlora'].items() if 'ratio' in k or k == 'skipped'})}")
    print(f"IDENTITIES passed: {all(r['passed'] for r in report['identities'].values())}")
    print(f"WALL {report['wall_seconds']:.0f} s")
    os.makedirs(os.path.dirname(args.output_json) or ".", exist_ok=True)
    with open(args.output_json, "w") as handle:
        json.dump(report, handle, indent=2)
    print(f"wrote {args.output_json}")
    return report


if __name__ == "__main__":
    warnings.filterwarnings("ignore", category=FutureWarning)
    (check_args,) = TrlParser(GpuCheckArguments).parse_args_and_config()
    main(check_args)
