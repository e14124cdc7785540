"""Run by `test_faults.py` in a subprocess that the test kills with SIGKILL; not collected by pytest.

Trains with a checkpoint every 2 steps, appends each generation's weightings to `<out>/weightings.jsonl` as it
goes, and at the end of step 5 (checkpoint-4 written, step 5 not saved) writes `<out>/ready` and waits to be killed.
"""

import json
import os
import pathlib
import sys
import time

import torch
from peft import LoraConfig
from transformers import TrainerCallback

from trl_clp import MultiObjectiveTrainer, demo
from trl_clp.rewards import lowercase_reward, uppercase_reward

try:  # imported by test_faults.py
    from .conftest import tiny_config
except ImportError:  # run as a script: its folder, tests/, is on sys.path (conftest also sets offline mode)
    from conftest import tiny_config

KILL_AT_STEP = 5


def make_trainer(out_dir: str) -> MultiObjectiveTrainer:
    return MultiObjectiveTrainer(
        model=demo.make_tiny_llama(seed=0),
        reward_funcs=[lowercase_reward, uppercase_reward],
        args=tiny_config(pathlib.Path(out_dir), max_steps=8, save_strategy="steps", save_steps=2),
        train_dataset=demo.make_prompt_dataset(64, seed=0),
        processing_class=demo.make_byte_tokenizer(),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )


def record_weightings(trainer: MultiObjectiveTrainer, path: str) -> None:
    """Append `[global_step, weightings of the generated rows]` to `path` at every generation."""
    original = trainer._generate_and_score_completions

    def recording(inputs):
        output = original(inputs)
        with open(path, "a") as handle:
            handle.write(json.dumps([trainer.state.global_step, output["conditioning_vectors"].tolist()]) + "\n")
        return output

    trainer._generate_and_score_completions = recording


class WaitToBeKilled(TrainerCallback):
    def __init__(self, out_dir):
        self.out_dir = out_dir

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == KILL_AT_STEP:
            pathlib.Path(self.out_dir, "ready").touch()
            time.sleep(600)


if __name__ == "__main__":
    torch.set_num_threads(1)
    out = sys.argv[1]
    trainer = make_trainer(out)
    record_weightings(trainer, os.path.join(out, "weightings.jsonl"))
    trainer.add_callback(WaitToBeKilled(out))
    trainer.train()
