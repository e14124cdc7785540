import os

# No network in tests: the hub is never contacted and no telemetry is sent.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One CPU thread per process unless the caller chose: every model here is tiny, so threads only add overhead, and on
# a busy 2-core machine torch's default (a spinning thread per core) ran the suite 17-100× slower. Set before torch
# is imported so that the subprocesses (accelerate, torchrun, the CLI) inherit it too.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))  # in case a plugin imported torch before this file
from tokenizers import processors  # noqa: E402
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast  # noqa: E402

from trl_clp import MultiObjectiveConfig, demo  # noqa: E402
from trl_clp.rewards import lowercase_reward, uppercase_reward  # noqa: E402

# LoRA targets of the tiny Llama: all its linear layers (`from .conftest import TARGETS`).
TARGETS = list(demo.LLAMA_LINEAR_MODULES)


# The main job (`examples/train_clp.py`) at toy size: its whole code path in seconds.
TOY_MAIN_JOB_FLAGS = {
    "max_steps": 2,
    "pretrain_steps": 5,
    "num_train_prompts": 16,
    "num_eval_prompts": 2,
    "eval_grid_points": 3,
    "eval_samples_per_prompt": 1,
    "max_completion_length": 4,
    "per_device_train_batch_size": 8,
    "disable_tqdm": True,
}


def toy_main_job_argv(output_dir=None, **overrides) -> list[str]:
    """Command-line flags of the main job at toy size; `overrides` replace flags or add others."""
    values = {**({"output_dir": str(output_dir)} if output_dir is not None else {}), **TOY_MAIN_JOB_FLAGS, **overrides}
    return [part for name, value in values.items() for part in (f"--{name}", str(value))]


def lower(completions, **kwargs):
    """The lowercase objective, named "lower" (TRL names an objective after its reward function)."""
    return lowercase_reward(completions)


def upper(completions, **kwargs):
    """The uppercase objective, named "upper"."""
    return uppercase_reward(completions)


@pytest.fixture
def tokenizer():
    return demo.make_byte_tokenizer()


@pytest.fixture
def tiny_model():
    return demo.make_tiny_llama(seed=0)


@pytest.fixture
def prompts_dataset():
    return demo.make_prompt_dataset(64, seed=0)


@pytest.fixture
def saved_base_model(tmp_path, tokenizer):
    """A tiny base model saved to disk, to exercise the real loading path."""
    path = tmp_path / "base"
    demo.make_tiny_llama(seed=0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "park", "in"]


def save_tiny_nli_model(path, **config_overrides) -> str:
    """Save a tiny BERT sequence classifier with MNLI-style labels and a word-piece vocabulary to `path`."""
    os.makedirs(path, exist_ok=True)
    vocab = os.path.join(path, "vocab.txt")
    with open(vocab, "w") as handle:
        handle.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]))
    tokenizer = BertTokenizerFast(vocab_file=vocab)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(WORDS) + 5,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=3,
        id2label={0: "ENTAILMENT", 1: "NEUTRAL", 2: "CONTRADICTION"},
        label2id={"ENTAILMENT": 0, "NEUTRAL": 1, "CONTRADICTION": 2},
        **config_overrides,
    )
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture
def nli_model_path(tmp_path):
    """A tiny NLI classifier saved to disk; dropout 0.5 makes a model left in training mode visibly noisy."""
    return save_tiny_nli_model(tmp_path / "nli", hidden_dropout_prob=0.5)


