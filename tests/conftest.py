import os

# No network in tests: the hub is never contacted and no telemetry is sent.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from trl_clp import MultiObjectiveConfig, demo  # noqa: E402


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

