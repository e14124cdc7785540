"""GGUF checkpoints: `trl-clp convert-gguf` and the refusals that point to it (a tiny llama GGUF written here)."""

import json
import os

import pytest
import torch
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_clp import MultiObjectiveConfig, MultiObjectiveGRPOConfig, MultiObjectiveTrainer, SteerableModel, demo
from trl_clp.cli import main
from trl_clp.gguf import convert_gguf

from .conftest import GGUF_CHAT_TEMPLATE, TARGETS, lower, tiny_config_values, upper

pytest.importorskip("gguf")


def load_from_gguf(path):
    folder, filename = os.path.split(path)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
    return model, AutoTokenizer.from_pretrained(folder, gguf_file=filename)


@pytest.fixture
def converted(tiny_gguf, tmp_path):
    return convert_gguf(tiny_gguf, str(tmp_path / "converted")) and str(tmp_path / "converted")


def test_cli_convert_gguf_writes_a_plain_folder_with_the_gguf_models_logits_and_tokenizer(tiny_gguf, tmp_path, capsys):
    output_dir = str(tmp_path / "converted")
    main(["convert-gguf", tiny_gguf, output_dir])
    printed = capsys.readouterr().out
    written = sorted(os.listdir(output_dir))
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= set(written)
    assert all(os.path.join(output_dir, name) in printed for name in written)

    with open(os.path.join(output_dir, "config.json")) as handle:
        assert "quantization_config" not in json.load(handle)  # no GGUF quantizer to attach on reload
    model = AutoModelForCausalLM.from_pretrained(output_dir)  # no `gguf_file`: a standard folder
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    gguf_model, gguf_tokenizer = load_from_gguf(tiny_gguf)
    assert model.dtype == torch.float32 and type(model).__name__ == "LlamaForCausalLM"
    assert model.config.num_hidden_layers == 2 and model.config.num_key_value_heads == 2

    text = "the theme of the tale"
    assert tokenizer(text).input_ids == gguf_tokenizer(text).input_ids
    assert tokenizer.chat_template == GGUF_CHAT_TEMPLATE
    chat = [{"role": "user", "content": "hi"}]
    assert tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert model.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id

    ids = torch.tensor([tokenizer(text).input_ids])
    with torch.no_grad():
        logits, expected = model(ids).logits, gguf_model(ids).logits
    assert logits.abs().max() > 0.1
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-6)


def test_convert_gguf_saves_the_dtype_asked_and_refuses_a_used_folder(tiny_gguf, tmp_path, capsys):
    paths = convert_gguf(tiny_gguf, str(tmp_path / "bf16"), dtype="bfloat16")
    assert os.path.join(str(tmp_path / "bf16"), "model.safetensors") in paths
    assert AutoModelForCausalLM.from_pretrained(str(tmp_path / "bf16")).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="not empty: give a new folder"):
        convert_gguf(tiny_gguf, str(tmp_path / "bf16"))
    with pytest.raises(SystemExit) as exit_info:
        main(["convert-gguf", str(tmp_path / "missing.gguf"), str(tmp_path / "out")])
    assert "The GGUF file" in str(exit_info.value.code) and "does not exist" in str(exit_info.value.code)


def test_a_converted_model_trains_and_its_steerable_model_merges_and_saves(converted, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(converted)
    trainer = MultiObjectiveTrainer(
        model=converted,
        reward_funcs=[lower, upper],
        args=MultiObjectiveConfig(**tiny_config_values(tmp_path)),
        train_dataset=demo.make_prompt_dataset(16, seed=0),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS),
    )
    trainer.train()
    trainer.save_model(str(tmp_path / "clp"))

    steer = SteerableModel.from_pretrained(str(tmp_path / "clp"))
    assert steer.model.peft_config["default"].base_model_name_or_path == os.path.abspath(converted)
    assert steer.tokenizer.chat_template == GGUF_CHAT_TEMPLATE
    ids = torch.tensor([tokenizer("the tale").input_ids])
    weights = torch.tensor([0.3, 0.7])
    steer.merge(weights).save_pretrained(str(tmp_path / "merged"))
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"))
    with torch.no_grad():
        with steer.condition(weights):
            steered = steer(input_ids=ids).logits
        with steer.condition(torch.tensor([1.0, 0.0])):
            other = steer(input_ids=ids).logits
        torch.testing.assert_close(merged(ids).logits, steered, rtol=0, atol=1e-5)
    assert (steered - other).abs().max() > 1e-4  # the blocks trained apart: the weighting matters


@pytest.mark.parametrize("config_class", [MultiObjectiveConfig, MultiObjectiveGRPOConfig])
@pytest.mark.parametrize("kwargs", [{"gguf_file": "model.gguf"}, '{"gguf_file": "model.gguf"}'])  # JSON: the CLI's
def test_config_refuses_gguf_file_in_model_init_kwargs(tmp_path, config_class, kwargs):
    with pytest.raises(ValueError, match=r"sets `gguf_file`.*trl-clp convert-gguf FILE.gguf OUTPUT_DIR"):
        config_class(**tiny_config_values(tmp_path, model_init_kwargs=kwargs))


