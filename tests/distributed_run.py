"""Run by `test_distributed.py` under `torchrun --nproc_per_node 2` (gloo on CPU); not collected by pytest.

Each rank trains a few steps and writes, to `<out>/rank<k>.json`, the weighting it saw for every prompt and a
checksum of every trainable parameter and, per optimizer step, of every gradient.
"""

import json
import os
import pathlib
import sys

import torch
from conftest import tiny_config, tiny_config_values  # run as a script: its folder, tests/, is on sys.path (and sets offline mode)
from peft import LoraConfig
from transformers import TrainerCallback

from trl_clp import ConditioningConfig, MultiObjectiveGRPOConfig, MultiObjectiveGRPOTrainer, MultiObjectiveTrainer, demo
from trl_clp.rewards import lowercase_reward, uppercase_reward


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
        args = MultiObjectiveGRPOConfig(**tiny_config_values(pathlib.Path(out_dir), **values), scalarization="tchebycheff")
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
            gradient_sums.append({
                n: p.grad.double().sum().item() for n, p in trainer.model.named_parameters() if p.grad is not None
            })

    trainer.add_callback(RecordGradients())
    metadata_saves = []
    original_save = ConditioningConfig.save
    ConditioningConfig.save = lambda config, directory: (metadata_saves.append(directory), original_save(config, directory))
    trainer.train()
    trainer.save_model(os.path.join(out_dir, "final"))
    checksums = {n: p.detach().double().sum().item() for n, p in trainer.model.named_parameters() if p.requires_grad}
    rank = trainer.accelerator.process_index
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as handle:
        json.dump({"seen": seen, "checksums": checksums, "gradients": gradient_sums, "metadata_saves": metadata_saves,
                   "ideal_point": None if trainer.ideal_point is None else trainer.ideal_point.maxima.tolist(),
                   "world_size": trainer.accelerator.num_processes}, handle)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(*sys.argv[1:])
