"""clip_x0_denoiser: the improved-diffusion `clip_denoised` step, for an eps-predicting model."""

import pytest
import torch

import diffusion_lib as dl
from diffusion_lib.clipping import clip_x0_denoiser


def _eps_model(xt, t):
    # a deterministic stand-in network: large outputs so some implied x_0 leave the box
    return 3.0 * torch.sin(xt) + 0.01 * t[:, None].to(xt.dtype)


@pytest.mark.parametrize("name", dl.SCHEDULES)
def test_clipped_mean_equals_posterior_mean_of_clamped_x0(name):
    sched = dl.make_schedule(name, 100)
    gen = torch.Generator().manual_seed(0)
    xt = 2 * torch.randn(64, 2, generator=gen, dtype=torch.float64)
    t = torch.randint(1, 101, (64,), generator=gen)
    eps = _eps_model(xt, t)
    x0_clamped = dl.x0_from_eps(sched, xt, t, eps).clamp(-1, 1)
    assert (dl.x0_from_eps(sched, xt, t, eps).abs() > 1).any()  # the test exercises the clamp
    # reference: improved-diffusion clamps x0 and then takes the posterior mean q(x_{t-1} | x_t, x0) [Ho20, Eq. 7]
    mean_ref, _ = dl.q_posterior(sched, x0_clamped, xt, t)
    eps_clipped = clip_x0_denoiser(sched, _eps_model)(xt, t)
    assert torch.allclose(dl.mu_from_eps(sched, xt, t, eps_clipped), mean_ref, atol=1e-9)


def test_clipping_is_the_identity_inside_the_box():
    sched = dl.make_schedule("cosine", 50)
    x0 = torch.rand(32, 2, dtype=torch.float64) * 1.8 - 0.9
    t = torch.randint(1, 51, (32,))
    eps = torch.randn(32, 2, dtype=torch.float64)
    xt = dl.q_sample(sched, x0, t, eps)

    def exact(x, s):
        return eps

    assert torch.allclose(clip_x0_denoiser(sched, exact)(xt, t), eps, atol=1e-9)


def test_bad_box_is_rejected():
    sched = dl.make_schedule("cosine", 10)
    with pytest.raises(ValueError, match="low < high"):
        clip_x0_denoiser(sched, _eps_model, low=1.0, high=-1.0)
