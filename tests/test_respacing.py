"""Respacing keeps alpha_bar at the kept steps; DDIM with eta = 1 is the ancestral fixed_small step."""

import pytest
import torch

import diffusion_lib as dl
from diffusion_lib.respacing import ddim_coefficients, ddim_loop, ddim_sample, respace, space_timesteps


@pytest.mark.parametrize("name", dl.SCHEDULES)
@pytest.mark.parametrize("num_steps", [1, 5, 50, 1000])
def test_respaced_alpha_bar_matches_the_kept_steps(name, num_steps):
    sched = dl.make_schedule(name, 1000)
    kept = space_timesteps(1000, num_steps)
    assert len(kept) == num_steps and kept[-1] == 1000 and (num_steps == 1 or kept[0] == 1)
    r = respace(sched, kept)
    assert r.sched.T == num_steps
    assert torch.equal(r.timestep_map, torch.tensor([0] + kept))
    # the new schedule rebuilds alpha_bar as a cumulative product of the recomputed betas: round-off only
    # (absolute ~1e-16 at the last steps, where beta' is close to 1 and 1 - beta' cancels)
    assert torch.allclose(r.sched.alpha_bar[1:], sched.alpha_bar[kept], rtol=1e-12, atol=1e-15)
    if num_steps == 1000:
        assert torch.allclose(r.sched.beta, sched.beta, rtol=1e-10, atol=1e-15)


def test_space_timesteps_keeps_exactly_num_steps_distinct_steps():
    for T in (7, 100):
        for num_steps in range(1, T + 1):
            kept = space_timesteps(T, num_steps)
            assert len(set(kept)) == num_steps and sorted(kept) == kept and kept[-1] == T
    assert space_timesteps(1000, 5) == [1, 251, 501, 750, 1000]


def test_wrapped_model_sees_the_original_timesteps():
    sched = dl.make_schedule("linear", 100)
    r = respace(sched, [3, 40, 100])
    seen = []

    def model(xt, t):
        seen.append(t.clone())
        return torch.zeros_like(xt)

    r.wrap(model)(torch.zeros(3, 2), torch.tensor([1, 2, 3]))
    assert seen[0].tolist() == [3, 40, 100]
    dl.sample(r.sched, r.wrap(model), 4)  # runs on the respaced schedule
    assert [int(t[0]) for t in seen[1:]] == [100, 40, 3]


@pytest.mark.parametrize("prediction", ["eps", "x0", "mu"])
def test_ddim_eta1_step_is_the_ancestral_fixed_small_step(prediction):
    # same mean and variance as p_mean_variance(fixed_small) for t >= 2 [SME21, Eq. 16; Ho20, Eq. 7];
    # at t = 1 both return the mean with no noise
    sched = dl.make_schedule("cosine", 200)
    coef = ddim_coefficients(sched, eta=1.0, prediction=prediction)
    gen = torch.Generator().manual_seed(0)
    xt, out = (torch.randn(5, 2, generator=gen, dtype=torch.float64) for _ in range(2))
    for t in (1, 2, 3, 77, 199, 200):
        step = dl.p_mean_variance(sched, out, xt, t, prediction, "fixed_small")
        assert torch.allclose(coef.a[t] * xt + coef.b[t] * out, step.mean, rtol=1e-9, atol=1e-10)
        if t >= 2:
            assert coef.sigma[t] ** 2 == pytest.approx(float(sched.beta_tilde[t]), rel=1e-10)
    assert coef.sigma[1] == 0.0


