"""The configs' documentation and parsing: field docs in one place, `fixed_weights` kept as given and parsed."""

import dataclasses
import inspect
import warnings

import pytest
import torch
from peft import LoraConfig

from trl_clp import MultiObjectiveConfig, MultiObjectiveGRPOConfig, MultiObjectiveTrainer, demo
from trl_clp.rewards import lowercase_reward, uppercase_reward
from trl_clp.rloo_config import ConditioningFields

from .conftest import tiny_config


@pytest.mark.parametrize("config_class", [MultiObjectiveConfig, MultiObjectiveGRPOConfig])
def test_parameters_block_documents_every_field_with_its_help(config_class):
    doc = inspect.getdoc(config_class)
    assert "\nParameters:\n" in doc
    flat = " ".join(doc.split())
    for f in dataclasses.fields(ConditioningFields):
        assert f"{f.name} (`" in doc, f"{f.name} is missing from {config_class.__name__}'s Parameters block"
        assert " ".join(f.metadata["help"].split()) in flat, f"{f.name}'s help differs from the docstring"
        for choice in f.metadata.get("choices", []):
            assert repr(choice) in doc


def test_fixed_weights_stay_as_given_and_are_parsed_into_floats(tmp_path):
    config = tiny_config(tmp_path, weight_distribution="fixed", fixed_weights=["0.25,0.75", "1,0"])
    assert config.fixed_weights == ["0.25,0.75", "1,0"]  # what the CLI gave, as declared (list[str])
    assert config.parsed_fixed_weights == [[0.25, 0.75], [1.0, 0.0]]
    from_python = tiny_config(tmp_path, weight_distribution="fixed", fixed_weights=[[0.5, 0.5]])
    assert from_python.parsed_fixed_weights == [[0.5, 0.5]]
    assert tiny_config(tmp_path).parsed_fixed_weights is None
    for bad in ("nan,1", "inf,0", "-0.5,1.5"):
        with pytest.raises(ValueError, match="simplex"):
            tiny_config(tmp_path, weight_distribution="fixed", fixed_weights=[bad])


@pytest.mark.parametrize("config_class", [MultiObjectiveConfig, MultiObjectiveGRPOConfig])
def test_the_default_learning_rate_is_one_for_lora_and_a_given_one_is_kept(tmp_path, config_class):
    # TRL's RLOO and GRPO default to 1e-6, a full fine-tuning rate; CLP always trains LoRA adapters.
    assert config_class(output_dir=str(tmp_path), report_to="none").learning_rate == 1e-4
    assert config_class(output_dir=str(tmp_path), report_to="none", learning_rate=3e-3).learning_rate == 3e-3
    help_text = {f.name: f.metadata["help"] for f in dataclasses.fields(config_class)}["learning_rate"]
    assert "LoRA" in help_text and "1e-6" in help_text


def caught_warnings(make):
    """`make()`'s result and the messages of the warnings it raised (import-time deprecations of torch aside)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = make()
    return result, [str(w.message) for w in caught if "torch.jit" not in str(w.message)]


@pytest.mark.parametrize("config_class", [MultiObjectiveConfig, MultiObjectiveGRPOConfig])
def test_a_config_warns_about_checkpointing_only_when_the_user_set_the_deprecated_name(tmp_path, config_class):
    config, messages = caught_warnings(lambda: config_class(output_dir=str(tmp_path), report_to="none"))
    assert messages == []
    assert config.activation_checkpointing is True and config.gradient_checkpointing is True  # TRL's default: on
    config, messages = caught_warnings(
        lambda: config_class(output_dir=str(tmp_path), report_to="none", activation_checkpointing=False)
    )
    assert messages == [] and config.gradient_checkpointing is False
    config, messages = caught_warnings(
        lambda: config_class(output_dir=str(tmp_path), report_to="none", gradient_checkpointing=False)
    )
    assert any("`gradient_checkpointing` is deprecated" in m and "activation_checkpointing" in m for m in messages)
    assert config.activation_checkpointing is False


@pytest.mark.skipif(torch.accelerator.is_available(), reason="pinning memory is right where an accelerator is")
def test_training_on_a_cpu_pins_no_memory_and_raises_no_pin_memory_warning(tmp_path, tokenizer, prompts_dataset):
    def train(**overrides):
        trainer = MultiObjectiveTrainer(
            model=demo.make_tiny_llama(seed=0),
            reward_funcs=[lowercase_reward, uppercase_reward],
            args=tiny_config(tmp_path, max_steps=1, **overrides),
            train_dataset=prompts_dataset,
            processing_class=tokenizer,
            peft_config=LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"]),
        )
        return caught_warnings(trainer.train)[1]

    assert not [m for m in train() if "pin_memory" in m]
    # Asked for, pinning still warns: the warning is the user's to act on.
    assert [m for m in train(dataloader_pin_memory=True) if "pin_memory" in m]


def test_a_negative_steerability_window_is_refused_with_its_meaning(tmp_path):
    with pytest.raises(ValueError, match=r"`steerability_window` must be >= 0 \(a number of completions\), got -1"):
        tiny_config(tmp_path, steerability_window=-1)
    assert tiny_config(tmp_path).steerability_window == 256
