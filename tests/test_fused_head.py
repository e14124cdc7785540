"""logit-CLP's tiled head: exact against the materialised logits (values and gradients), and it holds no logits."""

import pytest
import torch
from peft import LoraConfig
from transformers import Qwen2Config, Qwen2ForCausalLM
from trl.trainer.utils import selective_log_softmax_and_entropy

from trl_clp import MultiObjectiveTrainer, demo
from trl_clp.conditioning.fused_head import (
    conditioned_head_logps_and_entropies,
    fuses_output_layer,
    low_rank_head_logps_and_entropies,
)

from .conftest import tiny_config


def lower(completions, **kwargs):
    return [sum(c.islower() for c in text) / max(len(text), 1) for text in completions]


def upper(completions, **kwargs):
    return [sum(c.isupper() for c in text) / max(len(text), 1) for text in completions]


def random_head(num_tokens=13, hidden=8, vocab=50, rank=6, seed=0):
    generator = torch.Generator().manual_seed(seed)

    def draw(*shape):
        return torch.randn(*shape, generator=generator).requires_grad_()

    return {
        "hidden": draw(num_tokens, hidden),
        "weight": draw(vocab, hidden),
        "bias": draw(vocab),
        "lora_hidden": draw(num_tokens, rank),
        "lora_b": draw(vocab, rank),
        "targets": torch.randint(0, vocab, (num_tokens,), generator=generator),
    }


@pytest.mark.parametrize("compute_entropy", [True, False])
def test_tiled_head_matches_materialised_logits_values_and_gradients(compute_entropy):
    head = random_head()
    inputs = [head[k] for k in ("hidden", "weight", "bias", "lora_hidden", "lora_b")]
    upstream = torch.randn(2, 13, generator=torch.Generator().manual_seed(1))

    # Ragged tiles in both directions: 13 tokens in chunks of 4, 50 entries in chunks of 16.
    logps, entropies = low_rank_head_logps_and_entropies(
        *inputs,
        head["targets"],
        temperature=0.7,
        compute_entropy=compute_entropy,
        token_chunk_size=4,
        vocab_chunk_size=16,
    )
    loss = (upstream[0] * logps).sum() + ((upstream[1] * entropies).sum() if compute_entropy else 0)
    grads = torch.autograd.grad(loss, inputs)

    logits = head["hidden"] @ head["weight"].T + head["bias"] + head["lora_hidden"] @ head["lora_b"].T  # (N, V)
    ref_logps, ref_entropies = selective_log_softmax_and_entropy(logits, head["targets"], temperature=0.7)
    ref_loss = (upstream[0] * ref_logps).sum() + ((upstream[1] * ref_entropies).sum() if compute_entropy else 0)
    ref_grads = torch.autograd.grad(ref_loss, inputs)

    torch.testing.assert_close(logps, ref_logps, atol=1e-5, rtol=1e-5)
    if compute_entropy:
        torch.testing.assert_close(entropies, ref_entropies, atol=1e-5, rtol=1e-5)
    else:
        assert entropies is None
    for name, grad, ref in zip(("hidden", "weight", "bias", "lora_hidden", "lora_b"), grads, ref_grads, strict=True):
        assert ref.abs().max() > 1e-3, name  # a gradient that could be wrong
        torch.testing.assert_close(grad, ref, atol=1e-5, rtol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


def test_tiled_head_holds_no_logits_in_forward_or_backward():
    num_tokens, vocab = 64, 20_000
    head = random_head(num_tokens=num_tokens, hidden=16, vocab=vocab, rank=4)
    head["weight"].requires_grad_(False)  # frozen, as in training: only the LoRA and the hidden states get gradients
    logits_bytes = num_tokens * vocab * 4
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profiler:
        logps, entropies = low_rank_head_logps_and_entropies(
            head["hidden"],
            head["weight"],
            None,
            head["lora_hidden"],
            head["lora_b"],
            head["targets"],
            compute_entropy=True,
            vocab_chunk_size=1024,
        )
        (logps.sum() + entropies.sum()).backward()
    events = sorted(
        (e.time_range.start, e.self_cpu_memory_usage) for e in profiler.events() if e.self_cpu_memory_usage
    )
    live = peak = 0
    for _, delta in events:
        live += delta
        peak = max(peak, live)
    assert head["lora_b"].grad.abs().sum() > 0
    # Tiles of 64 × 1024 and the (V, R) gradient of B: a small fraction of one copy of the logits.
    assert peak < logits_bytes / 4, (peak, logits_bytes)


def tied_qwen(vocab=300):
    config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config)


