"""Run by `test_distributed_dpo.py` under `torchrun --nproc_per_node 2` (gloo on CPU); not collected by pytest.

Each rank trains DPO-CLP for a few steps and writes, to `<out>/rank<k>.json`, the weightings of its pairs at every
micro-step, a checksum of every trainable parameter and, per optimizer step, of every gradient.
"""

import json
import os
import pathlib
import sys

import torch
from peft import LoraConfig
from transformers import TrainerCallback

from trl_clp import ConditioningConfig, MultiObjectiveDPOTrainer, demo

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run as a script: the checkout, for `tests`
from tests.test_dpo_trainer import case_pairs, dpo_config  # noqa: E402


def main(out_dir):
    trainer = MultiObjectiveDPOTrainer(
        demo.make_tiny_llama(seed=0),
        args=dpo_config(pathlib.Path(out_dir), use_cpu=True, per_device_train_batch_size=2, max_steps=3),
        train_dataset=case_pairs(32, seed=0),
        processing_class=demo.make_byte_tokenizer(),
        peft_config=LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj", "up_proj"]),
    )
    seen = []  # per micro-step: [global step, this rank's (B, m) weightings]
    original = trainer._compute_loss

    def recording(model, inputs, return_outputs):
        seen.append([trainer.state.global_step, inputs["weights"].tolist()])
        return original(model, inputs, return_outputs)

    trainer._compute_loss = recording
    gradient_sums = []

    class RecordGradients(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            gradient_sums.append(
                {n: p.grad.double().sum().item() for n, p in trainer.model.named_parameters() if p.grad is not None}
            )

    trainer.add_callback(RecordGradients())
    metadata_saves = []
    original_save = ConditioningConfig.save
    ConditioningConfig.save = lambda config, directory: (
        metadata_saves.append(directory),
        original_save(config, directory),
    )
    trainer.train()
    trainer.save_model(os.path.join(out_dir, "final"))
    checksums = {n: p.detach().double().sum().item() for n, p in trainer.model.named_parameters() if p.requires_grad}
    with open(os.path.join(out_dir, f"rank{trainer.accelerator.process_index}.json"), "w") as handle:
        json.dump(
            {
                "seen": seen,
                "checksums": checksums,
                "gradients": gradient_sums,
                "metadata_saves": metadata_saves,
                "world_size": trainer.accelerator.num_processes,
            },
            handle,
        )


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(*sys.argv[1:])
