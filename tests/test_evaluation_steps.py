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


# ---------------------------------------------------------------------------------------------- each step alone


def test_evaluation_rows_are_ordered_by_weighting_then_prompt_then_sample():
    from trl_clp.evaluation import evaluation_rows

    assert evaluation_rows(2, 3, 2) == [(k, p) for k in (0, 1) for p in (0, 1, 2) for _ in (0, 1)]


def test_render_prompts_writes_each_rows_weighting_and_renders_conversations_as_in_training():
    from trl_clp.evaluation import render_prompts

    chat = bos_tokenizer()
    weights = torch.tensor([[1.0, 0.0], [0.25, 0.75], [0.0, 1.0]])
    prompting = make_steerable(chat, "prompt")
    prompting.conditioning_config.chat_template_kwargs = {"style": "brief"}
    for prompts in (TEXT_PROMPTS, CONVERSATIONS):
        encoded = render_prompts(prompting, chat, prompts, weights)
        # Row by row, as `SteerableModel.tokenize_prompts` builds a prompt for one weighting (the trainer's prompts).
        for row, (prompt, w) in enumerate(zip(prompts, weights, strict=True)):
            alone = prompting.tokenize_prompts([prompt], w)
            kept = encoded["input_ids"][row][encoded["attention_mask"][row].bool()]
            assert kept.tolist() == alone["input_ids"][0].tolist()
        texts = chat.batch_decode(encoded["input_ids"], skip_special_tokens=False)
        assert "lower=0.25 upper=0.75" in texts[1] and "lower=1.00 upper=0.00" in texts[0]
    assert chat.decode(encoded["input_ids"][0]).endswith("<|assistant|><|brief|>")  # the saved template keywords

    conditioned = make_steerable(chat)  # the weighting is not in the text: every row renders alike
    encoded = render_prompts(conditioned, chat, [TEXT_PROMPTS[0]] * 3, weights)
    assert (encoded["input_ids"] == encoded["input_ids"][0]).all()


def test_score_completions_calls_each_reward_once_with_trls_arguments_and_keeps_none_as_nan():
    from trl_clp.evaluation import score_completions

    calls = []

    def length(prompts, completions, completion_ids, **kwargs):
        calls.append((prompts, completions, completion_ids, kwargs))
        return [len(c[0]["content"]) for c in completions]  # an int is a score too

    def sometimes(prompts, completions, completion_ids, bonus, **kwargs):
        return [None, float("nan"), bonus[2] + 0.5]

    prompts = [[{"role": "user", "content": f"p{i}"}] for i in range(3)]
    scores = score_completions(
        [length, sometimes], prompts, ["ab", "", "abcd"], [[1, 2], [3], [4, 5, 6]], {"bonus": [0.0, 1.0, 2.0]}
    )
    assert scores.shape == (3, 2) and scores.dtype == torch.float32
    assert scores[:, 0].tolist() == [2.0, 0.0, 4.0]
    assert torch.isnan(scores[:2, 1]).all() and scores[2, 1].item() == 2.5
    (seen_prompts, seen_completions, seen_ids, seen_kwargs) = calls[0]
    assert len(calls) == 1 and seen_prompts == prompts and seen_ids == [[1, 2], [3], [4, 5, 6]]
    assert seen_completions == [[{"role": "assistant", "content": t}] for t in ("ab", "", "abcd")]
    assert seen_kwargs == {"bonus": [0.0, 1.0, 2.0]}

    text = score_completions(
        [lambda completions, **kw: [c.count("a") for c in completions]], ["x", "y"], ["aa", "b"], [[], []]
    )
    assert text.tolist() == [[2.0], [0.0]]  # text prompts: the completions are given as text


def sequence_log_probs(model, encoded, sequences, temperature) -> torch.Tensor:
    """`(b,)` summed log-probability of each row's completion tokens up to and including its first EOS, at T."""
    prompt_length = encoded["input_ids"].size(1)
    completion = sequences[:, prompt_length:]  # (b, C)
    eos = demo.make_byte_tokenizer().eos_token_id
    ended = (completion == eos).int().cumsum(1)
    keep = (ended == 0) | ((ended == 1) & (completion == eos))  # (b, C): up to and including the first EOS
    mask = torch.cat([encoded["attention_mask"], keep.long()], 1)
    with torch.no_grad():
        logits = model(input_ids=sequences, attention_mask=mask).logits[:, prompt_length - 1 : -1] / temperature
    log_probs = torch.log_softmax(logits, -1).gather(-1, completion[..., None]).squeeze(-1)
    return (log_probs * keep).sum(1)


def test_kl_to_reference_equals_a_recomputation_with_the_merged_model_and_the_base_model(tokenizer):
    from trl_clp.evaluation import kl_to_reference, render_prompts, sample_conditioned

    steer = make_steerable(tokenizer)
    w = torch.tensor([0.3, 0.7])
    weights = w.expand(3, -1)
    encoded = render_prompts(steer, tokenizer, TEXT_PROMPTS, weights)  # prompts of different lengths: left padding
    generation = {"do_sample": True, "top_k": 0, "top_p": 1.0, "pad_token_id": tokenizer.pad_token_id}
    torch.manual_seed(0)
    sampled = sample_conditioned(
        steer,
        encoded,
        weights,
        kl_weight=None,
        max_new_tokens=8,
        eos_token_id=tokenizer.eos_token_id,
        generation_kwargs={**generation, "temperature": 0.7},
    )
    kl = kl_to_reference(steer, sampled)  # (3,)

    merged = steer.merge(w).eval()  # a plain model equal to the adapter at w
    base = demo.make_tiny_llama(seed=0).eval()  # the reference, loaded apart
    expected = sequence_log_probs(merged, encoded, sampled.sequences, 0.7) - sequence_log_probs(
        base, encoded, sampled.sequences, 0.7
    )
    torch.testing.assert_close(kl, expected, atol=1e-4, rtol=0)
    assert expected.abs().min() > 1e-2  # the adapter moved every row away from the reference
    assert sampled.completion_ids() == [
        ids[: ids.index(tokenizer.eos_token_id) + 1] if tokenizer.eos_token_id in ids else ids
        for ids in sampled.sequences[:, encoded["input_ids"].size(1) :].tolist()
    ]


