"""The variational bound of a model, term by term over every t, and the exact Gaussian case.

A model is any callable `model(xt, t)` with xt (B, ...) and t an int64 (B,) tensor in 1..T. It returns
its prediction (B, ...) of eps, x0, mu or v, or a tuple (prediction, var_interp) when the variance is learned.

    -log p(x_0) <= E_q[L_T + sum_{t>=2} L_{t-1} + L_0]                               [Ho20, Eq. 5]
"""

import math
from dataclasses import dataclass

import torch

from .exact_likelihood import alpha_bar_at
from .forward import q_sample
from .devices import model_device
from .files import progress_bar
from .indexing import check_data
from .likelihood import prior_kl, vlb_term
from .reverse import model_step


@dataclass
class BoundTerms:
    """The bound per example in nats: prior L_T (B,), and steps (T, B) where steps[t - 1] is the term
    at step t (L_0 at t = 1, L_{t-1} for t >= 2)."""

    prior: torch.Tensor
    steps: torch.Tensor

    @property
    def total(self):
        """L_T + sum_t L_{t-1} + L_0 per example, (B,) nats: an upper bound on -log p(x_0)."""
        return self.prior + self.steps.sum(dim=0)

    @property
    def decoder(self):
        """L_0 per example, (B,) nats."""
        return self.steps[0]

    @property
    def diffusion(self):
        """sum_{t=2..T} L_{t-1} per example, (B,) nats."""
        return self.steps[1:].sum(dim=0)


@torch.no_grad()
def bound_terms(sched, model, x0, prediction="eps", var="fixed_small", decoder="gaussian",
                generator=None, *, progress=False, levels=256, variances=None):
    """Every term of the bound for each example, one x_t ~ q(x_t | x_0) per example and step.

    Unlike the training loss (one random t per example) this visits all t = 1..T, so it is the
    estimate to report. decoder and levels choose L_0 (see `likelihood.vlb_term`). Returns BoundTerms
    (float64, nats). variances: the (T + 1,) per-t variances for var="optimal".
    """
    from .reverse import check_variance
    check_data("x0", x0)
    check_variance(var, variances)
    steps = torch.empty(sched.T, x0.shape[0], dtype=torch.float64)
    ts = progress_bar(range(1, sched.T + 1), progress, "bound over t")
    device = model_device(model)
    x0 = x0.cpu()
    for t in ts:
        # eps on the CPU from the generator (the same draws on every device); the network runs on its device,
        # the bound's float64 arithmetic on the CPU (MPS has no float64)
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        t_batch = torch.full((x0.shape[0],), t, dtype=torch.int64)
        xt = q_sample(sched, x0, t_batch, eps)
        step = model_step(sched, model, xt.to(device), t_batch.to(device), prediction, var, variances)
        steps[t - 1] = vlb_term(sched, x0, xt, t_batch, step.mean.cpu(), step.log_var.cpu(), decoder, levels)
    return BoundTerms(prior=prior_kl(sched, x0), steps=steps)


def gaussian_data_denoiser(sched, data_var):
    """The exact eps-predicting model for data x_0 ~ N(0, data_var I) (t integer, or float: `alpha_bar_at`).

    q(x_t) = N(0, (alpha_bar_t s^2 + 1 - alpha_bar_t) I), and E[x_0 | x_t] is linear in x_t:
    E[x_0 | x_t] = sqrt(alpha_bar_t) s^2 / (alpha_bar_t s^2 + 1 - alpha_bar_t) x_t;
    the model returns the matching E[eps | x_t] = x_t (1 - alpha_bar_t) ^ 0.5 / (alpha_bar_t s^2 + 1 - alpha_bar_t).
    """
    def model(xt, t):
        # integer t indexes the schedule; float t (the probability-flow ODE) interpolates it
        ab = alpha_bar_at(sched, t) if torch.is_tensor(t) and t.is_floating_point() else sched.alpha_bar[t]
        alpha_bar_t = ab.reshape(-1, *([1] * (xt.ndim - 1))).to(xt.dtype)
        return (1 - alpha_bar_t).sqrt() / (alpha_bar_t * data_var + 1 - alpha_bar_t) * xt

    return model


