"""QLoRA: conditioned LoRA blocks trained on a 4-bit (bitsandbytes) base model, where bitsandbytes can run."""

import pytest
import torch
from peft import LoraConfig, PeftModel

from trl_clp import MultiObjectiveTrainer, SteerableModel
from trl_clp.rewards import lowercase_reward, uppercase_reward

from .conftest import tiny_config


def four_bit_config():
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)


def test_conditioned_adapters_train_on_a_4bit_base_model(tmp_path, tokenizer, prompts_dataset, saved_base_model):
    bnb = pytest.importorskip(
        "bitsandbytes", reason='bitsandbytes is not installed: pip install "trl-clp[quantization]"'
    )
    from transformers import AutoModelForCausalLM

    try:
        AutoModelForCausalLM.from_pretrained(saved_base_model, quantization_config=four_bit_config())
    except Exception as error:
        pytest.skip(f"bitsandbytes {bnb.__version__} cannot load a 4-bit model on this machine: {error}")

    trainer = MultiObjectiveTrainer(
        model=saved_base_model,
        reward_funcs=[lowercase_reward, uppercase_reward],
        args=tiny_config(tmp_path, max_steps=2),
        train_dataset=prompts_dataset,
        processing_class=tokenizer,
        quantization_config=four_bit_config(),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    quantized = [n for n, m in trainer.model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert quantized, "the base model was not loaded in 4 bits"
    assert trainer.conditioner.conditioned_module_names  # the 4-bit layers' LoRA blocks are conditioned
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    moved = [n for n, p in trainer.model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert moved and all("lora_" in n for n in moved)

    # Per-row conditioning stays exact on the quantized layers: a mixed batch equals each row alone, ...
    model = trainer.model.eval()
    input_ids = torch.tensor([[1, 40, 41, 42], [1, 40, 41, 42], [1, 70, 71, 72]])
    weights = torch.tensor([[1.0, 0.0], [0.2, 0.8], [0.2, 0.8]])
    with torch.no_grad(), trainer.conditioner.condition(weights):
        mixed = model(input_ids=input_ids).logits
    for row in range(3):
        with torch.no_grad(), trainer.conditioner.condition(weights[row : row + 1]):
            alone = model(input_ids=input_ids[row : row + 1]).logits
        torch.testing.assert_close(mixed[row : row + 1], alone, atol=1e-4, rtol=1e-4)
    # ... the weighting changes the output of one prompt (a conditioner doing nothing would not) ...
    assert (mixed[0] - mixed[1]).abs().max() > 0.1
    # ... and each row equals the plain LoRA exported for its weighting, run by PEFT on a fresh 4-bit base (merging
    # into 4-bit weights would re-quantize them, so the exact export is the reference here). The trained adapter
    # computes in bf16, the loaded export in fp32: measured difference 2e-3, against 0.7 between weightings.
    steer = SteerableModel(model, trainer.conditioning_config, conditioner=trainer.conditioner)
    for row in (0, 2):
        export = steer.export_lora(str(tmp_path / f"export-{row}"), weights[row])
        base = AutoModelForCausalLM.from_pretrained(saved_base_model, quantization_config=four_bit_config())
        plain = PeftModel.from_pretrained(base, export).eval()
        with torch.no_grad():
            expected = plain(input_ids=input_ids[row : row + 1]).logits
        torch.testing.assert_close(mixed[row : row + 1], expected, atol=1e-2, rtol=0)
