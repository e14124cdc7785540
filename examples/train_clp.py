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

GRPO instead of RLOO: `--trainer grpo` (or `trainer: grpo` in the YAML), e.g.

    accelerate launch examples/train_clp.py --config examples/configs/tldr_summarization_grpo.yaml

DPO from preference pairs with a label or a score per objective: `--trainer dpo` (no reward functions), e.g.

    accelerate launch examples/train_clp.py --config examples/configs/dpo_demo.yaml

The code is `trl_clp/scripts/train.py`, installed with the package as the `trl-clp train` command (same arguments,
same YAML files): read it there, step by step (`main`: model and tokenizer, data, trainer, training, evaluation),
with the DPO path's data and report in `trl_clp/scripts/preference_pairs.py`. `--help` lists every argument.
"""

from trl_clp.scripts.train import ScriptArguments, chosen_trainer, main, make_parser, run  # noqa: F401  (public names)

if __name__ == "__main__":
    run(prog=None)
