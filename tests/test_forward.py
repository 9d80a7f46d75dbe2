"""The forward process: the iterated chain of q_step against the closed form q_marginal / q_sample.

    q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)   [Ho20, Eq. 2]
    q(x_t | x_0)     = N(sqrt(abar_t) x_0, (1 - abar_t) I)      [Ho20, Eq. 4]
"""

import math

import pytest
import torch

import diffusion_lib as dl
import reference as ref


def first_t(sched, alpha_bar_at_most):
    """The first step t at which alpha_bar_t <= the given level."""
    return int((sched.alpha_bar <= alpha_bar_at_most).nonzero()[0])


def test_chain_equals_closed_form_with_the_combined_noise(sched, randn):
    # Exact, not statistical. With x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) eps_t, the noise part
    # n_t = x_t - sqrt(abar_t) x_0 obeys n_t = sqrt(alpha_t) n_{t-1} + sqrt(beta_t) eps_t, a Gaussian of
    # variance v_t = alpha_t v_{t-1} + beta_t, v_0 = 0. That recursion gives v_t = 1 - abar_t, so
    # eps_bar = n_t / sqrt(v_t) is standard normal and q_sample(x_0, t, eps_bar) must equal the chain.
    betas = sched.beta[1:].tolist()
    ab = ref.alpha_bar(betas)
    x0 = randn(8, 2)
    x, noise, v = x0, torch.zeros_like(x0), 0.0
    for t in range(1, sched.T + 1):
        eps = randn(8, 2)
        x = dl.q_step(sched, x, t, eps)
        noise = math.sqrt(1 - betas[t - 1]) * noise + math.sqrt(betas[t - 1]) * eps
        v = (1 - betas[t - 1]) * v + betas[t - 1]
        assert v == pytest.approx(1 - ab[t], rel=1e-9, abs=1e-15)
        # the chain's own value, rebuilt from the noises without the library
        torch.testing.assert_close(x, math.sqrt(ab[t]) * x0 + noise, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(x, dl.q_sample(sched, x0, t, noise / math.sqrt(v)), rtol=1e-9, atol=1e-12)


def test_chain_moments_match_the_marginal(sched, randn):
    # n chains from one fixed x_0. At every t the sample mean and variance of each coordinate must
    # lie within Z standard errors of q_marginal's mean and variance (a Gaussian's sample mean has
    # SE sqrt(var / n), its sample variance SE var sqrt(2 / (n - 1))). There are 4 T checks (4 000 at
    # T = 1000), so 5 SE (5.7e-7 per check) would fail 0.2% of seeds; at Z = 5.7 a check fails with
    # 1.2e-8 (mean, exact normal) or 1.6e-8 (variance, exact chi-square with n - 1 dof), and the
    # union bound over the 4 T checks gives a false alarm <= 5.6e-5 at T = 1000 (less for smaller T), at any seed.
    n, Z = 10_000, 5.7
    point = torch.tensor([[1.5, -0.5]], dtype=torch.float64)
    x0 = point.repeat(n, 1)
    worst_mean = worst_var = 0.0
    t_mid = first_t(sched, 0.5)
    for t, xt in dl.q_chain(sched, x0, generator=randn.generator):
        mean, var = dl.q_marginal(sched, point, t)
        se_mean = (var / n).sqrt()
        se_var = var * math.sqrt(2 / (n - 1))
        worst_mean = max(worst_mean, float(((xt.mean(dim=0) - mean) / se_mean).abs().max()))
        worst_var = max(worst_var, float(((xt.var(dim=0) - var) / se_var).abs().max()))
        if t == t_mid:
            # the same tolerance has power: a closed form with alpha_t in place of abar_t is far outside it,
            # and so is the standard deviation sqrt(1 - abar_t) used as the variance
            wrong_mean = sched.alpha[t].sqrt() * point
            assert ((xt.mean(dim=0) - wrong_mean) / se_mean).abs().max() > Z
            assert ((xt.var(dim=0) - var.sqrt()) / se_var).abs().min() > Z
    assert worst_mean < Z
    assert worst_var < Z


def test_q_sample_is_a_draw_from_q_marginal(sched, randn):
    # q_sample = mean + sqrt(var) eps for the (mean, var) of q_marginal, at every t, for images too
    x0, eps = randn(sched.T, 1, 2, 2), randn(sched.T, 1, 2, 2)
    t = torch.arange(1, sched.T + 1)
    ab = torch.tensor(ref.alpha_bar(sched.beta[1:].tolist())[1:], dtype=torch.float64).reshape(-1, 1, 1, 1)
    mean, var = dl.q_marginal(sched, x0, t)
    torch.testing.assert_close(mean, ab.sqrt() * x0, rtol=1e-10, atol=1e-15)
    torch.testing.assert_close(var, (1 - ab).expand_as(x0), rtol=1e-10, atol=1e-15)
    torch.testing.assert_close(dl.q_sample(sched, x0, t, eps), ab.sqrt() * x0 + (1 - ab).sqrt() * eps,
                               rtol=1e-10, atol=1e-12)
    # an int t means the same step for the whole batch
    t_mid = sched.T // 2
    torch.testing.assert_close(dl.q_sample(sched, x0, t_mid, eps),
                               dl.q_sample(sched, x0, torch.full((sched.T,), t_mid), eps), rtol=0, atol=0)


def test_q_chain_yields_every_step_and_reproduces_from_its_seed(randn):
    sched = dl.make_schedule("cosine", 10)
    x0 = randn(4, 2)
    run1 = list(dl.q_chain(sched, x0, generator=torch.Generator().manual_seed(7)))
    run2 = list(dl.q_chain(sched, x0, generator=torch.Generator().manual_seed(7)))
    assert [t for t, _ in run1] == list(range(1, 11))
    for (_, a), (_, b) in zip(run1, run2):
        assert torch.equal(a, b)
    # a different seed gives a different trajectory
    run3 = list(dl.q_chain(sched, x0, generator=torch.Generator().manual_seed(8)))
    assert not torch.equal(run1[-1][1], run3[-1][1])


def chain_and_closed_form(sched, x0, t, seed):
    """x_t from the chain (run to step t) and from the closed form, both from the same x_0 points."""
    gen = torch.Generator().manual_seed(seed)
    for s, xs in dl.q_chain(sched, x0, generator=gen):
        if s == t:
            chain = xs
            break
    eps = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    return chain, dl.q_sample(sched, x0, t, eps), eps


def test_chain_and_closed_form_pass_a_two_sample_test(sched, scaled_roll):
    # The energy-distance permutation test must not reject "same distribution" at the 1e-4 level (9 999
    # relabellings, so p can reach 1e-4), at the step where half the signal is gone (the roll still
    # visible) and where 90% is. A permutation p-value is valid for any law, P(p <= a) <= a, so one test
    # fails by chance at most 1e-4 of the time, at any seed. Two tests (one per step) would fail 2e-4 of
    # the time, so both steps go into one test: row i is (x_t at the first step, x_t at the second), each
    # drawn from x_0 = roll point i, by the chain on one side and by the closed form on the other; if the
    # marginals agree, the two sides' rows have the same law. Sharing x_0 makes the sides more alike than
    # independent samples would be, so the test is if anything conservative here, and
    # `test_two_sample_test_rejects_a_wrong_closed_form` shows that it has power.
    x0 = scaled_roll[:300]
    chains, closeds = [], []
    for level in (0.5, 0.1):
        t = first_t(sched, level)
        chain, closed, _ = chain_and_closed_form(sched, x0, t, seed=sched.T + t)
        chains.append(chain)
        closeds.append(closed)
    result = dl.two_sample_test(torch.cat(chains, dim=1), torch.cat(closeds, dim=1), num_permutations=9_999, seed=1)
    assert result.p_value > 1e-4, result


@pytest.mark.parametrize("name", dl.SCHEDULES)
def test_two_sample_test_rejects_a_wrong_closed_form(name, scaled_roll):
    # x_t = sqrt(alpha_t) x_0 + sqrt(1 - alpha_t) eps (alpha_t where abar_t belongs) at the step where
    # abar_t <= 0.1: the chain is mostly noise while the wrong form is still the sharp roll (alpha_t
    # ~ 0.99 at T = 1000). The test must reject: p <= 0.01, i.e. at most one of 200 relabellings as
    # extreme. Only at T = 1000: with fewer steps alpha_t is further from 1, the wrong law is closer
    # to the right one (alpha_t ~ 0.9 at T = 100, ~ 0.4 at T = 10) and 1 000 points do not always
    # tell them apart; the moment test above catches the same mistake at every T.
    # With all 2 000 points the observed statistic sat 16-23 null standard deviations above the null mean
    # over 6 seeds (linear, cosine): two relabellings that extreme do not happen (with 1 000 points it was
    # 5-11 sd, and at 5 sd about one seed in ten would see two of 200 relabellings exceed it).
    sched = dl.make_schedule(name, 1000)
    x0 = scaled_roll
    t = first_t(sched, 0.1)
    chain, _, eps = chain_and_closed_form(sched, x0, t, seed=sched.T + t)
    wrong = sched.alpha[t].sqrt() * x0 + (1 - sched.alpha[t]).sqrt() * eps
    result = dl.two_sample_test(chain, wrong, num_permutations=200, seed=1)
    assert result.p_value <= 0.01, (t, result)
