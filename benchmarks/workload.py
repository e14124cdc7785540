"""The workload the benchmarks share: base model, tokenizer, prompts, LoRA, reward functions and training runs.

A CLP run and its baseline must see the same model, inputs, rewards and settings, so both are built here, from
seeds only: no downloads. `--quick` swaps the ≥20M-parameter Llama for the demo's tiny one.

`--shape qwen2.5-0.5b` runs the Qwen2.5-0.5B architecture instead (hidden 896, 14 heads, 2 KV heads, MLP 4864, a
151,936-entry vocabulary, tied embeddings; random weights from a `Qwen2Config`, nothing downloaded), with
`--num_layers` to cut its 24 layers for CPU time. Its ids above the byte tokenizer's 259 decode to nothing, which
only shortens the rewarded text.

`--model_path DIR` loads a local transformers folder instead (model and tokenizer, e.g. SmolLM2-135M-Instruct
converted by `trl-clp convert-gguf`), in fp32; its own tokenizer encodes the prompts and decodes the completions.
The LoRA targets stay the Llama projection names (Qwen2, Mistral and Llama share them).
"""

from __future__ import annotations

import gc
import os
import statistics
import string
import tempfile
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from peft import LoraConfig
from reporting import Figure, Measurement, describe_machine, machine_line
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaForCausalLM,
    PreTrainedModel,
    PrinterCallback,
    Qwen2Config,
    Qwen2ForCausalLM,
    TrainerCallback,
)
from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer
from trl.trainer.utils import selective_log_softmax, selective_log_softmax_and_entropy

from trl_clp import (
    MultiObjectiveConfig,
    MultiObjectiveGRPOConfig,
    MultiObjectiveGRPOTrainer,
    MultiObjectiveTrainer,
    demo,
)
from trl_clp.conditioning.features import check_conditioning_features
from trl_clp.rewards import (
    _character_fraction,
    brevity_reward,
    lowercase_reward,
    source_coverage_reward,
    titlecase_reward,
    uppercase_reward,
)

# hidden 512, 6 layers, MLP 1536: 20.7M parameters, the smallest "real" shape the issue asks for; the demo model
# (0.2M) for `--quick`.
MODEL_SIZES = {
    "20m": {"hidden_size": 512, "num_layers": 6, "num_heads": 8, "intermediate_size": 1536},
    "tiny": {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 128},
}
# The Qwen2.5-0.5B architecture (its published config), and a 2-layer, 64-wide one with the same vocabulary for
# `--quick`.
QWEN_SHAPES = {
    "qwen2.5-0.5b": {
        "hidden_size": 896,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "intermediate_size": 4864,
        "vocab_size": 151_936,
    },
    "qwen-tiny": {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
        "vocab_size": 151_936,
    },
}
QUICK_SIZES = {"20m": "tiny", "qwen2.5-0.5b": "qwen-tiny"}
# The LoRA of one objective: the baseline's single LoRA and each CLP block have this rank.
LORA = {"r": 8, "lora_alpha": 16, "target_modules": demo.LLAMA_LINEAR_MODULES}


def qwen_config(size: str, num_layers: int | None = None) -> Qwen2Config:
    shape = {**QWEN_SHAPES[size], **({"num_hidden_layers": num_layers} if num_layers else {})}
    return Qwen2Config(
        **shape,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )


def make_base_model(size: str, seed: int = 0, num_layers: int | None = None) -> LlamaForCausalLM | Qwen2ForCausalLM:
    """A randomly initialised model whose ids match the byte tokenizer's; the same `seed` gives the same weights.

    `size` is a key of `MODEL_SIZES` (Llama) or `QWEN_SHAPES`; `num_layers` overrides the depth.
    """
    if size in QWEN_SHAPES:
        torch.manual_seed(seed)
        return Qwen2ForCausalLM(qwen_config(size, num_layers))
    shape = {**MODEL_SIZES[size], **({"num_layers": num_layers} if num_layers else {})}
    return demo.make_tiny_llama(seed=seed, **shape)


def count_parameters(model: torch.nn.Module) -> int:
    """Distinct parameters (a tied output layer counts once)."""
    return sum(p.numel() for p in model.parameters())


def check_model_source(quick: bool, shape: str, num_layers: int | None, model_path: str | None) -> None:
    """Raise a `ValueError` naming the fix if `--model_path` is not a model folder or is combined with a built shape."""
    if model_path is None:
        return
    if not os.path.isfile(os.path.join(model_path, "config.json")):
        raise ValueError(
            f"--model_path {model_path!r} is not a transformers model folder (no config.json): give a folder written "
            "by `save_pretrained` (or `trl-clp convert-gguf`), with its tokenizer."
        )
    if quick or shape != "20m" or num_layers is not None:
        raise ValueError(
            "--model_path loads that folder's model as it is: remove --quick, --shape and --num_layers, which build "
            "a model instead."
        )


