"""Prompt text of the prompting baseline: a weighting written in front of a prompt, and tokenization as in training."""

from __future__ import annotations

import copy

import torch
from transformers import BatchEncoding

DEFAULT_PROMPT_TEMPLATE = "[weights: {weights}] "


def format_weighted_prompt(prompt, weights, objective_names: list[str], template: str = DEFAULT_PROMPT_TEMPLATE):
    """Write a weighting in front of a prompt (the prompting baseline).

    Args:
        prompt: a string, or a conversation (list of `{"role", "content"}` messages): the first user message gets
            the prefix.
        weights: `(m,)` sequence of floats.
    Returns:
        the prompt of the same kind, with e.g. `"[weights: coverage=0.30 brevity=0.70] "` in front.
    """
    text = " ".join(f"{name}={float(w):.2f}" for name, w in zip(objective_names, weights, strict=True))
    prefix = template.format(weights=text)
    if isinstance(prompt, str):
        return prefix + prompt
    messages = copy.deepcopy(prompt)
    for message in messages:
        if message["role"] == "user":
            message["content"] = prefix + message["content"]
            break
    else:
        raise ValueError("A conversational prompt needs a user message to carry the weighting.")
    return messages


def check_prompts(prompts: list) -> bool:
    """Check that `prompts` are all text or all conversations, as TRL's trainers take them; say which.

    Args:
        prompts: P strings, or P conversations: non-empty lists of `{"role": str, "content": str}` messages.

    Returns:
        True for conversations, False for text.

    Raises:
        ValueError naming the first prompt of another shape and the shape expected.
    """
    if not prompts:
        raise ValueError("No prompts: give at least one.")

    def is_conversation(prompt) -> bool:
        return (
            isinstance(prompt, list)
            and len(prompt) > 0
            and all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in prompt
            )
        )

    conversational = not isinstance(prompts[0], str)
    for i, prompt in enumerate(prompts):
        if conversational and not is_conversation(prompt) or not conversational and not isinstance(prompt, str):
            expected = (
                'a conversation, a list of {"role": ..., "content": "..."} messages, like prompt 1'
                if conversational
                else "a string, like prompt 1"
            )
            if i == 0:
                expected = 'a string, or a conversation: a list of {"role": ..., "content": "..."} messages'
            raise ValueError(f"Prompt {i + 1} is {prompt!r:.120}: each prompt must be {expected}.")
    return conversational


def tokenize_left_padded(tokenizer, prompts: list, chat_template_kwargs: dict | None = None) -> BatchEncoding:
    """Left-padded token ids of `prompts`, built as TRL's `RLOOTrainer._tokenize_prompts` builds them for generation.

    Plain-text prompts are tokenized with the tokenizer's defaults (its BOS included), conversations with
    `apply_chat_template(add_generation_prompt=True)`.

    Args:
        prompts: B strings, or B conversations (lists of `{"role", "content"}` messages).
        chat_template_kwargs: the `chat_template_kwargs` of the training config, if any.

    Returns:
        `input_ids` and `attention_mask`, `(B, T)` on the CPU.
    """
    if isinstance(prompts[0], str):
        rows = tokenizer(text=prompts)["input_ids"]
    else:
        rows = tokenizer.apply_chat_template(
            conversation=prompts,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            **(chat_template_kwargs or {}),
        )["input_ids"]
    width = max(len(ids) for ids in rows)
    input_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(ids)) + list(ids) for ids in rows])
    attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in rows])
    return BatchEncoding({"input_ids": input_ids, "attention_mask": attention_mask})
