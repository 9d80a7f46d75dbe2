"""The training losses of a DDPM and the importance sampler of timesteps.

Contents: `LOSSES`, `HYBRID_LAMBDA`, `TimestepSampler`, `training_losses`.

Per example and per data dimension, with one t per example:
    "simple"  ||target - output||^2 / D, target the eps, x0, mu_tilde or v the net predicts [Ho20, Eq. 14; Sa22]
    "vlb"     T L_{t-1} / D: an unbiased estimate of sum_t L_{t-1} / D (L_0 at t = 1)       [Ho20, Eq. 5]
    "hybrid"  simple + lambda T L_{t-1} / D with the mean detached inside L_{t-1}, lambda = 0.001, so the
              bound trains only the variance                                            [ND21, Sec. 3.1]
improved-diffusion computes the bound term in bits per dimension and scales it by T / 1000 in the
hybrid; we keep nats, so our lambda T L / D equals theirs up to the factor ln 2.
Importance sampling for the bound draws t with p_t ~ sqrt(E[L_t^2]) over the last 10 terms seen at
each t and weights each term by 1 / (T p_t)                                               [ND21, Sec. 3.3]
"""

import torch

from .forward import q_sample
from .likelihood import vlb_term
from .posterior import PREDICTIONS, prediction_target
from .reverse import VARIANCES, p_mean_variance, split_output

LOSSES = ("simple", "vlb", "hybrid")
HYBRID_LAMBDA = 0.001  # [ND21, Sec. 3.1]


class TimestepSampler:
    """Draws t in 1..T: uniformly, or by importance p_t ~ sqrt(mean of the last `history` L_t^2) [ND21, Sec. 3.3].

    Uniform until every t has `history` terms; p_t is then mixed with `uniform_prob` of the uniform law
    (as improved-diffusion does) so no t is starved. `sample` returns (t, weights) with
    weights = 1 / (T p_t), so E[weights * f(t)] = mean_t f(t) for any f.
    """

    def __init__(self, T, importance=False, history=10, uniform_prob=0.001):
        self.T, self.importance, self.history, self.uniform_prob = T, importance, history, uniform_prob
        self.losses = torch.zeros(T + 1, history, dtype=torch.float64)  # ring buffer per t, slot 0 unused
        self.counts = torch.zeros(T + 1, dtype=torch.int64)

    def probs(self):
        """p_t for t = 1..T, float64 (T,)."""
        if not self.importance or (self.counts[1:] < self.history).any():
            return torch.full((self.T,), 1.0 / self.T, dtype=torch.float64)
        p = self.losses[1:].pow(2).mean(dim=1).sqrt()
        p = p / p.sum()
        return p * (1 - self.uniform_prob) + self.uniform_prob / self.T

    def sample(self, batch_size, generator=None):
        """(t (B,) int64 in 1..T, weights (B,) float64 = 1 / (T p_t))."""
        p = self.probs()
        t = torch.multinomial(p, batch_size, replacement=True, generator=generator) + 1
        return t, 1.0 / (self.T * p[t - 1])

    def update(self, t, losses):
        """Record per-example bound terms `losses` (B,) drawn at timesteps t (B,), in batch order.

        The same as writing them one by one into each t's ring buffer, without a Python loop: within
        the batch, the k-th draw of a step goes to slot (count + k) mod history, and only the last
        `history` draws of a step can survive, so only those are written.
        """
        t = torch.as_tensor(t, dtype=torch.int64).cpu()
        losses = torch.as_tensor(losses).detach().double().cpu()
        order = torch.sort(t, stable=True).indices
        t_sorted, loss_sorted = t[order], losses[order]
        n_t = torch.bincount(t_sorted, minlength=self.T + 1)
        first = torch.cumsum(n_t, 0) - n_t  # where each step's draws start in the sorted batch
        k = torch.arange(t_sorted.shape[0]) - first[t_sorted]  # the k-th draw of its step
        keep = k >= n_t[t_sorted] - self.history
        slot = (self.counts[t_sorted] + k) % self.history
        self.losses[t_sorted[keep], slot[keep]] = loss_sorted[keep]
        self.counts += n_t


def training_losses(sched, model, x0, t, eps, loss="simple", prediction="eps", var="fixed_small"):
    """Per-example losses (B,) at timesteps t for one of LOSSES, and the bound terms (B,) in nats.

    The bound term L_{t-1} (B,) is returned for importance sampling (None for the simple loss).
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {LOSSES}")
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}")
    if var not in VARIANCES:
        raise ValueError(f"unknown var {var!r}; choose one of {VARIANCES}")
    xt = q_sample(sched, x0, t, eps)
    out, var_interp = split_output(model(xt, t), var)
    D = x0[0].numel()
    if loss in ("simple", "hybrid"):
        target = prediction_target(sched, x0, xt, t, eps, prediction)
        simple = (target - out).pow(2).reshape(x0.shape[0], -1).mean(dim=1)
        if loss == "simple":
            return simple, None
    # the hybrid's bound term sees a detached mean, so it trains only the variance [ND21, Sec. 3.1]
    out_for_bound = out.detach() if loss == "hybrid" else out
    step = p_mean_variance(sched, xt, t, out_for_bound, prediction, var, var_interp)
    term = vlb_term(sched, x0, xt, t, step.mean, step.log_var)  # (B,) nats, float64
    bound = sched.T * term / D
    if loss == "vlb":
        return bound, term
    return simple + HYBRID_LAMBDA * bound, term
