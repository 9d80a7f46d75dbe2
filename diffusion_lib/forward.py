"""The forward (noising) process q: one Markov step, its closed-form marginal, and sampling from it.

    q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)                [Ho20, Eq. 2]
    q(x_t | x_0)     = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)         [Ho20, Eq. 4]

Inputs are (B, ...) tensors of any trailing shape; t is an int or an int64 (B,) tensor in 1..T.
"""

import torch

from .indexing import check_data, check_t, gather


def q_step(sched, x_prev, t, eps):
    """x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps: one forward step [Ho20, Eq. 2].

    Args: x_prev (B, ...) is x_{t-1}; eps (B, ...) standard normal noise; t in 1..T.
    Returns: x_t, shape (B, ...).
    """
    check_data("x_prev", x_prev)
    check_data("eps", eps, like=x_prev)
    t = check_t(t, sched.T, x_prev.shape[0])
    beta_t = gather(sched.beta, t, x_prev)
    return (1 - beta_t).sqrt() * x_prev + beta_t.sqrt() * eps


def q_marginal(sched, x0, t):
    """Mean and variance of q(x_t | x_0) [Ho20, Eq. 4].

    Returns: (mean, var), both (B, ...): mean = sqrt(alpha_bar_t) x_0, var = 1 - alpha_bar_t
    (the same in every coordinate; expanded to x0's shape).
    """
    check_data("x0", x0)
    t = check_t(t, sched.T, x0.shape[0])
    alpha_bar_t = gather(sched.alpha_bar, t, x0)
    mean = alpha_bar_t.sqrt() * x0
    var = (1 - alpha_bar_t).expand_as(x0)
    return mean, var


def q_sample(sched, x0, t, eps):
    """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps: a draw from q(x_t | x_0) [Ho20, Eq. 4].

    This is the reparameterisation that lets training jump straight to any t (Algorithm 1).
    """
    check_data("eps", eps, like=x0)
    mean, var = q_marginal(sched, x0, t)
    return mean + var.sqrt() * eps


def q_chain(sched, x0, generator=None):
    """Run the forward chain x_0 -> x_1 -> ... -> x_T step by step, yielding (t, x_t) for t = 1..T.

    A generator, so trajectories and animations take only the steps they need. Noise is drawn with
    `generator` (a torch.Generator) so a run reproduces from its seed.
    """
    check_data("x0", x0)
    x = x0
    for t in range(1, sched.T + 1):
        eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        x = q_step(sched, x, t, eps)
        yield t, x
