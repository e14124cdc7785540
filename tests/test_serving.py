"""Serving: one exact plain LoRA per weighting (for vLLM and other PEFT loaders)."""

import dataclasses
import json

import pytest
import torch
from peft import LoraConfig, PeftModel

from trl_clp import SteerableModel, demo

INPUT_IDS = torch.tensor([[1, 40, 41, 42, 43, 44], [1, 70, 71, 72, 73, 74]])


def steerable(variant, names, **kwargs):
    # init_lora_weights=False: random B as well as A, so every block changes the output.
    lora = LoraConfig(r=2, lora_alpha=4, init_lora_weights=False, target_modules=["q_proj", "v_proj", "up_proj"])
    torch.manual_seed(1)
    return SteerableModel.from_base_model(demo.make_tiny_llama(seed=0), names, lora, variant=variant, **kwargs)


@pytest.mark.parametrize(
    ("variant", "names", "weights"),
    [("full", ["a", "b"], [0.3, 0.7]), ("attn", ["a", "b", "c"], [0.2, 0.5, 0.3]), ("logit", ["a", "b"], [0.9, 0.1]),
     ("full", ["a", "b"], [1.0, 0.0])],
)
def test_exported_lora_equals_the_conditioned_model(tmp_path, variant, names, weights):
    steer = steerable(variant, names)
    weights = torch.tensor(weights)
    steer.export_lora(str(tmp_path / "export"), weights)

    config = json.loads((tmp_path / "export" / "adapter_config.json").read_text())
    assert config["r"] == 2 * len(names) and not config["rank_pattern"] and not config["alpha_pattern"]
    plain = PeftModel.from_pretrained(demo.make_tiny_llama(seed=0), str(tmp_path / "export")).eval()
    with torch.no_grad(), steer.condition(weights, batch_size=2):
        expected = steer(input_ids=INPUT_IDS).logits
    with torch.no_grad():
        got = plain(input_ids=INPUT_IDS).logits
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()
    with torch.no_grad(), plain.disable_adapter():
        assert (plain(input_ids=INPUT_IDS).logits - expected).abs().max() > 1e-3  # the adapter matters


def test_export_of_a_kl_conditioned_model_takes_the_kl_weight(tmp_path):
    two_blocks = steerable("full", ["reward", "kl"])  # one reward plus the KL block
    config = dataclasses.replace(two_blocks.conditioning_config, objective_names=["reward"], min_kl_weight=0.1)
    steer = SteerableModel(two_blocks.model, config, conditioner=two_blocks.conditioner)
    steer.export_lora(str(tmp_path / "export"), torch.tensor([1.0]), kl_weight=0.4)
    plain = PeftModel.from_pretrained(demo.make_tiny_llama(seed=0), str(tmp_path / "export")).eval()
    with torch.no_grad(), steer.condition(torch.tensor([1.0]), kl_weight=0.4):
        expected = steer(input_ids=INPUT_IDS[:1]).logits
    with torch.no_grad():
        assert torch.allclose(plain(input_ids=INPUT_IDS[:1]).logits, expected, atol=1e-5)


def test_export_rejects_a_batch_and_the_prompting_variant(tmp_path):
    with pytest.raises(ValueError, match="one weighting"):
        steerable("full", ["a", "b"]).export_lora(str(tmp_path), torch.tensor([[0.5, 0.5], [1.0, 0.0]]))
    with pytest.raises(ValueError, match="format_weighted_prompt"):
        steerable("prompt", ["a", "b"]).export_lora(str(tmp_path), torch.tensor([0.5, 0.5]))