def load_base_model(model_path: str) -> PreTrainedModel:
    """The model of a local transformers folder, in fp32 (the precision of every benchmark model on CPU)."""
    return AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)


def base_model(size: str, num_layers: int | None = None, model_path: str | None = None) -> PreTrainedModel:
    """The benchmark's base model: the folder at `model_path` if given, else the shape `size` built from seed 0."""
    return load_base_model(model_path) if model_path else make_base_model(size, seed=0, num_layers=num_layers)


def base_tokenizer(model_path: str | None = None):
    """The folder's own tokenizer with `model_path` (padding with EOS if it has no pad token, as TRL does), else the
    byte tokenizer of the built shapes."""
    if model_path is None:
        return demo.make_byte_tokenizer()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def model_skeleton(size: str, num_layers: int | None = None, model_path: str | None = None) -> PreTrainedModel:
    """The base model's shapes only, on the meta device: nothing allocated, nothing read but a config."""
    with torch.device("meta"):
        if model_path:
            return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_path))
        return make_base_model(size, num_layers=num_layers)


def describe_model(size: str, num_layers: int | None = None, model_path: str | None = None) -> str:
    model = model_skeleton(size, num_layers, model_path)
    config = model.config
    return (
        f"MODEL {model_path or size}: {count_parameters(model) / 1e6:.1f}M parameters (hidden {config.hidden_size}, "
        f"{config.num_hidden_layers} layers, vocabulary {config.vocab_size}, tied embeddings "
        f"{config.tie_word_embeddings}); LoRA r={LORA['r']} per objective"
    )


def announce_training_benchmark(settings: StepSettings) -> tuple[dict, int]:
    """Print the machine and model lines of a training benchmark; return the machine and the parameter count."""
    machine = describe_machine()
    print(machine_line(machine))
    if settings.quick:
        print("QUICK: tiny model; not the figures of docs/benchmarks.md")
    parameters = count_parameters(model_skeleton(settings.model_size, settings.num_layers, settings.model_path))
    print(describe_model(settings.model_size, settings.num_layers, settings.model_path))
    return machine, parameters


def lora_config() -> LoraConfig:
    return LoraConfig(**LORA)


def digit_reward(completions, **kwargs) -> list[float]:
    """Fraction of digits."""
    return _character_fraction(completions, str.isdigit)


def space_reward(completions, **kwargs) -> list[float]:
    """Fraction of whitespace."""
    return _character_fraction(completions, str.isspace)


def punctuation_reward(completions, **kwargs) -> list[float]:
    """Fraction of ASCII punctuation."""
    return _character_fraction(completions, lambda c: c in string.punctuation)


def vowel_reward(completions, **kwargs) -> list[float]:
    """Fraction of vowels."""
    return _character_fraction(completions, lambda c: c in "aeiouAEIOU")


def distinct_reward(completions, **kwargs) -> list[float]:
    """Distinct characters over length: low for repetitive answers."""
    return [len(set(text)) / len(text) if text else 0.0 for text in completions]


# Cheap, deterministic rewards: the benchmark measures the trainer, not the reward functions. The first m are used.
REWARD_FUNCS = [
    lowercase_reward,
    uppercase_reward,
    titlecase_reward,
    brevity_reward,
    source_coverage_reward,
    digit_reward,
    space_reward,
    punctuation_reward,
    vowel_reward,
    distinct_reward,
]


def reward_funcs(num_objectives: int) -> list:
    if num_objectives > len(REWARD_FUNCS):
        raise ValueError(f"At most {len(REWARD_FUNCS)} objectives are defined, got {num_objectives}.")
    return REWARD_FUNCS[:num_objectives]


def objective_names(num_objectives: int) -> list[str]:
    return [func.__name__.removesuffix("_reward") for func in reward_funcs(num_objectives)]


# ------------------------------------------------------------------------------------------------ training runs


