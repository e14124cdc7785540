"""Each block's learning signal: per-block gradients, their agreement across rows, and the own-advantage signal."""

import math
import re

import pytest
import torch
from peft import LoraConfig, get_peft_model

from trl_clp import (
    MultiObjectiveConfig,
    MultiObjectiveGRPOConfig,
    MultiObjectiveGRPOTrainer,
    MultiObjectiveTrainer,
    demo,
)
from trl_clp.conditioning.block_signal import (
    block_gradient_coefficients,
    block_gradients,
    cross_term_weight,
    gradient_agreement,
    objective_of_blocks,
)
from trl_clp.conditioning.model import attach_conditioning, build_conditioned_lora_config

from .conftest import TARGETS, lower, tiny_config_values, upper


def test_gradient_agreement_hand_computed():
    aligned = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    opposed = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    orthogonal = torch.tensor([[3.0, 0.0], [0.0, 4.0]])  # ||(3, 4)|| / (3 + 4)
    assert gradient_agreement(aligned).item() == pytest.approx(1.0)
    assert gradient_agreement(opposed).item() == pytest.approx(0.0)
    assert gradient_agreement(orthogonal).item() == pytest.approx(5 / 7)
    # (B, blocks, P): one value per block; a block no row reached is NaN, not 0 (it had no signal, not a cancelling one)
    per_block = torch.stack([aligned, torch.zeros(2, 2)], dim=1)  # (2, 2, 2)
    values = gradient_agreement(per_block)
    assert values[0].item() == pytest.approx(1.0) and math.isnan(values[1].item())


def test_gradient_agreement_of_random_directions_is_about_one_over_root_b():
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(16, 50, 2048, generator=generator)  # (B, trials, P): 50 trials of B = 16 rows
    assert gradient_agreement(rows).mean().item() == pytest.approx(16**-0.5, rel=0.05)


def conditioned_tiny_model(num_blocks=2, rank=2):
    model = demo.make_tiny_llama(seed=0)
    lora = LoraConfig(r=rank, lora_alpha=4, target_modules=TARGETS, init_lora_weights="gaussian")
    peft_model = get_peft_model(model, build_conditioned_lora_config(lora, "full", None, num_blocks))
    conditioner = attach_conditioning(peft_model, lora, "full", None, num_blocks)
    return peft_model, conditioner


def test_block_gradients_are_the_blocks_rank_slices():
    model, conditioner = conditioned_tiny_model()
    names = conditioner.conditioned_module_names
    modules = dict(model.named_modules())
    for name in names:  # gradient = a tag of (layer, row or column) so that every slice is recognisable
        layer = modules[name]
        a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        a.grad = torch.arange(a.numel(), dtype=torch.float32).view_as(a)
        b.grad = -torch.arange(b.numel(), dtype=torch.float32).view_as(b)
    gradients = block_gradients(model, names, 2)
    first = modules[names[0]]
    a_grad, b_grad = first.lora_A["default"].weight.grad, first.lora_B["default"].weight.grad
    # block 1 = rows 2-3 of lora_A, columns 2-3 of lora_B (rank 2 per block), first layer first
    expected = torch.cat([a_grad[2:4].reshape(-1), b_grad[:, 2:4].reshape(-1)])
    assert torch.equal(gradients[1, : expected.numel()], expected)
    per_layer = sum(
        modules[n].lora_A["default"].weight.numel() + modules[n].lora_B["default"].weight.numel() for n in names
    )
    assert gradients.shape == (2, per_layer // 2)


# ---------------------------------------------------------------------------------------------- the own-advantage signal


def test_cross_term_weight_schedule():
    assert [cross_term_weight(p, 0.2, 0.6) for p in (0.0, 0.2, 0.4, 0.6, 0.9)] == pytest.approx([0, 0, 0.5, 1, 1])
    assert cross_term_weight(0.5, 1.0, 1.0) == 0.0  # both at 1: λ = 0 for the whole run
    assert cross_term_weight(0.0, 0.0, 0.0) == 1.0  # both at 0: today's signal from the start


def test_only_the_objectives_linear_blocks_are_theirs():
    # two objectives and the KL entry (n = 3): linear blocks 0, 1, kl; shared; pairs (0,1), (0,kl), (1,kl)
    assert objective_of_blocks(["linear", "shared", "pairwise"], 3, 2) == [0, 1, None, None, None, None, None]
    assert objective_of_blocks(["linear"], 2, 2) == [0, 1]


def test_block_gradient_coefficients_hand_computed():
    objective_advantages = torch.tensor([[1.0, -1.0], [0.5, 2.0]])  # (N=2, m=2)
    advantages = torch.tensor([0.2, 1.0])
    # blocks: objective 1's, objective 0's, then one that belongs to no objective (the KL-weight block)
    coefficients = block_gradient_coefficients(objective_advantages, advantages, [1, 0, None], 0.25)
    expected = torch.tensor(
        [[0.75 * -1 + 0.25 * 0.2, 0.75 * 1 + 0.25 * 0.2, 0.2], [0.75 * 2 + 0.25, 0.75 * 0.5 + 0.25, 1.0]]
    )
    torch.testing.assert_close(coefficients, expected)


def own_signal_trainer(tmp_path, tokenizer, trainer_class=MultiObjectiveTrainer, **overrides):
    """A tiny attn-CLP trainer with block_signal='own' (shared MLP LoRA layers beside the conditioned attention), its
    `lora_B` randomised so that every LoRA weight has a gradient."""
    config_class = MultiObjectiveConfig if trainer_class is MultiObjectiveTrainer else MultiObjectiveGRPOConfig
    values = {
        "conditioning": "attn",
        "block_signal": "own",
        "weight_distribution": "dirichlet",
        "dirichlet_concentration": 0.3,
        "max_completion_length": 6,
        "max_steps": 10,
        **overrides,
    }
    trainer = trainer_class(
        model=demo.make_tiny_llama(seed=0),
        reward_funcs=[lower, upper],
        args=config_class(**tiny_config_values(tmp_path, **values)),
        train_dataset=demo.make_prompt_dataset(16, seed=0),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=2, lora_alpha=4, target_modules=TARGETS),
    )
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in trainer.model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator))
    return trainer


