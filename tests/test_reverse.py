"""The reverse step p_theta(x_{t-1} | x_t): its variance choices and its mean from each parameterisation."""

import math

import pytest
import torch

import diffusion_lib as dl
import reference as ref


def test_fixed_variances_are_beta_tilde_and_beta(sched):
    betas = sched.beta[1:].tolist()
    t = torch.arange(1, sched.T + 1)
    like = torch.zeros(sched.T, 2, dtype=torch.float64)
    for var in ("fixed_small", "fixed_large"):
        # reference: beta_t for fixed_large; beta_tilde_t for fixed_small, beta_tilde_2 at t = 1 (where
        # beta_tilde_1 = 0 has no log), written out in reference.reverse_var
        expected = torch.tensor([ref.reverse_var(betas, s, var) for s in range(1, sched.T + 1)],
                                dtype=torch.float64).reshape(-1, 1)
        variance, log_var = dl.reverse_variance(sched, t, like, var)
        assert variance.shape == (sched.T, 1)  # broadcastable to (B, D)
        torch.testing.assert_close(variance, expected, rtol=1e-9, atol=0, msg=var)
        # the log-variance is carried beside the variance and must be its log, finite at t = 1 too
        assert torch.isfinite(log_var).all()
        torch.testing.assert_close(log_var, expected.log(), rtol=1e-9, atol=1e-12, msg=var)


def test_learned_variance_interpolates_between_the_two_ends(sched):
    # [ND21, Eq. 15]: log sigma^2 = v log beta_t + (1 - v) log beta_tilde_t; v = 0 and v = 1 are the ends
    t = torch.arange(1, sched.T + 1)
    like = torch.zeros(sched.T, 2, dtype=torch.float64)
    small, log_small = dl.reverse_variance(sched, t, like, "fixed_small")
    large, log_large = dl.reverse_variance(sched, t, like, "fixed_large")
    for v, expected in ((0.0, log_small), (1.0, log_large)):
        _, log_var = dl.reverse_variance(sched, t, like, "learned", var_interp=torch.full_like(like, v))
        torch.testing.assert_close(log_var, expected.expand_as(like), rtol=1e-12, atol=1e-14, msg=f"v={v}")
    # v = 1/2 is the geometric mean, a per-coordinate v gives per-coordinate variances
    v = torch.tensor([[0.5, 0.25]], dtype=torch.float64).expand_as(like)
    var, _ = dl.reverse_variance(sched, t, like, "learned", var_interp=v)
    torch.testing.assert_close(var[:, 0], (small * large).sqrt()[:, 0], rtol=1e-10, atol=0)
    torch.testing.assert_close(var[:, 1], (small ** 0.75 * large ** 0.25)[:, 0], rtol=1e-10, atol=0)


@pytest.mark.parametrize("prediction", dl.PREDICTIONS)
@pytest.mark.parametrize("var", ["fixed_small", "fixed_large", "learned"])
def test_p_mean_variance_from_each_parameterisation(prediction, var, randn):
    # the reverse mean from a network that predicts eps, x0 or mu is the same mu_theta [Ho20, Eq. 11]:
    # mu = (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t), written here from the paper
    sched = dl.make_schedule("linear", 100)
    t = torch.tensor([1, 2, 50, 99, 100])
    xt, eps = randn(5, 2), randn(5, 2)
    b = sched.beta[t].reshape(-1, 1)
    ab = torch.tensor(ref.alpha_bar(sched.beta[1:].tolist()), dtype=torch.float64)[t].reshape(-1, 1)
    mu = (xt - b / (1 - ab).sqrt() * eps) / (1 - b).sqrt()
    x0 = (xt - (1 - ab).sqrt() * eps) / ab.sqrt()
    output = {"eps": eps, "x0": x0, "mu": mu, "v": ab.sqrt() * eps - (1 - ab).sqrt() * x0}[prediction]
    v = torch.full_like(xt, 0.3) if var == "learned" else None
    step = dl.p_mean_variance(sched, xt, t, output, prediction, var, v)
    torch.testing.assert_close(step.mean, mu, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(step.eps, eps, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(step.x0, x0, rtol=1e-9, atol=1e-10)
    variance, log_var = dl.reverse_variance(sched, t, xt, var, v)
    assert torch.equal(step.var, variance) and torch.equal(step.log_var, log_var)


def test_model_step_calls_the_model_with_a_batch_of_t(randn):
    sched = dl.make_schedule("cosine", 10)
    seen = []

    def model(xt, t):
        seen.append(t)
        return torch.zeros_like(xt), torch.ones_like(xt)  # (eps, v)

    xt = randn(3, 2)
    step = dl.model_step(sched, model, xt, 4, var="learned")
    assert seen[0].dtype == torch.int64 and seen[0].tolist() == [4, 4, 4]
    # v = 1: the learned variance is beta_4; eps = 0: the mean is x_t / sqrt(alpha_4)
    torch.testing.assert_close(step.var, sched.beta[4].expand(3, 2), rtol=1e-12, atol=0)
    torch.testing.assert_close(step.mean, xt / math.sqrt(sched.alpha[4]), rtol=1e-12, atol=0)
    # with a fixed variance a (prediction, var_interp) tuple is accepted and var_interp ignored
    step = dl.model_step(sched, model, xt, 4, var="fixed_small")
    torch.testing.assert_close(step.var, sched.beta_tilde[4].reshape(1, 1).expand(3, 1), rtol=1e-12, atol=0)
