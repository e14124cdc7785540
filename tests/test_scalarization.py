"""Scalarisation maths by hand-computed cases: linear, Tchebycheff (plain and augmented), the ideal point, GRPO's
group baselines, and why Tchebycheff matters: on a concave front it selects points no weighted sum selects."""

import json
import math

import pytest
import torch
from trl.trainer.utils import nanstd

from trl_clp.scalarization import (
    IdealPoint,
    batch_normalized,
    group_centered,
    group_normalized_rewards,
    group_relative_advantages,
    leave_one_out_advantages,
    linear_scalarization,
    objective_rewards,
    scalarize_rewards,
    tchebycheff_scalarization,
)

nan = math.nan


def test_tchebycheff_by_hand():
    rewards = torch.tensor([[0.2, 0.8], [0.6, 0.6], [1.0, 0.0], [nan, 0.5], [nan, nan]])
    weights = torch.tensor([[0.5, 0.5], [0.5, 0.5], [0.25, 0.75], [0.5, 0.5], [0.5, 0.5]])
    z = torch.tensor([1.0, 1.0])
    # gaps (0.8, 0.2) -> -max(0.4, 0.1); (0.4, 0.4) -> -0.2; (0, 1) -> -max(0, 0.75); NaN objective left out.
    expected = torch.tensor([-0.4, -0.2, -0.75, -0.25, nan])
    torch.testing.assert_close(tchebycheff_scalarization(rewards, weights, z), expected, equal_nan=True)
    # Augmented: minus rho * sum of gaps (NaN gaps skipped).
    augmented = tchebycheff_scalarization(rewards, weights, z, augmentation=0.1)
    torch.testing.assert_close(augmented, expected - 0.1 * torch.tensor([1.0, 0.8, 1.0, 0.5, nan]), equal_nan=True)
    # Past a given z the reward keeps rising with each objective (gaps are signed, not absolute).
    over = tchebycheff_scalarization(torch.tensor([[1.5, 1.2]]), torch.tensor([[0.5, 0.5]]), z)
    torch.testing.assert_close(over, torch.tensor([0.1]))


def test_tchebycheff_leaves_zero_weight_objectives_out_of_the_max():
    """w = (1, 0), z = (1, 1): s must keep rising with R_1 past z, not stop at the zero-weight objective's 0."""
    weights = torch.tensor([[1.0, 0.0]]).expand(4, 2)
    rewards = torch.tensor([[0.5, 1.0], [1.5, 1.0], [3.0, 1.0], [3.0, -5.0]])
    z = torch.tensor([1.0, 1.0])
    # s = −1·(z_1 − R_1) = R_1 − 1 whatever R_2; ρ's sum still sees both gaps.
    torch.testing.assert_close(tchebycheff_scalarization(rewards, weights, z), torch.tensor([-0.5, 0.5, 2.0, 2.0]))
    augmented = tchebycheff_scalarization(rewards, weights, z, augmentation=0.1)
    torch.testing.assert_close(augmented, torch.tensor([-0.55, 0.55, 2.2, 1.6]))
    # Only the zero-weight objective scored: 0, as the weighted sum gives (0·R_2); nothing scored: NaN.
    partial = torch.tensor([[nan, 0.3], [nan, nan]])
    out = tchebycheff_scalarization(partial, weights[:2], z, augmentation=0.1)
    torch.testing.assert_close(out, torch.tensor([-0.07, nan]), equal_nan=True)
    torch.testing.assert_close(linear_scalarization(partial, weights[:2]), torch.tensor([0.0, nan]), equal_nan=True)


def test_scalarize_rewards_order_clip_then_kl_and_dispatch():
    rewards = torch.tensor([[0.2, 0.8], [1.0, 0.0]])
    weights = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    kl, alpha = torch.tensor([1.0, 2.0]), torch.tensor([0.1, 0.1])
    z = torch.tensor([1.0, 1.0])
    out = scalarize_rewards(rewards, weights, kl, alpha, (-0.45, 0.0), scalarization="tchebycheff", ideal_point=z)
    torch.testing.assert_close(out, torch.tensor([-0.4 - 0.1, -0.45 - 0.2]))
    torch.testing.assert_close(scalarize_rewards(rewards, weights), linear_scalarization(rewards, weights))
    with pytest.raises(ValueError, match="ideal_point"):
        scalarize_rewards(rewards, weights, scalarization="tchebycheff")
    with pytest.raises(ValueError, match="one of"):
        scalarize_rewards(rewards, weights, scalarization="chebyshev")


