import pytest
import torch

from trl_clp.sampling import (
    check_weights,
    kl_conditioning_vector,
    one_hot_probability,
    sample_group_kl_weights,
    sample_group_weights,
    simplex_grid,
)


@pytest.mark.parametrize("distribution", ["dirichlet", "uniform", "one_hot"])
def test_group_weights_lie_on_the_simplex(distribution):
    weights = sample_group_weights(distribution, num_groups=50, num_objectives=3, seed=0, stream=(0, 7))
    assert weights.shape == (50, 3)
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(50))


def test_group_weights_are_a_deterministic_stream():
    a = sample_group_weights("dirichlet", 8, 2, seed=3, stream=(0, 5))
    b = sample_group_weights("dirichlet", 8, 2, seed=3, stream=(0, 5))
    c = sample_group_weights("dirichlet", 8, 2, seed=3, stream=(0, 6))
    d = sample_group_weights("dirichlet", 8, 2, seed=4, stream=(0, 5))
    e = sample_group_weights("dirichlet", 8, 2, seed=3, stream=(1, 5))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c) and not torch.allclose(a, d) and not torch.allclose(a, e)


def test_sampling_leaves_the_global_torch_rng_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    sample_group_weights("dirichlet", 8, 2, seed=0, stream=(0, 0))
    sample_group_kl_weights(8, seed=0, stream=(0, 0), choices=[0.1, 0.2])
    assert torch.equal(torch.rand(3), expected)


def test_one_hot_draws_only_corners_and_all_of_them():
    weights = sample_group_weights("one_hot", 200, 3, seed=0, stream=(0, 0))
    assert set(weights.max(-1).values.tolist()) == {1.0}
    assert set(weights.argmax(-1).tolist()) == {0, 1, 2}


def test_fixed_draws_only_given_rows():
    table = [[1.0, 0.0], [0.3, 0.7]]
    weights = sample_group_weights("fixed", 100, 2, seed=0, stream=(0, 0), fixed_weights=table)
    assert {tuple(round(v, 6) for v in row) for row in weights.tolist()} == {(1.0, 0.0), (0.3, 0.7)}


def test_dirichlet_concentration_moves_mass_to_the_corners():
    corners = sample_group_weights("dirichlet", 4000, 2, 0, (0, 0), concentration=0.1)
    centre = sample_group_weights("dirichlet", 4000, 2, 0, (0, 0), concentration=10.0)
    assert (corners - 0.5).abs().mean() > 0.4 > 0.1 > (centre - 0.5).abs().mean()


@pytest.mark.parametrize(
    "step, expected",
    # 100 steps: corners for the first 20, p from 1 down to .25 over the next 50 (.75 per 50 steps), then .25.
    [(0, 1.0), (19, 1.0), (20, 1.0), (30, 0.85), (45, 0.625), (69, 0.265), (70, 0.25), (99, 0.25), (100, 0.25)],
)
def test_one_hot_probability_by_hand(step, expected):
    assert one_hot_probability(step, 100, 0.2, 0.5, 0.25) == pytest.approx(expected)


def test_one_hot_probability_without_a_corners_first_phase_or_anneal():
    assert one_hot_probability(0, 10, 0.0, 0.0, 0.3) == one_hot_probability(9, 10, 0.0, 0.0, 0.3) == 0.3
    assert one_hot_probability(4, 10, 0.5, 0.0, 0.1) == 1.0 and one_hot_probability(5, 10, 0.5, 0.0, 0.1) == 0.1
    with pytest.raises(ValueError, match="max_steps"):
        one_hot_probability(0, 0, 0.5, 0.0, 0.0)


def test_one_hot_mixture_replaces_some_rows_of_the_draw_by_corners():
    base = sample_group_weights("dirichlet", 2000, 3, seed=1, stream=(0, 4), concentration=0.5)
    assert torch.equal(sample_group_weights("dirichlet", 2000, 3, 1, (0, 4), 0.5, one_hot_probability=0.0), base)
    mixed = sample_group_weights(
        "dirichlet", 2000, 3, seed=1, stream=(0, 4), concentration=0.5, one_hot_probability=0.3
    )
    is_corner = mixed.max(-1).values == 1.0
    # Each row is its base draw or a corner; about 30% are corners, spread over all three; p = 1: all are corners.
    assert torch.equal(mixed[~is_corner], base[~is_corner])
    assert 0.27 < is_corner.float().mean().item() < 0.33
    assert set(mixed[is_corner].argmax(-1).tolist()) == {0, 1, 2}
    everywhere = sample_group_weights("dirichlet", 2000, 3, 1, (0, 4), 0.5, one_hot_probability=1.0)
    assert (everywhere.max(-1).values == 1.0).all()


def test_one_hot_mixture_is_an_independent_recomputation_from_the_seeded_stream():
    import numpy as np

    got = sample_group_weights("dirichlet", 6, 2, seed=7, stream=(0, 3), concentration=0.3, one_hot_probability=0.5)
    expected = np.random.default_rng([7, 0, 3]).dirichlet([0.3, 0.3], size=6)
    corner_rng = np.random.default_rng([7, 0, 3, 2])
    uniforms, corner = corner_rng.random(6), corner_rng.integers(2, size=6)
    for row in range(6):
        if uniforms[row] < 0.5:
            expected[row] = [1.0 - corner[row], float(corner[row])]
    assert 0 < (uniforms < 0.5).sum() < 6  # both kinds of rows occur in this draw
    torch.testing.assert_close(got, torch.as_tensor(expected, dtype=torch.float32))


def test_kl_weights_come_from_the_choices_or_range():
    choices = sample_group_kl_weights(100, 0, (0, 0), choices=[0.05, 0.2])
    assert {round(v, 6) for v in choices.tolist()} == {0.05, 0.2}
    ranged = sample_group_kl_weights(100, 0, (0, 0), log_uniform_range=[0.01, 1.0])
    assert ranged.min() >= 0.01 and ranged.max() <= 1.0


def test_kl_conditioning_vector_by_hand():
    weights = torch.tensor([[0.25, 0.75], [1.0, 0.0]])
    kl_weight = torch.tensor([0.2, 0.1])
    vector = kl_conditioning_vector(weights, kl_weight, min_kl_weight=0.1)
    # s = 0.1 / 0.2 = 0.5 -> (0.125, 0.375, 0.5); s = 1 -> (1, 0, 0)
    torch.testing.assert_close(vector, torch.tensor([[0.125, 0.375, 0.5], [1.0, 0.0, 0.0]]))


def test_simplex_grid_by_hand():
    torch.testing.assert_close(simplex_grid(2, 3), torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]))
    grid = simplex_grid(3, 3)
    assert grid.shape == (6, 3)
    torch.testing.assert_close(grid.sum(-1), torch.ones(6))
    with pytest.raises(ValueError, match="points_per_edge"):
        simplex_grid(2, 1)


@pytest.mark.parametrize(
    "weights, message",
    [
        ([0.5, 0.5, 0.0], "one weight per objective"),
        ([float("nan"), 1.0], "NaN or inf"),
        ([1.5, -0.5], "negative"),
        ([0.5, 0.6], "sum to 1"),
    ],
)
def test_check_weights_names_the_fix(weights, message):
    with pytest.raises(ValueError, match=message):
        check_weights(weights, num_objectives=2)


def test_check_weights_accepts_batches():
    assert check_weights([[1, 0], [0.2, 0.8]], 2).shape == (2, 2)
