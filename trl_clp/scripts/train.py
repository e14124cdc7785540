# Copyright 2026 The trl-clp developers. Apache-2.0.
"""
Train a Conditional Language Policy (one model steerable across several rewards), then evaluate it on a grid of
weightings over held-out prompts. Installed as `trl-clp train`; `examples/train_clp.py` runs the same code.

With no arguments it runs offline on a CPU in a few minutes: a tiny Llama and a byte-level tokenizer are built and
saved locally, prompts are generated, and the two rewards (lowercase vs uppercase share of the answer) conflict
on every character:

    trl-clp train
    accelerate launch examples/train_clp.py                        # the same run
    accelerate launch -m trl_clp.scripts.train --output_dir clp    # the same, from an installed package

A real model, dataset and rewards, through flags or a YAML file (every `MultiObjectiveConfig` field is a flag):

    trl-clp train --config examples/configs/tldr_summarization.yaml

    trl-clp train --model_name_or_path Qwen/Qwen2.5-0.5B --dataset_name trl-lib/tldr \
        --reward_funcs source_coverage brevity --conditioning attn --output_dir clp-tldr

GRPO instead of RLOO under the same conditioning (`--trainer grpo`, or `trainer: grpo` in the YAML; every
`MultiObjectiveGRPOConfig` field is then a flag, e.g. `--loss_type`, `--scale_rewards`):

    trl-clp train --trainer grpo --scalarization tchebycheff
    trl-clp train --config examples/configs/tldr_summarization_grpo.yaml

DPO from preference pairs with a label or a score per objective (`--trainer dpo`; every `MultiObjectiveDPOConfig`
field is then a flag). There are no reward functions: the data are pairs in the labels or the scores layout
(docs/preference.md), or a public dataset converted with `--preference_format`; the held-out pairs are scored by
the trained model's implicit reward at each weighting of the grid (`preference_accuracy.json`):

    trl-clp train --config examples/configs/dpo_demo.yaml
    trl-clp train --trainer dpo --dataset_name PKU-Alignment/PKU-SafeRLHF --preference_format pku_saferlhf ...

`--reward_funcs` takes built-in names (lowercase, uppercase, titlecase, brevity, source_coverage, civility),
`rouge1`/`rouge2`/`rougeL` (against `--reference_column`), `nli` (entailment under `--nli_model`), `module:function`
import paths, or reward-model ids/paths (loaded by TRL as sequence classifiers). `--load_in_4bit` trains the adapters on a 4-bit base
model (QLoRA, bitsandbytes on a GPU).

The console shows a progress bar and the final table (for 'dpo', without the `datasets` bars of TRL's tokenization
of the pairs); the metrics logged every `--logging_steps` go to the `--report_to` trackers and to
`<output_dir>/trainer_state.json` (`--print_metrics True` prints them as well).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import warnings
from dataclasses import dataclass, field

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch
import yaml
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from trl import ModelConfig, TrlParser, get_peft_config, get_quantization_config

from trl_clp import (
    MultiObjectiveConfig,
    MultiObjectiveDPOConfig,
    MultiObjectiveDPOTrainer,
    MultiObjectiveGRPOConfig,
    MultiObjectiveGRPOTrainer,
    MultiObjectiveTrainer,
    SteerableModel,
    demo,
    simplex_grid,
)
from trl_clp.evaluation import Front, evaluate_front
from trl_clp.gguf import check_not_gguf
from trl_clp.rewards import resolve_reward_function
from trl_clp.scripts import limit_cpu_threads
from trl_clp.scripts.preference_pairs import (
    PREFERENCE_FORMATS,
    check_preference_arguments,
    load_preference_pairs,
    report_preference_accuracy,
)

TRAINERS = {
    "rloo": (MultiObjectiveConfig, MultiObjectiveTrainer),
    "grpo": (MultiObjectiveGRPOConfig, MultiObjectiveGRPOTrainer),
    "dpo": (MultiObjectiveDPOConfig, MultiObjectiveDPOTrainer),
}
DEFAULT_REWARD_FUNCS = ["lowercase", "uppercase"]


@dataclass
class ScriptArguments:
    """The script's own arguments (data, rewards, evaluation); training and model arguments are TRL's."""

    trainer: str = field(
        default="rloo",
        metadata={
            "help": "The TRL trainer under the conditioning: 'rloo' or 'grpo' (online, with reward functions), or "
            "'dpo' (from preference pairs with per-objective labels or scores).",
            "choices": list(TRAINERS),
        },
    )
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Dataset id or local path (a folder, or for 'dpo' also a .jsonl/.json file); default: the offline "
            "demo prompts ('rloo', 'grpo'). Required for 'dpo': preference pairs."
        },
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Dataset configuration name."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    dataset_eval_split: str | None = field(
        default=None,
        metadata={
            "help": "Split holding the held-out evaluation prompts (default: test, else train); for 'dpo' the "
            "held-out pairs (default: test, else none)."
        },
    )
    prompt_column: str = field(default="prompt", metadata={"help": "Column with the prompts; renamed to 'prompt'."})
    reward_funcs: list[str] | None = field(
        default=None,
        metadata={
            "help": "One reward per objective: built-in name, 'module:function', or a reward-model id/path (default: "
            "lowercase uppercase, the demo's). Not for 'dpo', whose objectives are the dataset's labels or scores."
        },
    )
    preference_format: str | None = field(
        default=None,
        metadata={
            "help": "'dpo' only: convert a public dataset's columns to a preference layout with trl_clp.preference_adapters "
            "(pku_saferlhf → labels over `objective_names`, both of helpful and harmless in either order; "
            "helpsteer2, ultrafeedback → scores over `objective_names`, default all attributes or aspects). "
            "Default: the dataset is already in `preference_layout`.",
            "choices": list(PREFERENCE_FORMATS),
        },
    )
    num_train_prompts: int = field(default=512, metadata={"help": "Demo task: number of training prompts."})
    pretrain_steps: int = field(default=300, metadata={"help": "Demo task: pre-training steps of the tiny model."})
    num_eval_prompts: int = field(
        default=32, metadata={"help": "Held-out prompts (for 'dpo': pairs) used by the final evaluation."}
    )
    eval_grid_points: int = field(
        default=5, metadata={"help": "Points per simplex edge of the evaluation grid (5 → 0, .25, .5, .75, 1)."}
    )
    eval_samples_per_prompt: int = field(default=2, metadata={"help": "Completions per (prompt, weighting) pair."})
    prompt_format: str | None = field(
        default=None,
        metadata={
            "help": "Build the prompt from the dataset's columns, e.g. '{document}\\nTL;DR:' (XSum); default: "
            "use `prompt_column` as it is."
        },
    )
    reference_column: str = field(
        default="reference",
        metadata={
            "help": "Dataset column with the reference text, for the ROUGE rewards. A `completion` column (e.g. "
            "trl-lib/tldr's reference summaries) is renamed `reference`: TRL keeps it from reward functions."
        },
    )
    nli_model: str | None = field(
        default=None, metadata={"help": "NLI model id or path for the `nli` reward (entailment of the answer)."}
    )
    premise_column: str | None = field(
        default=None, metadata={"help": "Dataset column holding the source for `nli` (default: the prompt)."}
    )
    print_metrics: bool = field(
        default=False,
        metadata={
            "help": "Also print every logged metrics dict to the console (they always go to the `report_to` "
            "trackers and <output_dir>/trainer_state.json)."
        },
    )

    def __post_init__(self):
        if self.trainer != "dpo":
            if self.preference_format is not None:
                raise ValueError(
                    f"--preference_format applies to --trainer dpo (preference pairs), not {self.trainer!r}: remove it, "
                    "or pass --trainer dpo."
                )
            if self.reward_funcs is None:
                self.reward_funcs = list(DEFAULT_REWARD_FUNCS)
            return
        if self.reward_funcs is not None:
            raise ValueError(
                "--reward_funcs does not apply to --trainer dpo: DPO-CLP learns from preference pairs, and its "
                "objectives are the dataset's per-objective labels or scores, named by --objective_names. Remove "
                "--reward_funcs (or train online with --trainer rloo or grpo)."
            )
        if self.dataset_name is None:
            raise ValueError(
                "--trainer dpo needs preference pairs: pass --dataset_name (a folder with train.jsonl and test.jsonl, "
                "a .jsonl file or a dataset id) in the labels layout (prompt, chosen, rejected, objective_labels) or "
                "the scores layout (prompt, chosen, rejected, chosen_scores, rejected_scores), or a public dataset "
                f"with --preference_format {'|'.join(PREFERENCE_FORMATS)}. The offline demo's: --config "
                "examples/configs/dpo_demo.yaml."
            )


class ProgressBarOnly(ProgressCallback):
    """Transformers' progress bar without the metric dicts it writes under the bar at every logging step."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        pass


