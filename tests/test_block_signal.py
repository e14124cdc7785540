"""Each block's learning signal: per-block gradients, their agreement across rows, and the own-advantage signal."""

import math

import pytest
import torch
from peft import LoraConfig, get_peft_model

from trl_clp import demo
from trl_clp.conditioning.block_signal import block_gradients, gradient_agreement
from trl_clp.conditioning.model import attach_conditioning, build_conditioned_lora_config

from .conftest import TARGETS


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
