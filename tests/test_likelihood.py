"""Gaussian KL and log-likelihoods, the discretized decoder, the per-step terms and the simple-loss weight."""

import math

import mpmath  # arbitrary precision reference for the far tails (ships with torch, via sympy)
import pytest
import torch
from torch.distributions import Normal

import diffusion_lib as dl
import reference as ref

# (mean1, var1, mean2, var2) for the KL checks: equal variances, wider and narrower second laws
KL_CASES = [(1.0, 1.0, 0.0, 1.0), (0.3, 0.5, -0.2, 2.0), (0.0, 4.0, 0.0, 1.0), (-1.0, 0.1, 0.5, 0.3),
            (2.0, 0.01, 1.9, 0.02)]


def test_normal_kl_against_a_monte_carlo_estimate(randn):
    # KL(N1 || N2) = E_{x ~ N1}[log N1(x) - log N2(x)]: the sample mean of the log-ratio must be within
    # 5 standard errors (sample std / sqrt(n)) of the closed form, elementwise for every case
    m1, v1, m2, v2 = (torch.tensor(col, dtype=torch.float64) for col in zip(*KL_CASES))
    n = 200_000
    x = m1 + v1.sqrt() * randn(n, len(KL_CASES))
    log_ratio = Normal(m1, v1.sqrt()).log_prob(x) - Normal(m2, v2.sqrt()).log_prob(x)
    mc, se = log_ratio.mean(dim=0), log_ratio.std(dim=0) / math.sqrt(n)
    kl = dl.normal_kl(m1, v1.log(), m2, v2.log())
    assert ((mc - kl).abs() < 5 * se).all(), (mc, kl, se)
    # and exactly against torch.distributions' closed form
    expected = torch.distributions.kl_divergence(Normal(m1, v1.sqrt()), Normal(m2, v2.sqrt()))
    torch.testing.assert_close(kl, expected, rtol=1e-12, atol=1e-15)


def test_normal_kl_known_values():
    # KL(N(1, 1) || N(0, 1)) = 1/2; a law against itself is 0; floats broadcast against tensors
    assert float(dl.normal_kl(1.0, 0.0, 0.0, 0.0)) == pytest.approx(0.5, rel=1e-15)
    m = torch.linspace(-3, 3, 7, dtype=torch.float64)
    assert torch.equal(dl.normal_kl(m, 0.3, m, 0.3), torch.zeros(7, dtype=torch.float64))
    # 1/2 (log 4 + 1/4 - 1) for variances 1/4 vs 1 at equal means
    assert float(dl.normal_kl(0.0, math.log(0.25), 0.0, 0.0)) == pytest.approx(
        0.5 * (math.log(4) + 0.25 - 1), rel=1e-14)


def test_gaussian_log_likelihood_against_torch_distributions(randn):
    x, mean = randn(50, 3), randn(50, 3)
    log_var = randn(50, 3)  # variances e^-3 .. e^3
    expected = Normal(mean, (0.5 * log_var).exp()).log_prob(x)
    torch.testing.assert_close(dl.gaussian_log_likelihood(x, mean, log_var), expected, rtol=1e-12, atol=1e-12)
    # a scalar log-variance broadcasts
    expected = Normal(mean, math.exp(0.5 * -1.2)).log_prob(x)
    log_var = torch.tensor(-1.2, dtype=torch.float64)
    torch.testing.assert_close(dl.gaussian_log_likelihood(x, mean, log_var), expected, rtol=1e-12, atol=1e-12)


def test_a_python_float_log_variance_is_used_in_float64(randn):
    # likelihoods are float64 throughout: a log-variance given as a Python float must give the same
    # numbers as the same value as a float64 tensor (not a float32 rounding of it, ~1e-7 relative)
    sched = dl.make_schedule("cosine", 10)
    x0, xt = randn(4, 2).clamp(-1, 1), randn(4, 2)
    mean = randn(4, 2).clamp(-1, 1)
    log_var = math.log(0.0123)
    as_tensor = torch.tensor(log_var, dtype=torch.float64)
    for fn in (lambda lv: dl.gaussian_log_likelihood(x0, mean, lv),
               lambda lv: dl.discretized_gaussian_log_likelihood(x0, mean, lv),
               lambda lv: dl.vlb_term(sched, x0, xt, torch.tensor([1, 2, 5, 10]), mean, lv)):
        torch.testing.assert_close(fn(log_var), fn(as_tensor), rtol=1e-14, atol=0)


def grid(levels):
    """The values data quantised to `levels` values in [-1, 1] can take: -1 + 2 k / (levels - 1)."""
    return torch.linspace(-1, 1, levels, dtype=torch.float64)


# decoder means and standard deviations: inside and outside [-1, 1], very narrow to very wide
DECODER_MEANS = [-1.3, -1.0, -0.2, 0.0, 0.37, 1.0, 1.5]
DECODER_STDS = [1e-3, 0.02, 0.3, 3.0]


