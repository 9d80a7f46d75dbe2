"""Which timesteps a sampler visits: respacing [ND21, Sec. 4] and the step selections of fast samplers.

Contents: `SPACINGS`, `DPM_SOLVER_LAMBDA_MIN`, `half_log_snr`, `select_timesteps`, `space_timesteps`,
`Respaced`, `respace`, `respaced_schedule`.

Respacing [ND21, Sec. 4] keeps a subsequence 1 <= s_1 < ... < s_K = T of the steps and builds a new
K-step schedule with the same alpha_bar at the kept steps:

    alpha_bar'_k = alpha_bar_{s_k},   beta'_k = 1 - alpha_bar'_k / alpha_bar'_{k-1}   (alpha_bar'_0 = 1)

A model trained on the original t is called at s_k when the new schedule is at step k (as improved-diffusion's
`_WrappedModel` does, there 0-based). Any sampler then runs on the new schedule. The kept steps are our
own rule, not improved-diffusion's `space_timesteps`: K steps evenly spaced from 1 to T, rounded half up,
always keeping t = T (K = 1 keeps only T); improved-diffusion rounds its fractional stride differently
and does not always keep T, so for many (T, K), odd K in particular, the two keep different steps.

A sampler with K network calls visits K of the T trained steps, t_K > ... > t_1, then x_0. Which K
(`select_timesteps`, one of SPACINGS), in terms of the half log-SNR lambda_t = log(sqrt(ab_t) / sqrt(1 - ab_t))
and the noise level sigma_t = sqrt((1 - ab_t) / ab_t) of the equivalent variance-exploding process:

    "uniform"   evenly spaced from 1 to t_max, both kept (our `space_timesteps`)
    "leading"   1, 1 + t_max // K, 1 + 2 (t_max // K), ...: starts at 1, never reaches t_max   [diffusers]
    "trailing"  t_max, t_max - t_max / K, ... (rounded): starts at t_max, never reaches 1     [Lin24, Table 2]
    "log_snr"   evenly spaced in lambda between lambda_{t_max} and lambda_1                   [Lu22, Sec. 3.3]
    "edm"       sigma_k = (sigma_max^(1/rho) + k / (K - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, rho = 7
                                                                                              [Ka22, Eq. 5]

The last two are rounded to the trained step with the nearest lambda (sigma), keeping K distinct steps.
t_max is T, or (`lambda_min`) the largest t with lambda_t >= lambda_min: a schedule whose last steps carry
almost no signal (the cosine schedule's clipped beta_T = 0.999 has lambda_T = -9.9) is entered where the
network is still well conditioned, as DPM-Solver does with its cut-off lambda_min = -5.1 [Lu22b; diffusers'
`lambda_min_clipped`]. x_{t_max} ~ N(0, I) then misses q(x_{t_max}) by a KL of about D ab_{t_max} / 2.
"""

import math
import warnings
from dataclasses import dataclass

import torch

from .indexing import check_t
from .schedules import NoiseSchedule, ScheduleWarning

SPACINGS = ("uniform", "leading", "trailing", "log_snr", "edm")
# DPM-Solver's cut-off of the half log-SNR for the cosine schedule [Lu22b; diffusers' lambda_min_clipped]
DPM_SOLVER_LAMBDA_MIN = -5.1


def half_log_snr(sched):
    """lambda_t = log(sqrt(alpha_bar_t) / sqrt(1 - alpha_bar_t)) = log(SNR_t) / 2 for t = 0..T (float64; +inf at 0)."""
    return 0.5 * (sched.alpha_bar.log() - torch.log1p(-sched.alpha_bar))


def _last_step(sched, lambda_min):
    """t_max: T, or the largest t whose half log-SNR is >= lambda_min (at least 1)."""
    if lambda_min is None:
        return sched.T
    if not isinstance(lambda_min, (int, float)) or math.isnan(lambda_min):
        raise ValueError(f"lambda_min must be a number (the half log-SNR where sampling starts) or None, "
                         f"got {lambda_min!r}")
    above = (half_log_snr(sched)[1:] >= lambda_min).nonzero()
    return int(above[-1]) + 1 if above.numel() else 1


