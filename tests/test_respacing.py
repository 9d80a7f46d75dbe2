"""Respacing keeps alpha_bar at the kept steps; DDIM (sample_loop(sampler="ddim")) on a respaced sequence."""

import pytest
import torch

import diffusion_lib as dl
from diffusion_lib.respacing import respace, space_timesteps

UNIFORM = {"spacing": "uniform", "lambda_min": None}  # the kept steps of space_timesteps(T, K)


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


def test_ddim_eta0_is_deterministic_and_exact_for_a_point_mass():
    # data x_0 = 0: the exact eps model is eps = x_t / sqrt(1 - ab_t), x0_pred = 0, and the x_t path scales
    # as sqrt(1 - ab_{t-1}) / sqrt(1 - ab_t): x_0 = 0 exactly, with no randomness after x_T
    sched = dl.make_schedule("cosine", 30)
    kept = space_timesteps(30, 7)
    model = lambda xt, t: xt / (1 - sched.alpha_bar[t]).sqrt().reshape(-1, 1).float()  # noqa: E731
    states = list(dl.sample_loop(sched, model, 16, sampler="ddim", steps=7, eta=0.0, **UNIFORM,
                                 generator=torch.Generator().manual_seed(2)))
    assert [t for t, _ in states] == kept[::-1] + [0]
    assert states[-1][1].abs().max() < 1e-4
    x_T = states[0][1]
    for k, x in states[1:-1]:
        ratio = ((1 - sched.alpha_bar[k]) / (1 - sched.alpha_bar[30])).sqrt()
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
        x = dl.sample(sched, dl.gaussian_data_denoiser(sched, s2), n, sampler="ddim", steps=num_steps, eta=eta,
                      **UNIFORM, generator=torch.Generator().manual_seed(num_steps))
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
    model = dl.gaussian_data_denoiser(sched, 0.5)
    with pytest.raises(ValueError, match="eta must be a number in"):
        dl.sample(sched, model, 4, sampler="ddim", eta=1.5)
    with pytest.raises(ValueError, match=r"unknown prediction 'velocity'; choose one of \('eps'"):
        dl.sample(sched, model, 4, prediction="velocity", sampler="ddim")
