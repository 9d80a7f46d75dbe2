"""Noise schedules beta_1..beta_T and everything precomputed from them.

Contents: `SCHEDULES`, `make_schedule`, `NoiseSchedule` (with `from_betas`), `ScheduleWarning`,
`rescale_zero_terminal_snr`, and for discrete data `cosine_log_snr_betas` with its endpoints from
`log_snr_range_for_levels`.

Time is indexed like the paper: t = 1..T. Every array has length T + 1 and slot 0 is padding with
beta[0] = 0, alpha[0] = alpha_bar[0] = 1, so `alpha_bar[t]` *is* alpha_bar_t and `alpha_bar[t - 1]`
needs no special case at t = 1. Codebases that index from 0 (improved-diffusion, diffusers) store
our `alpha_bar[t]` at their index t - 1 ("0 means one step").

References: [Ho20] Ho, Jain, Abbeel 2020; [ND21] Nichol & Dhariwal 2021; [Lin24] Lin et al. 2024;
[Kingma21] Kingma, Salimans, Poole, Ho 2021 (VDM); [Hg23] Hoogeboom, Heek, Salimans 2023 (simple diffusion).
"""

import math
import operator
import warnings

import torch

SCHEDULES = ("linear", "quadratic", "sigmoid", "cosine")

# beyond this much signal left at t = T, x_T is visibly not pure noise (see `NoiseSchedule.check_prior`)
SIGNAL_LEFT_WARNING = 0.1
# [ND21, Sec. 3.2]: betas are clipped below 1 to avoid singularities near t = T
MAX_BETA = 0.999


class ScheduleWarning(UserWarning):
    """A schedule that leaves visible signal at t = T (x_T is not close to N(0, I))."""


class NoiseSchedule:
    """The variance schedule of the forward process and the quantities derived from it.

    beta_t      variance added at step t                          `betas` in other codebases
    alpha_t     1 - beta_t                                        `alphas`
    alpha_bar_t prod_{s<=t} alpha_s                 [Ho20, Eq. 4] `alphas_cumprod`
    beta_tilde_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t  [Ho20, Eq. 7]  `posterior_variance`

    All are float64 tensors of length T + 1 indexed by the paper's t (slot 0 is padding, see the
    module docstring). Build one with `make_schedule(name, T)` or `NoiseSchedule.from_betas(betas)`.
    """

    def __init__(self, betas, name="custom"):
        betas = torch.as_tensor(betas, dtype=torch.float64).detach().clone()
        if betas.ndim != 1 or betas.numel() < 1:
            raise ValueError(f"betas must be a non-empty 1-D sequence beta_1..beta_T, got shape {tuple(betas.shape)}")
        if not torch.isfinite(betas).all():
            raise ValueError("betas must be finite; found NaN or inf")
        inside = (betas > 0) & (betas < 1)
        inside[-1] = inside[-1] | (betas[-1] == 1)  # beta_T = 1: zero terminal SNR [Lin24]
        if not inside.all():
            bad = betas[~inside]
            raise ValueError(f"every beta_t must lie in the open interval (0, 1) (beta_T = 1 is allowed: zero "
                             f"terminal SNR); found {bad[:3].tolist()}")
        self.name = name
        self.T = betas.numel()
        zero = torch.zeros(1, dtype=torch.float64)
        self.beta = torch.cat([zero, betas])
        self.alpha = 1.0 - self.beta
        self.alpha_bar = torch.cumprod(self.alpha, dim=0)
        alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar[:-1]])
        one_minus = 1.0 - self.alpha_bar
        one_minus[0] = 1.0  # padding: avoids 0/0 in slot 0 below
        self.beta_tilde = (1.0 - alpha_bar_prev) / one_minus * self.beta
        # mu_tilde = coef_x0 * x0 + coef_xt * xt   [Ho20, Eq. 7]
        self.posterior_coef_x0 = alpha_bar_prev.sqrt() * self.beta / one_minus
        self.posterior_coef_xt = self.alpha.sqrt() * (1.0 - alpha_bar_prev) / one_minus
        # beta_tilde_1 = 0, so its log is -inf: codebases use beta_tilde_2 in its place at t = 1
        # (improved-diffusion's `posterior_log_variance_clipped`); with T = 1 we fall back to beta_1.
        clipped = self.beta_tilde.clone()
        clipped[1] = self.beta_tilde[2] if self.T >= 2 else self.beta[1]
        clipped[0] = clipped[1]  # padding
        self.log_beta_tilde_clipped = clipped.log()
        self.check_prior()

    @classmethod
    def from_betas(cls, betas, name="custom"):
        """A schedule from a custom 1-D sequence beta_1..beta_T, each in (0, 1)."""
        return cls(betas, name=name)

    def __repr__(self):
        return (f"NoiseSchedule(name={self.name!r}, T={self.T}, alpha_bar_T={self.alpha_bar_T:.3g}, "
                f"signal_left={self.signal_left:.3g})")

    # diagnostics a user needs when changing beta or T
    @property
    def alpha_bar_T(self):
        """alpha_bar_T as a float: the fraction of the data's variance left at t = T."""
        return float(self.alpha_bar[-1])

    @property
    def signal_left(self):
        """sqrt(alpha_bar_T): the factor that multiplies x_0 in x_T [Ho20, Eq. 4]."""
        return math.sqrt(self.alpha_bar_T)

    @property
    def snr(self):
        """Signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t), length T + 1 (inf at slot 0)."""
        return self.alpha_bar / (1.0 - self.alpha_bar)

    def prior_kl(self, x0):
        """The prior term L_T = KL(q(x_T | x_0) || N(0, I)) per example, in nats, shape (B,)."""
        from .likelihood import prior_kl

        return prior_kl(self, x0)

    def check_prior(self):
        """Warn (ScheduleWarning) if sqrt(alpha_bar_T) > SIGNAL_LEFT_WARNING."""
        if self.signal_left > SIGNAL_LEFT_WARNING:
            warnings.warn(
                f"schedule {self.name!r} with T={self.T} leaves signal sqrt(alpha_bar_T) = "
                f"{self.signal_left:.3f} > {SIGNAL_LEFT_WARNING} at t = T: x_T still shows the data, "
                "so sampling from N(0, I) starts from the wrong distribution. Use larger betas or a larger T.",
                ScheduleWarning,
                stacklevel=3,
            )


