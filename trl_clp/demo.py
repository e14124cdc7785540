"""An offline demo task: a byte-level tokenizer, a tiny Llama and prompts, all built locally.

It backs the default run of `examples/train_clp.py`, the tests and `--quick` benchmarks, where nothing can be
downloaded. The demo's two rewards, `trl_clp.rewards.lowercase_reward` and `uppercase_reward`, pull in opposite
directions on every character, so a single policy cannot maximise both: a CLP policy must learn to trade one for
the other as its weighting asks.
"""

from __future__ import annotations

import random

from datasets import Dataset
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>"]
LLAMA_LINEAR_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# `MultiObjectiveConfig` values of the demo, sized for a 2-core CPU (about 0.2 s a step). The main job's defaults.
DEMO_TRAINING_ARGS = dict(
    max_steps=300,
    learning_rate=3e-3,
    per_device_train_batch_size=16,
    num_generations=4,
    max_completion_length=32,
    beta=0.05,
    logging_steps=25,
    save_strategy="no",
    report_to="none",
    gradient_checkpointing=False,
)
# The LoRA of one objective in the demo.
DEMO_LORA = dict(r=8, lora_alpha=16, target_modules=LLAMA_LINEAR_MODULES)
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
    tie_word_embeddings: bool = False,
) -> LlamaForCausalLM:
    """A randomly initialised Llama (0.2M parameters with the defaults); ids match `make_byte_tokenizer`.

    `tie_word_embeddings=True` shares the output layer's weight with the input embeddings, as in Qwen2.5-0.5B.
    """
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
        tie_word_embeddings=tie_word_embeddings,
    )
    return LlamaForCausalLM(config)


def make_prompt_dataset(num_prompts: int, seed: int = 0, words_per_prompt: int = 6) -> Dataset:
    """Prompts such as `"Describe: quiet river walks near the bridge\\n"`, one per row, in a `prompt` column."""
    rng = random.Random(seed)
    prompts = [
        "Describe: " + " ".join(rng.choice(WORDS) for _ in range(words_per_prompt)) + "\n" for _ in range(num_prompts)
    ]
    return Dataset.from_dict({"prompt": prompts})


def _styled(word: str, style: int) -> str:
    return (word.lower(), word.upper(), word.capitalize())[style]


def make_pretraining_texts(num_texts: int, seed: int = 0, words_per_prompt: int = 6) -> list[str]:
    """Prompt + answer texts: the answer re-words the prompt, each word in a random register (lower, UPPER, Title).

    A model pre-trained on them answers in mixed case; the register of every word is then a choice the policy can
    learn to steer.
    """
    rng = random.Random(seed)
    texts = []
    for _ in range(num_texts):
        words = [rng.choice(WORDS) for _ in range(words_per_prompt)]
        answer = [_styled(rng.choice(words + WORDS[:8]), rng.randrange(3)) for _ in range(rng.randint(3, 6))]
        texts.append("Describe: " + " ".join(words) + "\n" + " ".join(answer))
    return texts


def pretrain_demo_model(
    model, tokenizer, steps: int = 300, batch_size: int = 32, learning_rate: float = 3e-3, seed: int = 0
):
    """Next-token training of the whole model on `make_pretraining_texts` (plain torch loop, about 20 s on 2 CPU cores).

    Returns the model in eval mode; every parameter, the output layer included, has moved away from its random
    init, so the sampled answers are words rather than uniform bytes.
    """
    import torch

    torch.manual_seed(seed)
    texts = make_pretraining_texts(max(steps * batch_size // 4, batch_size), seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    model.train()
    rng = random.Random(seed)
    for _ in range(steps):
        batch = [text + tokenizer.eos_token for text in rng.sample(texts, batch_size)]
        encoded = tokenizer(batch, return_tensors="pt", padding=True, padding_side="right")
        labels = encoded["input_ids"].masked_fill(encoded["attention_mask"] == 0, -100)
        loss = model(**encoded, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()
