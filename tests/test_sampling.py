"""Ancestral sampling (Algorithm 2): the precomputed step against p_mean_variance, seeds, exact cases."""

import pytest
import torch

import diffusion_lib as dl
from diffusion_lib.sampling import sample, sample_data, sample_loop, step_coefficients


@pytest.mark.parametrize("prediction", ["eps", "x0", "mu"])
@pytest.mark.parametrize("var", ["fixed_small", "fixed_large"])
def test_precomputed_step_equals_p_mean_variance(prediction, var):
    sched = dl.make_schedule("cosine", 50)
    coef = step_coefficients(sched, prediction, var)
    defaults = (prediction, var) == ("eps", "fixed_small")  # both functions' defaults: check them too
    assert not defaults or step_coefficients(sched) == coef
    gen = torch.Generator().manual_seed(0)
    xt, out = torch.randn(6, 2, generator=gen, dtype=torch.float64), torch.randn(6, 2, generator=gen, dtype=torch.float64)
    for t in (1, 2, 17, 50):
        step = dl.p_mean_variance(sched, xt, t, out, prediction, var)
        assert torch.allclose(coef.a[t] * xt + coef.b[t] * out, step.mean, rtol=1e-10, atol=1e-12)
        assert not defaults or torch.equal(dl.p_mean_variance(sched, xt, t, out).mean, step.mean)
        assert abs(coef.std[t] ** 2 - float(step.var)) < 1e-12 * max(1.0, float(step.var))


def test_learned_variance_at_the_ends_is_the_fixed_variance():
    # v = 0 gives beta_tilde_t (fixed_small), v = 1 gives beta_t (fixed_large) [ND21, Eq. 15]
    sched = dl.make_schedule("linear", 30)
    base = lambda xt, t: 0.1 * xt  # noqa: E731
    for v, fixed in ((0.0, "fixed_small"), (1.0, "fixed_large")):
        learned = lambda xt, t, v=v: (0.1 * xt, torch.full_like(xt, v))  # noqa: E731
        a = sample(sched, learned, 64, var="learned", generator=torch.Generator().manual_seed(5))
        b = sample(sched, base, 64, var=fixed, generator=torch.Generator().manual_seed(5))
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_the_loop_yields_every_step_down_to_x0():
    sched = dl.make_schedule("cosine", 12)
    steps = list(sample_loop(sched, lambda xt, t: torch.zeros_like(xt), 7, generator=torch.Generator().manual_seed(0)))
    assert [t for t, _ in steps] == list(range(12, -1, -1))
    assert all(x.shape == (7, 2) and x.dtype == torch.float32 for _, x in steps)
    # the last step adds no noise: x_0 is the mean at t = 1
    coef = step_coefficients(sched)
    assert torch.allclose(steps[-1][1], coef.a[1] * steps[-2][1])


def test_same_generator_seed_same_samples():
    sched = dl.make_schedule("cosine", 20)
    model = lambda xt, t: 0.3 * xt  # noqa: E731

    def draw(seed):
        return sample(sched, model, 50, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(draw(1), draw(1)) and not torch.equal(draw(1), draw(2))


def test_exact_denoiser_recovers_gaussian_data_between_the_two_variances():
    # with the exact eps-model for x_0 ~ N(0, s^2 I) the true reverse variance lies between
    # beta_tilde_t and beta_t [Ho20, Sec. 3.2], so fixed_small undershoots s^2 and fixed_large
    # overshoots it, both by little at T = 1000; 5 standard errors of a variance estimate apart
    s2, n = 0.25, 20_000
    sched = dl.make_schedule("linear", 1000)
    model = dl.gaussian_data_denoiser(sched, s2)
    se = s2 * (2 / n) ** 0.5
    small = sample(sched, model, n, var="fixed_small", generator=torch.Generator().manual_seed(0))
    large = sample(sched, model, n, var="fixed_large", generator=torch.Generator().manual_seed(0))
    var_small, var_large = small.double().var(dim=0), large.double().var(dim=0)
    assert torch.all(var_small < s2 + 5 * se) and torch.all(var_large > s2 - 5 * se)
    assert torch.all((var_small - s2).abs() < 0.1 * s2) and torch.all((var_large - s2).abs() < 0.1 * s2)
    assert small.double().mean(dim=0).abs().max() < 5 * (s2 / n) ** 0.5


def test_sample_data_maps_back_to_raw_coordinates():
    sched = dl.make_schedule("cosine", 10)
    scaling = dl.swiss_roll_scaling()
    model = lambda xt, t: torch.zeros_like(xt)  # noqa: E731
    y = sample(sched, model, 20, generator=torch.Generator().manual_seed(3))
    x = sample_data(sched, model, scaling, 20, generator=torch.Generator().manual_seed(3))
    assert x.dtype == torch.float64 and torch.allclose(x, scaling.to_data(y.double()))


def test_unknown_variance_is_refused():
    with pytest.raises(ValueError, match="unknown var 'huge'"):
        step_coefficients(dl.make_schedule("cosine", 10), var="huge")
