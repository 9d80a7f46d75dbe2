"""Is T large enough? The prior term L_T and how far along the chain the signal is gone.

Contents: `PriorSummary`, `summarize_prior`, `prior_table`, `first_step_below`.

Sampling starts from N(0, I), so the forward process must end there. What is left of the data at
t = T is measured by alpha_bar_T (the fraction of its variance), sqrt(alpha_bar_T) (the factor on
x_0 in x_T) and the prior term of the bound

    L_T = KL(q(x_T | x_0) || N(0, I))                                                [Ho20, Eq. 5]

in nats per example (and bits per dimension, only for display).
"""

from dataclasses import dataclass

from .likelihood import bits_per_dim, prior_kl


@dataclass(frozen=True)
class PriorSummary:
    name: str  # schedule name
    T: int  # number of diffusion steps
    alpha_bar_T: float  # fraction of the data's variance left at t = T
    signal_left: float  # sqrt(alpha_bar_T): the factor on x_0 in x_T
    prior_kl: float  # L_T averaged over the data, nats per example
    prior_kl_bpd: float  # the same L_T in bits per dimension


def summarize_prior(sched, x0):
    """alpha_bar_T, sqrt(alpha_bar_T) and the mean L_T over data x0 (B, ...) for one schedule."""
    kl = float(prior_kl(sched, x0).mean())
    num_dims = x0[0].numel()
    return PriorSummary(name=sched.name, T=sched.T, alpha_bar_T=sched.alpha_bar_T,
                        signal_left=sched.signal_left, prior_kl=kl,
                        prior_kl_bpd=float(bits_per_dim(kl, num_dims)))


def prior_table(schedules, x0):
    """A text table, one line per schedule, of T, alpha_bar_T, sqrt(alpha_bar_T) and L_T (nats, bits/dim).

    Numbers are printed to 4 significant digits, so the table is the same on every machine.
    """
    schedules = list(schedules)
    if not schedules:
        raise ValueError("prior_table needs at least one NoiseSchedule")
    lines = [f"{'schedule':<10} {'T':>5} {'alpha_bar_T':>11} {'sqrt(alpha_bar_T)':>17} "
             f"{'L_T [nats]':>11} {'L_T [bits/dim]':>14}"]
    for sched in schedules:
        s = summarize_prior(sched, x0)
        lines.append(f"{s.name:<10} {s.T:>5} {s.alpha_bar_T:>11.3e} {s.signal_left:>17.3e} "
                     f"{s.prior_kl:>11.3e} {s.prior_kl_bpd:>14.3e}")
    return "\n".join(lines)


def first_step_below(sched, level):
    """The first t in 1..T with alpha_bar_t <= level, or None if alpha_bar_T is still above it.

    alpha_bar_t falls monotonically, so this is the step where the data's share of the variance of
    x_t first drops to `level` (0.5: signal and noise equal; 0.01: x_t is 99% noise).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be a fraction of the variance in (0, 1), got {level!r}")
    below = (sched.alpha_bar[1:] <= level).nonzero()
    return int(below[0]) + 1 if below.numel() else None