def training_batch(trainer, step=0):
    """One training batch of the trainer's own output dict (generation, rewards, advantages, coefficients)."""
    trainer.model.train()
    trainer.state.global_step, trainer.state.max_steps = step, trainer.args.max_steps
    trainer.current_gradient_accumulation_steps = 1  # set by `Trainer.train` (GRPO's loss reads it)
    prompts = demo.make_prompt_dataset(2, seed=3)["prompt"]
    return trainer._generate_and_score_completions([{"prompt": p} for p in prompts for _ in range(4)])


def trainable_gradients(trainer, inputs) -> dict[str, torch.Tensor]:
    """Every trainable parameter's gradient of the trainer's loss on `inputs` (coefficients kept through backward)."""
    model = trainer.model
    model.zero_grad(set_to_none=True)
    try:
        trainer.compute_loss(model, inputs).backward()
    finally:
        trainer.conditioner.clear()
        trainer.gradient_coefficients.clear()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


def without_coefficients(inputs):
    return {key: value for key, value in inputs.items() if key != "gradient_coefficients"}


def assert_close_gradient(got, expected, name, tolerance=1e-5):
    # float32 sums over rows of both signs: the tolerance is relative to the tensor's largest entry
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=tolerance * expected.abs().max().item(), msg=name)


def assert_same_gradients(got, expected):
    assert got.keys() == expected.keys()
    for name in expected:
        assert_close_gradient(got[name], expected[name], name)


@pytest.mark.parametrize("trainer_class", [MultiObjectiveTrainer, MultiObjectiveGRPOTrainer])
def test_with_the_cross_terms_fully_back_the_gradients_are_todays(tmp_path, tokenizer, trainer_class):
    # cross_term_start = end = 0: λ = 1 from the first step
    trainer = own_signal_trainer(tmp_path, tokenizer, trainer_class, cross_term_start=0.0, cross_term_end=0.0)
    inputs = training_batch(trainer)
    assert (inputs["advantages"] != 0).any() and "gradient_coefficients" in inputs
    assert_same_gradients(
        trainable_gradients(trainer, inputs), trainable_gradients(trainer, without_coefficients(inputs))
    )


@pytest.mark.parametrize("trainer_class", [MultiObjectiveTrainer, MultiObjectiveGRPOTrainer])
def test_one_hot_weightings_give_todays_gradients_at_every_cross_term_weight(tmp_path, tokenizer, trainer_class):
    trainer = own_signal_trainer(tmp_path, tokenizer, trainer_class, weight_distribution="one_hot")
    inputs = training_batch(trainer, step=3)  # λ = 0.3
    assert (inputs["advantages"] != 0).any() and "gradient_coefficients" in inputs
    assert_same_gradients(
        trainable_gradients(trainer, inputs), trainable_gradients(trainer, without_coefficients(inputs))
    )


