"""DPO-CLP on two processes (gloo on CPU): each rank's pairs carry its slice of one global draw per micro-step,
gradients and parameters agree across ranks, and the metadata is saved once."""

import json
import os
import subprocess
import sys

from trl_clp.sampling import sample_group_weights

from .test_distributed import assert_ranks_agree, free_port


def test_two_processes_slice_one_global_draw_and_keep_parameters_identical(tmp_path):
    script = os.path.join(os.path.dirname(__file__), "distributed_dpo_run.py")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1"]
    command += ["--master_port", str(free_port()), script, str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{k}.json").read_text()) for k in range(2)]
    assert ranks[0]["world_size"] == 2

    # Micro-step k draws 4 weightings (2 pairs x 2 ranks) from stream (0, k); rank r takes rows [2r, 2r + 2).
    assert [step for step, _ in ranks[0]["seen"]] == [step for step, _ in ranks[1]["seen"]] == [0, 1, 2]
    for step in range(3):
        draw = sample_group_weights("dirichlet", 4, 2, seed=0, stream=(0, step))
        for rank in range(2):
            got = ranks[rank]["seen"][step][1]
            for row, expected in zip(got, draw[2 * rank : 2 * rank + 2].tolist(), strict=True):
                assert max(abs(a - b) for a, b in zip(row, expected, strict=True)) < 1e-6, (step, rank, got)

    assert_ranks_agree(ranks)
    assert (tmp_path / "final" / "clp_config.json").is_file()
    assert ranks[0]["metadata_saves"] == [str(tmp_path / "final")] and ranks[1]["metadata_saves"] == []
