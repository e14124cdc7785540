"""End to end: CLP training on the demo task makes each reward rise with its weight, on held-out prompts."""

import pytest
import torch
from peft import LoraConfig

from trl_clp import (
    MultiObjectiveConfig,
    MultiObjectiveGRPOConfig,
    MultiObjectiveGRPOTrainer,
    MultiObjectiveTrainer,
    SteerableModel,
    demo,
    simplex_grid,
)
from trl_clp.evaluation import evaluate_front
from trl_clp.rewards import lowercase_reward, uppercase_reward

from .conftest import TARGETS, tiny_config_values


@pytest.fixture(scope="module")
def pretrained_base(tmp_path_factory):
    tokenizer = demo.make_byte_tokenizer()
    model = demo.pretrain_demo_model(demo.make_tiny_llama(seed=0), tokenizer, steps=200)
    path = tmp_path_factory.mktemp("base")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


TRAINERS = {
    "rloo": (MultiObjectiveConfig, MultiObjectiveTrainer),
    "grpo": (MultiObjectiveGRPOConfig, MultiObjectiveGRPOTrainer),
}


@pytest.mark.parametrize(
    "conditioning, trainer", [("full", "rloo"), ("attn", "rloo"), ("logit", "rloo"), ("full", "grpo")]
)
def test_training_makes_the_objectives_steerable(tmp_path, pretrained_base, conditioning, trainer):
    tokenizer = demo.make_byte_tokenizer()
    config_class, trainer_class = TRAINERS[trainer]
    args = config_class(
        **tiny_config_values(
            tmp_path,
            conditioning=conditioning,
            max_steps=120,
            per_device_train_batch_size=16,
            max_completion_length=24,
            learning_rate=3e-3,
            beta=0.01,
            logging_steps=20,
        )
    )
    trainer = trainer_class(
        model=pretrained_base,
        reward_funcs=[lowercase_reward, uppercase_reward],
        args=args,
        train_dataset=demo.make_prompt_dataset(256, seed=0),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS),
    )
    trainer.train()
    trainer.save_model()
    steer = SteerableModel.from_pretrained(args.output_dir)  # base model and tokenizer from the saved metadata
    front = evaluate_front(
        steer,
        tokenizer,
        list(demo.make_prompt_dataset(16, seed=1)["prompt"]),  # held out
        [lowercase_reward, uppercase_reward],
        simplex_grid(2, 3),
        num_samples=2,
        max_new_tokens=24,
    )
    lower_first, upper_first = front.results[0].rewards.values()  # w = (1, 0)
    lower_last, upper_last = front.results[-1].rewards.values()  # w = (0, 1)
    assert lower_first - lower_last > 0.3, front.format_table()
    assert upper_last - upper_first > 0.3, front.format_table()
    assert all(torch.isfinite(torch.tensor(r.kl)) for r in front.results)
    assert front.steerability()["rank_correlation"] == [1.0, 1.0]
