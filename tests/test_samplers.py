"""The sampler core: step selection, NFE, each sampler against an independent reference, orders of convergence.

References: [Ho20] Algorithm 2; [SME21] DDIM; [Lu22b] DPM-Solver++(2M); [Ka22] EDM's Heun sampler.
"""

import math

import numpy as np
import pytest
import torch

import diffusion_lib as dl
from reference import dpm_solver_pp_2m, edm_heun


def smooth_net(sched, prediction="eps"):
    """A fixed nonlinear network (no training) that predicts `prediction`: the exact eps of Gaussian data N(0, 0.3 I)
    plus a smooth bend, enough curvature that a wrong update shows, and stable over every sampler."""
    exact = dl.gaussian_data_denoiser(sched, 0.3)

    def eps_net(xt, t):
        one_minus = (1 - sched.alpha_bar[t]).reshape(-1, 1).to(xt.dtype)
        return exact(xt, t) + 0.2 * one_minus.sqrt() * torch.sin(2 * xt.flip(-1))

    def model(xt, t):
        eps = eps_net(xt, t)
        if prediction == "eps":
            return eps
        x0 = dl.x0_from_eps(sched, xt, t, eps)
        return {"x0": x0, "mu": dl.mu_from_x0(sched, xt, t, x0), "v": dl.v_from_eps_x0(sched, t, eps, x0)}[prediction]

    return model


def algorithm_2(sched, model, n, generator):
    """Algorithm 2 [Ho20] written out, fixed_small variance, eps prediction: the sampler core's default must match."""
    x = torch.randn(n, 2, generator=generator)
    for t in range(sched.T, 0, -1):
        eps = model(x, torch.full((n,), t))
        mean = (x - sched.beta[t] / (1 - sched.alpha_bar[t]).sqrt() * eps) / sched.alpha[t].sqrt()
        x = (mean + sched.beta_tilde[t].sqrt() * torch.randn(x.shape, generator=generator) if t > 1 else mean).float()
    return x


@pytest.mark.parametrize("spacing", dl.SPACINGS)
@pytest.mark.parametrize("K", [1, 2, 7, 20, 100])
def test_select_timesteps_gives_K_distinct_increasing_steps(spacing, K):
    for name in ("linear", "cosine"):
        sched = dl.make_schedule(name, 1000)
        for lambda_min in (None, dl.DPM_SOLVER_LAMBDA_MIN):
            kept = dl.select_timesteps(sched, K, spacing, lambda_min)
            t_max = 1000 if lambda_min is None else int((dl.half_log_snr(sched)[1:] >= lambda_min).sum())
            assert len(kept) == K and all(b > a for a, b in zip(kept, kept[1:])), kept
            assert 1 <= kept[0] and kept[-1] <= t_max
            if spacing in ("uniform", "trailing", "log_snr", "edm"):
                assert kept[-1] == t_max  # they start where sampling starts
            if spacing in ("uniform", "leading", "log_snr", "edm") and K > 1:
                assert kept[0] == 1  # and end at the least noisy step


def test_spacings_follow_their_rules():
    sched = dl.make_schedule("linear", 1000)
    assert dl.select_timesteps(sched, 10, "leading") == list(range(1, 1000, 100))
    assert dl.select_timesteps(sched, 10, "trailing") == list(range(100, 1001, 100))
    assert dl.select_timesteps(sched, 5, "uniform") == dl.space_timesteps(1000, 5)
    assert dl.select_timesteps(sched) == list(range(1, 1001))
    # log_snr: consecutive lambda gaps equal up to the rounding to integer steps
    lam = dl.half_log_snr(sched)
    gaps = lam[dl.select_timesteps(sched, 12, "log_snr")].diff().abs()
    assert float(gaps.max() / gaps.min()) < 1.25
    # edm: sigma^(1/7) evenly spaced [Ka22, Eq. 5], up to rounding
    sigma = (-lam).exp()
    root = sigma[dl.select_timesteps(sched, 12, "edm")] ** (1 / 7)
    assert float(root.diff().max() / root.diff().min()) < 1.25


def test_the_cut_off_starts_where_the_half_log_snr_is_above_it():
    cosine = dl.make_schedule("cosine", 1000)
    lam = dl.half_log_snr(cosine)
    t_max = dl.select_timesteps(cosine, None, "uniform", dl.DPM_SOLVER_LAMBDA_MIN)[-1]
    assert lam[t_max] >= -5.1 > lam[t_max + 1] and t_max < 1000
    # 0.5 log(ab / (1 - ab)) by hand at T
    ab_T = cosine.alpha_bar_T
    assert float(lam[1000]) == pytest.approx(0.5 * math.log(ab_T / (1 - ab_T)), rel=1e-12)
    # the linear schedule of [Ho20] ends above the cut-off: nothing is skipped
    assert dl.select_timesteps(dl.make_schedule("linear", 1000), None, "uniform", -5.1)[-1] == 1000


