"""Faster sampling: timestep respacing and DDIM.

Contents: `space_timesteps`, `Respaced`, `respace`, `DDIMCoefficients`, `ddim_coefficients`, `ddim_loop`,
`ddim_sample`.

Respacing [ND21, Sec. 4] keeps a subsequence 1 <= s_1 < ... < s_K = T of the steps and builds a new
K-step schedule with the same alpha_bar at the kept steps:

    alpha_bar'_k = alpha_bar_{s_k},   beta'_k = 1 - alpha_bar'_k / alpha_bar'_{k-1}   (alpha_bar'_0 = 1)

A model trained on the original t is called at s_k when the new schedule is at step k (as improved-diffusion's
`_WrappedModel` does, there 0-based). Any sampler then runs on the new schedule. The kept steps are our
own rule, not improved-diffusion's `space_timesteps`: K steps evenly spaced from 1 to T, rounded half up,
always keeping t = T (K = 1 keeps only T); improved-diffusion rounds its fractional stride differently
and does not always keep T, so for many (T, K), odd K in particular, the two keep different steps.

DDIM [SME21, Eq. 12] is a family of samplers with the same marginals q(x_t | x_0) as DDPM:

    x_{t-1} = sqrt(ab_{t-1}) x0_pred + sqrt(1 - ab_{t-1} - sigma_t^2) eps_pred + sigma_t z
    sigma_t(eta) = eta sqrt((1 - ab_{t-1}) / (1 - ab_t)) sqrt(1 - ab_t / ab_{t-1})        [SME21, Eq. 16]

with ab = alpha_bar. eta = 0 is deterministic; eta = 1 gives sigma_t^2 = beta_tilde_t and the same
mean as the ancestral step [Ho20, Eq. 7]: DDPM with the "fixed_small" variance.
"""

import math
from dataclasses import dataclass

import torch

from .indexing import check_t
from .posterior import PREDICTIONS, convert_prediction
from .schedules import NoiseSchedule


def space_timesteps(T, num_steps):
    """num_steps kept steps evenly spaced over 1..T, always with 1 and T: a sorted list of ints.

    round(1 + k (T - 1) / (num_steps - 1)) for k = 0..num_steps-1, halves rounded up; [T] for num_steps = 1.
    Not improved-diffusion's rule (see the module docstring).
    """
    if not (isinstance(num_steps, int) and 1 <= num_steps <= T):
        raise ValueError(f"num_steps must be an int in 1..T = 1..{T}, got {num_steps!r}")
    if num_steps == 1:
        return [T]
    # round half up (not Python's half-to-even), so the spacing >= 1 never maps two steps to one
    return [math.floor(1 + k * (T - 1) / (num_steps - 1) + 0.5) for k in range(num_steps)]


@dataclass
class Respaced:
    """A respaced schedule and its map back to the original timesteps."""

    sched: NoiseSchedule  # the K-step schedule, alpha_bar[k] = original alpha_bar[kept[k]]
    timestep_map: torch.Tensor  # (K + 1,) int64: timestep_map[k] = s_k, the original t; slot 0 is padding (0)

    def wrap(self, model):
        """model(xt, k) -> original model(xt, s_k), so a model trained on the original t runs on the new one.

        A learned variance's v then interpolates the new schedule's beta'_k and beta_tilde'_k [ND21, Sec. 4].
        """
        timestep_map = self.timestep_map

        def wrapped(xt, t):
            t = check_t(t, self.sched.T)
            return model(xt, timestep_map.to(t.device)[t])

        return wrapped


def respace(sched, kept):
    """The schedule on the kept steps (a strictly increasing sequence in 1..T ending at T) [ND21, Sec. 4]."""
    kept = torch.as_tensor(list(kept), dtype=torch.int64)
    if kept.ndim != 1 or kept.numel() < 1:
        raise ValueError("kept must be a non-empty sequence of timesteps, e.g. space_timesteps(T, 50)")
    check_t(kept, sched.T)
    if kept.numel() > 1 and not (kept[1:] > kept[:-1]).all():
        raise ValueError(f"kept timesteps must be strictly increasing, got {kept.tolist()[:10]}...")
    if int(kept[-1]) != sched.T:
        raise ValueError(f"kept must end at T = {sched.T} so sampling starts from the same x_T ~ N(0, I); "
                         f"it ends at {int(kept[-1])}")
    alpha_bar = torch.cat([torch.ones(1, dtype=torch.float64), sched.alpha_bar[kept]])
    betas = 1 - alpha_bar[1:] / alpha_bar[:-1]
    new = NoiseSchedule.from_betas(betas, name=f"{sched.name}-respaced{kept.numel()}")
    return Respaced(sched=new, timestep_map=torch.cat([torch.zeros(1, dtype=torch.int64), kept]))