def test_ddim_eta1_reproduces_ancestral_sampling_draw_for_draw():
    sched = dl.make_schedule("linear", 50)
    model = dl.gaussian_data_denoiser(sched, 0.5)
    a = dl.sample(sched, model, 200, generator=torch.Generator().manual_seed(1))
    b = ddim_sample(sched, model, 200, eta=1.0, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(a, b, atol=1e-4)


def test_ddim_eta0_is_deterministic_and_exact_for_a_point_mass():
    # data x_0 = 0: the exact eps model is eps = x_t / sqrt(1 - ab_t), x0_pred = 0, and the x_t path scales
    # as sqrt(1 - ab_{t-1}) / sqrt(1 - ab_t): x_0 = 0 exactly, with no randomness after x_T
    sched = dl.make_schedule("cosine", 30)
    r = respace(sched, space_timesteps(30, 7))
    model = r.wrap(lambda xt, t: xt / (1 - sched.alpha_bar[t]).sqrt().reshape(-1, 1).float())
    states = list(ddim_loop(r.sched, model, 16, eta=0.0, generator=torch.Generator().manual_seed(2)))
    assert [t for t, _ in states] == list(range(7, -1, -1))
    assert states[-1][1].abs().max() < 1e-4
    x_T = states[0][1]
    for k, x in states[1:-1]:
        ratio = ((1 - r.sched.alpha_bar[k]) / (1 - r.sched.alpha_bar[7])).sqrt()
        assert torch.allclose(x, x_T * float(ratio), rtol=1e-4, atol=1e-5)


def test_ddim_on_a_gaussian_follows_the_exact_variance_recursion():
    # x_0 ~ N(0, s^2 I) with its exact denoiser: with v_t = ab_t s^2 + 1 - ab_t, one DDIM step is
    # x_{t-1} = A_t x_t + sigma_t z, A_t = (sqrt(ab_{t-1} ab_t) s^2 + sqrt((1 - ab_{t-1} - sigma_t^2)(1 - ab_t))) / v_t,
    # so Var(x_{t-1}) = A_t^2 Var(x_t) + sigma_t^2 from Var(x_T) = 1. By Cauchy-Schwarz this falls below
    # s^2 when the steps are few (deterministic DDIM shrinks the spread); it reaches s^2 as the steps grow.
    s2, n = 0.3, 4000
    sched = dl.make_schedule("linear", 1000)
    for num_steps, eta in ((10, 0.0), (20, 0.5), (10, 1.0), (1000, 0.0)):
        r = respace(sched, space_timesteps(1000, num_steps))
        ab = r.sched.alpha_bar
        var = 1.0
        for t in range(num_steps, 0, -1):
            sigma2 = eta ** 2 * (1 - ab[t - 1]) / (1 - ab[t]) * (1 - ab[t] / ab[t - 1])
            v = ab[t] * s2 + 1 - ab[t]
            A = ((ab[t - 1] * ab[t]).sqrt() * s2 + ((1 - ab[t - 1] - sigma2) * (1 - ab[t])).sqrt()) / v
            var = float(A ** 2 * var + sigma2)
        x = ddim_sample(r.sched, r.wrap(dl.gaussian_data_denoiser(sched, s2)), n, eta=eta,
                        generator=torch.Generator().manual_seed(num_steps))
        sample_var = x.double().var(dim=0)
        # standard error of a variance estimate from n normal draws: var sqrt(2 / (n - 1)); 5 of them leave
        # 5.7e-7 false alarms per check, 5e-6 for the 8 (4 settings x 2 coordinates), at any seed
        assert ((sample_var - var).abs() < 5 * var * (2 / (n - 1)) ** 0.5).all(), (num_steps, eta, sample_var, var)
        if num_steps == 1000:
            assert abs(var - s2) < 5e-3


def test_bad_input():
    sched = dl.make_schedule("linear", 100)
    with pytest.raises(ValueError, match="end at T"):
        respace(sched, [10, 50])
    with pytest.raises(ValueError, match="increasing"):
        respace(sched, [50, 10, 100])
    with pytest.raises(ValueError, match="1..T"):
        respace(sched, [0, 100])
    with pytest.raises(ValueError, match="num_steps"):
        space_timesteps(100, 0)
    with pytest.raises(ValueError, match="eta"):
        ddim_coefficients(sched, eta=1.5)
    with pytest.raises(ValueError, match="prediction"):
        ddim_coefficients(sched, prediction="velocity")