@pytest.mark.parametrize("sampler", dl.SAMPLERS)
def test_nfe_is_counted_and_the_loop_yields_every_visited_step(sampler):
    sched = dl.make_schedule("cosine", 200)
    calls = []
    base = smooth_net(sched)

    def model(xt, t):
        calls.append(int(t[0]))
        return base(xt, t)

    plan = dl.sampling_plan(sched, sampler, 9)
    states = list(dl.sample_loop(sched, model, 5, sampler=sampler, steps=9, generator=torch.Generator().manual_seed(0)))
    assert [t for t, _ in states] == plan.timesteps + [0]
    assert len(calls) == plan.nfe == (17 if sampler == "heun" else 9)
    assert set(calls) == set(plan.timesteps)  # the network only sees visited steps
    assert all(x.shape == (5, 2) and x.dtype == torch.float32 and torch.isfinite(x).all() for _, x in states)


def test_the_default_is_algorithm_2_draw_for_draw():
    sched = dl.make_schedule("cosine", 100)
    model = smooth_net(sched)
    ours = dl.sample(sched, model, 300, generator=torch.Generator().manual_seed(4))
    theirs = algorithm_2(sched, model, 300, torch.Generator().manual_seed(4))
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("prediction", dl.PREDICTIONS)
@pytest.mark.parametrize("steps", [None, 13])
def test_ddim_with_eta_1_is_the_ancestral_sampler(prediction, steps):
    # [SME21, Eq. 16]: eta = 1 gives sigma_t^2 = beta_tilde_t and the mean of [Ho20, Eq. 7], on any sequence
    sched = dl.make_schedule("cosine", 100)
    model = smooth_net(sched, prediction)
    kw = {"steps": steps, "spacing": "uniform", "lambda_min": None}
    a = dl.sample(sched, model, 200, prediction, sampler="ancestral", generator=torch.Generator().manual_seed(1), **kw)
    b = dl.sample(sched, model, 200, prediction, sampler="ddim", eta=1.0, generator=torch.Generator().manual_seed(1),
                  **kw)
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)


def test_respaced_ancestral_sampling_equals_the_wrapped_respaced_schedule():
    # the sampler core's respacing against Respaced.wrap on dl.respace's schedule [ND21, Sec. 4], learned variance too
    sched = dl.make_schedule("linear", 100)
    r = dl.respace(sched, dl.space_timesteps(100, 11))
    eps_net = smooth_net(sched)

    def learned(xt, t):
        return eps_net(xt, t), torch.tanh(xt[:, :1]) + 0.5  # v leaves [0, 1] at times

    for model, var in ((eps_net, "fixed_small"), (eps_net, "fixed_large"), (learned, "learned")):
        a = dl.sample(sched, model, 100, var=var, steps=11, lambda_min=None,
                      generator=torch.Generator().manual_seed(2))
        b = dl.sample(r.sched, r.wrap(model), 100, var=var, generator=torch.Generator().manual_seed(2))
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), var


def test_respaced_optimal_variance_matches_its_gaussian_closed_form():
    # for Gaussian data and its exact denoiser the optimal variance of the respaced steps is known in closed form
    # (`gaussian_optimal_variance` on the respaced schedule); the sampler derives it from the full schedule's
    s2, sched = 0.3, dl.make_schedule("cosine", 200)
    kept = dl.space_timesteps(200, 9)
    from diffusion_lib.sampling import _respaced_variances

    new = dl.respaced_schedule(sched, kept)
    derived = _respaced_variances(sched, new, kept, dl.gaussian_optimal_variance(sched, s2))
    assert torch.allclose(derived[1:], dl.gaussian_optimal_variance(new, s2)[1:], rtol=1e-9)