def quiet_console() -> None:
    """Silence what a user of this script cannot act on; their own warnings and errors still show."""
    # TRL's config and trainer use the gradient-checkpointing names transformers 5 renamed; the user never wrote them.
    warnings.filterwarnings(
        "ignore", message=r".*`(is_)?gradient_checkpointing(_enable|_disable)?` is deprecated", category=FutureWarning
    )


@contextlib.contextmanager
def without_dataset_progress_bars():
    """TRL's dataset preparation (prompt extraction, EOS, tokenization, filtering: a bar per step and split) without
    the `datasets` progress bars, which the console shows under the training bar otherwise; restored after."""
    import datasets

    already_off = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not already_off:
            datasets.enable_progress_bars()


def model_init_kwargs(model_args: ModelConfig) -> dict:
    """How TRL loads the policy from its id or path: revision, dtype and attention implementation."""
    dtype = model_args.dtype if model_args.dtype in ("auto", None) else getattr(torch, model_args.dtype)
    return {
        "revision": model_args.model_revision,
        "attn_implementation": model_args.attn_implementation,
        "dtype": dtype,
    }


def prepare_model(script_args: ScriptArguments, training_args, model_args: ModelConfig):
    """The policy's tokenizer, and how TRL loads the policy (`training_args.model_init_kwargs`). Without
    `--model_name_or_path`, the offline demo's tiny model is built, pre-trained and saved first."""
    from transformers import AutoTokenizer

    if model_args.model_name_or_path is None:
        # Saved to disk so that the adapter records a base model path that SteerableModel can reload.
        base_path = os.path.join(training_args.output_dir, "base_model")
        tokenizer = demo.make_byte_tokenizer()
        base_model = demo.make_tiny_llama(seed=training_args.seed)
        demo.pretrain_demo_model(base_model, tokenizer, steps=script_args.pretrain_steps, seed=training_args.seed)
        base_model.save_pretrained(base_path)
        tokenizer.save_pretrained(base_path)
        model_args.model_name_or_path = base_path
    check_not_gguf(model_args.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, padding_side="left")
    training_args.model_init_kwargs = {**model_init_kwargs(model_args), **(training_args.model_init_kwargs or {})}
    return tokenizer