def test_trainer_refuses_a_gguf_file_or_folder_as_the_model(tiny_gguf, tmp_path):
    for model in (tiny_gguf, os.path.dirname(tiny_gguf)):
        with pytest.raises(ValueError, match=r"is a GGUF checkpoint \(tiny-llama.f32.gguf\).*trl-clp convert-gguf"):
            MultiObjectiveTrainer(
                model=model,
                reward_funcs=[lower, upper],
                args=MultiObjectiveConfig(**tiny_config_values(tmp_path)),
                train_dataset=demo.make_prompt_dataset(8, seed=0),
                processing_class=demo.make_byte_tokenizer(),
            )


@pytest.fixture
def adapter_on_gguf(tiny_gguf, tmp_path):
    """A CLP adapter built on a GGUF-loaded model: it records the GGUF folder as its base model."""
    model, tokenizer = load_from_gguf(tiny_gguf)
    torch.manual_seed(0)
    steer = SteerableModel.from_base_model(
        model,
        ["lower", "upper"],
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
        tokenizer=tokenizer,
    )
    steer.save_pretrained(str(tmp_path / "clp"))
    ids = torch.tensor([tokenizer("the tale").input_ids])
    with torch.no_grad(), steer.condition(torch.tensor([0.25, 0.75])):
        logits = steer(input_ids=ids).logits
    return str(tmp_path / "clp"), ids, logits


def test_an_adapter_on_a_gguf_base_loads_with_the_converted_base_model(adapter_on_gguf, tiny_gguf, converted, capsys):
    from trl_clp.serving import load_steerable_model

    path, ids, expected = adapter_on_gguf
    with pytest.raises(ValueError, match=r"base model .* is a GGUF checkpoint.*convert-gguf.*--base_model"):
        SteerableModel.from_pretrained(path)
    for steer in (
        SteerableModel.from_pretrained(path, base_model=converted),
        load_steerable_model(path, device="cpu", base_model=converted),  # `trl-clp serve --base_model`
    ):
        with torch.no_grad(), steer.condition(torch.tensor([0.25, 0.75])):
            torch.testing.assert_close(steer(input_ids=ids).logits, expected, rtol=0, atol=1e-5)

    code = None
    try:
        main(["export", path, path + "-lora", "--weights", "0.25,0.75"])
    except SystemExit as error:
        code = str(error.code)
    assert "is a GGUF checkpoint" in code and "--base_model" in code
    main(["export", path, path + "-lora", "--weights", "0.25,0.75", "--base_model", converted])
    assert os.path.isfile(os.path.join(path + "-lora", "adapter_model.safetensors"))


def test_cli_evaluate_and_serve_take_another_base_model(tmp_path, saved_base_model, tokenizer, capsys, monkeypatch):
    torch.manual_seed(0)
    steer = SteerableModel.from_pretrained
    model = AutoModelForCausalLM.from_pretrained(saved_base_model)
    clp = SteerableModel.from_base_model(
        model, ["lower", "upper"], LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"]), tokenizer=tokenizer
    )
    clp.model.peft_config["default"].base_model_name_or_path = saved_base_model
    clp.save_pretrained(str(tmp_path / "clp"))
    moved = str(tmp_path / "moved")
    os.rename(saved_base_model, moved)  # the recorded base model is gone
    with pytest.raises(FileNotFoundError, match="--base_model"):
        steer(str(tmp_path / "clp"))
    (tmp_path / "prompts.txt").write_text("Describe: a river\n")
    main(
        ["evaluate", str(tmp_path / "clp"), "--prompts", str(tmp_path / "prompts.txt"), "--reward_funcs", "lowercase"]
        + ["uppercase", "--grid_points", "2", "--max_new_tokens", "2", "--output_dir", str(tmp_path / "eval")]
        + ["--base_model", moved]
    )
    assert json.loads((tmp_path / "eval" / "evaluation.json").read_text())["results"]

    import trl_clp.serving

    served = {}
    monkeypatch.setattr(trl_clp.serving, "serve", lambda path, **kwargs: served.update(kwargs, path=path))
    main(["serve", str(tmp_path / "clp"), "--base_model", moved])
    assert served["path"] == str(tmp_path / "clp") and served["base_model"] == moved


def test_cli_train_refuses_a_gguf_model_path_before_loading_anything(tiny_gguf, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--model_name_or_path", os.path.dirname(tiny_gguf), "--output_dir", str(tmp_path / "out")])
    message = str(exit_info.value.code)
    assert message.startswith("trl-clp train: error: The model ") and "is a GGUF checkpoint" in message
    assert "trl-clp convert-gguf FILE.gguf OUTPUT_DIR" in message and "\n" not in message