@dataclass
class StepSettings:
    """What every timed training run shares, baseline and CLP alike, online or offline."""

    quick: bool = field(default=False, metadata={"help": "Tiny demo model and fewer figures: under 2 minutes."})
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
            "loaded in fp32 instead of building `shape`; memory probes load it in their own process too."
        },
    )
    batch_size: int = field(default=16, metadata={"help": "Completions per step (`per_device_train_batch_size`)."})
    completion_length: int = field(
        default=32, metadata={"help": "Every completion has exactly this many tokens (EOS suppressed before it)."}
    )
    beta: float = field(default=0.05, metadata={"help": "KL weight of both trainers (so both score the reference)."})
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Gradient checkpointing in both trainers (TRL's default is on)."}
    )
    repeats: int = field(default=3, metadata={"help": "Interleaved repeats of every timed configuration."})
    warmup_steps: int = field(default=1, metadata={"help": "Untimed steps at the start of each run."})
    timed_steps: int = field(default=2, metadata={"help": "Timed steps per run; a run's time is their median."})
    conditioning_features: list[str] = field(
        default_factory=lambda: ["linear"],
        metadata={
            "help": "The CLP trainers' conditioning features (K blocks of rank r per conditioned layer); the "
            "baselines keep one LoRA of rank r. Other than ['linear'], the figures' names end in the features."
        },
    )

    def __post_init__(self):
        check_model_source(self.quick, self.shape, self.num_layers, self.model_path)
        self.conditioning_features = list(check_conditioning_features(self.conditioning_features))

    @property
    def features_suffix(self) -> str:
        """What the figures' names end in: nothing for the default features, else `/linear+shared...`."""
        return "" if self.conditioning_features == ["linear"] else "/" + "+".join(self.conditioning_features)

    @property
    def model_size(self) -> str:
        if self.shape not in QUICK_SIZES:
            raise ValueError(f"Unknown shape {self.shape!r}: choose among {sorted(QUICK_SIZES)}.")
        return QUICK_SIZES[self.shape] if self.quick else self.shape


@dataclass
class TrainingSettings(StepSettings):
    """What every timed online training run shares: the step settings and the group size."""

    num_generations: int = field(default=4, metadata={"help": "Completions per prompt."})


class MaterialisingLogitTrainer(MultiObjectiveTrainer):
    """logit-CLP scored the way it was before the tiled head: the `(B, C, V)` logits materialised (for comparison)."""

    def _unfused_logps_and_entropies(
        self, model, input_ids, attention_mask, logits_to_keep, batch_size=None, compute_entropy=False, **kwargs
    ):
        with self.accelerator.autocast():
            logits = model(
                input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=logits_to_keep + 1
            ).logits
        logits = logits[:, :-1]  # (B, C, V)
        targets = input_ids[:, -logits_to_keep:]  # (B, C)
        if compute_entropy:
            logps, entropies = selective_log_softmax_and_entropy(logits, targets, temperature=self.temperature)
            return logps, entropies, None
        return selective_log_softmax(logits, targets, temperature=self.temperature), None, None


class TrainingRun(NamedTuple):
    """One training configuration; `variant` is "baseline" for plain `RLOOTrainer` with one LoRA, "logit-unfused"
    for logit-CLP through the materialised logits, "grpo-baseline" for plain `GRPOTrainer` with one LoRA,
    "grpo-<variant>" for `MultiObjectiveGRPOTrainer`, "dpo-baseline" and "dpo-<variant>" likewise for DPO
    (`benchmarks/dpo_step.py`)."""

    variant: str
    num_objectives: int
    batch_size: int

    @property
    def label(self) -> str:
        baselines = {"baseline": "rloo+lora", "grpo-baseline": "grpo+lora", "dpo-baseline": "dpo+lora"}
        name = baselines.get(self.variant, f"{self.variant}-clp")
        return f"{name} m={self.num_objectives} B={self.batch_size}"

    @classmethod
    def parse(cls, text: str) -> TrainingRun:
        variant, m, batch = text.split(",")
        return cls(variant, int(m), int(batch))

    def key(self) -> str:
        return f"{self.variant},{self.num_objectives},{self.batch_size}"