def test_both_samplers_sample_the_same_completions_from_one_policy(tokenizer):
    from trl_clp.evaluation import render_prompts, sample_conditioned, sample_mixture

    steer = make_steerable(tokenizer)
    weights = torch.tensor([[1.0, 0.0], [0.3, 0.7], [0.0, 1.0]])
    encoded = render_prompts(steer, tokenizer, TEXT_PROMPTS, weights)
    shared = dict(max_new_tokens=8, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(5)
    conditioned = sample_conditioned(
        steer,
        encoded,
        weights,
        kl_weight=None,
        generation_kwargs={"do_sample": True, "top_k": 0, "top_p": 1.0, "pad_token_id": 0, "temperature": 0.9},
        **shared,
    )
    torch.manual_seed(5)
    # A mixture of one component, the model at each row's weighting: the conditioned policy itself.
    mixture = sample_mixture(
        steer,
        encoded,
        weights,
        decoding=lambda w: [(w, torch.ones(len(w)))],
        pad_token_id=0,
        temperature=0.9,
        **shared,
    )
    assert mixture.completion_ids() == conditioned.completion_ids()
    assert len({tuple(ids) for ids in conditioned.completion_ids()}) == 3
    mask = conditioned.completion_mask.bool()
    width = mask.size(1)
    torch.testing.assert_close(
        mixture.policy_log_probs[:, :width][mask], conditioned.policy_log_probs[mask], atol=1e-5, rtol=0
    )


@pytest.mark.parametrize(("num_batches", "num_processes"), [(5, 2), (5, 3), (2, 3), (4, 1)])
def test_share_batches_gives_each_batch_once_in_order_and_every_process_the_same_calls(
    monkeypatch, num_batches, num_processes
):
    from trl_clp.evaluation import share_batches

    calls, shares = {}, []

    class Process:
        def __init__(self, index):
            self.process_index, self.num_processes = index, num_processes

    def run(index):
        def sample(batch):
            calls.setdefault(index, []).append(batch)
            return f"batch {batch}"

        return sample

    def capture(local):
        shares.append(local)
        raise Gathered

    monkeypatch.setattr(trl_clp.evaluation, "gather_object", capture)
    for index in range(1, num_processes):
        with pytest.raises(Gathered):
            share_batches(run(index), num_batches, Process(index))
    others = [item for share in shares for item in share]
    monkeypatch.setattr(trl_clp.evaluation, "gather_object", lambda local: others + list(local))
    results = share_batches(run(0), num_batches, Process(0) if num_processes > 1 else None)
    assert results == [f"batch {b}" for b in range(num_batches)]
    rounds = -(-num_batches // num_processes)
    assert all(len(calls[index]) == rounds for index in range(num_processes))  # same forward calls everywhere
    assert calls[0] == list(range(0, num_batches, num_processes))[:rounds] + [0] * (
        rounds - len(range(0, num_batches, num_processes))
    )


def test_summarise_front_means_prompts_of_sample_means_and_skips_unscorable_completions():
    from trl_clp.evaluation import summarise_front

    nan = float("nan")
    weightings = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    # K = 2, P = 2, S = 2: rows by weighting, then prompt, then sample.
    scores = torch.tensor(
        [[1.0, 0.0], [3.0, 2.0], [nan, nan], [0.0, 4.0], [2.0, 2.0], [2.0, nan], [4.0, 0.0], [0.0, 0.0]]
    )
    kl = torch.tensor([0.0, 2.0, 4.0, 6.0, 1.0, 1.0, 1.0, 1.0])
    front = summarise_front(["a", "b"], weightings, ["p", "q"], 2, [f"c{i}" for i in range(8)], scores, kl, 0.5)
    first, second = front.results
    assert first.rewards == {"a": pytest.approx((2.0 + 0.0) / 2), "b": pytest.approx((1.0 + 4.0) / 2)}
    assert first.kl == pytest.approx((1.0 + 5.0) / 2)
    # Values w·R − α·KL per completion (row 2 has none), then per prompt, then over prompts.
    values = [1.0 - 0.0, 3.0 - 1.0, None, 0.0 - 3.0]
    assert first.value == pytest.approx(((values[0] + values[1]) / 2 + values[3]) / 2)
    assert second.value == pytest.approx(((2.0 - 0.5 + 1.0 - 0.5) / 2 + (2.0 - 0.5 + 0.0 - 0.5) / 2) / 2)
    assert second.rewards["b"] == pytest.approx((2.0 + 0.0) / 2)  # prompt p's mean skips its unscored sample
    assert first.num_completions == 4 and front.kl_weight == 0.5
    assert [s["value"] for s in front.samples[:4]] == [pytest.approx(v) if v is not None else None for v in values]
    assert front.samples[2]["rewards"] == {"a": None, "b": None}
    assert [(s["prompt"], s["sample"], s["completion"]) for s in front.samples[4:6]] == [
        ("p", 0, "c4"),
        ("p", 1, "c5"),
    ]