def test_euler_on_the_probability_flow_ode_is_deterministic_ddim():
    # [SME21, Eq. 14]: DDIM with eta = 0 is Euler's method in (x / sqrt(ab), sigma); two implementations
    sched = dl.make_schedule("cosine", 500)
    model = smooth_net(sched)
    for steps, spacing in ((None, "uniform"), (25, "edm"), (8, "uniform")):
        kw = {"steps": steps, "spacing": spacing, "generator": torch.Generator().manual_seed(3)}
        a = dl.sample(sched, model, 100, sampler="ddim", **kw)
        kw["generator"] = torch.Generator().manual_seed(3)
        b = dl.sample(sched, model, 100, sampler="euler", **kw)
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_dpm_solver_and_heun_match_the_papers_algorithms(prediction):
    sched = dl.make_schedule("cosine", 1000)
    eps_net, model = smooth_net(sched), smooth_net(sched, prediction)
    ab = sched.alpha_bar.numpy()

    def x0_model(x, t):  # float64 numpy data prediction from the eps network
        xt = torch.from_numpy(x)
        eps = eps_net(xt, torch.full((x.shape[0],), t)).numpy()
        return (x - np.sqrt(1 - ab[t]) * eps) / np.sqrt(ab[t])

    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(5))
    for sampler, reference in (("dpm_solver", dpm_solver_pp_2m), ("heun", edm_heun)):
        for steps in (5, 20):
            plan = dl.sampling_plan(sched, sampler, steps)
            ours = dl.sample(sched, model, 64, prediction, sampler=sampler, steps=steps, x_T=x_T)
            theirs = reference(ab, plan.timesteps, x_T.double().numpy(), x0_model)
            assert np.allclose(ours.double().numpy(), theirs, rtol=1e-3, atol=1e-3), (sampler, steps)


def test_orders_of_convergence_on_gaussian_data():
    # x_0 ~ N(0, s^2 I) with its exact denoiser: the ODE maps y = x / sqrt(ab) as y(sigma) = y_start
    # sqrt(s^2 + sigma^2) / sqrt(s^2 + sigma_start^2), so x_0 is known exactly. The error at x_0 halves when
    # the steps double for Euler/DDIM (first order) and falls about fourfold for Heun and DPM-Solver++(2M)
    s2, n = 0.25, 500
    sched = dl.make_schedule("cosine", 1000)
    model = dl.gaussian_data_denoiser(sched, s2)
    x_T = torch.randn(n, 2, generator=torch.Generator().manual_seed(0))
    for sampler, order in (("ddim", 1), ("euler", 1), ("heun", 2), ("dpm_solver", 2)):
        errors = []
        for K in (20, 40, 80):
            plan = dl.sampling_plan(sched, sampler, K, "log_snr")
            ab = float(sched.alpha_bar[plan.timesteps[0]])
            exact = x_T.double() / math.sqrt(ab) * math.sqrt(s2 / (s2 + (1 - ab) / ab))
            x = dl.sample(sched, model, n, x_T=x_T, sampler=sampler, steps=K, spacing="log_snr")
            errors.append(float((x.double() - exact).abs().max()))
        slope = math.log2(errors[0] / errors[2]) / 2  # the observed order from K = 20 to 80
        assert abs(slope - order) < 0.35, (sampler, errors, slope)


def test_ddim_inversion_is_a_round_trip():
    # x_0 -> x_{t_K} -> x_0 with deterministic DDIM; the exact denoiser of Gaussian data makes the ODE exact, so
    # what is left is the discretisation of both directions: first order, 1/K
    s2, sched = 0.25, dl.make_schedule("linear", 1000)
    model = dl.gaussian_data_denoiser(sched, s2)
    # both directions are linear maps (x_T = c x_0), so the checks are taken relative to x_0: the sample's own
    # spread (sd 2.5% at n = 800) and its largest |x_0| (1.7 to 2.6 over seeds) would otherwise decide them
    x0 = 0.5 * torch.randn(400, 2, generator=torch.Generator().manual_seed(6))
    gaps = []
    for K in (50, 200):
        x_T = dl.ddim_invert(sched, model, x0, steps=K)
        back = dl.sample(sched, model, 400, x_T=x_T, sampler="ddim", steps=K)
        gaps.append(float((back - x0).abs().max() / x0.abs().max()))
        # the inversion lands on noise: x_0 of variance s^2 maps to unit variance (0.944 at K = 50, 0.986 at 200)
        assert abs(float(x_T.std() / x0.std()) * s2 ** 0.5 - 1) < 0.1
    assert gaps[1] < 0.035 and gaps[0] / gaps[1] > 3, gaps  # 2.8% at K = 200 (10.9% at K = 50)


