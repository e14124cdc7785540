"""Decoding-time mixtures (DeRA, logit mixing of experts) against plain generation."""

import dataclasses

import pytest
import torch
from peft import LoraConfig

from trl_clp import SteerableModel, demo
from trl_clp.decoding import (
    dera_components,
    expert_mixture_components,
    generate_with_mixed_logits,
    specialist_components,
)


def make_steerable(tokenizer):
    return make_steerable_with(tokenizer, ["a", "b"])


def make_steerable_with(tokenizer, names):
    torch.manual_seed(0)
    rank = 2 * len(names)  # two per block
    lora = LoraConfig(
        r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False
    )
    return SteerableModel.from_base_model(demo.make_tiny_llama(seed=0), names, lora, tokenizer=tokenizer).eval()


def prompts(tokenizer):
    return tokenizer(
        ["Describe: quiet river\n", "Describe: a\n"], return_tensors="pt", padding=True, padding_side="left"
    )


def greedy(steer, inputs, components, tokenizer, steps=8):
    return generate_with_mixed_logits(
        steer,
        inputs["input_ids"],
        inputs["attention_mask"],
        components,
        steps,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )


# transformers 5.x warns that `past_key_values` is to be removed: the KV cache goes under the name forward takes.
@pytest.mark.filterwarnings("error:`past_key_values` is deprecated:FutureWarning")
def test_one_component_reproduces_generate_token_for_token(tokenizer):
    steer, inputs = make_steerable(tokenizer), prompts(tokenizer)
    weights = torch.tensor([[0.3, 0.7], [1.0, 0.0]])
    expected = steer.generate(**inputs, weights=weights, max_new_tokens=8, do_sample=False, pad_token_id=0)
    got = greedy(steer, inputs, [(weights, torch.ones(2))], tokenizer)
    assert torch.equal(got[:, : expected.size(1)], expected)


def test_dera_endpoints_are_the_aligned_and_the_reference_policy(tokenizer):
    steer, inputs = make_steerable(tokenizer), prompts(tokenizer)
    aligned = torch.tensor([[1.0, 0.0]]).expand(2, -1)
    at_one = greedy(steer, inputs, dera_components(aligned, torch.ones(2)), tokenizer)
    assert torch.equal(at_one, greedy(steer, inputs, [(aligned, torch.ones(2))], tokenizer))
    at_zero = greedy(steer, inputs, dera_components(aligned, torch.zeros(2)), tokenizer)
    with steer.model.disable_adapter():
        reference = steer.model.generate(**inputs, max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert torch.equal(at_zero[:, : reference.size(1)], reference)


def test_expert_mixture_at_a_corner_is_that_expert(tokenizer):
    steer, inputs = make_steerable(tokenizer), prompts(tokenizer)
    corner = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    mixed = greedy(steer, inputs, expert_mixture_components(corner), tokenizer)
    assert torch.equal(mixed, greedy(steer, inputs, [(corner, torch.ones(2))], tokenizer))


def test_specialist_components_are_the_corners_as_the_models_own_conditioning_vectors(tokenizer):
    """With KL-weight conditioning a corner's vector carries the KL entry: (e_i scaled by α0/α, 1 − α0/α)."""
    three_blocks = make_steerable_with(tokenizer, ["a", "b", "kl"])
    config = dataclasses.replace(three_blocks.conditioning_config, objective_names=["a", "b"], min_kl_weight=0.1)
    steer = SteerableModel(three_blocks.model, config, tokenizer, three_blocks.conditioner)
    weights = torch.tensor([[0.25, 0.75], [1.0, 0.0]])
    (first, w0), (second, w1) = specialist_components(steer, weights)
    assert torch.equal(first, torch.tensor([[1.0, 0.0, 0.0]] * 2)) and torch.equal(w0, weights[:, 0])
    assert torch.equal(second, torch.tensor([[0.0, 1.0, 0.0]] * 2)) and torch.equal(w1, weights[:, 1])
    (first, _), _ = specialist_components(steer, weights, kl_weight=0.4)
    assert torch.allclose(first, torch.tensor([[0.25, 0.0, 0.75]] * 2))
