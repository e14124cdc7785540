"""Two processes (gloo on CPU): one weighting per prompt group on both ranks, identical gradients and parameters,
metadata saved once, and the front evaluated by both ranks in step and written once."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest


def assert_ranks_agree(ranks: list[dict]) -> None:
    """Gradients agree across the two ranks at every optimizer step (DDP averaged them), some are non-zero, and the
    parameters' checksums agree after training."""
    assert len(ranks[0]["gradients"]) == len(ranks[1]["gradients"]) == 3
    for step0, step1 in zip(ranks[0]["gradients"], ranks[1]["gradients"], strict=True):
        assert step0.keys() == step1.keys() and step0
        for name, value in step0.items():
            assert abs(value - step1[name]) <= 1e-6 * max(1.0, abs(value)), name
    assert any(abs(v) > 0 for step in ranks[0]["gradients"] for v in step.values())
    for name, value in ranks[0]["checksums"].items():
        assert abs(value - ranks[1]["checksums"][name]) <= 1e-6 * max(1.0, abs(value)), name


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("kind", ["rloo", "grpo"])  # grpo: with Tchebycheff, whose ideal point ranks must share
def test_two_processes_share_group_weightings_and_parameters(tmp_path, kind):
    script = os.path.join(os.path.dirname(__file__), "distributed_run.py")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        script,
        str(tmp_path),
        kind,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{k}.json").read_text()) for k in range(2)]
    assert ranks[0]["world_size"] == 2

    weight_of = {}
    for rank in ranks:
        for prompt, step, weights in rank["seen"]:
            weight_of.setdefault((prompt, step), []).append(tuple(round(w, 6) for w in weights))
    # Each prompt's 4 completions are split 2 + 2 across the ranks; all 4 carry the same weighting.
    assert all(len(ws) == 4 and len(set(ws)) == 1 for ws in weight_of.values()), weight_of
    assert {k for k, _ in weight_of} and len({ws[0] for ws in weight_of.values()}) > 1
    if kind == "grpo":  # one group per step, drawn under a weighting schedule (corners first): recomputed here
        for (_, step), ws in weight_of.items():
            if step == 0:
                corner_rng = np.random.default_rng([0, 0, step, 2])
                corner_rng.random(1)  # the draw's uniforms come first, then the corners
                expected = np.eye(2)[corner_rng.integers(2, size=1)[0]]
            else:
                expected = np.random.default_rng([0, 0, step]).dirichlet([1.0, 1.0], size=1)[0]
            assert np.allclose(ws[0], expected, atol=1e-6), (step, ws[0], expected)

    assert ranks[0]["checksums"].keys() == ranks[1]["checksums"].keys()
    assert_ranks_agree(ranks)
    assert ranks[0]["ideal_point"] == ranks[1]["ideal_point"]  # from the gathered rewards: the same on both ranks
    assert (tmp_path / "final" / "clp_config.json").is_file()
    # Only the main process writes the metadata (and TRL only it the adapter).
    assert ranks[0]["metadata_saves"] == [str(tmp_path / "final")] and ranks[1]["metadata_saves"] == []

    # The front callback ran on both ranks with the same number of forward calls (ZeRO-3 and FSDP need every rank in
    # every forward), both hold the same front, rank 0 alone wrote it, and it equals a one-process evaluation.
    calls = [rank["evaluation_forward_calls"] for rank in ranks]
    assert calls[0].keys() == {"1", "2", "3"} and calls[0]["1"] == calls[0]["2"] == 0
    assert calls[0]["3"] == calls[1]["3"] > 0
    assert ranks[0]["front_saves"] == ["step-3"] and ranks[1]["front_saves"] == []
    written = json.loads((tmp_path / "out" / "fronts" / "step-3.json").read_text())
    assert written == ranks[0]["callback_fronts"]["3"] == ranks[1]["callback_fronts"]["3"]
    assert ranks[0]["samples_match"] and ranks[1]["samples_match"]
    single = ranks[0]["single_process_front"]
    assert [r["weights"] for r in written["results"]] == [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    for got, expected in zip(written["results"], single["results"], strict=True):
        assert got["num_completions"] == expected["num_completions"] == 3
        for key in ("kl", "value"):
            assert abs(got[key] - expected[key]) <= 1e-6, (key, got, expected)
        for name, value in expected["rewards"].items():
            assert abs(got["rewards"][name] - value) <= 1e-6, (name, got, expected)
    assert len({round(r["kl"], 6) for r in written["results"]}) == 3  # the weightings sampled different completions
