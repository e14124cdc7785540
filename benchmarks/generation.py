"""Steerable generation throughput: 16 prompts, each with its own weighting, against the ways to get the same rows
without CLP's per-row conditioning.

    python benchmarks/generation.py            # 20.7M-parameter Llama (the figures in docs/benchmarks.md)
    python benchmarks/generation.py --quick    # the demo's 0.2M-parameter Llama, under 2 minutes on 2 CPU cores
    python benchmarks/generation.py --quick --conditioning_features linear shared pairwise \
        --baselines plain_lora plain_lora_same_rank --num_objectives 2 --variants full
                                               # an adapter with shared and pairwise blocks (K = 4 for m = 2)
    python benchmarks/generation.py --shape qwen2.5-0.5b --baselines plain_lora --num_prompts 8 --new_tokens 16
                                               # the Qwen2.5-0.5B shape (24 layers), against one plain LoRA only
    python benchmarks/generation.py --model_path models/smollm2-135m-instruct --baselines plain_lora \
        --num_prompts 12 --new_tokens 24 --num_objectives 2 --variants full attn
                                               # a real model from a local folder (its own tokenizer)

Every method produces the same work: 16 rows × `--new_tokens` sampled tokens (EOS cannot end a row early), from the
same left-padded prompts, seed and base model. Figures are tokens-per-second ratios `CLP / baseline` (higher is
better), one `RATIO` line each, then the JSON in `--output_json`:

- `vs_plain_lora`: the same batch through a plain PEFT LoRA model of the per-objective rank, one `generate` call
  (what serving a single fixed trade-off costs). Target ≥ 0.9.
- `vs_plain_lora_same_rank` (opt-in): a plain LoRA of the CLP adapter's rank K·r (K blocks per conditioned layer: m
  with the default `--conditioning_features linear`, more with `shared` or `pairwise`), one `generate` call: per-row
  conditioning should cost what one LoRA of that rank costs. Target ≥ 0.9.
- `vs_rewarded_soups`: Rewarded Soups, one model per weighting: `SteerableModel.merge(w)` (a copy of the model with
  the blocks mixed and merged) then `generate` on that row, for each of the 16 weightings. Target ≥ 5.
- `vs_dera`: DeRA-style decoding, `trl_clp.decoding.generate_with_mixed_logits` with an aligned and a reference
  component: two forward passes per token. Target ≥ 1.8.
- `vs_dera_same_loop` (no target): the same sampling loop with one component, so the ratio isolates the second
  forward pass from the difference between that loop and `transformers`' `generate`.

The CLP model is `SteerableModel.generate(..., weights=(16, m))`: one `generate` call, rows conditioned
individually. LoRA `B` matrices are drawn at random (a trained adapter's cost) so that weightings change outputs.
"""

from __future__ import annotations

import copy
import os
import sys
import time
from dataclasses import dataclass, field

# Measure this checkout's trl_clp, not a copy installed in site-packages.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
import workload
from peft import get_peft_model
from reporting import Figure, Measurement, describe_machine, machine_line, write_report
from trl import TrlParser

from trl_clp import SteerableModel, demo
from trl_clp.conditioning.features import check_conditioning_features, num_blocks_of
from trl_clp.decoding import dera_components, generate_with_mixed_logits
from trl_clp.sampling import sample_group_weights

BASELINES = ("plain_lora", "plain_lora_same_rank", "rewarded_soups", "dera")


