"""Tests for the helpers behind notebooks 04 and 05: the exact bound of the Gaussian case
(`gaussian_bound_exact`) and the plot helpers `plot_arrows` and `plot_curves`."""

import math

import matplotlib
import pytest
import torch

import diffusion_lib as dl

matplotlib.use("Agg")


def test_gaussian_bound_exact_shapes_and_parts(sched):
    terms = dl.gaussian_bound_exact(sched, 0.25, 3)
    assert isinstance(terms, dl.BoundTerms)
    assert terms.prior.shape == (1,) and terms.steps.shape == (sched.T, 1)
    assert terms.steps.dtype == torch.float64 and torch.isfinite(terms.steps).all()
    assert torch.allclose(terms.total, terms.prior + terms.decoder + terms.diffusion)


@pytest.mark.parametrize("var_type", ["fixed_small", "fixed_large"])
def test_gaussian_bound_exact_is_above_the_entropy(sched, var_type):
    # the bound on E[-log p(x_0)] can never beat the data's entropy
    for data_var in (0.01, 0.25, 4.0):
        total = float(dl.gaussian_bound_exact(sched, data_var, 2, var_type).total[0])
        assert total >= dl.gaussian_entropy(data_var, 2) - 1e-9


def test_gaussian_bound_exact_is_tight_for_unit_variance(sched):
    # data N(0, I): every marginal is N(0, I) and q(x_{t-1} | x_t) = N(sqrt(alpha_t) x_t, beta_t I) exactly,
    # so the model with sigma_t^2 = beta_t is the true reverse chain and the bound equals the entropy
    total = float(dl.gaussian_bound_exact(sched, 1.0, 5, "fixed_large").total[0])
    assert total == pytest.approx(dl.gaussian_entropy(1.0, 5), abs=1e-8)


def test_gaussian_bound_exact_scales_with_dimension(sched):
    one = dl.gaussian_bound_exact(sched, 0.5, 1)
    four = dl.gaussian_bound_exact(sched, 0.5, 4)
    assert torch.allclose(4 * one.steps, four.steps) and torch.allclose(4 * one.prior, four.prior)


def test_gaussian_bound_exact_prior_matches_prior_kl_on_average(sched, randn):
    # E_x0[L_T] in closed form against dl.prior_kl averaged over many draws of x_0 ~ N(0, s^2 I)
    data_var = 0.25
    x0 = math.sqrt(data_var) * randn(20000, 2)
    values = dl.prior_kl(sched, x0)
    expected = float(dl.gaussian_bound_exact(sched, data_var, 2).prior[0])
    assert abs(float(values.mean()) - expected) <= 5 * float(values.std()) / math.sqrt(len(values)) + 1e-12


@pytest.mark.parametrize("name", dl.SCHEDULES)
@pytest.mark.parametrize("T", [10, pytest.param(100, marks=pytest.mark.slow)])
@pytest.mark.parametrize("var_type", ["fixed_small", "fixed_large"])
def test_gaussian_bound_exact_matches_sampled_bound_terms(name, T, var_type, randn):
    # the closed form against the general Monte Carlo estimator with the exact denoiser, term by term,
    # within 5 standard errors over the examples
    sched = dl.make_schedule(name, T)
    data_var, n = 0.25, 2000
    x0 = math.sqrt(data_var) * randn(n, 2)
    model = dl.gaussian_data_denoiser(sched, data_var)
    sampled = dl.bound_terms(sched, model, x0, var_type=var_type, generator=randn.generator)
    exact = dl.gaussian_bound_exact(sched, data_var, 2, var_type)
    for part in ("prior", "decoder", "diffusion", "total"):
        values = getattr(sampled, part)
        se = float(values.std()) / math.sqrt(n)
        assert abs(float(values.mean()) - float(getattr(exact, part)[0])) <= 5 * se + 1e-12, part


def test_gaussian_bound_exact_matches_an_independent_step_formula():
    # the term at one step, from the KL formula written out per coordinate with r_t = Var(x_0 | x_t)
    sched = dl.make_schedule("linear", 100)
    s2, t = 0.3, 40
    a, a_prev, beta = (float(sched.alpha_bar[t]), float(sched.alpha_bar[t - 1]), float(sched.beta[t]))
    beta_tilde = (1 - a_prev) / (1 - a) * beta
    c = math.sqrt(a_prev) * beta / (1 - a)
    r = s2 - a * s2 ** 2 / (a * s2 + 1 - a)  # Var(x_0) - Cov(x_0, x_t)^2 / Var(x_t)
    expected = 0.5 * (math.log(beta / beta_tilde) + (beta_tilde + c ** 2 * r) / beta - 1)
    got = float(dl.gaussian_bound_exact(sched, s2, 1, "fixed_large").steps[t - 1, 0])
    assert got == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan])
def test_gaussian_bound_exact_rejects_bad_variance(bad):
    sched = dl.make_schedule("linear", 10)
    with pytest.raises(ValueError, match="positive finite variance"):
        dl.gaussian_bound_exact(sched, bad, 2)


def test_gaussian_bound_exact_rejects_learned_variance():
    sched = dl.make_schedule("linear", 10)
    with pytest.raises(ValueError, match="does not depend on a network"):
        dl.gaussian_bound_exact(sched, 0.25, 2, "learned")


def test_plot_arrows_draws_magnified_arrows():
    import matplotlib.pyplot as plt

    start = torch.zeros(3, 2, dtype=torch.float64)
    end = torch.tensor([[0.1, 0.0], [0.0, 0.1], [0.1, 0.1]], dtype=torch.float64)
    ax = dl.plotting.plot_arrows(start, end, magnify=10.0, title="arrows")
    quiver = ax.collections[-1]
    assert quiver.U.tolist() == pytest.approx([1.0, 0.0, 1.0]) and quiver.V.tolist() == pytest.approx([0.0, 1.0, 1.0])
    assert ax.get_title() == "arrows" and ax.get_xlabel() and ax.get_ylabel()
    plt.close("all")


def test_plot_curves_one_line_per_entry_with_legend():
    import matplotlib.pyplot as plt

    x = list(range(1, 6))
    curves = {"linear": torch.arange(5.0), "custom": [1, 2, 3, 4, 5]}
    ax = dl.plotting.plot_curves(x, curves, xlabel="t", ylabel="y", title="curves", logy=True,
                                 styles={"custom": "--"})
    assert [line.get_label() for line in ax.get_lines()] == ["linear", "custom"]
    assert ax.get_lines()[0].get_color() == dl.plotting.SCHEDULE_COLORS["linear"]
    assert ax.get_lines()[1].get_linestyle() == "--"
    assert ax.get_legend() is not None and ax.get_yscale() == "log"
    single = dl.plotting.plot_curves(x, {"only": x})
    assert single.get_legend() is None
    plt.close("all")