def load_prompts(script_args: ScriptArguments, training_args):
    """The online trainers' training prompts and held-out prompts (the offline demo's without `--dataset_name`)."""
    if script_args.dataset_name is None:
        train_dataset = demo.make_prompt_dataset(script_args.num_train_prompts, seed=training_args.seed)
        eval_dataset = demo.make_prompt_dataset(script_args.num_eval_prompts, seed=training_args.seed + 1)
        return train_dataset, eval_dataset
    from datasets import load_dataset

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
    return train_dataset, eval_dataset


def build_trainer(
    script_args: ScriptArguments, training_args, model_args: ModelConfig, tokenizer, train_dataset, eval_dataset
):
    """The trainer `--trainer` names, on the policy's id or path, with the console's progress bar."""
    preferences = script_args.trainer == "dpo"
    if preferences:  # the objectives are the pairs' labels or scores; the held-out pairs are tokenized with them
        data = {"train_dataset": train_dataset, "eval_dataset": eval_dataset}
    else:
        reward_funcs = [
            resolve_reward_function(
                spec,
                reference_column=script_args.reference_column,
                nli_model=script_args.nli_model,
                premise_column=script_args.premise_column,
            )
            for spec in script_args.reward_funcs
        ]
        data = {"reward_funcs": reward_funcs, "train_dataset": train_dataset}
    # DPO: TRL tokenizes the pairs while the trainer is built; the bars of that preparation are left out.
    with without_dataset_progress_bars() if preferences else contextlib.nullcontext():
        trainer = TRAINERS[script_args.trainer][1](
            model=model_args.model_name_or_path,
            args=training_args,
            **data,
            processing_class=tokenizer,
            peft_config=get_peft_config(model_args),
            # --load_in_4bit: QLoRA, the conditioned LoRA blocks train on a 4-bit (bitsandbytes) base model.
            quantization_config=get_quantization_config(model_args),
        )
    if not script_args.print_metrics:
        trainer.remove_callback(PrinterCallback)  # used instead of the bar with --disable_tqdm
        if trainer.pop_callback(ProgressCallback) is not None:
            trainer.add_callback(ProgressBarOnly)
    return trainer


def train_and_save(trainer, output_dir: str) -> None:
    """Train, then save the adapter (with `clp_config.json`) and `trainer_state.json` to `output_dir`."""
    trainer.train()
    trainer.save_model(output_dir)
    if trainer.accelerator.is_main_process:
        trainer.state.save_to_json(os.path.join(output_dir, "trainer_state.json"))


