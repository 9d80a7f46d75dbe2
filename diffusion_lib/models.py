"""Networks for the reverse process: a sinusoidal timestep embedding and an MLP for 2-D points.

Contents: `timestep_embedding`, `MLP`.

The library needs only a callable `model(xt, t)` (see `reverse.model_step`): xt (B, D) and t an int64
(B,) tensor in 1..T. It returns the prediction (B, D) of eps, x0, mu or v, or the pair (prediction, r)
when the reverse variance is learned, r the interpolation value of [ND21, Eq. 15] (their v; `var_interp`):

    log sigma_t^2 = r log beta_t + (1 - r) log beta_tilde_t

The MLP here is one such callable; any other (a closure, a lambda, a bigger network) works too.
References: [Ho20, Sec. 4] (sinusoidal embedding from the Transformer [Va17]); [ND21, Sec. 3.1].
"""

import math

import torch
from torch import nn

from .reverse import interpolation_from_raw, zero_variance_head_


def timestep_embedding(t, dim, max_period=10_000.0):
    """The Transformer's sinusoidal embedding of integer timesteps [Va17, Sec. 3.5; Ho20, Sec. 4].

    emb[:, i] = cos(t w_i), emb[:, dim/2 + i] = sin(t w_i), w_i = max_period^(-i / (dim / 2)).
    Args: t (B,) integer or float timesteps; dim an even embedding size.
    Returns: (B, dim) float32.
    """
    if dim % 2:
        raise ValueError(f"the embedding size must be even, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.to(torch.float32)[:, None] * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class MLP(nn.Module):
    """An MLP that maps (x_t, t) to the prediction, and to r when the variance is learned.

    h_0 = [x_t, emb(t)];  h_k = SiLU(W_k h_{k-1} + b_k + U_k emb(t));  out = W_out h_L
    The timestep embedding enters every layer so that even a deep net stays aware of t.
    With learn_var, a second head gives r = (raw + 1) / 2, unconstrained as in [ND21, Eq. 15], from a
    zero-initialised layer (`reverse.interpolation_from_raw`): an untrained net starts halfway between
    beta_tilde_t and beta_t on the log scale, as in improved-diffusion.

    Args: data_dim D; hidden a tuple of layer widths; emb_dim the timestep embedding size;
    learn_var whether to return (prediction, r).
    """

    def __init__(self, data_dim=2, hidden=(256, 256, 256), emb_dim=64, learn_var=False):
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        if not hidden or min(hidden) < 1:
            raise ValueError(f"hidden must be a non-empty tuple of positive widths, got {hidden!r}")
        self.data_dim, self.hidden, self.emb_dim, self.learn_var = data_dim, hidden, emb_dim, learn_var
        self.time_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU())
        widths = (data_dim + emb_dim,) + hidden
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.time_proj = nn.ModuleList(nn.Linear(emb_dim, b, bias=False) for b in hidden[1:])
        self.out = nn.Linear(hidden[-1], data_dim * (2 if learn_var else 1))
        if learn_var:
            zero_variance_head_(self.out, data_dim)
        self.act = nn.SiLU()

    def forward(self, xt, t):
        """xt (B, D) float, t (B,) int64 -> prediction (B, D), or (prediction, r) with learn_var."""
        emb = self.time_mlp(timestep_embedding(t, self.emb_dim))  # (B, emb_dim)
        h = self.act(self.layers[0](torch.cat([xt, emb], dim=1)))
        for layer, proj in zip(self.layers[1:], self.time_proj):
            h = self.act(layer(h) + proj(emb))
        out = self.out(h)
        if not self.learn_var:
            return out
        pred, raw_v = out.split(self.data_dim, dim=1)
        return pred, interpolation_from_raw(raw_v)