def loo(values: list[float]) -> list[float]:
    return [v - (sum(values) - v) / (len(values) - 1) for v in values]


@pytest.mark.parametrize(
    "gradient_checkpointing, features",
    [(False, ["linear"]), (True, ["linear"]), (False, ["linear", "shared", "pairwise"])],
)
def test_each_block_gets_its_own_objectives_advantage(tmp_path, tokenizer, gradient_checkpointing, features):
    """Against an independent recomputation: the rewards from the decoded completions, leave-one-out advantages by
    hand, one backward per row with advantage 1, and the per-row gradients summed with the expected coefficients:
    each objective's linear block its own advantage (mixed back by λ), the shared and pairwise blocks and the shared
    LoRA layers the mixed advantage."""
    trainer = own_signal_trainer(
        tmp_path, tokenizer, gradient_checkpointing=gradient_checkpointing, conditioning_features=features
    )
    inputs = training_batch(trainer, step=4)  # λ = 0.4
    cross_terms = 0.4
    weights = inputs["conditioning_vectors"]  # (8, 2), two prompt groups
    texts = tokenizer.batch_decode(
        inputs["completion_ids"].masked_fill(inputs["completion_mask"] == 0, 0), skip_special_tokens=True
    )
    rewards = torch.tensor([lower(texts), upper(texts)]).T  # (8, 2); β = 0: no KL term
    own = torch.tensor([loo(rewards[g * 4 : g * 4 + 4, i].tolist()) for g in range(2) for i in range(2)])
    own = own.view(2, 2, 4).permute(0, 2, 1).reshape(8, 2)  # (8, 2) A_i
    mixed = (weights * own).sum(1)
    torch.testing.assert_close(inputs["advantages"], mixed, rtol=1e-5, atol=1e-6)
    assert (own.sign() != mixed.sign().unsqueeze(1)).any()  # rows where a block's own advantage has the other sign

    got = trainable_gradients(trainer, inputs)
    rows = []
    for b in range(8):
        row = {
            k: v[b : b + 1] if isinstance(v, torch.Tensor) and v.dim() and v.size(0) == 8 else v
            for k, v in inputs.items()
        }
        row = without_coefficients(row)
        row["advantages"] = torch.ones(1)
        rows.append(trainable_gradients(trainer, row))
    conditioned = trainer.conditioner.conditioned_module_names
    num_blocks = trainer.conditioner.num_blocks  # linear (2), then shared (1) and pairwise (1) if chosen
    own_blocks = (1 - cross_terms) * own + cross_terms * mixed.unsqueeze(1)  # (8, 2)
    block_coefficient = torch.cat([own_blocks, mixed.unsqueeze(1).expand(8, num_blocks - 2)], dim=1)
    for name in got:
        layer = name.split(".lora_")[0]
        per_row = torch.stack([row[name] for row in rows])  # (8, *shape)
        if layer in conditioned:  # block k = rank slice k of lora_A's rows / lora_B's columns
            block_dim = 0 if ".lora_A." in name else 1
            coefficient = block_coefficient.repeat_interleave(2, dim=1)  # rank 2 per block
            shape = [8, 1, 1]
            shape[1 + block_dim] = -1
            expected = (coefficient.view(shape) * per_row).mean(0)
        else:
            expected = (mixed.view(8, 1, 1) * per_row).mean(0)
        assert_close_gradient(got[name], expected, name, tolerance=1e-4)  # one-row forwards round differently
    todays = trainable_gradients(trainer, without_coefficients(inputs))
    changed = [(got[n] - todays[n]).norm() / todays[n].norm() for n in got if n.split(".lora_")[0] in conditioned]
    assert max(changed) > 0.1


def synthetic_rewards():
    """Two prompt groups of 4, conflicting objectives, a NaN (not applicable) and an unscorable row, KL per row."""
    nan = math.nan
    rewards = torch.tensor(
        [[0.9, 0.1], [0.2, 0.8], [0.5, nan], [0.4, 0.7], [nan, nan], [0.3, 0.6], [0.8, 0.1], [0.6, 0.3]]
    )
    weights = torch.tensor([[0.7, 0.3]] * 4 + [[0.1, 0.9]] * 4)
    kl = torch.tensor([0.5, 1.0, 0.2, 0.0, 0.3, 0.8, 0.4, 0.1])
    kl_weight = torch.tensor([0.1] * 4 + [0.2] * 4)
    return rewards, weights, kl, kl_weight


