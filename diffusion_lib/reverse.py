"""The reverse process p_theta(x_{t-1} | x_t) = N(mu_theta(x_t, t), sigma_t^2 I): its mean and variance.

The mean comes from the network's prediction (eps, x0 or mu; see `posterior.convert_prediction`).
The variance is one of VARIANCES:
    "fixed_large"  sigma_t^2 = beta_t                 (the upper bound on the reverse variance) [Ho20, Sec. 3.2]
    "fixed_small"  sigma_t^2 = beta_tilde_t           (the lower bound; exact when x_0 is a point)
    "learned"      log sigma_t^2 = r log beta_t + (1 - r) log beta_tilde_t, r from the network  [ND21, Eq. 15]
    "optimal"      sigma_t^2 = beta_tilde_t + E||mu_tilde_t - mu_theta||^2 / D, the per-t scalar that
                   minimises each term of the bound for the given mean (estimated from data by
                   `optimal_variance.optimal_variance`, passed as `variances`)           [Bao22, Bao22b]
beta_tilde_1 = 0, so "fixed_small" and "learned" use the clipped log beta_tilde (beta_tilde_2 at t = 1);
"fixed_large" uses beta_1 at t = 1 (improved-diffusion uses beta_tilde_2 there too).

[ND21] calls the learned interpolation value v; here it is `var_interp` (r in formulas), because v is the
velocity that a v-predicting network outputs [Sa22] (`posterior.PREDICTIONS`).
`model_step` calls a network and returns its reverse step; `split_output` separates a learned-variance
network's (prediction, var_interp).
"""

from dataclasses import dataclass

import torch

from .indexing import check_t, gather
from .posterior import convert_prediction

VARIANCES = ("fixed_small", "fixed_large", "learned", "optimal")


def check_variance(var, variances=None):
    """Raise a one-line ValueError unless var is one of VARIANCES with what it needs."""
    if var not in VARIANCES:
        raise ValueError(f"unknown var {var!r}; choose one of {VARIANCES}")
    if var == "optimal" and variances is None:
        raise ValueError('var="optimal" needs variances=dl.optimal_variance(sched, model, x0).var '
                         "(the per-t variances estimated from data)")


def reverse_variance(sched, t, like, var="fixed_small", var_interp=None, variances=None):
    """(var, log_var) of p_theta(x_{t-1} | x_t), broadcastable to `like` (B, ...).

    var_interp (B, ...) is the network's interpolation value r, required for var="learned" [ND21, Eq. 15];
    the paper leaves it unconstrained (r in [0, 1] stays between beta_tilde_t and beta_t).
    variances, a float64 (T + 1,) tensor of sigma_t^2 (slot 0 unused), is required for "optimal".
    """
    check_variance(var, variances)
    t = check_t(t, sched.T, like.shape[0])
    if var == "optimal":
        variances = torch.as_tensor(variances, dtype=torch.float64)
        if variances.shape != (sched.T + 1,) or not (variances[1:] > 0).all():
            raise ValueError(f"variances must be a positive (T + 1,) = ({sched.T + 1},) tensor, "
                             f"got shape {tuple(variances.shape)}")
        log_var = gather(variances.log(), t, like)
        return log_var.exp(), log_var
    log_small = gather(sched.log_beta_tilde_clipped, t, like)
    log_large = gather(sched.beta.log(), t, like)
    if var == "fixed_small":
        log_var = log_small
    elif var == "fixed_large":
        log_var = log_large
    else:
        if var_interp is None:
            raise ValueError('var="learned" needs the network\'s interpolation value var_interp')
        log_var = var_interp * log_large + (1 - var_interp) * log_small
    return log_var.exp(), log_var


def interpolation_from_raw(raw):
    """The network's interpolation value r = (raw + 1) / 2, unconstrained [ND21, Eq. 15] (their v).

    As in improved-diffusion, the layer that outputs raw starts at zero (`zero_variance_head_`), so an
    untrained network starts halfway between log beta_tilde_t and log beta_t; r may then leave [0, 1].
    """
    return (raw + 1) / 2


def zero_variance_head_(layer, channels):
    """Zero the weights and bias of `layer` (a Linear or Conv) that produce raw r: its last `channels` outputs."""
    with torch.no_grad():
        layer.weight[channels:].zero_()
        layer.bias[channels:].zero_()
    return layer


@dataclass
class ReverseStep:
    """Mean and variance of p_theta(x_{t-1} | x_t), with the network's implied eps and x_0."""

    mean: torch.Tensor  # (B, ...) mu_theta(x_t, t)
    var: torch.Tensor  # broadcastable to (B, ...) sigma_t^2
    log_var: torch.Tensor  # log sigma_t^2, carried beside var for stable likelihoods
    eps: torch.Tensor  # (B, ...) predicted noise
    x0: torch.Tensor  # (B, ...) predicted clean data


def p_mean_variance(sched, xt, t, output, prediction="eps", var="fixed_small", var_interp=None, variances=None):
    """The Gaussian reverse step from a network output [Ho20, Eq. 1, 11; ND21, Eq. 15].

    Args (in the order of `posterior.convert_prediction`): xt (B, ...); t int or (B,) in 1..T; output (B, ...)
    the network's prediction of `prediction` (one of posterior.PREDICTIONS); var one of VARIANCES; var_interp
    the interpolation value when learned; variances the (T + 1,) per-t variances when "optimal".
    """
    eps, x0, mean = convert_prediction(sched, xt, t, output, prediction)
    variance, log_var = reverse_variance(sched, t, xt, var, var_interp, variances)
    return ReverseStep(mean=mean, var=variance, log_var=log_var, eps=eps, x0=x0)


def split_output(out, var):
    """(prediction, var_interp) from a model's output: var_interp only for var "learned", else None."""
    if var == "learned":
        if not isinstance(out, tuple):
            raise ValueError('var="learned" needs a model that returns (prediction, var_interp)')
        return out[0], out[1]
    return (out[0] if isinstance(out, tuple) else out), None


def model_step(sched, model, xt, t, prediction="eps", var="fixed_small", variances=None):
    """Call the model at (x_t, t) and turn its output into the reverse step p_theta(x_{t-1} | x_t).

    variances: the (T + 1,) per-t variances for var="optimal" (see `reverse.reverse_variance`).
    """
    if isinstance(t, int):
        t = torch.full((xt.shape[0],), t, dtype=torch.int64, device=xt.device)
    out, var_interp = split_output(model(xt, t), var)
    return p_mean_variance(sched, xt, t, out, prediction, var, var_interp, variances)
