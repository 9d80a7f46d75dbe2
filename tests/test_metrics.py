"""The energy distance and the permutation two-sample test."""

import pytest
import torch

import diffusion_lib as dl


def test_energy_distance_is_zero_for_identical_samples_and_positive_otherwise(randn):
    x = randn(300, 2)
    assert abs(dl.energy_distance(x, x)) < 1e-12
    # the V-statistic is a squared distance between laws: a shift of 1 in one coordinate gives a
    # population value of 2 E|X - Y| - ... ~ 0.43 for unit Gaussians, far above sampling noise. Over 30 000
    # simulated pairs of 300-point samples of the same law d_same had mean 0.012 and an exponential tail
    # (P(> 0.04) = 4e-3, P(> 0.05) = 8e-4, so 0.05 was no 1e-4 bound): P(> 0.08) ~ 6e-6 by that tail; over
    # 3 000 shifted pairs d_shift had mean 0.44, sd 0.07, min 0.24: 0.15 is 4.2 sd below (1e-5 if normal)
    shifted = randn(300, 2) + torch.tensor([1.0, 0.0], dtype=torch.float64)
    same_law = randn(300, 2)
    d_shift, d_same = dl.energy_distance(x, shifted), dl.energy_distance(x, same_law)
    assert d_shift > 0.15
    assert 0 <= d_same < 0.08
    # symmetric in its arguments, and images are flattened to vectors
    assert dl.energy_distance(shifted, x) == pytest.approx(d_shift, rel=1e-12)
    assert dl.energy_distance(x.reshape(300, 1, 2, 1), shifted.reshape(300, 1, 2, 1)) == pytest.approx(d_shift,
                                                                                                      rel=1e-12)


def test_energy_distance_by_hand():
    # one point each: 2 |x - y| - 0 - 0
    x = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    assert dl.energy_distance(x, y) == pytest.approx(10.0, rel=1e-15)
    # x = {0, 2}, y = {1} on a line: 2 * mean(1, 1) - mean(0, 2, 2, 0) - 0 = 2 - 1 = 1
    x = torch.tensor([[0.0], [2.0]], dtype=torch.float64)
    y = torch.tensor([[1.0]], dtype=torch.float64)
    assert dl.energy_distance(x, y) == pytest.approx(1.0, rel=1e-15)


def test_two_sample_test_p_values(randn):
    x, same_law = randn(200, 2), randn(200, 2)
    shifted = randn(200, 2) + 1.0
    for y in (same_law, shifted):
        result = dl.two_sample_test(x, y, num_permutations=99, seed=0)
        # (1 + #exceeding) / (1 + #permutations): never 0, at most 1, on a grid of 1 / 100
        assert 0 < result.p_value <= 1
        assert round(result.p_value * 100, 9) == round(result.p_value * 100)
        assert result.statistic == pytest.approx(dl.energy_distance(x, y), rel=1e-9)
    # a shift of 1 is found (the smallest p-value possible); the same law is not rejected
    assert dl.two_sample_test(x, shifted, num_permutations=99).p_value == pytest.approx(1 / 100)
    # under the same law P(p <= a) <= a: with 9 999 relabellings, p > 1e-4 fails by chance 1e-4 of the time
    assert dl.two_sample_test(x, same_law, num_permutations=9_999).p_value > 1e-4
    # unequal sample sizes work, and the seed makes the p-value reproducible
    a = dl.two_sample_test(x, same_law[:150], num_permutations=50, seed=3)
    b = dl.two_sample_test(x, same_law[:150], num_permutations=50, seed=3)
    assert a == b


def test_two_sample_test_matches_direct_permutations():
    # reference: the energy distance of every relabelling, computed from its definition
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 2, generator=gen, dtype=torch.float64)
    y = torch.randn(30, 2, generator=gen, dtype=torch.float64) + 0.3
    result = dl.two_sample_test(x, y, num_permutations=50, seed=7)
    assert result.statistic == pytest.approx(dl.energy_distance(x, y), rel=1e-10)
    pooled = torch.cat([x, y])
    perm_gen = torch.Generator().manual_seed(7)
    exceed = 0
    for _ in range(50):
        idx = torch.randperm(70, generator=perm_gen)
        exceed += dl.energy_distance(pooled[idx[:40]], pooled[idx[40:]]) >= result.statistic - 1e-12
    assert result.p_value == pytest.approx((1 + exceed) / 51)


def test_two_sample_test_detects_a_shift():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(200, 2, generator=gen, dtype=torch.float64)
    y = torch.randn(200, 2, generator=gen, dtype=torch.float64) + 1.0
    assert dl.two_sample_test(x, y, num_permutations=100).p_value < 0.02