@pytest.mark.parametrize("levels", [2, 4, 256])
def test_discretized_probabilities_sum_to_one(levels):
    # the bins tile the real line (the end bins reach -inf and +inf), so the probabilities of all
    # `levels` values sum to 1 for any decoder Gaussian
    x = grid(levels).reshape(-1, 1)
    mean = torch.tensor([[m for m in DECODER_MEANS for _ in DECODER_STDS]], dtype=torch.float64)
    log_var = torch.tensor([[2 * math.log(s) for _ in DECODER_MEANS for s in DECODER_STDS]], dtype=torch.float64)
    log_p = dl.discretized_gaussian_log_likelihood(x.expand(-1, mean.shape[1]), mean.expand(levels, -1),
                                                   log_var.expand(levels, -1), levels=levels)
    assert torch.isfinite(log_p).all() and (log_p <= 0).all()
    torch.testing.assert_close(log_p.exp().sum(dim=0), torch.ones(mean.shape[1], dtype=torch.float64),
                               rtol=0, atol=1e-12)


def test_discretized_against_a_direct_cdf_difference():
    # P(x) = Phi((x + d - mean) / std) - Phi((x - d - mean) / std), d = 1 / 255, with Phi = 0 below the
    # first bin and 1 above the last [Ho20, Eq. 13]. The direct difference is accurate to ~1e-16
    # absolute, so compare probabilities with that absolute tolerance (plus a relative one).
    levels, d = 256, 1 / 255
    x = grid(levels).reshape(-1, 1)
    for mean in DECODER_MEANS:
        for std in DECODER_STDS:
            law = Normal(torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64))
            upper = torch.where(x[:, 0] >= 1, torch.ones(levels, dtype=torch.float64), law.cdf(x[:, 0] + d))
            lower = torch.where(x[:, 0] <= -1, torch.zeros(levels, dtype=torch.float64), law.cdf(x[:, 0] - d))
            direct = upper - lower
            log_p = dl.discretized_gaussian_log_likelihood(x[:, 0], torch.full((levels,), mean, dtype=torch.float64),
                                                           torch.tensor(2 * math.log(std), dtype=torch.float64), levels)
            torch.testing.assert_close(log_p.exp(), direct, rtol=1e-9, atol=1e-14, msg=f"mean={mean}, std={std}")


def test_discretized_far_tails_against_arbitrary_precision():
    # bins 10 to 400 standard deviations from the mean: Phi(b) - Phi(a) underflows in float64 (and
    # 1 - Phi(a) loses every digit), but its log is an ordinary number. Reference: mpmath at 50 digits,
    # in the upper tail as Phi(-a) - Phi(-b) (the same number; 1 - 1e-780 would need 780 digits).
    d = 1 / 255
    cases = [(0.6, 0.0, 0.01), (-0.6, 0.0, 0.01), (1.0, 0.0, 0.05), (-1.0, 0.0, 0.05), (1.0, -1.0, 0.1),
             (0.0, 0.9, 0.002), (0.2, 0.0, 0.0005)]
    for x, mean, std in cases:
        with mpmath.workdps(50):
            a = -mpmath.inf if x <= -1 else (mpmath.mpf(x) - d - mean) / std
            b = mpmath.inf if x >= 1 else (mpmath.mpf(x) + d - mean) / std
            prob = mpmath.ncdf(-a) - mpmath.ncdf(-b) if a > 0 else mpmath.ncdf(b) - mpmath.ncdf(a)
            expected = float(mpmath.log(prob))
        assert math.isfinite(expected) and expected < -40
        got = dl.discretized_gaussian_log_likelihood(torch.tensor([x], dtype=torch.float64),
                                                     torch.tensor([mean], dtype=torch.float64),
                                                     torch.tensor(2 * math.log(std), dtype=torch.float64))
        assert float(got) == pytest.approx(expected, rel=1e-8), (x, mean, std)


def test_vlb_term_is_the_decoder_at_t1_and_a_kl_after(randn):
    # one batch mixing t = 1 and t >= 2: each example gets its own kind of term
    sched = dl.make_schedule("cosine", 100)
    t = torch.tensor([1, 2, 1, 57, 100])
    x0, xt, model_mean = randn(5, 3), randn(5, 3), randn(5, 3)
    model_log_var = randn(5, 1)
    terms = dl.vlb_term(sched, x0, xt, t, model_mean, model_log_var)
    std = (0.5 * model_log_var).exp()
    # t = 1: L_0 = -log N(x_0; model_mean, sigma^2), summed over coordinates
    decoder = -Normal(model_mean, std).log_prob(x0).sum(dim=1)
    # t >= 2: KL(q(x_{t-1} | x_t, x_0) || N(model_mean, sigma^2)) with the posterior of q_posterior
    post_mean, post_var = dl.q_posterior(sched, x0, xt, t.clamp(min=2))
    kl = torch.distributions.kl_divergence(Normal(post_mean, post_var.sqrt()), Normal(model_mean, std)).sum(dim=1)
    expected = torch.where(t == 1, decoder, kl)
    torch.testing.assert_close(terms, expected, rtol=1e-10, atol=1e-12)


