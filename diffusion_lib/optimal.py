"""The Bayes-optimal denoiser of the swiss roll, the floor of the simple loss, and the memorising denoiser.

Contents: `optimal_x0`, `optimal_eps`, `optimal_denoiser`, `IrreducibleLoss`, `irreducible_simple_loss`,
`memorising_x0`, `memorising_denoiser`.

In model coordinates (x_0 = (raw - shift) / scale, see `roll`) the roll given tau is
x_0 | tau ~ N(m(tau), s^2 I) with m = (c(tau) - shift) / scale, s = noise / scale, so [Ho20, Eq. 4]

    x_t | tau ~ N(sqrt(ab) m(tau), v_t I),   v_t = ab s^2 + 1 - ab,   ab = alpha_bar_t
    E[x_0 | x_t, tau] = m + sqrt(ab) s^2 / v_t (x_t - sqrt(ab) m)        (Gaussian conditioning)
    E[x_0 | x_t] = int w(tau | x_t) E[x_0 | x_t, tau] dtau,  w ∝ N(x_t; sqrt(ab) m(tau), v_t I)

with tau uniform on TAU_RANGE. The integral uses the trapezoidal nodes of `roll_density` (softmax of the
log-likelihoods plus log quadrature weights), float64, chunked over the batch. E[eps | x_t] follows
from E[x_0 | x_t] by the linear map of [Ho20, Eq. 4] (`posterior.eps_from_x0`). The same weights give
the posterior covariance, and so the floor of the simple loss without squaring a Monte Carlo residual:

    Cov(x_0 | x_t) = s^2 (1 - ab) / v_t I + ((1 - ab) / v_t)^2 Cov_w(m),   Cov(eps | x_t) = ab / (1 - ab) Cov(x_0 | x_t)

The memorising denoiser is the same posterior mean when the data distribution is the empirical one of
a finite training set: a softmax-weighted average of the training points.
"""

import math
from dataclasses import dataclass

import torch

from .roll import TAU_RANGE, roll_curve
from .roll_density import CHUNK, NUM_NODES, _nodes
from .exact_likelihood import alpha_bar_at
from .indexing import check_data, check_t, gather
from .posterior import eps_from_x0


def _roll_nodes(scaling, num_nodes):
    """Quadrature nodes m_k = m(tau_k) in model coordinates (K, 2) and log trapezoid weights (K,)."""
    _, curve = _nodes(num_nodes)
    m = scaling.to_model(curve)
    log_w = torch.zeros(num_nodes, dtype=torch.float64)
    log_w[[0, -1]] = math.log(0.5)  # trapezoidal end weights (the common spacing h cancels in the softmax)
    return m, log_w


def _mixture_posterior(xt, alpha_bar_t, centres, log_w, s2, spread=False):
    """E[x_0 | x_t] when x_0 ~ sum_k w_k N(centres_k, s2 I): float64 (B, D); with spread, also (B,).

    xt (B, D) float64; alpha_bar_t (B, 1) or 0-d; centres (K, D); log_w (K,) unnormalised log weights.
    spread is tr Cov(centre | x_t) = sum_k w_k(x_t) |c_k|^2 - |E[centre | x_t]|^2, the posterior
    uncertainty about which component (which point of the roll) x_t came from.
    """
    out = torch.empty_like(xt)
    tr_cov = torch.empty(xt.shape[0], dtype=xt.dtype) if spread else None
    ab = alpha_bar_t.expand(xt.shape[0], 1) if alpha_bar_t.ndim else alpha_bar_t.reshape(1, 1).expand(xt.shape[0], 1)
    sq_norm = centres.pow(2).sum(dim=1)  # (K,)
    for start in range(0, xt.shape[0], CHUNK):
        x, a = xt[start:start + CHUNK], ab[start:start + CHUNK]
        v = a * s2 + 1 - a  # (b, 1) variance of x_t given the component
        # log N(x_t; sqrt(ab) c_k, v I) up to terms constant in k; no |x_t|^2, so no cancellation
        logits = log_w + (2 * a.sqrt() * (x @ centres.T) - a * sq_norm) / (2 * v)  # (b, K)
        w = torch.softmax(logits, dim=1)
        mean_centre = w @ centres  # (b, D) posterior mean of the centre
        gain = a.sqrt() * s2 / v
        out[start:start + CHUNK] = mean_centre + gain * (x - a.sqrt() * mean_centre)
        if spread:
            # centres are O(1) in model coordinates, so the difference loses only ~1e-16 absolute
            tr_cov[start:start + CHUNK] = (w @ sq_norm - mean_centre.pow(2).sum(dim=1)).clamp(min=0)
    return (out, tr_cov) if spread else out