def test_ideal_point_tracks_maxima_and_round_trips():
    point = IdealPoint(2)
    batch = torch.tensor([[0.3, nan], [0.1, nan]])
    torch.testing.assert_close(point.including(batch), torch.tensor([0.3, nan]), equal_nan=True)
    assert torch.isinf(point.maxima).all()  # `including` does not store
    point.update(batch)
    point.update(torch.tensor([[0.2, -1.0]]))
    torch.testing.assert_close(point.maxima, torch.tensor([0.3, -1.0], dtype=torch.float64))
    restored = IdealPoint(2)
    restored.load_state_dict(point.state_dict())
    torch.testing.assert_close(restored.maxima, point.maxima)
    given = IdealPoint(2, [1.0, 2.0])
    given.update(torch.tensor([[5.0, 5.0]]))
    torch.testing.assert_close(given.including(torch.tensor([[5.0, 5.0]])), torch.tensor([1.0, 2.0]))


def test_group_relative_advantages_match_grpo_formulas():
    rewards = torch.tensor([1.0, 2.0, 3.0, 6.0, 0.0, 0.0, nan, 1.0])
    grouped = rewards.view(2, 4)
    mean = torch.nanmean(grouped, 1, keepdim=True)
    by_group = ((grouped - mean) / (nanstd(grouped, dim=1, keepdim=True) + 1e-4)).view(-1)
    torch.testing.assert_close(group_relative_advantages(rewards, 4, "group"), by_group, equal_nan=True)
    # Group 0: mean 3, unbiased std sqrt(14/3): A = (-2, -1, 0, 3) / std.
    std0 = math.sqrt(14 / 3)
    torch.testing.assert_close(group_relative_advantages(rewards, 4)[:4], torch.tensor([-2, -1, 0, 3]) / (std0 + 1e-4))
    torch.testing.assert_close(
        group_relative_advantages(rewards, 4, "batch"),
        (grouped - mean).view(-1) / (nanstd(rewards) + 1e-4),
        equal_nan=True,
    )
    torch.testing.assert_close(
        group_relative_advantages(rewards, 4, "none"), (grouped - mean).view(-1), equal_nan=True
    )


def test_normalize_then_sum_pieces():
    rewards = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 5.0], [0.0, 7.0]])
    normalized = group_normalized_rewards(rewards, 2)
    a = 1 / (math.sqrt(2) + 1e-4)  # (1, 3) and (5, 7) have unbiased std sqrt(2); a constant objective gives 0
    torch.testing.assert_close(normalized, torch.tensor([[-a, 0.0], [a, 0.0], [0.0, -a], [0.0, a]]))
    values = torch.tensor([1.0, 2.0, 3.0])
    torch.testing.assert_close(batch_normalized(values), torch.tensor([-1.0, 0.0, 1.0]) / (1 + 1e-4))


def concave_front(num_points: int = 21) -> torch.Tensor:
    """`(P, 2)` points on the quarter circle's inside, R2 = 1 − sqrt(1 − (1 − R1)²): a front bulging inwards."""
    r1 = torch.linspace(0, 1, num_points)
    return torch.stack([r1, 1 - torch.sqrt(1 - (1 - r1) ** 2)], dim=1)


def test_on_a_concave_front_tchebycheff_selects_a_point_no_weighted_sum_selects():
    front = concave_front()
    # Every point is Pareto-optimal (R1 up, R2 down).
    assert (front[1:, 0] > front[:-1, 0]).all() and (front[1:, 1] < front[:-1, 1]).all()
    weightings = torch.stack([torch.linspace(0, 1, 101), 1 - torch.linspace(0, 1, 101)], dim=1)  # (W, 2)
    linear_picks = {int(linear_scalarization(front, w.expand_as(front)).argmax()) for w in weightings}
    assert linear_picks <= {0, len(front) - 1}, "the weighted sum only selects the ends of a concave front"
    z = front.max(dim=0).values  # (1, 1)
    w = torch.tensor([0.5, 0.5])
    pick = int(tchebycheff_scalarization(front, w.expand_as(front), z).argmax())
    assert pick not in linear_picks
    # The balanced weighting selects the point whose shortfalls from z are equal: R1 = R2 on the front.
    torch.testing.assert_close(front[pick, 0], front[pick, 1], atol=0.06, rtol=0)
    tchebycheff_picks = {int(tchebycheff_scalarization(front, v.expand_as(front), z).argmax()) for v in weightings}
    assert len(tchebycheff_picks) > len(front) // 2  # it reaches most of the front


