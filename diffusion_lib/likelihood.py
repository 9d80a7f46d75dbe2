"""The pieces of the variational bound: Gaussian KLs, log-likelihoods, L_T, L_{t-1}, L_0, the simple-loss weight.

    -log p(x_0) <= L_T + sum_{t=2..T} L_{t-1} + L_0                                   [Ho20, Eq. 5]
    L_T     = KL(q(x_T | x_0) || N(0, I))
    L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t))          (the term at step t >= 2)
    L_0     = -log p_theta(x_0 | x_1)                                      (the term at step t = 1)

Units: nats, summed over the data dimensions, per example; `bits_per_dim` converts for display.
Everything is computed in float64 (gradients still flow to float32 inputs).
"""

import math

import torch

from .indexing import check_data, check_t, gather
from .reverse import reverse_variance

DECODERS = ("gaussian", "discretized")


def sum_flat(x):
    """Sum over every dimension but the batch: (B, ...) -> (B,)."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) elementwise, in nats.

    = 1/2 (logvar2 - logvar1 + exp(logvar1 - logvar2) + (mean1 - mean2)^2 exp(-logvar2) - 1).
    Arguments broadcast against each other (tensors or floats).
    """
    mean1, logvar1, mean2, logvar2 = (torch.as_tensor(a, dtype=torch.float64) if not torch.is_tensor(a)
                                      else a.double() for a in (mean1, logvar1, mean2, logvar2))
    return 0.5 * (logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2) - 1.0)


def gaussian_log_likelihood(x, mean, log_var):
    """log N(x; mean, exp(log_var)) elementwise, in nats: the density for continuous data."""
    x, mean, log_var = x.double(), mean.double(), torch.as_tensor(log_var, dtype=torch.float64)
    return -0.5 * (math.log(2 * math.pi) + log_var + (x - mean) ** 2 * torch.exp(-log_var))


def _log_ndtr_diff(a, b):
    """log(Phi(b) - Phi(a)) for a < b, stable in both tails."""
    # in the upper tail use Phi(b) - Phi(a) = Phi(-a) - Phi(-b), so both logs stay away from 0
    upper = a > 0
    a, b = torch.where(upper, -b, a), torch.where(upper, -a, b)
    log_b, log_a = torch.special.log_ndtr(b), torch.special.log_ndtr(a)
    return log_b + torch.log1p(-torch.exp((log_a - log_b).clamp(max=0)).clamp(max=1 - 1e-15))


def discretized_gaussian_log_likelihood(x, mean, log_var, levels=256):
    """log P(x) elementwise for data quantised to `levels` values in [-1, 1], in nats [Ho20, Eq. 13].

    Each value x owns the bin [x - delta, x + delta], delta = 1 / (levels - 1); the end bins extend to
    -inf and +inf. This is the decoder for 8-bit images (levels = 256); continuous data has no bins.
    """
    x, mean, log_var = x.double(), mean.double(), torch.as_tensor(log_var, dtype=torch.float64)
    if (x.abs() > 1 + 1e-6).any():
        raise ValueError("discretized likelihood needs data scaled to [-1, 1]")
    delta = 1.0 / (levels - 1)
    inv_std = torch.exp(-0.5 * log_var)
    lower = torch.where(x < -1 + delta / 2, torch.full_like(x, -math.inf), (x - delta - mean) * inv_std)
    upper = torch.where(x > 1 - delta / 2, torch.full_like(x, math.inf), (x + delta - mean) * inv_std)
    return _log_ndtr_diff(lower, upper)


def prior_kl(sched, x0):
    """L_T = KL(q(x_T | x_0) || N(0, I)) per example, in nats, shape (B,) [Ho20, Eq. 5]."""
    check_data("x0", x0)
    x0 = x0.double()
    alpha_bar_T = sched.alpha_bar[-1]
    kl = normal_kl(alpha_bar_T.sqrt() * x0, torch.log1p(-alpha_bar_T), 0.0, 0.0)
    return sum_flat(kl.expand_as(x0))


def vlb_term(sched, x0, xt, t, model_mean, model_log_var, decoder="gaussian", levels=256):
    """The bound's term at step t per example, in nats, shape (B,) [Ho20, Eq. 5].

    t >= 2: L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || N(model_mean, exp(model_log_var)));
    t == 1: L_0 = -log p_theta(x_0 | x_1), a Gaussian density ("gaussian", continuous data) or the
    discretized decoder ("discretized", data quantised to `levels` values in [-1, 1]).
    """
    from .posterior import q_posterior

    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r}; choose one of {DECODERS}")
    t = check_t(t, sched.T, x0.shape[0])
    t_batch = t.expand(x0.shape[0]) if t.ndim == 0 else t
    model_log_var = torch.as_tensor(model_log_var, dtype=torch.float64).expand_as(x0)
    true_mean, _ = q_posterior(sched, x0, xt, t_batch)
    true_log_var = gather(sched.log_beta_tilde_clipped, t_batch, x0.double())
    kl = sum_flat(normal_kl(true_mean, true_log_var, model_mean, model_log_var))
    if decoder == "gaussian":
        log_lik = gaussian_log_likelihood(x0, model_mean, model_log_var)
    else:
        log_lik = discretized_gaussian_log_likelihood(x0, model_mean, model_log_var, levels)
    return torch.where(t_batch == 1, -sum_flat(log_lik), kl)


def simple_loss_weight(sched, t, var="fixed_small"):
    """lambda_t with L_{t-1} = lambda_t E||eps - eps_theta||^2 (+ a constant) for a fixed variance sigma_t^2.

    lambda_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha_bar_t))   [Ho20, Eq. 12]; the simple loss
    sets lambda_t = 1. The same formula gives L_0's weight at t = 1 with sigma_1^2 the decoder variance.
    Returns a float64 tensor shaped like t.
    """
    t = check_t(t, sched.T)
    if var == "learned":
        raise ValueError("the weight needs a fixed variance: choose 'fixed_small' or 'fixed_large'")
    like = torch.zeros(max(t.numel(), 1), dtype=torch.float64)
    variance, _ = reverse_variance(sched, t.reshape(-1), like, var)
    beta, alpha, alpha_bar = (a[t] for a in (sched.beta, sched.alpha, sched.alpha_bar))
    return beta ** 2 / (2 * variance.reshape(t.shape) * alpha * (1 - alpha_bar))


def bits_per_dim(nats, num_dims):
    """Convert nats per example into bits per dimension: nats / (num_dims ln 2)."""
    return nats / (num_dims * math.log(2.0))
