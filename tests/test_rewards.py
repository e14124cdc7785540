import math

import numpy as np
import torch

from trl_clp.rewards import brevity_reward, source_coverage_reward
from trl_clp.scalarization import RunningMoments, leave_one_out_advantages, scalarize_rewards

nan = math.nan


def test_scalarize_by_hand():
    rewards = torch.tensor([[1.0, 2.0], [3.0, nan], [nan, nan]])
    weights = torch.tensor([[0.5, 0.5], [0.2, 0.8], [1.0, 0.0]])
    kl = torch.tensor([1.0, 2.0, 3.0])
    kl_weight = torch.tensor([0.1, 0.5, 0.1])
    out = scalarize_rewards(rewards, weights, kl, kl_weight)
    # 1.5 - 0.1; 0.6 - 1.0; unscorable row stays NaN
    torch.testing.assert_close(out[:2], torch.tensor([1.4, -0.4]))
    assert torch.isnan(out[2])


def test_scalarize_clips_before_the_kl_penalty():
    out = scalarize_rewards(
        torch.tensor([[10.0, 0.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([2.0]), torch.tensor([1.0]), (-1, 1)
    )
    torch.testing.assert_close(out, torch.tensor([-1.0]))


def test_one_hot_weight_equals_single_objective():
    rewards = torch.randn(6, 3)
    weights = torch.tensor([[0.0, 1.0, 0.0]]).expand(6, -1)
    torch.testing.assert_close(scalarize_rewards(rewards, weights), rewards[:, 1])


def test_leave_one_out_by_hand():
    rewards = torch.tensor([1.0, 2.0, 3.0, 10.0, 10.0, 4.0])
    advantages = leave_one_out_advantages(rewards, num_generations=3)
    # group 1: 1 - 2.5, 2 - 2, 3 - 1.5; group 2: 10 - 7, 10 - 7, 4 - 10
    torch.testing.assert_close(advantages, torch.tensor([-1.5, 0.0, 1.5, 3.0, 3.0, -6.0]))


def test_leave_one_out_skips_unscorable_siblings():
    advantages = leave_one_out_advantages(torch.tensor([1.0, nan, 3.0]), num_generations=3)
    torch.testing.assert_close(advantages[[0, 2]], torch.tensor([-2.0, 2.0]))
    assert torch.isnan(advantages[1])


def test_running_moments_match_numpy_over_batches():
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc=[1, -2], scale=[1, 3], size=(n, 2)) for n in (5, 17, 3)]
    batches[1][4, 0] = nan
    moments = RunningMoments(2)
    for batch in batches:
        moments.update(torch.tensor(batch, dtype=torch.float32))
    everything = np.concatenate(batches)
    np.testing.assert_allclose(moments.mean.numpy(), np.nanmean(everything, 0), rtol=1e-5)
    np.testing.assert_allclose(moments.std.numpy(), np.nanstd(everything, 0), rtol=1e-5)
    restored = RunningMoments(2)
    restored.load_state_dict(moments.state_dict())
    x = torch.tensor([[0.0, 0.0]])
    torch.testing.assert_close(restored.normalize(x), moments.normalize(x))


def test_brevity_and_coverage_pull_apart():
    prompts = ["the river walks near the bridge"] * 2
    short, long = "river", "the river walks near the bridge today"
    coverage = source_coverage_reward(prompts=prompts, completions=[short, long])
    brevity = brevity_reward(completions=[short, long], completion_ids=[[0] * 5, [0] * 37], max_length=40)
    assert coverage[0] < coverage[1] and brevity[0] > brevity[1]
    assert coverage[1] == 1.0