def test_vlb_term_discretized_decoder(randn):
    sched = dl.make_schedule("linear", 10)
    x0 = grid(256)[torch.tensor([0, 17, 128, 255, 254, 3])].reshape(3, 2)  # 8-bit values in [-1, 1]
    xt, mean = randn(3, 2), randn(3, 2).clamp(-1, 1)
    log_var = torch.tensor(math.log(0.01), dtype=torch.float64)
    terms = dl.vlb_term(sched, x0, xt, 1, mean, log_var, decoder="discretized")
    expected = -dl.discretized_gaussian_log_likelihood(x0, mean, log_var).sum(dim=1)
    torch.testing.assert_close(terms, expected, rtol=1e-12, atol=0)
    # a probability: -log P >= 0, unlike a density
    assert (terms >= 0).all()


@pytest.mark.parametrize("var", ["fixed_small", "fixed_large"])
def test_simple_loss_weight_turns_the_step_term_into_a_noise_mse(sched, var, randn):
    # [Ho20, Eq. 12]: with a fixed variance sigma_t^2, L_{t-1} = lambda_t ||eps - eps_theta||^2 + C_t,
    # and C_t does not depend on eps_theta. Two different eps_theta must leave the same C_t, at every t
    # (t = 1 too, where the term is the Gaussian decoder L_0). The constants are also known:
    #   t >= 2: D/2 (log(sigma_t^2 / beta_tilde_t) + beta_tilde_t / sigma_t^2 - 1)  (0 for fixed_small)
    #   t = 1:  D/2 log(2 pi sigma_1^2)
    T, D = sched.T, 2
    t = torch.arange(1, T + 1)
    x0, eps = randn(T, D), randn(T, D)
    xt = dl.q_sample(sched, x0, t, eps)
    _, log_var = dl.reverse_variance(sched, t, x0, var)
    weight = dl.simple_loss_weight(sched, t, var)
    assert weight.shape == (T,)
    constants = []
    for _ in range(2):
        eps_pred = randn(T, D)
        term = dl.vlb_term(sched, x0, xt, t, dl.mu_from_eps(sched, xt, t, eps_pred), log_var)
        constants.append(term - weight * ((eps - eps_pred) ** 2).sum(dim=1))
    # terms reach ~1e5 nats (large weights near t = 1 at T = 1000) and cancel: compare relative to them
    scale = 1 + term.abs()
    assert ((constants[0] - constants[1]).abs() / scale).max() < 1e-9

    betas = sched.beta[1:].tolist()
    bt = ref.beta_tilde(betas)
    known = []
    for s in range(1, T + 1):
        variance = ref.reverse_var(betas, s, var)
        if s == 1:
            known.append(D / 2 * math.log(2 * math.pi * variance))
        else:
            known.append(D / 2 * (math.log(variance / bt[s]) + bt[s] / variance - 1))
    known = torch.tensor(known, dtype=torch.float64)
    assert ((constants[0] - known).abs() / scale).max() < 1e-9


def test_simple_loss_weight_by_hand():
    # lambda_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - abar_t)) on a two-step schedule, worked by hand:
    # beta = (0.5, 0.5), abar = (0.5, 0.25), beta_tilde_2 = (1 - 0.5) / (1 - 0.25) * 0.5 = 1/3
    with pytest.warns(dl.ScheduleWarning):
        sched = dl.NoiseSchedule.from_betas([0.5, 0.5])
    # fixed_large, t = 2: 0.25 / (2 * 0.5 * 0.5 * 0.75) = 2/3
    assert float(dl.simple_loss_weight(sched, 2, "fixed_large")) == pytest.approx(2 / 3, rel=1e-14)
    # fixed_small, t = 2: 0.25 / (2 * (1/3) * 0.5 * 0.75) = 1
    assert float(dl.simple_loss_weight(sched, 2, "fixed_small")) == pytest.approx(1.0, rel=1e-14)
    # fixed_small, t = 1 uses beta_tilde_2 as the decoder variance: 0.25 / (2 * (1/3) * 0.5 * 0.5) = 1.5
    assert float(dl.simple_loss_weight(sched, 1, "fixed_small")) == pytest.approx(1.5, rel=1e-14)


def test_bits_per_dim():
    # one bit is ln 2 nats; per dimension divides by the number of dimensions
    assert dl.bits_per_dim(3 * 2 * math.log(2), 3) == pytest.approx(2.0, rel=1e-15)
    torch.testing.assert_close(dl.bits_per_dim(torch.tensor([math.log(2), 0.0], dtype=torch.float64), 1),
                               torch.tensor([1.0, 0.0], dtype=torch.float64))