@dataclass
class BenchmarkArguments:
    quick: bool = field(default=False, metadata={"help": "Tiny demo model: under 2 minutes."})
    shape: str = field(
        default="20m",
        metadata={
            "help": "'20m' (Llama, byte vocabulary) or 'qwen2.5-0.5b' (Qwen2.5-0.5B architecture, random weights)."
        },
    )
    num_layers: int | None = field(default=None, metadata={"help": "Override the model's depth (CPU time)."})
    model_path: str | None = field(
        default=None,
        metadata={
            "help": "A local transformers folder (model and tokenizer, e.g. models/smollm2-135m-instruct, the folder `trl-clp convert-gguf` writes), "
            "loaded in fp32 instead of building `shape`."
        },
    )
    baselines: list[str] = field(
        default_factory=lambda: ["plain_lora", "rewarded_soups", "dera"],
        metadata={
            "help": "Baselines to measure against, among plain_lora, plain_lora_same_rank (a plain LoRA of the CLP "
            "adapter's rank, K·r), rewarded_soups and dera."
        },
    )
    conditioning_features: list[str] = field(
        default_factory=lambda: ["linear"],
        metadata={
            "help": "The CLP adapter's conditioning features (as the trainers' field): K blocks of rank r per "
            "conditioned layer, i.e. one LoRA of rank K·r per row. Other than ['linear'], the figures' names end "
            "in the features."
        },
    )
    variants: list[str] = field(
        default_factory=lambda: ["full", "attn", "logit"], metadata={"help": "CLP conditioning variants."}
    )
    num_objectives: list[int] = field(default_factory=lambda: [2, 5], metadata={"help": "m values."})
    num_prompts: int = field(default=16, metadata={"help": "Rows of the batch, each with its own weighting."})
    new_tokens: int = field(default=32, metadata={"help": "Sampled tokens per row."})
    repeats: int = field(default=3, metadata={"help": "Interleaved repeats of every method."})
    output_json: str | None = field(
        default=None, metadata={"help": "Default: benchmarks/results/generation[_quick].json."}
    )

    def __post_init__(self):
        workload.check_model_source(self.quick, self.shape, self.num_layers, self.model_path)
        if self.output_json is None:
            shape = "" if self.shape == "20m" else f"_{self.shape}"
            shape = f"_{os.path.basename(os.path.normpath(self.model_path))}" if self.model_path else shape
            self.output_json = os.path.join(
                "benchmarks", "results", f"generation{shape}{'_quick' if self.quick else ''}.json"
            )
        unknown = set(self.baselines) - set(BASELINES)
        if unknown:
            raise ValueError(f"Unknown baselines {sorted(unknown)}: choose among {', '.join(BASELINES)}.")
        self.conditioning_features = list(check_conditioning_features(self.conditioning_features))


def randomize_lora_b(model: torch.nn.Module, seed: int) -> None:
    """Give every `lora_B` small random values: PEFT initialises them to zero, which hides the weighting."""
    generator = torch.Generator().manual_seed(seed)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            parameter.data.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)


def timed(function) -> float:
    """Seconds taken by `function()`, started from the same sampling seed for every method."""
    torch.manual_seed(0)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.no_grad():
        function()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def build_methods(
    base, variant: str, num_objectives: int, inputs: dict, weights: torch.Tensor, args, pad_token_id: int = 0
) -> dict:
    """Each method as a zero-argument callable that generates `new_tokens` for every row (padding with
    `pad_token_id`, the tokenizer's)."""
    names = workload.objective_names(num_objectives)
    steer = SteerableModel.from_base_model(
        copy.deepcopy(base),
        names,
        workload.lora_config(),
        variant,
        conditioning_features=args.conditioning_features,
    ).eval()
    randomize_lora_b(steer, seed=1)
    plain = get_peft_model(copy.deepcopy(base), workload.lora_config()).eval()
    randomize_lora_b(plain, seed=1)
    plain_same_rank = None
    if "plain_lora_same_rank" in args.baselines:  # every layer at the CLP adapter's conditioned rank, K·r
        same_rank = workload.lora_config()
        same_rank.r *= steer.conditioner.num_blocks
        plain_same_rank = get_peft_model(copy.deepcopy(base), same_rank).eval()
        randomize_lora_b(plain_same_rank, seed=1)

    # `min_new_tokens` suppresses EOS so that every row samples exactly `new_tokens` tokens.
    sampling = {
        "do_sample": True,
        "max_new_tokens": args.new_tokens,
        "min_new_tokens": args.new_tokens,
        "pad_token_id": pad_token_id,
    }
    input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]
    # DeRA's strength λ per row; its aligned component is the row's weighting.
    strength = torch.linspace(0.25, 1.0, input_ids.size(0))
    # `eos_token_id=-1` matches no token: like `min_new_tokens`, no row ends early.
    loop = {"max_new_tokens": args.new_tokens, "eos_token_id": -1, "pad_token_id": pad_token_id}

    def rewarded_soups():
        for row in range(input_ids.size(0)):
            prompt = input_ids[row : row + 1, attention_mask[row].bool()]  # (1, T_row): batch of one, no padding
            merged = steer.merge(weights[row])
            merged.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), **sampling)

    methods = {
        "plain_lora": lambda: plain.generate(input_ids=input_ids, attention_mask=attention_mask, **sampling),
        "plain_lora_same_rank": lambda: plain_same_rank.generate(
            input_ids=input_ids, attention_mask=attention_mask, **sampling
        ),
        "clp": lambda: steer.generate(input_ids, attention_mask=attention_mask, weights=weights, **sampling),
        "rewarded_soups": rewarded_soups,
        "dera": lambda: generate_with_mixed_logits(
            steer, input_ids, attention_mask, dera_components(weights, strength), **loop
        ),
        "clp_same_loop": lambda: generate_with_mixed_logits(
            steer, input_ids, attention_mask, [(weights, torch.ones(input_ids.size(0)))], **loop
        ),
    }
    kept = {"clp", *args.baselines} | ({"clp_same_loop"} if "dera" in args.baselines else set())
    return {name: method for name, method in methods.items() if name in kept}