@dataclass
class DDIMCoefficients:
    """Per-t Python floats, index t = 1..T (slot 0 unused): x_{t-1} = a[t] x_t + b[t] output + sigma[t] z."""

    a: list
    b: list
    sigma: list


def ddim_coefficients(sched, eta=0.0, prediction="eps"):
    """The DDIM update [SME21, Eq. 12] as an affine map of (x_t, output), from `convert_prediction` (float64)."""
    if not (isinstance(eta, (int, float)) and 0 <= eta <= 1):
        raise ValueError(f"eta must be a number in [0, 1] (0 = deterministic DDIM, 1 = DDPM), got {eta!r}")
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}")
    T = sched.T
    t = torch.arange(1, T + 1)
    ab, ab_prev = sched.alpha_bar[1:], sched.alpha_bar[:-1]
    sigma = eta * ((1 - ab_prev) / (1 - ab)).sqrt() * (1 - ab / ab_prev).sqrt()
    # 1 - ab_prev - sigma^2 >= 0 exactly (it is (1 - ab_prev)^2 alpha_t / (1 - ab_t) at eta = 1); clamp rounding
    dir_coef = (1 - ab_prev - sigma ** 2).clamp(min=0).sqrt()
    zero, one = torch.zeros(T, 1, dtype=torch.float64), torch.ones(T, 1, dtype=torch.float64)
    eps_a, x0_a, _ = convert_prediction(sched, one, t, zero, prediction)  # at x_t = 1, output = 0
    eps_b, x0_b, _ = convert_prediction(sched, zero, t, one, prediction)  # at x_t = 0, output = 1
    a = ab_prev.sqrt() * x0_a[:, 0] + dir_coef * eps_a[:, 0]
    b = ab_prev.sqrt() * x0_b[:, 0] + dir_coef * eps_b[:, 0]

    def pad(x):
        return [0.0] + x.tolist()

    return DDIMCoefficients(a=pad(a), b=pad(b), sigma=pad(sigma))


def ddim_loop(sched, model, n, eta=0.0, prediction="eps", generator=None, data_shape=(2,), x_T=None):
    """DDIM sampling as a generator: yields (t, x_t) for t = T, ..., 0 like `sampling.sample_loop`.

    Run it on a `respace(...).sched` with the `wrap`ped model to sample in fewer steps. z is drawn only
    where sigma_t > 0, so with eta = 1 and the same generator it reproduces `sample_loop(...,
    var_type="fixed_small")` draw for draw. x_t is float32 (n, *data_shape), under torch.inference_mode.
    """
    coef = ddim_coefficients(sched, eta, prediction)
    with torch.inference_mode():
        x = torch.randn((n, *data_shape), generator=generator) if x_T is None else x_T.float()
        yield sched.T, x
        t_batch = torch.empty(n, dtype=torch.int64)
        for t in range(sched.T, 0, -1):
            out = model(x, t_batch.fill_(t))
            if isinstance(out, tuple):
                out = out[0]  # a learned variance is ignored: DDIM sets its own sigma_t
            x = out * coef.b[t] + x * coef.a[t]
            if coef.sigma[t] > 0:
                x = torch.add(x, torch.randn(x.shape, generator=generator), alpha=coef.sigma[t])
            yield t - 1, x


def ddim_sample(sched, model, n, eta=0.0, prediction="eps", generator=None, data_shape=(2,)):
    """x_0 from DDIM [SME21, Eq. 12]: a float32 (n, *data_shape) tensor in model coordinates."""
    for t, x in ddim_loop(sched, model, n, eta, prediction, generator, data_shape):
        if t == 0:
            return x