def evaluate_held_out_pairs(
    trainer, steer, eval_dataset, script_args: ScriptArguments, training_args, train_seconds: float
) -> None:
    """DPO: the held-out pairs' accuracy at each weighting of the grid (`report_preference_accuracy`), or why there is
    none."""
    if eval_dataset is None:
        print(
            "No held-out pairs (no test split, no --dataset_eval_split): not evaluated. Steerable model: "
            + training_args.output_dir
        )
        return
    written = report_preference_accuracy(trainer, steer, script_args, training_args)
    print(
        f"Trained in {train_seconds:.0f} s. Steerable model: {training_args.output_dir}; held-out accuracy: "
        f"{written}; training metrics: {os.path.join(training_args.output_dir, 'trainer_state.json')}"
    )


def evaluate_held_out_prompts(
    trainer, steer, tokenizer, eval_dataset, script_args: ScriptArguments, training_args
) -> Front | None:
    """The online trainers: the front over the grid of weightings on the held-out prompts, sampled as in training and
    scored by the reward functions; None (and a message) when a reward is a reward model, which this script does not
    evaluate."""
    callable_rewards = [f for f in trainer.reward_funcs if callable(f) and not isinstance(f, torch.nn.Module)]
    if len(callable_rewards) != len(trainer.reward_funcs):
        print("Reward models are not evaluated by this script; use callables to get the evaluation table.")
        return None
    return evaluate_front(
        steer,
        tokenizer,
        list(eval_dataset["prompt"]),
        callable_rewards,
        simplex_grid(steer.conditioning_config.num_objectives, script_args.eval_grid_points),
        num_samples=script_args.eval_samples_per_prompt,
        # References, sources, ...: the reward functions see the same dataset columns as in training.
        reward_kwargs={
            column: list(eval_dataset[column]) for column in eval_dataset.column_names if column != "prompt"
        },
        max_new_tokens=training_args.max_completion_length,
        seed=training_args.seed,
        # Sampled as in training (TRL's generation config of the run).
        temperature=training_args.temperature,
        top_k=training_args.top_k,
        top_p=training_args.top_p,
        min_p=training_args.min_p,
        repetition_penalty=training_args.repetition_penalty,
    )


def report_front(
    front: Front, trainer, steer, training_args, num_prompts: int, train_seconds: float, evaluation_started: float
) -> None:
    """Write the front (`front.json`, `front.csv`, `front_samples.jsonl`, and `front.png` with matplotlib) and print its table and how far each
    objective's reward moves between weight 0 and weight 1. `evaluation_started`: `time.perf_counter()` when the
    training ended."""
    written = list(front.save(training_args.output_dir))
    written.append(front.save_samples(os.path.join(training_args.output_dir, "front_samples.jsonl")))
    try:
        from trl_clp.plotting import plot_fronts

        label = f"{training_args.conditioning}-CLP, {trainer.state.global_step} steps"
        written.append(plot_fronts({label: front}, os.path.join(training_args.output_dir, "front.png")))
    except ImportError:  # matplotlib is optional: `pip install "trl-clp[plots]"`
        pass
    print(
        f"\nTrained in {train_seconds:.0f} s; evaluated {len(front.results)} weightings in "
        f"{time.perf_counter() - evaluation_started:.0f} s on {num_prompts} held-out prompts."
    )
    print(front.format_table())
    print(front.table_legend())
    for i, name in enumerate(steer.objective_names):
        at_one = [r.rewards[name] for r in front.results if r.weights[i] == 1.0]
        at_zero = [r.rewards[name] for r in front.results if r.weights[i] == 0.0]
        low, high = sum(at_zero) / len(at_zero), sum(at_one) / len(at_one)
        print(f"{name}: {low:.4f} with weight 0 → {high:.4f} with weight 1 ({high - low:+.4f})")
    print(
        f"Steerable model: {training_args.output_dir}; front: {', '.join(written)}; training metrics: "
        f"{os.path.join(training_args.output_dir, 'trainer_state.json')}"
    )


