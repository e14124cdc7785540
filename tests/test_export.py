"""Export: one exact plain LoRA per weighting (`SteerableModel.export_lora`, for vLLM and other PEFT loaders)."""

import dataclasses
import json

import pytest
import torch
from peft import LoraConfig, PeftModel

from trl_clp import SteerableModel, demo

INPUT_IDS = torch.tensor([[1, 40, 41, 42, 43, 44], [1, 70, 71, 72, 73, 74]])


def steerable(variant, names, tied=False, **kwargs):
    # init_lora_weights=False: random B as well as A, so every block changes the output.
    lora = LoraConfig(r=2, lora_alpha=4, init_lora_weights=False, target_modules=["q_proj", "v_proj", "up_proj"])
    base = demo.make_tiny_llama(seed=0, tie_word_embeddings=tied)
    torch.manual_seed(1)
    return SteerableModel.from_base_model(base, names, lora, conditioning=variant, **kwargs)


@pytest.mark.parametrize(
    ("variant", "names", "weights"),
    [
        ("full", ["a", "b"], [0.3, 0.7]),
        ("attn", ["a", "b", "c"], [0.2, 0.5, 0.3]),
        ("logit", ["a", "b"], [0.9, 0.1]),
        ("full", ["a", "b"], [1.0, 0.0]),
    ],
)
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_exported_lora_and_merged_model_equal_the_conditioned_model(tmp_path, variant, names, weights, tied):
    steer = steerable(variant, names, tied=tied)
    weights = torch.tensor(weights)
    steer.export_lora(str(tmp_path / "export"), weights)

    config = json.loads((tmp_path / "export" / "adapter_config.json").read_text())
    assert config["r"] == 2 * len(names) and not config["rank_pattern"] and not config["alpha_pattern"]
    base = demo.make_tiny_llama(seed=0, tie_word_embeddings=tied)
    plain = PeftModel.from_pretrained(base, str(tmp_path / "export")).eval()
    with torch.no_grad(), steer.condition(weights, batch_size=2):
        expected = steer(input_ids=INPUT_IDS).logits
    with torch.no_grad():
        got = plain(input_ids=INPUT_IDS).logits
        merged = steer.merge(weights)(input_ids=INPUT_IDS).logits
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()
    assert torch.allclose(merged, expected, atol=1e-5), (merged - expected).abs().max()
    with torch.no_grad(), plain.disable_adapter():
        assert (plain(input_ids=INPUT_IDS).logits - expected).abs().max() > 1e-3  # the adapter matters
    if weights.min() > 0:  # another weighting gives another model: the weighting reached the export
        other = torch.roll(weights, 1)
        with torch.no_grad(), steer.condition(other, batch_size=2):
            assert (steer(input_ids=INPUT_IDS).logits - expected).abs().max() > 1e-3


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
    with torch.no_grad(), steer.condition(torch.tensor([1.0]), kl_weight=0.1):  # the α reached the export
        assert (steer(input_ids=INPUT_IDS[:1]).logits - expected).abs().max() > 1e-3


def test_export_rejects_a_batch_and_the_prompting_variant(tmp_path):
    with pytest.raises(ValueError, match="one weighting"):
        steerable("full", ["a", "b"]).export_lora(str(tmp_path), torch.tensor([[0.5, 0.5], [1.0, 0.0]]))
    with pytest.raises(ValueError, match="format_weighted_prompt"):
        steerable("prompt", ["a", "b"]).export_lora(str(tmp_path), torch.tensor([0.5, 0.5]))