# ---------------------------------------------------------------------------------------------- in training


def record_rewards_and_outputs(trainer):
    """Per generation: the raw gathered rewards `(N, m)` and a copy of the trainer's output dict."""
    records = []
    calculate, generate = trainer._calculate_rewards, trainer._generate_and_score_completions

    def calculating(*args):
        rewards = calculate(*args)
        records.append({"rewards": rewards.clone()})
        return rewards

    def generating(inputs):
        output = generate(inputs)
        records[-1].update({k: v.clone() for k, v in output.items() if isinstance(v, torch.Tensor)})
        return output

    trainer._calculate_rewards, trainer._generate_and_score_completions = calculating, generating
    return records


def test_rloo_tchebycheff_advantages_by_value_and_ideal_point_saved(tmp_path, tokenizer, prompts_dataset):
    from trl_clp.conditioning.config import ConditioningConfig
    from trl_clp.model_card import steering_card_section

    from .test_trainer import make_trainer

    trainer = make_trainer(
        tmp_path, tokenizer, prompts_dataset, max_steps=3, scalarization="tchebycheff", tchebycheff_augmentation=0.05
    )
    records = record_rewards_and_outputs(trainer)
    trainer.train()
    trainer.save_model()
    z = torch.full((2,), -math.inf)
    for record in records:
        rewards, weights = record["rewards"], record["conditioning_vectors"]  # (N, 2) each, one process
        z = torch.maximum(z, rewards.amax(0))  # running maxima, this batch included
        gaps = z - rewards
        scalar = -(weights * gaps).amax(1) - 0.05 * gaps.sum(1)
        grouped = scalar.view(-1, 4)
        expected = (grouped - (grouped.sum(1, keepdim=True) - grouped) / 3).view(-1)  # leave-one-out
        torch.testing.assert_close(record["advantages"], expected, atol=1e-5, rtol=1e-5)
        assert len({tuple(w.tolist()) for w in weights}) > 1  # non-uniform weightings
    saved = ConditioningConfig.load(str(tmp_path / "out" / "clp_config.json")).scalarization
    assert saved["method"] == "tchebycheff" and saved["augmentation"] == 0.05 and not saved["given"]
    torch.testing.assert_close(torch.tensor(saved["ideal_point"]), z)
    card = steering_card_section(ConditioningConfig.load(str(tmp_path / "out" / "clp_config.json")), "m")
    assert "Tchebycheff scalarisation `−max_i w_i (z_i − R_i) − 0.05·Σ_i (z_i − R_i)`" in card
    old_file = (
        tmp_path / "old_clp_config.json"
    )  # written before the field existed: linear; `conditioning` was `variant`
    old_file.write_text(json.dumps({"objective_names": ["a", "b"], "variant": "full"}))
    old_config = ConditioningConfig.load(str(old_file))
    assert "linear scalarisation" in steering_card_section(old_config, "m") and old_config.conditioning == "full"


