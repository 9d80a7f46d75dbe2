"""The posterior q(x_{t-1} | x_t, x_0) against Bayes' rule, and the eps / x0 / mu conversions."""

import math

import pytest
import torch

import diffusion_lib as dl
import reference as ref


def batch_of_every_t(sched):
    """t = 1..T as one (T,) batch, so each test checks every step including t = 1 and t = T."""
    return torch.arange(1, sched.T + 1)


def test_q_posterior_is_bayes_rule_on_the_joint_gaussian(sched, randn):
    # Given x_0, each coordinate of (x_{t-1}, x_t) is jointly Gaussian:
    #   x_{t-1} = sqrt(abar_{t-1}) x_0 + sqrt(1 - abar_{t-1}) e,  x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) n
    # with means m1 = sqrt(abar_{t-1}) x_0, m2 = sqrt(alpha_t) m1 and covariances
    #   C11 = 1 - abar_{t-1},  C12 = sqrt(alpha_t) C11,  C22 = alpha_t C11 + beta_t.
    # Conditioning on x_t: mean m1 + C12 / C22 (x_t - m2), variance C11 - C12^2 / C22 (Bayes' rule for
    # Gaussians). Nothing below uses the library's alpha_bar or its posterior coefficients.
    betas = sched.beta[1:].tolist()
    ab = ref.alpha_bar(betas)
    T = sched.T
    x0, xt = randn(T, 3), randn(T, 3)
    beta = torch.tensor(betas, dtype=torch.float64).reshape(T, 1)
    ab_prev = torch.tensor(ab[:-1], dtype=torch.float64).reshape(T, 1)
    m1 = ab_prev.sqrt() * x0
    m2 = (1 - beta).sqrt() * m1
    c11 = 1 - ab_prev
    c12 = (1 - beta).sqrt() * c11
    c22 = (1 - beta) * c11 + beta
    mean_bayes = m1 + c12 / c22 * (xt - m2)
    var_bayes = (c11 - c12 ** 2 / c22).expand_as(x0)

    mean, var = dl.q_posterior(sched, x0, xt, batch_of_every_t(sched))
    # the Bayes variance subtracts nearly equal numbers when beta_t is small: ~1e-16 / beta_t relative
    torch.testing.assert_close(mean, mean_bayes, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(var, var_bayes, rtol=1e-8, atol=1e-15)


def test_q_posterior_at_t1_is_the_point_x0(sched, randn):
    # q(x_0 | x_1, x_0) puts all its mass on x_0: mean x_0, variance exactly 0. The mean's x_0
    # coefficient is beta_1 / (1 - abar_1) with 1 - abar_1 = 1 - (1 - beta_1) rounded: 1 to within
    # ~1e-16 / beta_1 (4e-5 for the cosine schedule at T = 1000), hence rtol 1e-11
    x0, x1 = randn(4, 2), randn(4, 2)
    mean, var = dl.q_posterior(sched, x0, x1, 1)
    torch.testing.assert_close(mean, x0, rtol=1e-11, atol=0)
    assert torch.equal(var, torch.zeros_like(x0))


def test_q_posterior_matches_a_monte_carlo_regression(randn):
    # a third, sampling-based check at one step: draw (x_{t-1}, x_t) from the chain given x_0 = 0.7 and
    # regress x_{t-1} on x_t. The least-squares line through the sample must match the posterior mean
    # (linear in x_t) at the sample's mean x_t and in slope, and the residual variance must match the
    # posterior variance; each within 5 standard errors (SE of the line at the mean sqrt(s^2 / n), of
    # the slope sqrt(s^2 / sum (x_t - mean)^2), of the residual variance s^2 sqrt(2 / n)).
    sched = dl.make_schedule("cosine", 100)
    t, n = 40, 100_000
    x0 = torch.full((n, 1), 0.7, dtype=torch.float64)
    x_prev = dl.q_sample(sched, x0, t - 1, randn(n, 1))
    xt = dl.q_step(sched, x_prev, t, randn(n, 1))
    dx, dy = xt - xt.mean(), x_prev - x_prev.mean()
    sxx = float((dx ** 2).sum())
    slope = float((dx * dy).sum()) / sxx
    resid_var = float(((dy - slope * dx) ** 2).sum()) / (n - 2)

    def posterior_mean_at(value):
        mean, var = dl.q_posterior(sched, x0[:1], torch.full((1, 1), value, dtype=torch.float64), t)
        return float(mean), float(var)

    at_mean, var = posterior_mean_at(float(xt.mean()))
    slope_lib = posterior_mean_at(1.0)[0] - posterior_mean_at(0.0)[0]
    assert abs(float(x_prev.mean()) - at_mean) < 5 * math.sqrt(resid_var / n)
    assert abs(slope - slope_lib) < 5 * math.sqrt(resid_var / sxx)
    assert abs(resid_var - var) < 5 * resid_var * math.sqrt(2 / n)


def test_conversions_round_trip_at_every_t(sched, randn):
    # for arbitrary values (not a consistent triple) each conversion and its inverse give back the input
    t = batch_of_every_t(sched)
    xt, a, b = randn(sched.T, 2), randn(sched.T, 2), randn(sched.T, 2)
    # eps -> x0 -> eps; dividing by sqrt(abar_T) ~ 5e-5 (cosine, T = 1000) amplifies rounding ~2e4-fold
    torch.testing.assert_close(dl.eps_from_x0(sched, xt, t, dl.x0_from_eps(sched, xt, t, a)), a, rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(dl.x0_from_eps(sched, xt, t, dl.eps_from_x0(sched, xt, t, b)), b, rtol=1e-8, atol=1e-9)
    # x0 -> mu -> x0 and mu -> x0 -> mu
    torch.testing.assert_close(dl.x0_from_mu(sched, xt, t, dl.mu_from_x0(sched, xt, t, a)), a, rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(dl.mu_from_x0(sched, xt, t, dl.x0_from_mu(sched, xt, t, b)), b, rtol=1e-8, atol=1e-9)
    # eps -> mu directly equals eps -> x0 -> mu
    torch.testing.assert_close(dl.mu_from_eps(sched, xt, t, a),
                               dl.mu_from_x0(sched, xt, t, dl.x0_from_eps(sched, xt, t, a)), rtol=1e-8, atol=1e-9)


def test_conversions_recover_the_truth_from_a_consistent_triple(sched, randn):
    # with x_t = q_sample(x_0, t, eps): eps and x_0 determine each other, and mu_from_eps with the true
    # noise is the posterior mean mu_tilde(x_t, x_0) [Ho20, Eq. 7 and 11]
    t = batch_of_every_t(sched)
    x0, eps = randn(sched.T, 2), randn(sched.T, 2)
    xt = dl.q_sample(sched, x0, t, eps)
    mu_tilde, _ = dl.q_posterior(sched, x0, xt, t)
    ab_t = sched.alpha_bar[t].reshape(-1, 1)
    torch.testing.assert_close(dl.x0_from_eps(sched, xt, t, eps), x0, rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(dl.eps_from_x0(sched, xt, t, x0), eps, rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(dl.mu_from_eps(sched, xt, t, eps), mu_tilde, rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(dl.mu_from_x0(sched, xt, t, x0), mu_tilde, rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(dl.x0_from_mu(sched, xt, t, mu_tilde), x0, rtol=1e-8, atol=1e-9)
    # convert_prediction gives the same (eps, x0, mu) whichever of the three the network predicts
    v = ab_t.sqrt() * eps - (1 - ab_t).sqrt() * x0  # [Sa22, Sec. 4], written from the paper
    torch.testing.assert_close(dl.v_from_eps_x0(sched, t, eps, x0), v, rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(dl.x0_from_v(sched, xt, t, v), x0, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(dl.eps_from_v(sched, xt, t, v), eps, rtol=1e-8, atol=1e-8)
    for prediction, output in (("eps", eps), ("x0", x0), ("mu", mu_tilde), ("v", v)):
        got = dl.convert_prediction(sched, xt, t, output, prediction)
        for name, value, truth in zip(("eps", "x0", "mu"), got, (eps, x0, mu_tilde)):
            torch.testing.assert_close(value, truth, rtol=1e-8, atol=1e-9, msg=f"{prediction} -> {name}")


def test_mu_from_eps_is_not_the_misprinted_formula(sched):
    # a common misprint: mu = (x_t - sqrt(1 - alpha_t) eps) / sqrt(alpha_t). The right coefficient is
    # beta_t / sqrt(1 - abar_t); the two agree only at t = 1 (abar_1 = alpha_1) and must differ after.
    t = batch_of_every_t(sched)
    xt = torch.zeros(sched.T, 2, dtype=torch.float64)
    eps = torch.ones(sched.T, 2, dtype=torch.float64)
    alpha = sched.alpha[1:].reshape(-1, 1)
    misprint = (xt - (1 - alpha).sqrt() * eps) / alpha.sqrt()
    mu = dl.mu_from_eps(sched, xt, t, eps)
    gap = (mu - misprint).abs().max(dim=1).values
    assert gap[0] < 1e-12
    # from t = 2 on, sqrt(beta_t) - beta_t / sqrt(1 - abar_t) is at least ~1e-3 for these schedules
    assert (gap[1:] > 1e-4 * mu[1:].abs().max(dim=1).values).all()


def test_an_int_t_and_a_batch_of_t_agree(randn):
    sched = dl.make_schedule("linear", 100)
    x0, xt, eps = randn(3, 2), randn(3, 2), randn(3, 2)
    t_batch = torch.full((3,), 17)
    for fn, arg in ((dl.x0_from_eps, eps), (dl.eps_from_x0, x0), (dl.mu_from_eps, eps), (dl.mu_from_x0, x0),
                    (dl.x0_from_mu, x0)):
        assert torch.equal(fn(sched, xt, 17, arg), fn(sched, xt, t_batch, arg)), fn.__name__
    for a, b in zip(dl.q_posterior(sched, x0, xt, 17), dl.q_posterior(sched, x0, xt, t_batch)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("shape", [(5, 2), (5, 3, 4, 4)])
def test_posterior_broadcasts_over_points_and_images(shape, randn):
    sched = dl.make_schedule("cosine", 10)
    x0, xt = randn(*shape), randn(*shape)
    t = torch.tensor([1, 2, 5, 9, 10])
    mean, var = dl.q_posterior(sched, x0, xt, t)
    assert mean.shape == shape and var.shape == shape
    # each example uses its own t: compare with the same example alone at an int t
    for i, ti in enumerate(t.tolist()):
        m_i, v_i = dl.q_posterior(sched, x0[i:i + 1], xt[i:i + 1], ti)
        torch.testing.assert_close(mean[i:i + 1], m_i, rtol=0, atol=0)
        torch.testing.assert_close(var[i:i + 1], v_i, rtol=0, atol=0)