GGUF_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def write_tiny_gguf(path, seed=0, hidden=32, layers=2, heads=4, kv_heads=2, intermediate=64) -> str:
    """Write a tiny llama GGUF file (f32 tensors, random weights) the way llama.cpp lays it out; return its path.

    Its tokenizer is byte-level BPE (the 256-symbol alphabet, two merges and three special tokens) with a ChatML
    chat template, the shape of SmolLM2's; `output.weight` is absent, so the output layer is tied to the embeddings.
    """
    import gguf
    import numpy as np
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    tokens = [*bytes_to_unicode().values(), "he", "\u0120t", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(128)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(intermediate)
    writer.add_embedding_length(hidden)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * (len(tokens) - 3) + [3] * 3)  # 3: control (special) tokens
    writer.add_token_merges(["h e", "\u0120 t"])  # transformers reads no vocabulary without merges
    writer.add_pad_token_id(len(tokens) - 3)
    writer.add_bos_token_id(len(tokens) - 2)
    writer.add_eos_token_id(len(tokens) - 1)
    writer.add_chat_template(GGUF_CHAT_TEMPLATE)
    generator = np.random.default_rng(seed)

    def add(name, *shape, around=0.0):  # GGUF keeps torch's (out, in) layout for a numpy array
        writer.add_tensor(name, (around + 0.1 * generator.standard_normal(shape)).astype(np.float32))

    head_dim = hidden // heads
    add("token_embd.weight", len(tokens), hidden)
    for i in range(layers):
        add(f"blk.{i}.attn_norm.weight", hidden, around=1.0)
        add(f"blk.{i}.attn_q.weight", heads * head_dim, hidden)
        add(f"blk.{i}.attn_k.weight", kv_heads * head_dim, hidden)
        add(f"blk.{i}.attn_v.weight", kv_heads * head_dim, hidden)
        add(f"blk.{i}.attn_output.weight", hidden, heads * head_dim)
        add(f"blk.{i}.ffn_norm.weight", hidden, around=1.0)
        add(f"blk.{i}.ffn_gate.weight", intermediate, hidden)
        add(f"blk.{i}.ffn_up.weight", intermediate, hidden)
        add(f"blk.{i}.ffn_down.weight", hidden, intermediate)
    add("output_norm.weight", hidden, around=1.0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(path)


@pytest.fixture
def tiny_gguf(tmp_path):
    """A tiny llama GGUF file alone in its folder, as a downloaded checkpoint is."""
    os.makedirs(tmp_path / "gguf")
    return write_tiny_gguf(tmp_path / "gguf" / "tiny-llama.f32.gguf")


def tiny_config_values(tmp_path, **overrides) -> dict:
    """Keyword arguments of a CPU-sized training config; `overrides` replace any field."""
    values = dict(
        output_dir=str(tmp_path / "out"),
        num_generations=4,
        per_device_train_batch_size=8,
        max_completion_length=8,
        max_steps=2,
        learning_rate=1e-2,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        bf16=False,
        gradient_checkpointing=False,
        disable_tqdm=True,
        seed=0,
        beta=0.0,
    )
    values.update(overrides)
    return values


def tiny_config(tmp_path, **overrides) -> MultiObjectiveConfig:
    return MultiObjectiveConfig(**tiny_config_values(tmp_path, **overrides))


# Prompts as the trainer tokenizes them: a BOS-adding tokenizer with a chat template, and the ids TRL generates from.

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% if style is defined %}<|{{ style }}|>{% endif %}{% endif %}"
)


def bos_tokenizer():
    """The demo's byte tokenizer, adding BOS to every text (as Llama's does), with a chat template."""
    tokenizer = demo.make_byte_tokenizer()
    bos = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer.backend_tokenizer.post_processor = bos
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


class Captured(Exception):
    """Stops `_generate` once the prompt ids are captured."""


def training_prompt_ids(trainer, prompts, weights) -> list[list[int]]:
    """The prompt ids `MultiObjectiveTrainer._generate` hands to generation (TRL's own tokenization)."""
    captured = []

    def capture(prompt_ids, images, multimodal_fields):
        captured.extend(list(ids) for ids in prompt_ids)
        raise Captured

    trainer._generate_single_turn = capture
    trainer.conditioner.set_conditioning_vectors(weights)
    try:
        with pytest.raises(Captured):
            trainer._generate(prompts)
    finally:
        trainer.conditioner.clear()
    return captured
