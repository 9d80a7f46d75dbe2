"""The variational bound of a model, term by term over every t, and the exact Gaussian case.

A model is any callable `model(xt, t)` with xt (B, ...) and t an int64 (B,) tensor in 1..T. It returns
its prediction (B, ...) of eps, x0 or mu, or a tuple (prediction, v) when the variance is learned.

    -log p(x_0) <= E_q[L_T + sum_{t>=2} L_{t-1} + L_0]                               [Ho20, Eq. 5]
"""

import math
from dataclasses import dataclass

import torch

from .forward import q_sample
from .indexing import check_data
from .likelihood import prior_kl, vlb_term
from .reverse import p_mean_variance


def model_step(sched, model, xt, t, prediction="eps", var_type="fixed_small"):
    """Call the model at (x_t, t) and turn its output into the reverse step p_theta(x_{t-1} | x_t)."""
    if isinstance(t, int):
        t = torch.full((xt.shape[0],), t, dtype=torch.int64, device=xt.device)
    out = model(xt, t)
    v = None
    if var_type == "learned":
        if not isinstance(out, tuple):
            raise ValueError('var_type="learned" needs a model that returns (prediction, v)')
        out, v = out
    elif isinstance(out, tuple):
        out = out[0]
    return p_mean_variance(sched, out, xt, t, prediction, var_type, v)


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
def bound_terms(sched, model, x0, prediction="eps", var_type="fixed_small", decoder="gaussian",
                generator=None, progress=False):
    """Every term of the bound for each example, one x_t ~ q(x_t | x_0) per example and step.

    Unlike the training loss (one random t per example) this visits all t = 1..T, so it is the
    estimate to report. Returns BoundTerms (float64, nats).
    """
    check_data("x0", x0)
    steps = torch.empty(sched.T, x0.shape[0], dtype=torch.float64)
    ts = range(1, sched.T + 1)
    if progress:
        from tqdm.auto import tqdm

        ts = tqdm(ts, desc="bound over t", leave=False)
    for t in ts:
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        t_batch = torch.full((x0.shape[0],), t, dtype=torch.int64)
        xt = q_sample(sched, x0, t_batch, eps)
        step = model_step(sched, model, xt, t_batch, prediction, var_type)
        steps[t - 1] = vlb_term(sched, x0, xt, t_batch, step.mean, step.log_var, decoder)
    return BoundTerms(prior=prior_kl(sched, x0), steps=steps)


def gaussian_data_denoiser(sched, data_var):
    """The exact eps-predicting model for data x_0 ~ N(0, data_var I).

    q(x_t) = N(0, (alpha_bar_t s^2 + 1 - alpha_bar_t) I), and E[x_0 | x_t] is linear in x_t:
    E[x_0 | x_t] = sqrt(alpha_bar_t) s^2 / (alpha_bar_t s^2 + 1 - alpha_bar_t) x_t;
    the model returns the matching E[eps | x_t] = x_t (1 - alpha_bar_t) ^ 0.5 / (alpha_bar_t s^2 + 1 - alpha_bar_t).
    """
    def model(xt, t):
        alpha_bar_t = sched.alpha_bar[t].reshape(-1, *([1] * (xt.ndim - 1))).to(xt.dtype)
        return (1 - alpha_bar_t).sqrt() / (alpha_bar_t * data_var + 1 - alpha_bar_t) * xt

    return model


def gaussian_entropy(data_var, num_dims):
    """Differential entropy of N(0, data_var I) in num_dims dimensions, in nats: D/2 log(2 pi e s^2)."""
    return 0.5 * num_dims * math.log(2 * math.pi * math.e * data_var)