def gaussian_optimal_variance(sched, data_var):
    """The optimal reverse variances for data N(0, data_var I) and its exact denoiser, float64 (T + 1,).

    sigma_t^2 = beta_tilde_t + c_t^2 r_t with r_t = Var(x_0 | x_t) (see `gaussian_bound_exact`): the
    closed form of what `optimal_variance.optimal_variance` estimates by sampling [Bao22]. Slot 0 is padding (1).
    """
    alpha_bar = sched.alpha_bar
    r = data_var * (1 - alpha_bar) / (alpha_bar * data_var + 1 - alpha_bar)
    out = sched.beta_tilde + sched.posterior_coef_x0 ** 2 * r
    out[0] = 1.0
    return out


def gaussian_entropy(data_var, num_dims):
    """Differential entropy of N(0, data_var I) in num_dims dimensions, in nats: D/2 log(2 pi e s^2)."""
    return 0.5 * num_dims * math.log(2 * math.pi * math.e * data_var)


def gaussian_bound_exact(sched, data_var, num_dims, var="fixed_small"):
    """The expected bound terms for data x_0 ~ N(0, data_var I) and its exact denoiser, in closed form.

    With s^2 = data_var, r_t = Var(x_0 | x_t) = s^2 (1 - alpha_bar_t) / (alpha_bar_t s^2 + 1 - alpha_bar_t),
    c_t the x_0 coefficient of mu_tilde_t [Ho20, Eq. 7] and sigma_t^2 the reverse variance of `var`
    ("optimal": sigma_t^2 = beta_tilde_t + c_t^2 r_t, and r_1 at t = 1 [Bao22]), each term is num_dims times
        E[L_T]     = 1/2 (alpha_bar_T s^2 - alpha_bar_T - log(1 - alpha_bar_T))
        E[L_{t-1}] = 1/2 (log(sigma_t^2 / beta_tilde_t) + (beta_tilde_t + c_t^2 r_t) / sigma_t^2 - 1),  t >= 2
        E[L_0]     = 1/2 (log(2 pi sigma_1^2) + r_1 / sigma_1^2)
    These are the expectations that `bound_terms(sched, gaussian_data_denoiser(sched, data_var), x0)`
    estimates by sampling. Returns BoundTerms for one "example": prior (1,), steps (T, 1), in nats.
    """
    from .reverse import reverse_variance

    if not (math.isfinite(data_var) and data_var > 0):
        raise ValueError(f"data_var must be a positive finite variance, got {data_var!r}")
    if var not in ("fixed_small", "fixed_large", "optimal"):
        raise ValueError("the exact bound needs a variance that does not depend on a network: "
                         f"'fixed_small', 'fixed_large' or 'optimal', got {var!r}")
    t = torch.arange(1, sched.T + 1)
    alpha_bar = sched.alpha_bar[t]
    r = data_var * (1 - alpha_bar) / (alpha_bar * data_var + 1 - alpha_bar)
    variances = gaussian_optimal_variance(sched, data_var) if var == "optimal" else None
    variance, log_var = reverse_variance(sched, t, torch.zeros(sched.T, 1, dtype=torch.float64), var,
                                         variances=variances)
    variance, log_var = variance[:, 0], log_var[:, 0]
    # t >= 2 only: beta_tilde_1 = 0, and the term at t = 1 is the decoder L_0, not a KL
    beta_tilde, c = sched.beta_tilde[t][1:], sched.posterior_coef_x0[t][1:]
    kl = 0.5 * (log_var[1:] - beta_tilde.log() + (beta_tilde + c ** 2 * r[1:]) / variance[1:] - 1)
    decoder = 0.5 * (math.log(2 * math.pi) + log_var[:1] + r[:1] / variance[:1])
    alpha_bar_T = sched.alpha_bar[-1]
    prior = 0.5 * (alpha_bar_T * data_var - alpha_bar_T - torch.log1p(-alpha_bar_T))
    steps = num_dims * torch.cat([decoder, kl])
    return BoundTerms(prior=(num_dims * prior).reshape(1), steps=steps.reshape(sched.T, 1))
