"""The optimal reverse variance of a trained mean: one scalar sigma_t^2 per step, estimated from data.

Contents: `OptimalVariance`, `optimal_variance`.

For a reverse step N(mu_theta(x_t, t), sigma^2 I) the bound's term at step t >= 2 is, in expectation,
    E[L_{t-1}] = D/2 (log(sigma^2 / beta_tilde_t) + beta_tilde_t / sigma^2 - 1) + E||mu_tilde_t - mu_theta||^2 / (2 sigma^2)
and setting its derivative in sigma^2 to zero gives the minimiser
    sigma_t^2 = beta_tilde_t + E||mu_tilde_t - mu_theta||^2 / D
              = beta_tilde_t + c_t^2 E||x_0 - x0_theta(x_t)||^2 / D,   c_t = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t)
(Bao et al. 2022, Analytic-DPM [Bao22]; the form for an imperfect mean is their Extended Analytic-DPM
[Bao22b]). At t = 1, where beta_tilde_1 = 0 and c_1 = 1, the same formula gives the Gaussian decoder's
best variance E||x_0 - x0_theta(x_1)||^2 / D. A perfect mean leaves beta_tilde_t; the more the mean
misses, the more the variance must cover. The expectation is over q(x_0) q(x_t | x_0): a Monte Carlo
mean over data the bound is *not* evaluated on, so the bound stays a bound.
"""

import math
from dataclasses import dataclass

import torch

from .forward import q_sample
from .devices import model_device
from .files import progress_bar
from .indexing import check_data
from .likelihood import sum_flat
from .posterior import q_posterior
from .reverse import model_step


@dataclass
class OptimalVariance:
    """Per-t optimal variances, float64 (T + 1,) each (slot 0 is padding: var 1, se 0)."""

    var: torch.Tensor  # sigma_t^2 = beta_tilde_t + mse_t
    se: torch.Tensor  # standard error of var from the Monte Carlo mean
    mse: torch.Tensor  # E||mu_tilde_t - mu_theta||^2 / D: what the mean misses, per dimension

    @property
    def log_var(self):
        return self.var.log()


@torch.no_grad()
def optimal_variance(sched, model, x0, prediction="eps", generator=None, batch_size=None, progress=False):
    """Estimate the optimal per-t reverse variance of a model's mean from data x0 (N, ...) in model coordinates.

    For every t = 1..T, one x_t ~ q(x_t | x_0) per example; the model's output gives mu_theta and
    sigma_t^2 = beta_tilde_t + mean over examples of ||mu_tilde_t(x_t, x_0) - mu_theta(x_t)||^2 / D [Bao22].
    A learned-variance model's v is ignored. Use data the bound is not evaluated on (fresh roll points,
    training images). Returns OptimalVariance (float64), with the standard error of each variance.
    """
    check_data("x0", x0)
    if x0.shape[0] < 2:
        raise ValueError("optimal_variance needs at least 2 examples to estimate a mean and its standard error")
    T, n, D = sched.T, x0.shape[0], x0[0].numel()
    mse, se = torch.zeros(T + 1, dtype=torch.float64), torch.zeros(T + 1, dtype=torch.float64)
    device = model_device(model)
    chunks = x0.cpu().split(batch_size or n)  # drawn and scored on the CPU; only the network runs on its device
    ts = progress_bar(range(1, T + 1), progress, "optimal variance")
    for t in ts:
        errors = []
        for chunk in chunks:
            eps = torch.randn(chunk.shape, generator=generator, dtype=chunk.dtype)
            t_batch = torch.full((chunk.shape[0],), t, dtype=torch.int64)
            xt = q_sample(sched, chunk, t_batch, eps)
            step = model_step(sched, model, xt.to(device), t_batch.to(device), prediction, "fixed_small")
            true_mean, _ = q_posterior(sched, chunk.double(), xt.double(), t_batch)
            errors.append(sum_flat((true_mean - step.mean.cpu().double()) ** 2) / D)
        err = torch.cat(errors)
        mse[t], se[t] = err.mean(), err.std() / math.sqrt(n)
    var = sched.beta_tilde + mse
    var[0] = 1.0
    return OptimalVariance(var=var, se=se, mse=mse)
