"""The 2-D swiss roll and its fixed affine scaling."""

import math

import pytest
import torch
from torch.distributions import Normal

import diffusion_lib as dl


def test_swiss_roll_same_seed_same_points():
    a, b = dl.swiss_roll(500, seed=3), dl.swiss_roll(500, seed=3)
    assert a.shape == (500, 2) and a.dtype == torch.float64
    assert torch.equal(a, b)
    assert not torch.equal(a, dl.swiss_roll(500, seed=4))


def test_swiss_roll_is_the_curve_plus_noise():
    # without noise every point lies exactly on c(tau) = (tau cos tau, tau sin tau), tau in TAU_RANGE
    x0, tau = dl.swiss_roll(1000, noise=0.0, seed=0, return_tau=True)
    assert tau.shape == (1000,)
    assert (tau >= dl.TAU_RANGE[0]).all() and (tau <= dl.TAU_RANGE[1]).all()
    torch.testing.assert_close(x0, dl.roll_curve(tau), rtol=1e-12, atol=1e-12)
    # with noise 0.5 the same seed gives the same tau and x_0 - c(tau) has per-coordinate std 0.5:
    # the sample std of n = 20 000 normal draws is within 5 SE (0.5 / sqrt(2 n)) of 0.5
    n = 20_000
    x0, tau = dl.swiss_roll(n, noise=0.5, seed=0, return_tau=True)
    residual = x0 - dl.roll_curve(tau)
    se = 0.5 / math.sqrt(2 * n)
    assert ((residual.std(dim=0) - 0.5).abs() < 5 * se).all(), residual.std(dim=0)
    assert (residual.mean(dim=0).abs() < 5 * 0.5 / math.sqrt(n)).all()


def test_swiss_roll_scaling_standardises_a_large_sample():
    # the scaling is computed from the distribution (quadrature over tau), not from a sample, so on a
    # fresh large sample the scaled points must have mean 0 per coordinate and average variance 1,
    # each within 5 standard errors of the sample (SE of a mean: std / sqrt(n); SE of the average
    # variance: std of the per-point average of squared deviations / sqrt(n))
    n = 200_000
    scaling = dl.swiss_roll_scaling()
    y = scaling.to_model(dl.swiss_roll(n, seed=11))
    mean = y.mean(dim=0)
    assert ((mean.abs() / (y.std(dim=0) / math.sqrt(n))) < 5).all(), mean
    per_point = ((y - mean) ** 2).mean(dim=1)  # the average over the two coordinates, per point
    avg_var, se = float(per_point.mean()), float(per_point.std()) / math.sqrt(n)
    assert abs(avg_var - 1.0) < 5 * se, (avg_var, se)
    # one isotropic scale: the two coordinates are not made equal (the roll is wider than tall)
    assert isinstance(scaling.scale, float) and len(scaling.shift) == 2


def test_swiss_roll_scaling_matches_the_moments_in_closed_form():
    # tau ~ Uniform[a, b], L = b - a, c(tau) = (tau cos tau, tau sin tau), x_0 = c(tau) + noise * n. By
    # the antiderivatives
    #   int u cos u = cos u + u sin u,   int u sin u = sin u - u cos u,
    #   int u^2 cos^2 u, int u^2 sin^2 u = u^3 / 6 +- (u^2 sin 2u / 2 + u cos 2u / 2 - sin 2u / 4) / 2
    # the mean is E[c] and the per-coordinate variance E[c^2] - E[c]^2 + noise^2. The library uses the
    # trapezoidal rule on 200 001 nodes (error ~1e-10 relative).
    a, b = dl.TAU_RANGE
    length = b - a

    def over_range(f):
        return (f(b) - f(a)) / length

    def periodic(u):
        return (u ** 2 * math.sin(2 * u) / 2 + u * math.cos(2 * u) / 2 - math.sin(2 * u) / 4) / 2

    mean = [over_range(lambda u: math.cos(u) + u * math.sin(u)), over_range(lambda u: math.sin(u) - u * math.cos(u))]
    second = [over_range(lambda u: u ** 3 / 6 + periodic(u)), over_range(lambda u: u ** 3 / 6 - periodic(u))]
    for noise in (0.5, 0.0, 1.0):
        var = [second[i] - mean[i] ** 2 + noise ** 2 for i in range(2)]
        scaling = dl.swiss_roll_scaling(noise)
        assert scaling.shift == pytest.approx(mean, rel=1e-8)
        assert scaling.scale == pytest.approx(math.sqrt((var[0] + var[1]) / 2), rel=1e-8)


def test_affine_scaling_round_trip_and_densities(randn):
    scaling = dl.AffineScaling(shift=(1.5, -2.0), scale=3.0)
    x = randn(100, 2) * 5
    torch.testing.assert_close(scaling.to_data(scaling.to_model(x)), x, rtol=1e-14, atol=1e-13)
    y = randn(100, 2)
    torch.testing.assert_close(scaling.to_model(scaling.to_data(y)), y, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(scaling.to_model(x), (x - torch.tensor([1.5, -2.0], dtype=torch.float64)) / 3.0,
                               rtol=0, atol=0)
    # change of variables: N(0, I) in model coordinates is N(shift, scale^2 I) in data coordinates, so
    # -log p_data(x) = -log p_model(y) + D log(scale)
    nll_model = -Normal(0.0, 1.0).log_prob(scaling.to_model(x)).sum(dim=1)
    nll_data = -Normal(torch.tensor([1.5, -2.0], dtype=torch.float64), 3.0).log_prob(x).sum(dim=1)
    torch.testing.assert_close(scaling.nll_to_data(nll_model, 2), nll_data, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kwargs, match", [({"n": 0}, "positive number of points"),
                                           ({"n": 10, "noise": -0.1}, "finite standard deviation"),
                                           ({"n": 10, "noise": math.nan}, "finite standard deviation")])
def test_swiss_roll_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dl.swiss_roll(**kwargs)