def _endpoints(T):
    """[Ho20] beta_1 = 1e-4, beta_T = 0.02 at T = 1000, both scaled by 1000 / T [ND21, Sec. 3.2].

    Below T = 20 the scaled beta_T = 20 / T would exceed 1, so it is capped at MAX_BETA (beta_1 = 0.1 / T
    never reaches the cap).
    """
    scale = 1000.0 / T
    return min(scale * 1e-4, MAX_BETA), min(scale * 0.02, MAX_BETA)


def linear_betas(T):
    """beta_t linear in t from beta_start to beta_end [Ho20, Sec. 4]."""
    start, end = _endpoints(T)
    return torch.linspace(start, end, T, dtype=torch.float64)


def quadratic_betas(T):
    """sqrt(beta_t) linear in t: linspace(sqrt(beta_start), sqrt(beta_end), T) ** 2."""
    start, end = _endpoints(T)
    return torch.linspace(math.sqrt(start), math.sqrt(end), T, dtype=torch.float64) ** 2


def sigmoid_betas(T):
    """sigmoid(linspace(-6, 6, T)) * (beta_end - beta_start) + beta_start."""
    start, end = _endpoints(T)
    return torch.sigmoid(torch.linspace(-6, 6, T, dtype=torch.float64)) * (end - start) + start


def cosine_betas(T, s=0.008):
    """[ND21, Eq. 17]: alpha_bar(t) = f(t) / f(0), f(t) = cos^2(((t / T + s) / (1 + s)) pi / 2).

    beta_t = min(1 - alpha_bar(t) / alpha_bar(t - 1), MAX_BETA); the clip binds only at the last
    steps, where f(T) = cos^2(pi / 2) = 0 would make beta_T = 1.
    """
    t = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=MAX_BETA)


_BETA_FUNCTIONS = {"linear": linear_betas, "quadratic": quadratic_betas,
                   "sigmoid": sigmoid_betas, "cosine": cosine_betas}


def make_schedule(name, T):
    """The named schedule (one of SCHEDULES) with T steps, as a NoiseSchedule."""
    if name not in _BETA_FUNCTIONS:
        raise ValueError(f"unknown schedule {name!r}; choose one of {SCHEDULES}")
    try:
        T_int = operator.index(T)
    except TypeError:
        T_int = None
    if T_int is None or isinstance(T, bool) or T_int < 1:
        raise ValueError(f"T must be a positive integer number of steps, got {T!r}")
    T = T_int
    return NoiseSchedule(_BETA_FUNCTIONS[name](T), name=name)


