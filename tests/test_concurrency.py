"""One steerable model used by several threads or asyncio tasks at once: each call gets its own weighting."""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from peft import LoraConfig

from trl_clp import SteerableModel, demo
from trl_clp.conditioning import WeightConditioner

WEIGHTINGS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.3, 0.7], [0.8, 0.2]])
INPUT_IDS = torch.tensor([[1, 40, 41, 42, 43], [1, 70, 71, 72, 73]])


def make_steerable():
    # Random B as well as A: every block changes the output, so a call under another weighting would show.
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=demo.LLAMA_LINEAR_MODULES, init_lora_weights=False)
    base = demo.make_tiny_llama(seed=0)
    torch.manual_seed(0)
    return SteerableModel.from_base_model(base, ["a", "b"], lora).eval()


def generate(steer, weights):
    return steer.generate(INPUT_IDS, weights=weights, max_new_tokens=10, do_sample=False, pad_token_id=0)


def run_in_threads(function, num_calls: int, repeats: int = 3) -> list[list]:
    """`function(i)` called `repeats` times in each of `num_calls` threads, all released at once."""
    barrier = threading.Barrier(num_calls)

    def worker(index):
        barrier.wait()
        return [function(index) for _ in range(repeats)]

    with ThreadPoolExecutor(num_calls) as pool:
        return list(pool.map(worker, range(num_calls)))


def assert_nothing_left_set(steer):
    assert steer.conditioner.conditioning_vectors is None
    with pytest.raises(RuntimeError, match="without a weighting"), torch.no_grad():
        steer(input_ids=INPUT_IDS)


def test_concurrent_generate_calls_each_use_their_own_weighting():
    steer = make_steerable()
    alone = [generate(steer, w) for w in WEIGHTINGS]
    # Each weighting gives its own tokens: a call run under another thread's weighting cannot go unnoticed.
    assert len({tuple(out.flatten().tolist()) for out in alone}) == len(WEIGHTINGS)
    for out, weights in zip(alone, WEIGHTINGS, strict=True):
        expected = steer.merge(weights).generate(INPUT_IDS, max_new_tokens=10, do_sample=False, pad_token_id=0)
        assert torch.equal(out, expected)

    results = run_in_threads(lambda i: generate(steer, WEIGHTINGS[i]), len(WEIGHTINGS))
    for index, outputs in enumerate(results):
        for out in outputs:
            assert torch.equal(out, alone[index])
    assert_nothing_left_set(steer)


def test_concurrent_conditioned_forwards_with_per_row_weightings():
    steer = make_steerable()
    per_row = [WEIGHTINGS[[i, (i + 1) % len(WEIGHTINGS)]] for i in range(len(WEIGHTINGS))]  # (2, m) each

    def forward(index):
        with torch.no_grad(), steer.condition(per_row[index]):
            return steer(input_ids=INPUT_IDS).logits

    alone = [forward(i) for i in range(len(per_row))]
    results = run_in_threads(forward, len(per_row))
    for index, outputs in enumerate(results):
        for logits in outputs:
            torch.testing.assert_close(logits, alone[index], atol=1e-6, rtol=0)
    for index, weights in enumerate(per_row):  # and each row is its weighting's merged model
        for row in range(2):
            with torch.no_grad():
                merged = steer.merge(weights[row])(input_ids=INPUT_IDS[row : row + 1]).logits[0]
            assert (alone[index][row] - merged).abs().max() <= 1e-5
    assert (alone[0][0] - alone[1][0]).abs().max() > 1e-3
    assert_nothing_left_set(steer)


def test_asyncio_tasks_interleaved_inside_their_conditioning_keep_their_own():
    steer = make_steerable()

    async def task(weights):
        with steer.condition(weights, batch_size=2):
            await asyncio.sleep(0)  # the other tasks set their weightings here
            with torch.no_grad():
                return steer(input_ids=INPUT_IDS).logits

    async def main():
        return await asyncio.gather(*(task(w) for w in WEIGHTINGS))

    results = asyncio.run(main())
    for logits, weights in zip(results, WEIGHTINGS, strict=True):
        with torch.no_grad():
            expected = steer.merge(weights)(input_ids=INPUT_IDS).logits
        assert (logits - expected).abs().max() <= 1e-5
    assert_nothing_left_set(steer)


def test_a_failing_call_leaves_nothing_set():
    steer = make_steerable()
    with pytest.raises(RuntimeError, match="one weighting per row"), steer.condition(WEIGHTINGS[:3]), torch.no_grad():
        steer(input_ids=INPUT_IDS)
    assert_nothing_left_set(steer)


def test_two_steerable_models_over_one_peft_model_share_one_set_of_hooks():
    first = make_steerable()
    second = SteerableModel(first.model, first.conditioning_config)
    assert second.conditioner is first.conditioner
    weights = torch.tensor([0.3, 0.7])
    with torch.no_grad():
        expected = first.merge(weights)(input_ids=INPUT_IDS).logits
        for steer in (first, second):  # a second set of hooks would scale each block twice
            with steer.condition(weights, batch_size=2):
                assert (steer(input_ids=INPUT_IDS).logits - expected).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="already has a WeightConditioner"):
        WeightConditioner(2).attach(first.model, first.conditioning_config.conditioned_modules)


def test_the_training_weighting_is_seen_from_another_thread():
    """Backward can run in autograd's device thread (CUDA): the trainer's weighting must reach it, and be cleared."""
    steer = make_steerable()
    weights = torch.tensor([[0.3, 0.7], [0.9, 0.1]])
    steer.conditioner.set_conditioning_vectors(weights)
    try:
        with ThreadPoolExecutor(1) as pool, torch.no_grad():
            logits = pool.submit(lambda: steer(input_ids=INPUT_IDS).logits).result()
    finally:
        steer.conditioner.clear()
    for row in range(2):
        with torch.no_grad():
            expected = steer.merge(weights[row])(input_ids=INPUT_IDS[row : row + 1]).logits[0]
        assert (logits[row] - expected).abs().max() <= 1e-5
    assert_nothing_left_set(steer)