def test_running_ideal_point_is_kept_in_raw_units_under_reward_normalization(tmp_path, tokenizer, prompts_dataset):
    """z is the maxima of the raw rewards, normalised with the current statistics when used: maxima of past batches'
    normalised rewards go stale as the statistics move."""
    from trl_clp.conditioning.config import ConditioningConfig

    from .test_trainer import make_trainer

    trainer = make_trainer(
        tmp_path, tokenizer, prompts_dataset, max_steps=4, scalarization="tchebycheff", reward_normalization="running"
    )
    records = record_rewards_and_outputs(trainer)
    trainer.train()
    trainer.save_model()
    seen = []
    for record in records:
        raw, weights = record["rewards"], record["conditioning_vectors"]  # (N, 2) each, one process
        seen.append(raw.double())
        history = torch.cat(seen)  # every raw reward so far, this batch included

        def normalize(values, history=history):
            return (values - history.mean(0)) / (history.std(0, correction=0) + 1e-8)

        gaps = normalize(history.amax(0)) - normalize(raw.double())
        grouped = -(weights.double() * gaps).amax(1).view(-1, 4)
        expected = (grouped - (grouped.sum(1, keepdim=True) - grouped) / 3).view(-1)  # leave-one-out
        torch.testing.assert_close(record["advantages"].double(), expected, atol=1e-4, rtol=1e-4)
    raw_maxima = torch.cat(seen).amax(0)
    out = str(tmp_path / "out")
    saved = ConditioningConfig.load(f"{out}/clp_config.json").scalarization
    assert saved["ideal_point_units"] == "raw"
    torch.testing.assert_close(torch.tensor(saved["ideal_point"], dtype=torch.float64), raw_maxima)

    # Resuming restores the raw maxima; a file written before `ideal_point_units` held normalised maxima: not loaded.
    trainer.ideal_point = IdealPoint(2)
    trainer._restore_conditioning_state(out)
    torch.testing.assert_close(trainer.ideal_point.maxima, raw_maxima)
    config = json.loads((tmp_path / "out" / "clp_config.json").read_text())
    del config["scalarization"]["ideal_point_units"]
    (tmp_path / "out" / "clp_config.json").write_text(json.dumps(config))
    trainer.ideal_point = IdealPoint(2)
    with pytest.warns(UserWarning, match="rebuilt from the raw rewards"):
        trainer._restore_conditioning_state(out)
    assert trainer.ideal_point.maxima.isneginf().all()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(scalarization="chebyshev"), "scalarization"),
        (dict(ideal_point=[1.0, 1.0]), "tchebycheff"),
        (dict(scalarization="tchebycheff", tchebycheff_augmentation=-0.1), ">= 0"),
        (dict(scalarization="tchebycheff", ideal_point=[1.0, math.inf]), "finite"),
    ],
)
def test_scalarization_config_errors_name_the_fix(tmp_path, overrides, message):
    from .conftest import tiny_config

    with pytest.raises(ValueError, match=message):
        tiny_config(tmp_path, **overrides)
    config = tiny_config(tmp_path, scalarization="tchebycheff", ideal_point=[1, 2, 3])
    with pytest.raises(ValueError, match="one value per reward function"):
        config.check_num_objectives(2)


def test_objective_rewards_by_hand_sum_to_the_scalar_reward():
    rewards = torch.tensor([[1.0, 3.0], [nan, 2.0], [nan, nan]])
    kl, kl_weight = torch.tensor([2.0, 1.0, 1.0]), torch.tensor([0.5, 0.1, 0.1])
    # R_i − α·KL; a NaN objective counts 0; a row with no reward stays unscorable
    expected = torch.tensor([[0.0, 2.0], [-0.1, 1.9], [nan, nan]])
    shares = objective_rewards(rewards, kl, kl_weight)
    torch.testing.assert_close(shares, expected, equal_nan=True)
    weights = torch.tensor([[0.25, 0.75], [0.6, 0.4], [0.5, 0.5]])
    scalar = scalarize_rewards(rewards, weights, kl, kl_weight)
    torch.testing.assert_close((weights * shares).sum(1), scalar, equal_nan=True)


def test_group_baselines_take_columns_independently():
    columns = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 6.0], [4.0, 2.0]])  # two groups of 2
    # leave-one-out in a group of 2: each minus the other; group centring: each minus the pair's mean
    torch.testing.assert_close(
        leave_one_out_advantages(columns, 2), torch.tensor([[-1.0, 0.0], [1.0, 0.0], [-1.0, 4.0], [1.0, -4.0]])
    )
    torch.testing.assert_close(
        group_centered(columns, 2), torch.tensor([[-0.5, 0.0], [0.5, 0.0], [-0.5, 2.0], [0.5, -2.0]])
    )
    for column in range(2):  # the same as the one-column functions
        torch.testing.assert_close(
            leave_one_out_advantages(columns, 2)[:, column], leave_one_out_advantages(columns[:, column], 2)
        )


def test_batch_normalized_with_the_statistics_of_a_reference():
    reference = torch.tensor([1.0, 2.0, 3.0])  # mean 2, std 1
    columns = torch.tensor([[1.0, 4.0], [2.0, 2.0], [3.0, 0.0]])
    torch.testing.assert_close(batch_normalized(columns, reference), (columns - 2.0) / (1 + 1e-4))