def test_bad_sampler_arguments_get_one_line_errors():
    sched = dl.make_schedule("linear", 50)
    model = smooth_net(sched)
    for kwargs, message in (({"sampler": "plms"}, "unknown sampler 'plms'; choose one of"),
                            ({"sampler": "ddim", "spacing": "karras"}, "unknown spacing 'karras'; choose one of"),
                            ({"sampler": "heun", "eta": 0.5}, "eta is a parameter of sampler=\"ddim\""),
                            ({"sampler": "ancestral", "eta": 0.5}, "eta is a parameter of sampler=\"ddim\""),
                            ({"steps": 51, "lambda_min": None}, r"steps must be an int in 1..50"),
                            ({"steps": 0}, r"steps must be an int in 1.."),
                            ({"sampler": "ddim", "lambda_min": "high"}, "lambda_min must be a number")):
        with pytest.raises(ValueError, match=message) as err:
            dl.sample(sched, model, 3, **kwargs)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match='var="optimal" needs variances'):
        dl.sample(sched, model, 3, var="optimal", steps=5)


def test_zero_terminal_snr_rescaling_follows_lin24():
    # [Lin24, Alg. 1]: sqrt(ab) shifted and scaled so that ab_1 is kept and ab_T = 0, linear in the old sqrt(ab)
    sched = dl.make_schedule("cosine", 1000)
    zero = dl.rescale_zero_terminal_snr(sched)
    old, new = sched.alpha_bar[1:].sqrt(), zero.alpha_bar[1:].sqrt()
    assert float(zero.alpha_bar[-1]) == 0.0 and zero.beta[-1] == 1.0 and zero.snr[-1] == 0
    assert new[0] == pytest.approx(float(old[0]), rel=1e-12)
    slope = (new[0] - new[-1]) / (old[0] - old[-1])
    assert torch.allclose(new, new[-1] + slope * (old - old[-1]), atol=1e-12)
    # the prior term vanishes: x_T is exactly N(0, I)
    assert float(zero.prior_kl(torch.randn(5, 2, dtype=torch.float64)).abs().max()) < 1e-12


def test_sampling_from_zero_terminal_snr():
    # Gaussian data N(0, s^2 I) on the rescaled schedule, with its exact v-network: the probability-flow ODE from
    # sigma = inf maps x_T to x_0 = s x_T exactly; DPM-Solver++ and DDIM start at T, Euler and Heun cannot
    s2 = 0.25
    zero = dl.rescale_zero_terminal_snr(dl.make_schedule("cosine", 1000))
    gauss = dl.gaussian_data_denoiser(zero, s2)

    def v_net(xt, t):
        ab = zero.alpha_bar[t].reshape(-1, 1).to(xt.dtype)
        x0 = ab.sqrt() * s2 / (ab * s2 + 1 - ab) * xt  # E[x_0 | x_t], finite at ab = 0
        eps = gauss(xt, t)
        return ab.sqrt() * eps - (1 - ab).sqrt() * x0

    x_T = torch.randn(300, 2, generator=torch.Generator().manual_seed(7))
    errors = []
    for K in (20, 80):
        x = dl.sample(zero, v_net, 300, "v", x_T=x_T, sampler="dpm_solver", steps=K, spacing="uniform", lambda_min=None)
        errors.append(float((x - s2 ** 0.5 * x_T).abs().max()))
    assert errors[1] < 0.02 and errors[1] < errors[0] / 4, errors  # second order from T
    for kwargs, message in (({"prediction": "eps", "sampler": "ddim"}, "divides by zero: train with prediction 'v'"),
                            ({"prediction": "v", "sampler": "heun", "spacing": "uniform"}, "infinite at zero terminal"),
                            ({"prediction": "v", "sampler": "dpm_solver"}, "needs a finite log-SNR")):
        with pytest.raises(ValueError, match=message):
            dl.sample(zero, v_net, 3, steps=10, lambda_min=None, **kwargs)
    with pytest.raises(ValueError, match="zero terminal SNR .* needs prediction 'v' or 'x0'"):
        dl.TrainConfig(betas=zero.beta[1:].tolist(), prediction="eps").validate()


@pytest.mark.parametrize("sampler", dl.SAMPLERS)
def test_samplers_create_nothing_off_the_models_device(sampler):
    # a network on the "meta" device (shapes only): a tensor the loop made on the CPU would meet the network's
    # meta tensors and raise, so every sampler runs end to end only if it follows the model's device
    net = dl.MLP(hidden=(8, 8)).to("meta")
    sched = dl.make_schedule("cosine", 50)
    for prediction in ("eps", "v"):
        x = dl.sample(sched, net, 6, prediction, sampler=sampler, steps=5, generator=torch.Generator().manual_seed(0))
        assert x.device.type == "meta" and x.shape == (6, 2)
    assert dl.sampling.model_device(lambda xt, t: xt) == torch.device("cpu")
