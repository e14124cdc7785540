"""`evaluate_front`'s steps, each alone, and the whole pipeline against the function it replaced, bit for bit."""

import dataclasses
import json

import pytest
import torch
from peft import LoraConfig

import trl_clp.evaluation
from trl_clp import SteerableModel, demo, simplex_grid
from trl_clp.decoding import expert_mixture_components
from trl_clp.evaluation import evaluate_front
from trl_clp.rewards import lowercase_reward, uppercase_reward

from . import evaluation_before_the_pipeline as before
from .conftest import bos_tokenizer


def make_steerable(tokenizer, conditioning="full", objective_names=("lower", "upper")) -> SteerableModel:
    """A tiny Llama with a random (non-zero) CLP adapter: each weighting samples differently."""
    torch.manual_seed(0)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False)
    return SteerableModel.from_base_model(
        demo.make_tiny_llama(seed=0), list(objective_names), lora, conditioning, tokenizer=tokenizer
    ).eval()


def kl_conditioned(tokenizer) -> SteerableModel:
    """Two objectives and a KL-weight block (α0 = 0.1), as a model trained with `kl_weight_range`."""
    three_blocks = make_steerable(tokenizer, objective_names=("lower", "upper", "kl"))
    config = dataclasses.replace(
        three_blocks.conditioning_config, objective_names=["lower", "upper"], min_kl_weight=0.1
    )
    return SteerableModel(three_blocks.model, config, tokenizer, three_blocks.conditioner)


def lower_unless_b(prompts, completions, **kwargs):
    """The lowercase share, not applicable (None) to prompts about "b"; conversations or text alike."""
    texts = [c if isinstance(c, str) else c[0]["content"] for c in completions]
    prompt_texts = [p if isinstance(p, str) else p[-1]["content"] for p in prompts]
    return [None if "b" in p else r for p, r in zip(prompt_texts, lowercase_reward(texts), strict=True)]


def upper_times_column(completions, scale, **kwargs):
    """The uppercase share times a per-prompt column (`reward_kwargs`)."""
    texts = [c if isinstance(c, str) else c[0]["content"] for c in completions]
    return [s * r for s, r in zip(scale, uppercase_reward(texts), strict=True)]


TEXT_PROMPTS = ["Describe: a quiet river\n", "Describe: b\n", "Describe: old city road at night\n"]
CONVERSATIONS = [
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Describe: a quiet river\n"}],
    [{"role": "user", "content": "Describe: b\n"}],
    [{"role": "user", "content": "Describe: old city road\n"}],
]


def case(name, tokenizer):
    """(model, tokenizer, prompts, evaluate_front's keyword arguments) of one path through the evaluation."""
    common = dict(
        reward_funcs=[lower_unless_b, upper_times_column],
        weightings=simplex_grid(2, 3),
        num_samples=2,
        max_new_tokens=6,
        batch_size=5,  # 18 rows: 4 batches, each mixing weightings
        seed=3,
        reward_kwargs={"scale": [1.0, 2.0, 0.5]},
        num_resamples=200,
        temperature=0.8,
    )
    if name == "conditioned":
        return make_steerable(tokenizer), tokenizer, TEXT_PROMPTS, {**common, "kl_weight": 0.5}
    if name == "prompting":
        return make_steerable(tokenizer, "prompt"), tokenizer, TEXT_PROMPTS, common
    if name == "kl-conditioned":
        return kl_conditioned(tokenizer), tokenizer, TEXT_PROMPTS, {**common, "kl_weight": 0.2}
    if name == "mixture":
        return make_steerable(tokenizer), tokenizer, TEXT_PROMPTS, {**common, "decoding": expert_mixture_components}
    if name == "conversations":
        chat = bos_tokenizer()
        steer = make_steerable(chat, "attn")
        steer.conditioning_config.chat_template_kwargs = {"style": "brief"}
        return steer, chat, CONVERSATIONS, common
    raise ValueError(name)


def as_json(front) -> str:
    """Everything a `Front` holds, samples included, exactly (floats by repr; NaN equals NaN)."""
    return json.dumps(dataclasses.asdict(front))


@pytest.mark.parametrize("name", ["conditioned", "prompting", "kl-conditioned", "mixture", "conversations"])
def test_the_pipeline_gives_the_front_of_the_function_it_replaced(tokenizer, name):
    steer, tok, prompts, kwargs = case(name, tokenizer)
    kwargs = {**kwargs}
    funcs, weightings = kwargs.pop("reward_funcs"), kwargs.pop("weightings")
    expected = before.evaluate_front_before_the_pipeline(steer, tok, prompts, funcs, weightings, **kwargs)
    got = evaluate_front(steer, tok, prompts, funcs, weightings, **kwargs)
    assert as_json(got) == as_json(expected)
    # Not a vacuous equality: every completion was sampled and scored, and the weightings sample differently.
    assert len(got.samples) == 18 and len({s["completion"] for s in got.samples}) > 6
    assert any(s["rewards"]["lower"] is None for s in got.samples)  # the None of prompt b went through
    assert len({round(r.kl, 6) for r in got.results}) == 3


class OneProcessOfTwo:
    """What `evaluate_front` reads of an `accelerate.Accelerator`: this process's index among two."""

    num_processes = 2

    def __init__(self, process_index: int):
        self.process_index = process_index


class Gathered(Exception):
    """Stops process 1's evaluation once its share of the batches is handed to `gather_object`."""


def two_process_front(evaluate, module, monkeypatch, *args, **kwargs):
    """Process 0's front of a 2-process evaluation, `gather_object` handing it process 1's batches after its own.

    Process 1 runs first, up to the gathering, to record its share (batch index, completion ids, KLs).
    """
    process_one = []

    def capture(local):
        process_one.extend(local)
        raise Gathered

    monkeypatch.setattr(module, "gather_object", capture)
    with pytest.raises(Gathered):
        evaluate(*args, accelerator=OneProcessOfTwo(1), **kwargs)
    monkeypatch.setattr(module, "gather_object", lambda local: list(local) + process_one)
    return evaluate(*args, accelerator=OneProcessOfTwo(0), **kwargs)


def test_two_processes_give_the_front_of_the_function_it_replaced_and_of_one_process(tokenizer, monkeypatch):
    steer, tok, prompts, kwargs = case("conditioned", tokenizer)
    kwargs = {**kwargs, "batch_size": 7}  # 3 batches: process 1 reruns batch 0 in the last round and drops it
    args = (steer, tok, prompts, kwargs.pop("reward_funcs"), kwargs.pop("weightings"))
    expected = two_process_front(before.evaluate_front_before_the_pipeline, before, monkeypatch, *args, **kwargs)
    got = two_process_front(evaluate_front, trl_clp.evaluation, monkeypatch, *args, **kwargs)
    assert as_json(got) == as_json(expected)
    assert as_json(got) == as_json(evaluate_front(*args, **kwargs))
