"""Run by `test_distributed.py` under `torchrun --nproc_per_node 2` (gloo on CPU); not collected by pytest.

Each rank trains a few steps and writes, to `<out>/rank<k>.json`, the weighting it saw for every prompt and a
checksum of every trainable parameter and, per optimizer step, of every gradient. A `FrontEvaluationCallback`
evaluates the front at the last step on both ranks; each rank records how many forward calls it made during that
evaluation and, after training, the same evaluation run by `evaluate_front` in this one process.
"""

import json
import os
import pathlib
import sys
from dataclasses import asdict

import torch
from conftest import (  # run as a script: its folder, tests/, is on sys.path (and sets offline mode)
    tiny_config,
    tiny_config_values,
)
from peft import LoraConfig
from transformers import TrainerCallback

from trl_clp import (
    ConditioningConfig,
    FrontEvaluationCallback,
    MultiObjectiveGRPOConfig,
    MultiObjectiveGRPOTrainer,
    MultiObjectiveTrainer,
    SteerableModel,
    demo,
    simplex_grid,
)
from trl_clp.evaluation import Front, evaluate_front
from trl_clp.rewards import lowercase_reward, uppercase_reward

EVAL_PROMPTS = ["Describe: a\n", "Describe: quiet river\n", "Describe: old city\n"]
# 3 prompts x 3 weightings = 9 rows in 5 batches of 2: rank 0 runs batches 0, 2, 4 and rank 1 batches 1, 3 (and
# batch 0 again, dropped), so both make the same calls. Completions have a fixed length (no early EOS), so that
# `generate` makes the same number of steps on both ranks, as `synced_gpus` (set by transformers under ZeRO-3 and
# FSDP) would make it; with it here, the old rank-0-only evaluation would hang instead of failing.
EVAL = dict(weightings=simplex_grid(2, 3), max_new_tokens=4, min_new_tokens=4, batch_size=2)


def summary(front) -> dict:
    """What `Front.save` writes to JSON: everything but the completions."""
    return {key: value for key, value in asdict(front).items() if key != "samples"}


def texts(front) -> list:
    return [(s["prompt"], s["weights"], s["sample"], s["completion"]) for s in front.samples]


def main(out_dir, kind="rloo"):
    tokenizer = demo.make_byte_tokenizer()
    values = dict(
        use_cpu=True,
        per_device_train_batch_size=2,  # 2 ranks x 2 rows: each prompt group of 4 spans both ranks
        max_completion_length=6,
        max_steps=3,
        beta=0.05,
    )
    if kind == "grpo":
        # With a weighting schedule: corners at step 0 (t = 0 < .3), Dirichlet(1) from step 1 (t = 1/3).
        args = MultiObjectiveGRPOConfig(
            **tiny_config_values(pathlib.Path(out_dir), **values), scalarization="tchebycheff", one_hot_fraction=0.3
        )
    else:
        args = tiny_config(pathlib.Path(out_dir), **values)
    trainer = (MultiObjectiveGRPOTrainer if kind == "grpo" else MultiObjectiveTrainer)(
        model=demo.make_tiny_llama(seed=0),
        reward_funcs=[lowercase_reward, uppercase_reward],
        args=args,
        train_dataset=demo.make_prompt_dataset(32),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"]),
    )
    seen = []
    original = trainer._generate_and_score_completions

    def recording(inputs):
        output = original(inputs)
        for example, weights in zip(inputs, output["conditioning_vectors"], strict=True):
            seen.append([example["prompt"], trainer.state.global_step, weights.tolist()])
        return output

    trainer._generate_and_score_completions = recording
    gradient_sums = []  # per optimizer step: {parameter: sum of its gradient after DDP's all-reduce}

    class RecordGradients(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            gradient_sums.append(
                {n: p.grad.double().sum().item() for n, p in trainer.model.named_parameters() if p.grad is not None}
            )

    trainer.add_callback(RecordGradients())

    front_callback = FrontEvaluationCallback(
        trainer, EVAL_PROMPTS, [lowercase_reward, uppercase_reward], eval_every_steps=3, **EVAL
    )
    forward_calls = [0]
    trainer.model.get_base_model().register_forward_pre_hook(
        lambda module, args: forward_calls.__setitem__(0, forward_calls[0] + 1)
    )
    evaluation_forward_calls = {}  # step -> forward calls this rank made while the callback ran
    evaluate_at_step = front_callback.on_step_end

    def counting_on_step_end(args, state, control, **kwargs):
        before = forward_calls[0]
        evaluate_at_step(args, state, control, **kwargs)
        evaluation_forward_calls[state.global_step] = forward_calls[0] - before

    front_callback.on_step_end = counting_on_step_end
    trainer.add_callback(front_callback)
    front_saves = []
    original_front_save = Front.save
    Front.save = lambda front, directory, stem="front": (
        front_saves.append(stem),
        original_front_save(front, directory, stem),
    )[1]
    metadata_saves = []
    original_save = ConditioningConfig.save
    ConditioningConfig.save = lambda config, directory: (
        metadata_saves.append(directory),
        original_save(config, directory),
    )
    trainer.train()
    trainer.save_model(os.path.join(out_dir, "final"))
    checksums = {n: p.detach().double().sum().item() for n, p in trainer.model.named_parameters() if p.requires_grad}
    # The same evaluation in this process alone, on the final parameters (those the callback saw at step 3).
    policy = trainer.accelerator.unwrap_model(trainer.model).eval()
    steer = SteerableModel(policy, trainer.conditioning_config, tokenizer, trainer.conditioner)
    single = evaluate_front(
        steer, tokenizer, EVAL_PROMPTS, [lowercase_reward, uppercase_reward], temperature=args.temperature, **EVAL
    )
    rank = trainer.accelerator.process_index
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as handle:
        json.dump(
            {
                "seen": seen,
                "checksums": checksums,
                "gradients": gradient_sums,
                "metadata_saves": metadata_saves,
                "ideal_point": None if trainer.ideal_point is None else trainer.ideal_point.maxima.tolist(),
                "world_size": trainer.accelerator.num_processes,
                "front_saves": front_saves,
                "evaluation_forward_calls": evaluation_forward_calls,
                "callback_fronts": {step: summary(front) for step, front in front_callback.fronts.items()},
                "single_process_front": summary(single),
                # Every rank holds every completion, in the one-process order.
                "samples_match": all(texts(front) == texts(single) for front in front_callback.fronts.values()),
            },
            handle,
        )


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(*sys.argv[1:])