def cosine_log_snr_betas(T, log_snr_max, log_snr_min):
    """The cosine schedule written in log-SNR and cut at chosen ends [Hg23; Kingma21].

    The cosine schedule without its offset s has log SNR(u) = -2 log tan(u pi / 2) for u in [0, 1], from +inf
    to -inf. Cut to [log_snr_min, log_snr_max]: log SNR(u) = -2 log tan(a + u (b - a)) with
    a = atan(exp(-log_snr_max / 2)), b = atan(exp(-log_snr_min / 2)), at u = (t - 1) / (T - 1), so that
    SNR_1 = exp(log_snr_max) and SNR_T = exp(log_snr_min) exactly; alpha_bar_t = sigmoid(log SNR_t).
    In continuous time the bound depends on the schedule only through these two ends [Kingma21]:
    they are the choice that matters for likelihood (`log_snr_range_for_levels` picks them for discrete data).
    """
    if T < 2:
        raise ValueError(f"a schedule with two ends needs T >= 2 steps, got T = {T}")
    if not log_snr_max > log_snr_min:
        raise ValueError(f"log_snr_max must exceed log_snr_min, got {log_snr_max} and {log_snr_min}")
    a, b = math.atan(math.exp(-log_snr_max / 2)), math.atan(math.exp(-log_snr_min / 2))
    u = torch.linspace(0, 1, T, dtype=torch.float64)
    log_snr = -2 * torch.log(torch.tan(a + u * (b - a)))
    alpha_bar = torch.cat([torch.ones(1, dtype=torch.float64), torch.sigmoid(log_snr)])
    return 1 - alpha_bar[1:] / alpha_bar[:-1]


def log_snr_range_for_levels(levels, data_range=2.0, rounding_sigmas=4.0, log_snr_min=-10.0):
    """The ends (log SNR_1, log SNR_T) of a schedule for data on `levels` evenly spaced values.

    At t = 1 the noise in x_0's units is 1 / sqrt(SNR_1). The rule: make it 1 / rounding_sigmas of half the
    gap between levels, gap = data_range / (levels - 1), so that rounding x_1 recovers x_0 except with
    probability 2 Phi(-rounding_sigmas) per value (6e-5 at 4): the decoder L_0 is then almost free, and no
    step is spent on noise far below the gap, where every e-fold of SNR costs up to D/2 nats unless the
    network rounds exactly [Kingma21]. At t = T, SNR_T = exp(log_snr_min) leaves alpha_bar_T ~ 4.5e-5
    (at -10): the prior term L_T is then about D alpha_bar_T E[x_0^2] / 2, a few thousandths of a nat.
    For the 17 digit intensities on [-1, 1]: gap 1/8, noise 1/64 at t = 1, log SNR_1 = 2 log 64 = 8.32.
    """
    if levels < 2 or rounding_sigmas <= 0 or data_range <= 0:
        raise ValueError(f"need levels >= 2, rounding_sigmas > 0 and data_range > 0, got {levels}, "
                         f"{rounding_sigmas}, {data_range}")
    half_gap = data_range / (levels - 1) / 2
    return -2 * math.log(half_gap / rounding_sigmas), log_snr_min


def rescale_zero_terminal_snr(sched):
    """The schedule with sqrt(alpha_bar_t) mapped affinely so that alpha_bar_1 is kept and alpha_bar_T = 0 [Lin24, Alg. 1].

    sqrt(ab'_t) = (sqrt(ab_t) - sqrt(ab_T)) sqrt(ab_1) / (sqrt(ab_1) - sqrt(ab_T)); then beta_T = 1 and x_T is
    exactly N(0, I): no signal is left at T, so the sampler's N(0, I) start is no approximation. A new forward
    process: the network must be trained on it, and with prediction "v" (or "x0"), since at t = T an
    eps-network's x_0 = (x_T - eps) / sqrt(ab_T) divides by zero.
    """
    root = sched.alpha_bar[1:].sqrt()
    root = (root - root[-1]) * root[0] / (root[0] - root[-1])
    alpha_bar = torch.cat([torch.ones(1, dtype=torch.float64), root ** 2])
    betas = 1 - alpha_bar[1:] / alpha_bar[:-1]
    betas[-1] = 1.0  # exactly: alpha_bar_T = 0
    return NoiseSchedule(betas, name=f"{sched.name}-zero-snr")