def main(
    script_args: ScriptArguments,
    training_args: MultiObjectiveConfig | MultiObjectiveGRPOConfig | MultiObjectiveDPOConfig,
    model_args: ModelConfig,
):
    """`trl-clp train`: load the model and data, train, save the steerable model, then evaluate it on held-out prompts
    (a front over a grid of weightings) or, for 'dpo', held-out pairs (preference accuracy per weighting)."""
    started = time.perf_counter()
    limit_cpu_threads()
    quiet_console()
    preferences = script_args.trainer == "dpo"
    if preferences:
        check_preference_arguments(script_args, training_args)

    ################
    # Model, data and trainer
    ################
    tokenizer = prepare_model(script_args, training_args, model_args)
    if preferences:
        train_dataset, eval_dataset = load_preference_pairs(script_args, training_args)
    else:
        train_dataset, eval_dataset = load_prompts(script_args, training_args)
    trainer = build_trainer(script_args, training_args, model_args, tokenizer, train_dataset, eval_dataset)

    ################
    # Training
    ################
    train_and_save(trainer, training_args.output_dir)
    train_seconds = time.perf_counter() - started

    ################
    # Evaluation on a grid of weightings (main process only)
    ################
    if not trainer.accelerator.is_main_process:
        return
    steer = SteerableModel.from_pretrained(training_args.output_dir, tokenizer=tokenizer)
    steer.to(trainer.accelerator.device)
    if preferences:
        evaluate_held_out_pairs(trainer, steer, eval_dataset, script_args, training_args, train_seconds)
        return
    front = evaluate_held_out_prompts(trainer, steer, tokenizer, eval_dataset, script_args, training_args)
    if front is not None:
        report_front(front, trainer, steer, training_args, len(eval_dataset), train_seconds, started + train_seconds)


def early_option(argv: list[str], name: str) -> str | None:
    """`--<name>`, from the command line or the `--config` YAML: read before the parser exists, since it shapes it."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument(f"--{name}")
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    value = getattr(known, name)
    if value is None and known.config is not None:
        with open(known.config) as handle:
            value = (yaml.safe_load(handle) or {}).get(name)
    return value


def chosen_trainer(argv: list[str]) -> str:
    """`--trainer`, from the command line or the `--config` YAML: the config class, hence the parser, depends on it."""
    return early_option(argv, "trainer") or "rloo"


# `--trainer dpo`: what the CPU needs (TRL's DPOConfig defaults otherwise; the recipes set the rest).
DPO_DEFAULTS = dict(
    output_dir="outputs/clp-dpo",
    logging_steps=10,
    save_strategy="no",
    report_to="none",
    activation_checkpointing=False,
)


def make_parser(prog: str | None = None, trainer: str = "rloo", preference_format: str | None = None) -> TrlParser:
    """The script's parser: `ScriptArguments`, the trainer's config (`MultiObjectiveConfig` for `"rloo"`,
    `MultiObjectiveGRPOConfig` for `"grpo"`, `MultiObjectiveDPOConfig` for `"dpo"`) and TRL's `ModelConfig`, with
    `--config`. With a `preference_format` (`"dpo"`), its layout and objectives are the defaults.

    A new group of options is one more dataclass in the tuple (and one more value returned by
    `parse_args_and_config`).
    """
    parser = TrlParser((ScriptArguments, TRAINERS[trainer][0], ModelConfig), prog=prog)
    if trainer == "dpo":
        defaults = dict(DPO_DEFAULTS)
        if preference_format in PREFERENCE_FORMATS:
            _, layout, objectives = PREFERENCE_FORMATS[preference_format]
            defaults.update(preference_layout=layout, objective_names=list(objectives))
    else:  # the embedded default: the offline demo, sized for a 2-core CPU
        defaults = {"output_dir": "outputs/clp-demo", **demo.DEMO_TRAINING_ARGS}
    # Flags and --config override each value.
    parser.set_defaults(
        conditioning="full",
        # bf16 only where it runs: TRL's default (bf16=True) raises on a CPU.
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        use_peft=True,
        lora_r=demo.DEMO_LORA["r"],
        lora_alpha=demo.DEMO_LORA["lora_alpha"],
        lora_target_modules=demo.DEMO_LORA["target_modules"],
        **defaults,
    )
    return parser


def run(argv: list[str] | None = None, prog: str | None = "trl-clp train") -> None:
    """Parse `argv` (default: the command line) and train: the body of `trl-clp train` (and of
    `examples/train_clp.py`, with `prog=None`)."""
    argv = sys.argv[1:] if argv is None else argv
    quiet_console()  # before parsing: the configs' own checks run then
    parser = make_parser(
        prog=prog, trainer=chosen_trainer(argv), preference_format=early_option(argv, "preference_format")
    )
    main(*parser.parse_args_and_config(args=argv))


if __name__ == "__main__":
    run()
