"""An offline demo task: a byte-level tokenizer, a tiny Llama and prompts, all built locally.

It backs the default run of `examples/train_clp.py`, the tests and `--quick` benchmarks, where nothing can be
downloaded. The two rewards pull in opposite directions on every character, so a single policy cannot maximise
both: a CLP policy must learn to trade one for the other as its weighting asks.
"""

from __future__ import annotations

import random

from datasets import Dataset
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>"]
WORDS = (
    "the a river stone light garden window quiet morning city forest paper music letter winter summer road "
    "bridge cloud silver green small old new bright dark slow fast open closed near far walks sings reads "
    "writes waits opens finds keeps carries follows"
).split()


def make_byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with no merges: 256 byte symbols plus pad, bos and eos (259 ids), no files."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + sorted(alphabet))}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>", padding_side="left"
    )


def make_tiny_llama(
    vocab_size: int = 259,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 128,
    seed: int = 0,
) -> LlamaForCausalLM:
    """A randomly initialised Llama (0.2M parameters with the defaults); ids match `make_byte_tokenizer`."""
    import torch

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


def make_prompt_dataset(num_prompts: int, seed: int = 0, words_per_prompt: int = 6) -> Dataset:
    """Prompts such as `"Describe: quiet river walks near the bridge\\n"`, one per row, in a `prompt` column."""
    rng = random.Random(seed)
    prompts = [
        "Describe: " + " ".join(rng.choice(WORDS) for _ in range(words_per_prompt)) + "\n" for _ in range(num_prompts)
    ]
    return Dataset.from_dict({"prompt": prompts})


def _character_fraction(completions, predicate) -> list[float]:
    return [sum(map(predicate, text)) / len(text) if text else 0.0 for text in completions]


def lowercase_reward(completions, **kwargs) -> list[float]:
    """Fraction of the completion's characters that are lowercase letters (a calm, prose-like register)."""
    return _character_fraction(completions, str.islower)


def uppercase_reward(completions, **kwargs) -> list[float]:
    """Fraction of the completion's characters that are uppercase letters (an emphatic register)."""
    return _character_fraction(completions, str.isupper)