@pytest.fixture
def logit_trainer(tmp_path, tokenizer, prompts_dataset):
    """logit-CLP on a Qwen2 whose output layer is its embedding matrix; LoRA B drawn at random, temperature 0.7."""
    trainer = MultiObjectiveTrainer(
        model=tied_qwen(),
        reward_funcs=[lower, upper],
        args=tiny_config(tmp_path, conditioning="logit", temperature=0.7),
        train_dataset=prompts_dataset,
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    generator = torch.Generator().manual_seed(3)
    for name, parameter in trainer.model.named_parameters():
        if "lora_B" in name:
            parameter.data.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return trainer


def materialised_logps_and_entropies(trainer, input_ids, mask, logits_to_keep):
    logits = trainer.model(input_ids=input_ids, attention_mask=mask, logits_to_keep=logits_to_keep + 1).logits
    return selective_log_softmax_and_entropy(
        logits[:, :-1], input_ids[:, -logits_to_keep:], temperature=trainer.temperature
    )


def test_logit_clp_scores_through_the_tiled_head_exactly(logit_trainer):
    trainer = logit_trainer
    model = trainer.model
    lm_head = model.get_output_embeddings()
    assert lm_head.base_layer.weight is model.get_input_embeddings().weight  # tied
    assert fuses_output_layer(lm_head, model.config)
    input_ids = torch.randint(3, 259, (4, 12), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(input_ids)
    weights = torch.tensor([[1.0, 0.0], [0.2, 0.8], [0.5, 0.5], [0.9, 0.1]])  # non-uniform, one per row
    trainable = [p for p in model.parameters() if p.requires_grad]
    upstream = torch.randn(2, 4, 5, generator=torch.Generator().manual_seed(5))

    def scored(function):
        model.zero_grad()
        with trainer.conditioner.condition(weights):
            logps, entropies = function()
            ((upstream[0] * logps).sum() + (upstream[1] * entropies).sum()).backward()
        return logps.detach(), entropies.detach(), [p.grad.clone() for p in trainable]

    tiled = scored(lambda: trainer._unfused_logps_and_entropies(model, input_ids, mask, 5, compute_entropy=True)[:2])
    reference = scored(lambda: materialised_logps_and_entropies(trainer, input_ids, mask, 5))

    torch.testing.assert_close(tiled[0], reference[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tiled[1], reference[1], atol=1e-5, rtol=1e-5)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    head_blocks = [g for n, g in zip(names, tiled[2], strict=True) if "lm_head" in n]
    assert len(head_blocks) == 2 and all(g.abs().sum() > 0 for g in head_blocks)  # lora_A and lora_B of the head
    for name, grad, ref in zip(names, tiled[2], reference[2], strict=True):
        torch.testing.assert_close(grad, ref, atol=1e-5, rtol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


def test_logit_clp_row_chunks_and_disabled_adapter(logit_trainer):
    """TRL's row chunks each see their own weightings; with the adapter disabled the head is the base one."""
    trainer = logit_trainer
    input_ids = torch.randint(3, 259, (4, 10), generator=torch.Generator().manual_seed(6))
    mask = torch.ones_like(input_ids)
    weights = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.3, 0.7], [0.6, 0.4]])
    # The trainer's path: a training weighting that the row chunks replace chunk by chunk (a per-call `condition`
    # would take precedence over them, see WeightConditioner).
    trainer.conditioner.set_conditioning_vectors(weights)
    try:
        with torch.no_grad():
            chunked, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, input_ids, mask, 4, batch_size=1)
            reference, _ = materialised_logps_and_entropies(trainer, input_ids, mask, 4)
            with trainer.model.disable_adapter():
                base, _, _ = trainer._unfused_logps_and_entropies(trainer.model, input_ids, mask, 4)
                base_reference, _ = materialised_logps_and_entropies(trainer, input_ids, mask, 4)
    finally:
        trainer.conditioner.clear()
    torch.testing.assert_close(chunked, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(base, base_reference, atol=1e-5, rtol=1e-5)
    assert (base - chunked).abs().max() > 1e-2  # the LoRA of the head mattered


def test_logit_clp_without_weighting_raises(logit_trainer):
    input_ids = torch.randint(3, 259, (2, 8))
    with pytest.raises(RuntimeError, match="without a weighting"):
        logit_trainer._unfused_logps_and_entropies(logit_trainer.model, input_ids, torch.ones_like(input_ids), 3)


@pytest.fixture
def one_process_mesh():
    """A one-process gloo group held in memory, so that FSDP2 shards on the CPU; destroyed afterwards."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield init_device_mesh("cpu", (1,))
    finally:
        dist.destroy_process_group()


@pytest.mark.filterwarnings("ignore:`lora_bias=True` was passed")
def test_tiled_head_gathers_an_output_layer_that_fsdp2_resharded(one_process_mesh):
    """With the output layer in its own FSDP2 unit, FSDP2 reshards it once the model's forward returns, so the tiled
    head finds DTensors where it reads the weights: it must gather them, and give the values and gradients of the
    unsharded model."""
    import copy

    from peft import get_peft_model
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    model = get_peft_model(
        demo.make_tiny_llama(seed=0), LoraConfig(r=4, lora_alpha=8, target_modules=["lm_head"], lora_bias=True)
    )
    generator = torch.Generator().manual_seed(7)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:  # PEFT starts B at 0, which would hide a wrong gradient of A
            parameter.data.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    unsharded = copy.deepcopy(model)
    input_ids = torch.randint(3, 259, (3, 9), generator=generator)
    weights = torch.tensor([[1.0, 0.0], [0.3, 0.7], [0.5, 0.5]])  # two blocks of rank 2, one weighting per row
    upstream = torch.randn(2, 3, 4, generator=generator)

    def scored(model):
        head = model.get_output_embeddings()
        logps, entropies = conditioned_head_logps_and_entropies(
            model, head, input_ids, torch.ones_like(input_ids), 4, weights, temperature=0.7, compute_entropy=True
        )
        read = {name: type(parameter) for name, parameter in head.named_parameters()}  # as the head found them
        ((upstream[0] * logps).sum() + (upstream[1] * entropies).sum()).backward()
        grads = {
            name: p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad
            for name, p in head.named_parameters()
            if p.requires_grad
        }
        return logps.detach(), entropies.detach(), grads, read

    expected = scored(unsharded)
    fully_shard(model.get_output_embeddings(), mesh=one_process_mesh, reshard_after_forward=True)
    fully_shard(model, mesh=one_process_mesh)
    got = scored(model)
    assert set(got[3].values()) == {DTensor}  # every weight of the head was sharded where it was read
    torch.testing.assert_close(got[0], expected[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1], expected[1], atol=1e-5, rtol=1e-5)
    assert sorted(got[2]) == sorted(expected[2]) and len(got[2]) == 3  # lora_A, lora_B and its bias
    for name, grad in expected[2].items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(got[2][name], grad, atol=1e-5, rtol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


def test_logit_clp_is_refused_under_deepspeed_zero3(tmp_path, tokenizer, prompts_dataset, monkeypatch):
    """ZeRO-3 partitions the output layer's weights outside its forward, where the tiled head reads them."""
    import trl_clp.online_trainer

    monkeypatch.setattr(trl_clp.online_trainer, "is_deepspeed_zero3_enabled", lambda: True, raising=False)
    with pytest.raises(ValueError, match=r"DeepSpeed ZeRO-3 .* FSDP2 .* or use conditioning='attn' or 'full'"):
        MultiObjectiveTrainer(
            model=tied_qwen(),
            reward_funcs=[lower, upper],
            args=tiny_config(tmp_path, conditioning="logit"),
            train_dataset=prompts_dataset,
            processing_class=tokenizer,
        )