def main(args: BenchmarkArguments):
    machine = describe_machine()
    print(machine_line(machine))
    if args.quick:
        print("QUICK: demo model, not the figures of docs/benchmarks.md")
    size = workload.QUICK_SIZES[args.shape] if args.quick else args.shape
    base = workload.base_model(size, args.num_layers, args.model_path).eval()
    print(workload.describe_model(size, args.num_layers, args.model_path))
    tokenizer = workload.base_tokenizer(args.model_path)
    prompts = list(demo.make_prompt_dataset(args.num_prompts, seed=1)["prompt"])
    inputs = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
    tokens = args.num_prompts * args.new_tokens

    labels = {
        "plain_lora": "plain LoRA, one generate",
        "plain_lora_same_rank": "plain LoRA of the CLP rank K·r, one generate",
        "rewarded_soups": "Rewarded Soups, merge + generate per weighting",
        "dera": "DeRA, 2 forwards per token",
        "clp_same_loop": "CLP in the DeRA sampling loop",
    }
    targets = {
        "plain_lora": (">=", 0.9),
        "plain_lora_same_rank": (">=", 0.9),
        "rewarded_soups": (">=", 5.0),
        "dera": (">=", 1.8),
    }
    features = "" if args.conditioning_features == ["linear"] else "/" + "+".join(args.conditioning_features)
    figures = []
    blocks = {}
    started = time.perf_counter()
    for num_objectives in args.num_objectives:
        blocks[f"m{num_objectives}"] = num_blocks_of(args.conditioning_features, num_objectives)
        print(
            f"m={num_objectives}, features {args.conditioning_features}: {blocks[f'm{num_objectives}']} blocks per "
            f"conditioned layer, one LoRA of rank {blocks[f'm{num_objectives}'] * workload.LORA['r']} per row"
        )
        # 16 distinct weightings, one per row.
        weights = sample_group_weights("dirichlet", args.num_prompts, num_objectives, seed=0, stream=(2, 0))
        for variant in args.variants:
            methods = build_methods(base, variant, num_objectives, inputs, weights, args, tokenizer.pad_token_id)
            for method in methods.values():  # warm-up: first-call allocations and lazy initialisation
                timed(method)
            labels["clp"] = f"{variant}-CLP, per-row weightings, one generate"
            throughput = {name: Measurement(labels[name], "tokens/s") for name in methods}
            for _ in range(args.repeats):
                for name, method in methods.items():  # interleaved: every repeat runs every method once
                    throughput[name].samples.append(tokens / timed(method))
            cell = f"generation/{variant}/m{num_objectives}{features}"
            for name in args.baselines:
                figures.append(Figure(f"{cell}/vs_{name}", throughput[name], throughput["clp"], targets[name]))
            if "dera" in args.baselines:
                figures.append(Figure(f"{cell}/vs_dera_same_loop", throughput["dera"], throughput["clp_same_loop"]))
            print(f"{variant} m={num_objectives} done ({time.perf_counter() - started:.0f} s)", flush=True)

    for figure in figures:
        print(figure.line())
    settings = {
        **vars(args),
        "model_parameters": workload.count_parameters(base),
        "lora": workload.LORA,
        "blocks_per_conditioned_layer": blocks,
    }
    write_report(args.output_json, figures, machine, settings, {"wall_seconds": time.perf_counter() - started})


if __name__ == "__main__":
    (benchmark_args,) = TrlParser(BenchmarkArguments).parse_args_and_config()
    main(benchmark_args)