def _mixture_x0(xt, alpha_bar_t, centres, log_w, s2):
    """E[x_0 | x_t] for the Gaussian mixture of `_mixture_posterior`: float64 (B, D)."""
    return _mixture_posterior(xt, alpha_bar_t, centres, log_w, s2)


def _prepare(xt, t, sched):
    check_data("xt", xt)
    if xt.ndim != 2:
        raise ValueError(f"xt must be points of shape (B, D), got shape {tuple(xt.shape)}")
    xt64 = xt.double()
    if torch.is_tensor(t) and t.is_floating_point():
        # continuous t in [0, T] (the probability-flow ODE): alpha_bar interpolated in log-SNR
        alpha_bar_t = alpha_bar_at(sched, t)
        return xt64, t, alpha_bar_t.reshape(-1, 1) if alpha_bar_t.ndim else alpha_bar_t
    t = check_t(t, sched.T, xt.shape[0])
    return xt64, t, gather(sched.alpha_bar, t, xt64)


def optimal_x0(xt, t, sched, scaling, noise=0.5, num_nodes=NUM_NODES):
    """E[x_0 | x_t] for the swiss roll, in model coordinates: float64 (B, 2).

    Args: xt (B, 2) model coordinates; t int or (B,) in 1..T; scaling the AffineScaling of the data;
    noise the roll's noise std in raw coordinates (0 allowed: then x_0 lies on the curve).
    """
    if not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a finite standard deviation >= 0, got {noise!r}")
    xt64, t, alpha_bar_t = _prepare(xt, t, sched)
    m, log_w = _roll_nodes(scaling, num_nodes)
    return _mixture_x0(xt64, alpha_bar_t, m, log_w, (noise / scaling.scale) ** 2)


def optimal_eps(xt, t, sched, scaling, noise=0.5, num_nodes=NUM_NODES):
    """E[eps | x_t] = (x_t - sqrt(alpha_bar_t) E[x_0 | x_t]) / sqrt(1 - alpha_bar_t): float64 (B, 2)."""
    x0 = optimal_x0(xt, t, sched, scaling, noise, num_nodes)
    return _eps(sched, xt.double(), t, x0)


def _eps(sched, xt64, t, x0):
    """eps from x_0 [Ho20, Eq. 4] at integer t (`posterior.eps_from_x0`) or continuous t (`alpha_bar_at`)."""
    if torch.is_tensor(t) and t.is_floating_point():
        alpha_bar_t = alpha_bar_at(sched, t)
        alpha_bar_t = alpha_bar_t.reshape(-1, *[1] * (xt64.ndim - 1)) if alpha_bar_t.ndim else alpha_bar_t
        return (xt64 - alpha_bar_t.sqrt() * x0) / (1 - alpha_bar_t).sqrt()
    return eps_from_x0(sched, xt64, t, x0)


def optimal_denoiser(sched, scaling, noise=0.5, num_nodes=NUM_NODES):
    """The Bayes-optimal eps-predicting model(xt, t) for the swiss roll (output in xt's dtype).

    Use it wherever a trained network goes: `dl.sample(sched, model, n)`, `dl.bound_terms(...)`.
    Each call costs B x num_nodes; the trapezoid error is O(h^2) (the ends of TAU_RANGE): against 32001
    nodes the largest eps error is ~1e-5 at the default 8001 and ~5e-4 at num_nodes=2001, 8x faster.
    """
    m, log_w = _roll_nodes(scaling, num_nodes)
    s2 = (noise / scaling.scale) ** 2

    def model(xt, t):
        xt64, t, alpha_bar_t = _prepare(xt, t, sched)
        x0 = _mixture_x0(xt64, alpha_bar_t, m, log_w, s2)
        return _eps(sched, xt64, t, x0).to(xt.dtype)

    return model


@dataclass
class IrreducibleLoss:
    """min over all eps_theta of the simple loss at each t, estimated by Monte Carlo."""

    t: torch.Tensor  # (N,) int64 timesteps
    loss: torch.Tensor  # (N,) float64 E||eps - E[eps | x_t]||^2 / D, per dimension like `training_losses`
    stderr: torch.Tensor  # (N,) float64 standard error of each estimate


