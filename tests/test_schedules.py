"""Noise schedules: the precomputed arrays, published reference values, the prior term L_T, warnings."""

import math
import warnings

import numpy as np
import pytest
import torch

import diffusion_lib as dl
import reference as ref
from reference import SIZES


def test_arrays_have_length_T_plus_1_and_a_padding_slot(sched):
    T = sched.T
    for name in ("beta", "alpha", "alpha_bar", "beta_tilde"):
        arr = getattr(sched, name)
        assert arr.dtype == torch.float64, name
        assert arr.shape == (T + 1,), name
    # slot 0 is padding: beta_0 = 0 and alpha_bar_0 = 1, so alpha_bar[t - 1] needs no case at t = 1
    assert sched.beta[0] == 0.0
    assert sched.alpha[0] == 1.0
    assert sched.alpha_bar[0] == 1.0
    # every real step adds some noise and keeps some signal
    assert ((sched.beta[1:] > 0) & (sched.beta[1:] < 1)).all()


def test_alpha_bar_is_the_cumprod_of_one_minus_beta(sched):
    betas = sched.beta[1:].tolist()
    # the reference is a running product in python floats: errors grow like T * 1e-16 at most
    expected = torch.tensor(ref.alpha_bar(betas), dtype=torch.float64)
    torch.testing.assert_close(sched.alpha_bar, expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(sched.alpha, 1 - sched.beta, rtol=0, atol=0)


def test_beta_tilde_is_the_posterior_variance_of_ho20_eq7(sched):
    betas = sched.beta[1:].tolist()
    expected = torch.tensor(ref.beta_tilde(betas)[1:], dtype=torch.float64)
    torch.testing.assert_close(sched.beta_tilde[1:], expected, rtol=1e-10, atol=0)
    # the posterior q(x_0 | x_1, x_0) is a point: zero variance at t = 1
    assert sched.beta_tilde[1] == 0.0
    # beta_tilde_t <= beta_t: the two ends of the reverse variance [Ho20, Sec. 3.2]
    assert (sched.beta_tilde[1:] <= sched.beta[1:]).all()


def test_named_schedules_add_more_noise_at_every_step(sched):
    # all four are non-decreasing in t by construction (linspace, sigmoid, and the cosine's ratios)
    assert (sched.beta[2:] >= sched.beta[1:-1]).all()
    assert (sched.alpha_bar[1:] < sched.alpha_bar[:-1]).all()


def test_linear_1000_against_published_numbers():
    sched = dl.make_schedule("linear", 1000)
    # [Ho20, Sec. 4 and App. B]: "beta_1 = 1e-4 to beta_T = 0.02", linear, T = 1000
    assert sched.beta[1].item() == pytest.approx(1e-4, rel=1e-12)
    assert sched.beta[1000].item() == pytest.approx(0.02, rel=1e-12)
    # improved-diffusion: GaussianDiffusion(betas=get_named_beta_schedule("linear", 1000)).posterior_variance[487]
    # = 0.0097916 (5 significant digits). Its index 487 is 0-based ("0 means one step"): our t = 488.
    assert f"{sched.beta_tilde[488].item():.4e}" == "9.7916e-03"
    # huggingface/diffusers tests/schedulers/test_scheduler_ddpm.py::test_variance, same linear schedule,
    # variance_type="fixed_small", 0-based: _get_variance(0) = 0.0, (487) = 0.00979, (999) = 0.02, each
    # to an absolute 1e-5
    assert abs(sched.beta_tilde[1].item() - 0.0) < 1e-5
    assert abs(sched.beta_tilde[488].item() - 0.00979) < 1e-5
    assert abs(sched.beta_tilde[1000].item() - 0.02) < 1e-5


@pytest.mark.parametrize("name", ["linear", "quadratic"])
def test_endpoints_scale_with_1000_over_T(name):
    # [ND21, Sec. 3.2] (improved-diffusion get_named_beta_schedule): beta_1 = 1e-4 * 1000 / T,
    # beta_T = 0.02 * 1000 / T. At T = 100 that is 1e-3 and 0.2; the linear schedule then matches
    # improved-diffusion's np.linspace(scale * 0.0001, scale * 0.02, T) exactly.
    sched = dl.make_schedule(name, 100)
    assert sched.beta[1].item() == pytest.approx(1e-3, rel=1e-12)
    assert sched.beta[100].item() == pytest.approx(0.2, rel=1e-12)
    if name == "linear":
        expected = torch.from_numpy(np.linspace(10 * 0.0001, 10 * 0.02, 100))
        torch.testing.assert_close(sched.beta[1:], expected, rtol=1e-12, atol=0)
    else:
        # linspace(sqrt(beta_1), sqrt(beta_T), T) ** 2, as in Ho et al.'s "quad" schedule
        expected = torch.from_numpy(np.linspace(math.sqrt(1e-3), math.sqrt(0.2), 100) ** 2)
        torch.testing.assert_close(sched.beta[1:], expected, rtol=1e-12, atol=0)


def test_endpoints_are_capped_below_one_for_small_T():
    # at T = 10 the scaled beta_T would be 0.02 * 100 = 2 (not a variance in (0, 1)): it is capped at 0.999
    sched = dl.make_schedule("linear", 10)
    assert sched.beta[1].item() == pytest.approx(1e-2, rel=1e-12)
    assert sched.beta[10].item() == pytest.approx(0.999, rel=1e-12)


def test_sigmoid_formula():
    # sigmoid(linspace(-6, 6, T)) * (beta_end - beta_start) + beta_start, with the T = 1000 endpoints
    sched = dl.make_schedule("sigmoid", 1000)
    grid = np.linspace(-6, 6, 1000)
    expected = torch.from_numpy(1 / (1 + np.exp(-grid)) * (0.02 - 1e-4) + 1e-4)
    torch.testing.assert_close(sched.beta[1:], expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("T", SIZES)
def test_cosine_matches_improved_diffusion_and_clips_only_the_last_beta(T):
    sched = dl.make_schedule("cosine", T)
    expected = torch.tensor(ref.improved_diffusion_cosine_betas(T), dtype=torch.float64)
    # beta_t = 1 - (a ratio close to 1) cancels digits: both sides agree to ~1e-16 absolute, which is
    # ~1e-12 relative for the smallest beta (4e-5) at T = 1000
    torch.testing.assert_close(sched.beta[1:], expected, rtol=1e-12, atol=1e-15)
    # f(T) = cos^2(pi / 2) = 0 would make beta_T = 1; the clip to 0.999 binds there and nowhere else
    assert sched.beta[T].item() == 0.999
    assert (sched.beta[1:T] < 0.999).all()


@pytest.mark.parametrize("T", SIZES)
def test_cosine_alpha_bar_is_f_t_over_f_0(T):
    sched = dl.make_schedule("cosine", T)
    # before the clip, alpha_bar(t) = f(t) / f(0) [ND21, Eq. 17]; only the last beta was clipped,
    # so this holds for t = 0..T-1
    expected = torch.tensor([ref.cosine_f(t, T) / ref.cosine_f(0, T) for t in range(T)], dtype=torch.float64)
    torch.testing.assert_close(sched.alpha_bar[:T], expected, rtol=1e-11, atol=0)
    # and the clipped last step keeps 1 - 0.999 of the previous alpha_bar (f(T) / f(0) would be ~0)
    assert sched.alpha_bar[T].item() == pytest.approx(sched.alpha_bar[T - 1].item() * (1 - 0.999), rel=1e-12)


def test_from_betas_builds_a_custom_schedule():
    betas = [0.1, 0.2, 0.5, 0.999]  # leaves sqrt(0.00036) = 0.019 of the signal: no warning
    # (a float32 tensor would be upcast faithfully, i.e. with float32 rounding of 0.1: pass float64)
    for given in (betas, np.array(betas), torch.tensor(betas, dtype=torch.float64)):
        sched = dl.NoiseSchedule.from_betas(given)
        assert sched.T == 4
        assert sched.name == "custom"
        torch.testing.assert_close(sched.beta, torch.tensor([0.0] + betas, dtype=torch.float64), rtol=0, atol=0)
        # worked by hand: alpha_bar = 0.9, 0.9 * 0.8, * 0.5, * 0.001
        torch.testing.assert_close(sched.alpha_bar, torch.tensor([1.0, 0.9, 0.72, 0.36, 0.00036], dtype=torch.float64),
                                   rtol=1e-12, atol=0)
        # beta_tilde_2 = (1 - 0.9) / (1 - 0.72) * 0.2
        assert sched.beta_tilde[2].item() == pytest.approx(0.1 / 0.28 * 0.2, rel=1e-14)
    # the schedule keeps its own copy: changing the caller's tensor afterwards changes nothing
    given = torch.tensor(betas, dtype=torch.float64)
    sched = dl.NoiseSchedule.from_betas(given)
    given[0] = 0.7
    assert sched.beta[1].item() == 0.1


def test_diagnostics_report_the_signal_left():
    with pytest.warns(dl.ScheduleWarning):  # half the signal is left: this schedule is too short
        sched = dl.NoiseSchedule.from_betas([0.5, 0.5])
    assert sched.alpha_bar_T == pytest.approx(0.25, rel=1e-15)
    assert sched.signal_left == pytest.approx(0.5, rel=1e-15)
    # snr_t = alpha_bar_t / (1 - alpha_bar_t): 0.5 / 0.5 = 1, 0.25 / 0.75 = 1/3
    torch.testing.assert_close(sched.snr[1:], torch.tensor([1.0, 1 / 3], dtype=torch.float64), rtol=1e-14, atol=0)


def test_warns_when_the_schedule_leaves_signal():
    # constant beta = 0.001 for 100 steps keeps alpha_bar_T = 0.999^100 = 0.905: x_T is mostly x_0
    message = r"leaves signal sqrt\(alpha_bar_T\) = 0\.95.*Use larger betas or a larger T"
    with pytest.warns(dl.ScheduleWarning, match=message):
        sched = dl.NoiseSchedule.from_betas(torch.full((100,), 0.001, dtype=torch.float64))
    assert sched.signal_left == pytest.approx(math.sqrt(0.999 ** 100), rel=1e-12)


@pytest.mark.parametrize("name", dl.SCHEDULES)
@pytest.mark.parametrize("T", SIZES)
def test_named_schedules_do_not_warn(name, T):
    with warnings.catch_warnings():
        warnings.simplefilter("error", dl.ScheduleWarning)
        sched = dl.make_schedule(name, T)
    # and the reason: less than 10% of the signal is left at t = T
    assert sched.signal_left < 0.1


def test_prior_kl_by_hand(sched, randn):
    # L_T = KL(N(sqrt(abar_T) x_0, (1 - abar_T) I) || N(0, I)) summed over dimensions, per example;
    # per coordinate 1/2 (-log(1 - abar_T) + (1 - abar_T) + abar_T x_0^2 - 1). abar_T is taken from the
    # reference product, not from the library.
    x0 = randn(5, 3, 2, 2)  # images (B, C, H, W): the sum runs over C, H, W
    ab_T = ref.alpha_bar(sched.beta[1:].tolist())[-1]
    by_hand = 0.5 * (-math.log(1 - ab_T) + (1 - ab_T) + ab_T * x0 ** 2 - 1)
    by_hand = by_hand.reshape(5, -1).sum(dim=1)
    # when abar_T ~ 1e-8 (sigmoid, T = 10) L_T ~ 1e-8 and the by-hand (1 - abar_T) - 1 loses digits
    # (the library uses log1p): allow 1e-16 absolute per coordinate, summed over 12 coordinates
    torch.testing.assert_close(dl.prior_kl(sched, x0), by_hand, rtol=1e-9, atol=1e-14)
    torch.testing.assert_close(sched.prior_kl(x0), by_hand, rtol=1e-9, atol=1e-14)
    # and against torch.distributions' own Gaussian KL
    q = torch.distributions.Normal(math.sqrt(ab_T) * x0, math.sqrt(1 - ab_T))
    p = torch.distributions.Normal(torch.zeros_like(x0), torch.ones_like(x0))
    expected = torch.distributions.kl_divergence(q, p).reshape(5, -1).sum(dim=1)
    torch.testing.assert_close(dl.prior_kl(sched, x0), expected, rtol=1e-9, atol=1e-14)


def test_prior_kl_is_large_when_signal_is_left():
    # the same diagnostic that triggers the warning: with alpha_bar_T = 0.905, x_0 = (3, 3) is far from N(0, I)
    with pytest.warns(dl.ScheduleWarning):
        sched = dl.NoiseSchedule.from_betas([0.001] * 100)
    ab_T = 0.999 ** 100
    x0 = torch.full((1, 2), 3.0, dtype=torch.float64)
    expected = 2 * 0.5 * (-math.log(1 - ab_T) + (1 - ab_T) + ab_T * 9 - 1)
    assert sched.prior_kl(x0).item() == pytest.approx(expected, rel=1e-10)
    assert sched.prior_kl(x0).item() > 5.0


@pytest.mark.parametrize("T", [2, 10, 1000])
def test_cosine_log_snr_hits_both_ends_and_is_a_cut_cosine(T):
    log_snr_max, log_snr_min = 8.3, -10.0
    sched = dl.NoiseSchedule.from_betas(dl.cosine_log_snr_betas(T, log_snr_max, log_snr_min))
    log_snr = sched.snr[1:].log()
    assert log_snr[0].item() == pytest.approx(log_snr_max, abs=1e-9)
    assert log_snr[-1].item() == pytest.approx(log_snr_min, abs=1e-9)
    assert (log_snr.diff() < 0).all()
    # independently: sigmoid(-2 log tan theta) = cos^2 theta, theta running evenly from a to b
    a, b = math.atan(math.exp(-log_snr_max / 2)), math.atan(math.exp(-log_snr_min / 2))
    theta = a + torch.arange(T, dtype=torch.float64) / (T - 1) * (b - a)
    assert torch.allclose(sched.alpha_bar[1:], torch.cos(theta) ** 2, rtol=1e-12, atol=0)


def test_cosine_log_snr_rejects_reversed_ends_and_a_single_step():
    with pytest.raises(ValueError, match="exceed"):
        dl.cosine_log_snr_betas(100, -1.0, 2.0)
    with pytest.raises(ValueError, match="T >= 2"):
        dl.cosine_log_snr_betas(1, 5.0, -5.0)


def test_log_snr_range_for_levels_makes_rounding_x1_almost_always_right():
    log_snr_max, log_snr_min = dl.log_snr_range_for_levels(17)
    assert log_snr_max == pytest.approx(2 * math.log(64))  # noise 1/64 = (gap 1/8) / 2 / 4 at t = 1
    assert log_snr_min == -10.0
    # Monte Carlo: x_1 / sqrt(alpha_bar_1) = x_0 + noise / sqrt(SNR_1); rounding to the nearest level misses
    # with probability 2 Phi(-4) = 6.3e-5 per value; 2e6 draws: mean 127 misses, 5 standard errors = +-56
    levels = torch.linspace(-1, 1, 17, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    x0 = levels[torch.randint(1, 16, (2_000_000,), generator=gen)]  # interior levels: two neighbours each
    x1 = x0 + torch.randn(x0.shape, generator=gen, dtype=torch.float64) * math.exp(-log_snr_max / 2)
    misses = (torch.round((x1 + 1) * 8) / 8 - 1 != x0).sum().item()
    expected = 2_000_000 * math.erfc(4 / math.sqrt(2))
    assert abs(misses - expected) < 5 * math.sqrt(expected)