def synchronize():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step, generation included (TRL generates inside `training_step`)."""

    def __init__(self):
        self.durations: list[float] = []
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        synchronize()
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        synchronize()
        self.durations.append(time.perf_counter() - self._start)


def timed_run_config(settings, max_steps: int) -> dict:
    """The config fields every timed training run shares, baseline and CLP, RLOO and DPO alike: the KL weight, a fixed
    learning rate and seed, and no logging, saving, reporting or progress bar inside the timed steps."""
    return {
        "beta": settings.beta,
        "max_steps": max_steps,
        "learning_rate": 1e-4,
        "logging_steps": max_steps,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "seed": 0,
        "gradient_checkpointing": settings.gradient_checkpointing,
    }


def build_trainer(
    run: TrainingRun,
    settings: TrainingSettings,
    max_steps: int,
    output_dir: str,
    callbacks=(),
    model=None,
    bf16: bool | None = None,
    quantization_config=None,
):
    """`RLOOTrainer` (baseline) or `MultiObjectiveTrainer` for `run`; everything but the trainer class is shared.

    `model` (an instance or a local path) replaces the settings' fresh base model; `bf16` the precision default
    (bf16 mixed precision on a GPU, fp32 on CPU); `quantization_config` loads the model path in 4 bits.
    """
    config_values = {
        "output_dir": output_dir,
        "per_device_train_batch_size": run.batch_size,
        "num_generations": settings.num_generations,
        "max_completion_length": settings.completion_length,
        # Same generation length for both trainers, whatever the sampled tokens: EOS is suppressed until the end.
        "generation_kwargs": {"min_new_tokens": settings.completion_length},
        **timed_run_config(settings, max_steps),
    }
    if settings.model_path is None and settings.model_size in QWEN_SHAPES:
        # The byte tokenizer decodes ids above its 259 to nothing: sampled only from its ids, completions carry text
        # for the rewards (so advantages are not all zero). The 151,936 logits are still computed at every step.
        vocab_size = QWEN_SHAPES[settings.model_size]["vocab_size"]
        config_values["generation_kwargs"]["suppress_tokens"] = list(
            range(len(demo.make_byte_tokenizer()), vocab_size)
        )
    if not torch.cuda.is_available():
        config_values.update(bf16=False, dataloader_pin_memory=False)
    if bf16 is not None:
        config_values["bf16"] = bf16
        if bf16 and not torch.cuda.is_available():
            config_values["use_cpu"] = True  # transformers' condition for bf16 autocast on CPU
    if model is None:
        model = base_model(settings.model_size, settings.num_layers, settings.model_path)
    common = {
        "model": model,
        "reward_funcs": reward_funcs(run.num_objectives),
        "train_dataset": demo.make_prompt_dataset(max_steps * run.batch_size, seed=0),
        "processing_class": base_tokenizer(settings.model_path),
        "peft_config": lora_config(),
        "callbacks": list(callbacks),
        **({"quantization_config": quantization_config} if quantization_config is not None else {}),
    }
    if run.variant == "baseline":
        trainer = RLOOTrainer(args=RLOOConfig(**config_values), **common)
    elif run.variant == "grpo-baseline":
        trainer = GRPOTrainer(args=GRPOConfig(**config_values), **common)
    elif run.variant.startswith("grpo-"):
        config = MultiObjectiveGRPOConfig(
            **config_values,
            conditioning=run.variant.removeprefix("grpo-"),
            conditioning_features=settings.conditioning_features,
        )
        trainer = MultiObjectiveGRPOTrainer(args=config, **common)
    elif run.variant == "logit-unfused":
        config = MultiObjectiveConfig(
            **config_values, conditioning="logit", conditioning_features=settings.conditioning_features
        )
        trainer = MaterialisingLogitTrainer(args=config, **common)
    else:
        config = MultiObjectiveConfig(
            **config_values, conditioning=run.variant, conditioning_features=settings.conditioning_features
        )
        trainer = MultiObjectiveTrainer(args=config, **common)
    trainer.remove_callback(PrinterCallback)  # the benchmarks print their own lines
    return trainer


def time_run(run: TrainingRun, settings: StepSettings, build=build_trainer) -> float:
    """Median step time of one fresh run of `build(run, settings, max_steps, output_dir, callbacks)` after its warm-up
    steps, in seconds."""
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as output_dir:
        trainer = build(run, settings, settings.warmup_steps + settings.timed_steps, output_dir, [timer])
        trainer.train()
    del trainer
    gc.collect()
    return statistics.median(timer.durations[settings.warmup_steps :])


def interleaved_step_times(
    order: list[TrainingRun], settings: StepSettings, build=build_trainer
) -> dict[TrainingRun, Measurement]:
    """Time every run of `order` once per repeat, in that order (each baseline right before its CLP runs); `build`
    makes each run's trainer (`build_trainer`: the online trainers).

    Returns:
        one `Measurement` per run, holding its median step time (seconds) of each repeat.
    """
    step_times = {run: Measurement(run.label, "s") for run in order}
    started = time.perf_counter()
    for repeat in range(settings.repeats):
        for run in order:
            step_times[run].samples.append(time_run(run, settings, build))
        print(f"repeat {repeat + 1}/{settings.repeats} done ({time.perf_counter() - started:.0f} s)", flush=True)
    return step_times


def step_time_figures(
    cells: dict[int, list[TrainingRun]], settings: StepSettings, target, build=build_trainer
) -> list[Figure]:
    """Time every run of `cells` (per m: the baseline first, then its candidates) with `interleaved_step_times`.

    Returns:
        one `step_time/<variant>/m<m>[/<features>]` figure per candidate against its m's baseline, with target `target(run)`.
    """
    step_times = interleaved_step_times([run for runs in cells.values() for run in runs], settings, build)
    return [
        Figure(
            f"step_time/{run.variant}/m{m}{settings.features_suffix}",
            step_times[runs[0]],
            step_times[run],
            target(run),
        )
        for m, runs in cells.items()
        for run in runs[1:]
    ]