def irreducible_simple_loss(sched, scaling, noise=0.5, ts=None, n=2000, generator=None, num_nodes=NUM_NODES):
    """E||eps - E[eps | x_t]||^2 / D at each t in ts: the floor of the simple loss [Ho20, Eq. 14].

    Per dimension (the mean over the D = 2 coordinates, as `losses.training_losses` reports it), so a
    network's per-t simple loss minus this is its excess. The floor is E[tr Cov(eps | x_t)] / D, and
    given x_t that covariance is known in closed form (module docstring), so each t averages

        ab s^2 / v_t + ab (1 - ab) / v_t^2 tr Cov(m(tau) | x_t) / D      (ab = alpha_bar_t, s = noise / scale)

    over n fresh x_t drawn from `generator` (Rao-Blackwellised: averaging the squared residual
    |eps - E[eps | x_t]|^2 instead adds the spread of eps given x_t to every draw; even with |eps|^2 as a
    control variate that had ~3x the variance at mid t and ~1e4x near t = 1).
    The first term is the floor if tau were known; the second, >= 0, is the uncertainty about where on
    the roll x_0 lies. It grows once the noise reaches the spacing of the roll's arms, so the floor is
    not monotone in t. Bounds: ab s^2 / v_t <= loss <= ab (the best linear denoiser of unit-variance
    data); the floor tends to 1 as t -> 0 and to 0 at t = T (x_T is almost eps).

    Args: ts timesteps in 1..T (default all of them: T x n x num_nodes work, so pass ~20 for a curve);
    n draws per t; generator a torch.Generator (same state, same numbers). Returns IrreducibleLoss.
    """
    if not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a finite standard deviation >= 0, got {noise!r}")
    ts = torch.arange(1, sched.T + 1) if ts is None else check_t(torch.as_tensor(ts).reshape(-1), sched.T)
    m, log_w = _roll_nodes(scaling, num_nodes)
    s2 = (noise / scaling.scale) ** 2
    loss, stderr = torch.empty(len(ts), dtype=torch.float64), torch.empty(len(ts), dtype=torch.float64)
    for i, t in enumerate(ts.tolist()):
        tau = torch.rand(n, generator=generator, dtype=torch.float64) * (TAU_RANGE[1] - TAU_RANGE[0]) + TAU_RANGE[0]
        raw = roll_curve(tau) + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)
        eps = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        ab = float(sched.alpha_bar[t])
        xt = math.sqrt(ab) * scaling.to_model(raw) + math.sqrt(1 - ab) * eps
        _, spread = _mixture_posterior(xt, torch.tensor(ab, dtype=torch.float64), m, log_w, s2, spread=True)
        v = ab * s2 + 1 - ab
        per_example = ab * s2 / v + ab * (1 - ab) / v ** 2 * spread / xt.shape[1]
        loss[i], stderr[i] = per_example.mean(), per_example.std() / math.sqrt(n)
    return IrreducibleLoss(t=ts.clone(), loss=loss, stderr=stderr)


def memorising_x0(xt, t, sched, train_x0):
    """E[x_0 | x_t] when x_0 is uniform over the training examples train_x0: float64, of xt's shape.

    A softmax over i of -|x_t - sqrt(ab) x_0^i|^2 / (2 (1 - ab)) weights the training examples; as
    t -> 1 it picks the training example nearest to x_t / sqrt(ab), so sampling reproduces the training set.
    Points (B, D) against train_x0 (N, D), or images (B, C, H, W) against (N, C, H, W): any shape, flattened.
    """
    check_data("train_x0", train_x0)
    check_data("xt", xt)
    if xt.ndim < 2 or xt.shape[1:] != train_x0.shape[1:]:
        raise ValueError(f"xt (B, ...) and train_x0 (N, ...) need the same shape per example, got "
                         f"{tuple(xt.shape)} and {tuple(train_x0.shape)}")
    xt64, t, alpha_bar_t = _prepare(xt.reshape(xt.shape[0], -1), t, sched)
    train = train_x0.double().reshape(train_x0.shape[0], -1)
    log_w = torch.zeros(train.shape[0], dtype=torch.float64)
    return _mixture_x0(xt64, alpha_bar_t, train, log_w, 0.0).reshape(xt.shape)


def memorising_denoiser(sched, train_x0):
    """The ideal eps-predicting model(xt, t) for the empirical distribution of train_x0 (N, ...), model
    coordinates: points (N, D) or images (N, C, H, W)."""
    check_data("train_x0", train_x0)
    train = train_x0.double().detach().clone()

    def model(xt, t):
        x0 = memorising_x0(xt, t, sched, train)
        return _eps(sched, xt.double(), t, x0).to(xt.dtype)

    return model
