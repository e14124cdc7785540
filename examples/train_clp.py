# Copyright 2026 The trl-clp developers. Apache-2.0.
"""
Train a Conditional Language Policy (one model steerable across several rewards), then evaluate it on a grid of
weightings over held-out prompts.

With no arguments it runs offline on a CPU in a few minutes: a tiny Llama and a byte-level tokenizer are built and
saved locally, prompts are generated, and the two rewards (lowercase vs uppercase share of the answer) conflict
on every character:

    accelerate launch examples/train_clp.py

A real model, dataset and rewards, through flags or a YAML file (every `MultiObjectiveConfig` field is a flag):

    accelerate launch examples/train_clp.py --config examples/configs/tldr_summarization.yaml

    accelerate launch examples/train_clp.py \
        --model_name_or_path Qwen/Qwen2.5-0.5B --dataset_name trl-lib/tldr \
        --reward_funcs source_coverage brevity --conditioning attn --output_dir clp-tldr

GRPO instead of RLOO (`--trainer grpo`, or `trainer: grpo` in the YAML; every `MultiObjectiveGRPOConfig` field is
then a flag, e.g. `--loss_type`, `--scale_rewards`, `--scalarization tchebycheff`):

    accelerate launch examples/train_clp.py --trainer grpo
    accelerate launch examples/train_clp.py --config examples/configs/tldr_summarization_grpo.yaml

`--reward_funcs` takes built-in names (lowercase, uppercase, titlecase, brevity, source_coverage), `rouge1`/`rouge2`/
`rougeL` (against `--reference_column`), `nli` (entailment under `--nli_model`), `module:function` import paths, or
reward-model ids/paths (loaded by TRL as sequence classifiers). `--load_in_4bit` trains the adapters on a 4-bit base
model (QLoRA, bitsandbytes on a GPU).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch  # noqa: E402
import yaml  # noqa: E402
from datasets import load_dataset  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402
from trl import ModelConfig, TrlParser, get_peft_config, get_quantization_config  # noqa: E402

from trl_clp import MultiObjectiveConfig, MultiObjectiveTrainer, SteerableModel, simplex_grid  # noqa: E402
from trl_clp import MultiObjectiveGRPOConfig, MultiObjectiveGRPOTrainer  # noqa: E402
from trl_clp import demo  # noqa: E402
from trl_clp.evaluation import evaluate_front  # noqa: E402
from trl_clp.rewards import resolve_reward_function  # noqa: E402


TRAINERS = {"rloo": (MultiObjectiveConfig, MultiObjectiveTrainer), "grpo": (MultiObjectiveGRPOConfig, MultiObjectiveGRPOTrainer)}


@dataclass
class ScriptArguments:
    trainer: str = field(
        default="rloo",
        metadata={"help": "The TRL trainer under the conditioning: 'rloo' or 'grpo'.", "choices": list(TRAINERS)},
    )
    dataset_name: str | None = field(
        default=None, metadata={"help": "Dataset id or local path; default: the offline demo prompts."}
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Dataset configuration name."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    dataset_eval_split: str | None = field(
        default=None, metadata={"help": "Split holding the held-out evaluation prompts (default: test, else train)."}
    )
    prompt_column: str = field(default="prompt", metadata={"help": "Column with the prompts; renamed to 'prompt'."})
    reward_funcs: list[str] = field(
        default_factory=lambda: ["lowercase", "uppercase"],
        metadata={"help": "One reward per objective: built-in name, 'module:function', or a reward-model id/path."},
    )
    num_train_prompts: int = field(default=512, metadata={"help": "Demo task: number of training prompts."})
    pretrain_steps: int = field(default=300, metadata={"help": "Demo task: pre-training steps of the tiny model."})
    num_eval_prompts: int = field(default=32, metadata={"help": "Held-out prompts used by the final evaluation."})
    eval_grid_points: int = field(
        default=5, metadata={"help": "Points per simplex edge of the evaluation grid (5 → 0, .25, .5, .75, 1)."}
    )
    eval_samples_per_prompt: int = field(default=2, metadata={"help": "Completions per (prompt, weighting) pair."})
    prompt_format: str | None = field(
        default=None,
        metadata={"help": "Build the prompt from the dataset's columns, e.g. '{document}\\nTL;DR:' (XSum); default: "
                  "use `prompt_column` as it is."},
    )
    reference_column: str = field(
        default="reference",
        metadata={"help": "Dataset column with the reference text, for the ROUGE rewards. A `completion` column (e.g. "
                  "trl-lib/tldr's reference summaries) is renamed `reference`: TRL keeps it from reward functions."},
    )
    nli_model: str | None = field(
        default=None, metadata={"help": "NLI model id or path for the `nli` reward (entailment of the answer)."}
    )
    premise_column: str | None = field(
        default=None, metadata={"help": "Dataset column holding the source for `nli` (default: the prompt)."}
    )


def model_init_kwargs(model_args: ModelConfig) -> dict:
    """How TRL loads the policy from its id or path: revision, dtype and attention implementation."""
    dtype = model_args.dtype if model_args.dtype in ("auto", None) else getattr(torch, model_args.dtype)
    return {"revision": model_args.model_revision, "attn_implementation": model_args.attn_implementation, "dtype": dtype}


def main(script_args: ScriptArguments, training_args: MultiObjectiveConfig, model_args: ModelConfig):
    started = time.perf_counter()

    ################
    # Model and tokenizer
    ################
    if model_args.model_name_or_path is None:
        # Saved to disk so that the adapter records a base model path that SteerableModel can reload.
        base_path = os.path.join(training_args.output_dir, "base_model")
        tokenizer = demo.make_byte_tokenizer()
        base_model = demo.make_tiny_llama(seed=training_args.seed)
        demo.pretrain_demo_model(base_model, tokenizer, steps=script_args.pretrain_steps, seed=training_args.seed)
        base_model.save_pretrained(base_path)
        tokenizer.save_pretrained(base_path)
        model_args.model_name_or_path = base_path
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, padding_side="left")
    training_args.model_init_kwargs = {**model_init_kwargs(model_args), **(training_args.model_init_kwargs or {})}

    ################
    # Dataset
    ################
    if script_args.dataset_name is None:
        train_dataset = demo.make_prompt_dataset(script_args.num_train_prompts, seed=training_args.seed)
        eval_dataset = demo.make_prompt_dataset(script_args.num_eval_prompts, seed=training_args.seed + 1)
    else:
        dataset = load_dataset(script_args.dataset_name, script_args.dataset_config)
        if script_args.prompt_format is not None:
            dataset = dataset.map(lambda example: {"prompt": script_args.prompt_format.format(**example)})
        elif script_args.prompt_column != "prompt":
            dataset = dataset.rename_column(script_args.prompt_column, "prompt")
        if "completion" in dataset.column_names[script_args.dataset_train_split]:
            dataset = dataset.rename_column("completion", "reference")
        train_dataset = dataset[script_args.dataset_train_split]
        eval_split = script_args.dataset_eval_split or ("test" if "test" in dataset else script_args.dataset_train_split)
        eval_dataset = dataset[eval_split].select(range(min(script_args.num_eval_prompts, len(dataset[eval_split]))))

    ################
    # Training
    ################
    reward_funcs = [
        resolve_reward_function(
            spec,
            reference_column=script_args.reference_column,
            nli_model=script_args.nli_model,
            premise_column=script_args.premise_column,
        )
        for spec in script_args.reward_funcs
    ]
    trainer = TRAINERS[script_args.trainer][1](
        model=model_args.model_name_or_path,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        # --load_in_4bit: QLoRA, the conditioned LoRA blocks train on a 4-bit (bitsandbytes) base model.
        quantization_config=get_quantization_config(model_args),
    )
    trainer.train()
    trainer.save_model(training_args.output_dir)
    train_seconds = time.perf_counter() - started

    ################
    # Evaluation on a grid of weightings (main process only)
    ################
    if not trainer.accelerator.is_main_process:
        return
    steer = SteerableModel.from_pretrained(training_args.output_dir, tokenizer=tokenizer)
    steer.to(trainer.accelerator.device)
    callable_rewards = [f for f in trainer.reward_funcs if callable(f) and not isinstance(f, torch.nn.Module)]
    if len(callable_rewards) != len(trainer.reward_funcs):
        print("Reward models are not evaluated by this script; use callables to get the evaluation table.")
        return
    front = evaluate_front(
        steer,
        tokenizer,
        list(eval_dataset["prompt"]),
        callable_rewards,
        simplex_grid(steer.conditioning_config.num_objectives, script_args.eval_grid_points),
        num_samples=script_args.eval_samples_per_prompt,
        # References, sources, ...: the reward functions see the same dataset columns as in training.
        reward_kwargs={column: list(eval_dataset[column]) for column in eval_dataset.column_names if column != "prompt"},
        max_new_tokens=training_args.max_completion_length,
        seed=training_args.seed,
        temperature=training_args.temperature,
        top_k=training_args.top_k,
        top_p=training_args.top_p,
    )
    written = list(front.save(training_args.output_dir))
    try:
        from trl_clp.plotting import plot_fronts

        written.append(plot_fronts({training_args.conditioning: front}, f"{training_args.output_dir}/front.png"))
    except ImportError:  # matplotlib is optional: `pip install "trl-clp[plots]"`
        pass
    print(f"\nTrained in {train_seconds:.0f} s; evaluated {len(front.results)} weightings in "
          f"{time.perf_counter() - started - train_seconds:.0f} s on {len(eval_dataset)} held-out prompts.")
    print(front.format_table())
    for i, name in enumerate(steer.objective_names):
        at_one = [r.rewards[name] for r in front.results if r.weights[i] == 1.0]
        at_zero = [r.rewards[name] for r in front.results if r.weights[i] == 0.0]
        low, high = sum(at_zero) / len(at_zero), sum(at_one) / len(at_one)
        print(f"{name}: {low:.4f} with weight 0 → {high:.4f} with weight 1 ({high - low:+.4f})")
    print(f"Steerable model: {training_args.output_dir}; front: {', '.join(written)}")


def chosen_trainer(argv: list[str]) -> str:
    """`--trainer`, from the command line or the `--config` YAML: the config class, hence the parser, depends on it."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--trainer")
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    if known.trainer is None and known.config is not None:
        with open(known.config) as handle:
            known.trainer = (yaml.safe_load(handle) or {}).get("trainer")
    return known.trainer or "rloo"


def make_parser(trainer: str = "rloo") -> TrlParser:
    parser = TrlParser((ScriptArguments, TRAINERS[trainer][0], ModelConfig))
    # The embedded default: the offline demo, sized for a 2-core CPU. Flags and --config override each value.
    parser.set_defaults(
        output_dir="outputs/clp-demo",
        conditioning="full",
        bf16=torch.cuda.is_available(),
        use_peft=True,
        lora_r=demo.DEMO_LORA["r"],
        lora_alpha=demo.DEMO_LORA["lora_alpha"],
        lora_target_modules=demo.DEMO_LORA["target_modules"],
        **demo.DEMO_TRAINING_ARGS,
    )
    return parser


if __name__ == "__main__":
    main(*make_parser(chosen_trainer(sys.argv[1:])).parse_args_and_config())