def _nearest_steps(values, targets, t_max):
    """K distinct steps in 1..t_max, increasing, whose `values` (increasing in t) are nearest the sorted targets."""
    values = values[1:t_max + 1]
    idx = torch.searchsorted(values, targets).clamp(1, t_max - 1)
    nearer_left = (targets - values[idx - 1]).abs() <= (values[idx] - targets).abs()
    steps = (idx + 1 - nearer_left.long()).tolist()  # 1-based
    for k in range(1, len(steps)):  # make them distinct, pushing collisions up ...
        steps[k] = max(steps[k], steps[k - 1] + 1)
    steps[-1] = min(steps[-1], t_max)
    for k in range(len(steps) - 2, -1, -1):  # ... and back down below t_max
        steps[k] = min(steps[k], steps[k + 1] - 1)
    return steps


def select_timesteps(sched, steps=None, spacing="uniform", lambda_min=None, rho=7.0):
    """The K = steps timesteps a sampler calls the network at, increasing: a list of ints in 1..T.

    steps None keeps every step 1..t_max; spacing one of SPACINGS (see the module docstring); lambda_min
    the half log-SNR below which the last steps are skipped (None: start at T); rho the EDM exponent.
    """
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r}; choose one of {SPACINGS}")
    t_max = _last_step(sched, lambda_min)
    if steps is None:
        return list(range(1, t_max + 1))
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= t_max:
        why = "" if t_max == sched.T else f" (sampling starts at t = {t_max}, the last step with half log-SNR >= {lambda_min})"
        raise ValueError(f"steps must be an int in 1..{t_max}{why}, got {steps!r}")
    K = steps
    if K == 1 or K == t_max:
        return [t_max] if K == 1 else list(range(1, t_max + 1))
    if spacing == "uniform":
        return space_timesteps(t_max, K)
    if spacing == "leading":
        return [1 + k * (t_max // K) for k in range(K)]
    if spacing == "trailing":
        return sorted(math.floor(t_max - k * t_max / K + 0.5) for k in range(K))
    if spacing in ("log_snr", "edm") and sched.alpha_bar[t_max] == 0:
        raise ValueError(f"spacing {spacing!r} needs a finite log-SNR at t_max = {t_max}; at zero terminal SNR use "
                         "'uniform' or 'trailing', or a lambda_min")
    frac = torch.linspace(0, 1, K, dtype=torch.float64)
    if spacing == "log_snr":
        lam = half_log_snr(sched)
        targets = -(lam[1] + frac * (lam[t_max] - lam[1]))  # -lambda increases with t
        return _nearest_steps(-lam, targets, t_max)
    log_sigma = -half_log_snr(sched)  # log sigma_t = -lambda_t
    s_min, s_max = math.exp(log_sigma[1]) ** (1 / rho), math.exp(log_sigma[t_max]) ** (1 / rho)
    targets = rho * torch.log(s_min + frac * (s_max - s_min))  # EDM's sigmas, from sigma_min up, as log sigma
    return _nearest_steps(log_sigma, targets, t_max)


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


def respaced_schedule(sched, kept):
    """The K-step schedule with alpha_bar'_k = alpha_bar_{kept[k]} for any strictly increasing kept in 1..T.

    It may end below T (a sampler that skips the clipped tail); then x_{kept[-1]} is taken as N(0, I), and
    no ScheduleWarning is raised for the signal left there: that is the sampler's choice, made knowingly.
    """
    kept = torch.as_tensor(list(kept), dtype=torch.int64)
    if kept.ndim != 1 or kept.numel() < 1:
        raise ValueError("kept must be a non-empty sequence of timesteps, e.g. space_timesteps(T, 50)")
    check_t(kept, sched.T)
    if kept.numel() > 1 and not (kept[1:] > kept[:-1]).all():
        raise ValueError(f"kept timesteps must be strictly increasing, got {kept.tolist()[:10]}...")
    alpha_bar = torch.cat([torch.ones(1, dtype=torch.float64), sched.alpha_bar[kept]])
    betas = 1 - alpha_bar[1:] / alpha_bar[:-1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ScheduleWarning)
        return NoiseSchedule.from_betas(betas, name=f"{sched.name}-respaced{kept.numel()}")


def respace(sched, kept):
    """The schedule on the kept steps (a strictly increasing sequence in 1..T ending at T) [ND21, Sec. 4]."""
    new = respaced_schedule(sched, kept)
    kept = torch.as_tensor(list(kept), dtype=torch.int64)
    if int(kept[-1]) != sched.T:
        raise ValueError(f"kept must end at T = {sched.T} so sampling starts from the same x_T ~ N(0, I); "
                         f"it ends at {int(kept[-1])}")
    return Respaced(sched=new, timestep_map=torch.cat([torch.zeros(1, dtype=torch.int64), kept]))