@pytest.mark.parametrize(
    "trainer_class, settings",
    [
        (MultiObjectiveTrainer, {"normalize_advantages": False}),
        (MultiObjectiveTrainer, {"normalize_advantages": True}),
        (MultiObjectiveGRPOTrainer, {"scale_rewards": "group"}),
        (MultiObjectiveGRPOTrainer, {"scale_rewards": "batch"}),
        (MultiObjectiveGRPOTrainer, {"scale_rewards": "none"}),
        (MultiObjectiveGRPOTrainer, {"multi_objective_aggregation": "normalize_then_sum"}),
    ],
)
def test_the_objectives_advantages_weighted_by_w_are_the_advantage(tmp_path, tokenizer, trainer_class, settings):
    trainer = own_signal_trainer(tmp_path, tokenizer, trainer_class)
    for name, value in settings.items():
        setattr(trainer, name, value)
    rewards, weights, kl, kl_weight = synthetic_rewards()
    _, advantages = trainer._rewards_and_advantages(rewards, weights, kl, kl_weight, 4)
    own = trainer._objective_advantages(rewards, weights, kl, kl_weight, 4)  # (8, 2)
    torch.testing.assert_close((weights * own).sum(1), advantages, rtol=1e-5, atol=1e-6)
    assert own[4].eq(0).all()  # the unscorable row has no signal
    assert (own[:, 0] - own[:, 1]).abs().max() > 0.1  # not the same advantage copied into every block


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"scalarization": "tchebycheff"}, "scalarization='linear'"),
        ({"conditioning": "logit"}, "use 'full' or 'attn'"),
        ({"conditioning": "prompt"}, "use 'full' or 'attn'"),
        ({"num_iterations": 2}, "num_iterations=1"),
        ({"steps_per_generation": 2}, "steps_per_generation=gradient_accumulation_steps"),
        ({"reward_clip_range": (-1.0, 1.0)}, "reward_clip_range"),
        ({"cross_term_start": 0.8, "cross_term_end": 0.5}, "0 <= start <= end"),
        ({"block_signal": "mixed", "cross_term_end": 0.5}, "set block_signal='own'"),
        ({"block_signal": "per_block"}, "must be one of"),
    ],
)
def test_settings_the_own_signal_cannot_honour_are_refused(tmp_path, overrides, message):
    values = {"block_signal": "own", **overrides}
    with pytest.raises(ValueError, match=re.escape(message)):
        MultiObjectiveConfig(**tiny_config_values(tmp_path, **values))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"loss_type": "vespo"}, "loss_type='vespo'"),
        ({"off_policy_mask_threshold": 0.5}, "off_policy_mask_threshold"),
        ({"entropy_coef": 0.01}, "entropy bonus"),
    ],
)
def test_grpo_settings_the_own_signal_cannot_honour_are_refused(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        MultiObjectiveGRPOConfig(**tiny_config_values(tmp_path, block_signal="own", **overrides))


@pytest.mark.parametrize(
    "lora, message",
    [
        ({"lora_dropout": 0.1}, "lora_dropout=0"),
        ({"modules_to_save": ["embed_tokens"]}, "modules_to_save"),
    ],
)
def test_models_the_own_signal_cannot_honour_are_refused(tmp_path, tokenizer, lora, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        MultiObjectiveTrainer(
            model=demo.make_tiny_llama(seed=0),
            reward_funcs=[lower, upper],
            args=MultiObjectiveConfig(**tiny_config_values(tmp_path, block_signal="own")),
            train_dataset=demo.make_prompt_dataset(8, seed=0),
            processing_class=tokenizer,
            peft_config=LoraConfig(r=2, lora_alpha=4, target_modules=TARGETS, **lora),
        )


def test_the_own_signal_trains_and_logs_its_cross_term_weight(tmp_path, tokenizer):
    trainer = own_signal_trainer(tmp_path, tokenizer, max_steps=3, logging_steps=1)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    logged = [log["block_signal/cross_term_weight"] for log in trainer.state.log_history if "loss" in log]
    assert logged == pytest.approx([0.0, 1 / 3, 2 / 3])  # λ = step / max_steps (cross_term_start 0, end 1)
    assert all(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters() if p.requires_grad)
    assert trainer.gradient_coefficients._coefficients is None  # cleared after every step
