"""Decoding-time mixtures (DeRA, logit mixing of experts) against plain generation."""

import torch
from peft import LoraConfig

from trl_clp import SteerableModel, demo
from trl_clp.decoding import dera_components, expert_mixture_components, generate_with_mixed_logits


def make_steerable(tokenizer):
    torch.manual_seed(0)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False)
    return SteerableModel.from_base_model(demo.make_tiny_llama(seed=0), ["a", "b"], lora, tokenizer=tokenizer).eval()


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
