"""Classifier-free guidance: one class-conditional network, steered towards its label at sampling time.

Contents: `Guided`, `guided`.

A network trained with the label replaced by a null label at rate p (`TrainConfig.label_drop`) learns both
the conditional eps(x_t, t, c) and the unconditional eps(x_t, t) = eps(x_t, t, null). Sampling with

    eps_w(x_t, t, c) = (1 + w) eps(x_t, t, c) - w eps(x_t, t)                          [HS22, Eq. 6]

follows the score of p(x_t | c) p(c | x_t)^w: w = 0 is the plain conditional model, larger w trades
diversity for samples the class is surer of. The weights sum to one, so mixing x_0-, v- or mu-predictions
the same way is the same as mixing eps (each is affine in eps at fixed x_t and t); a learned variance
keeps the conditional one. Both predictions come from one batched call of twice the size.
"""

import torch
from torch import nn


class Guided(nn.Module):
    """model(xt, t) for the samplers and the bound: the guided prediction of `net` for a fixed label."""

    def __init__(self, net, label, guidance=0.0):
        super().__init__()
        num_classes = getattr(net, "num_classes", None)
        if num_classes is None:
            raise ValueError("guidance needs a class-conditional network (train with --conditional)")
        if not (isinstance(guidance, (int, float)) and guidance >= 0):
            raise ValueError(f"guidance must be a weight w >= 0 (0: the plain conditional model), got {guidance!r}")
        label = torch.as_tensor(label, dtype=torch.int64)
        if label.ndim > 1 or (label < 0).any() or (label >= num_classes).any():
            raise ValueError(f"label must be a class 0..{num_classes - 1} (or a (n,) tensor of them), "
                             f"got {label.tolist()}")
        self.net, self.label, self.guidance, self.num_classes = net, label, float(guidance), num_classes

    def forward(self, xt, t):
        label = self.label.to(xt.device).expand(xt.shape[0]) if self.label.ndim == 0 else self.label.to(xt.device)
        if label.shape[0] != xt.shape[0]:
            raise ValueError(f"{label.shape[0]} labels for a batch of {xt.shape[0]}")
        if self.guidance == 0:
            return self.net(xt, t, label)
        null = torch.full_like(label, self.num_classes)
        out = self.net(torch.cat([xt, xt]), torch.cat([t, t]), torch.cat([label, null]))
        pred, var_interp = out if isinstance(out, tuple) else (out, None)
        cond, uncond = pred.chunk(2)
        mixed = (1 + self.guidance) * cond - self.guidance * uncond
        return mixed if var_interp is None else (mixed, var_interp.chunk(2)[0])


def guided(net, label, guidance=0.0):
    """The guided model for `label` (an int, or (n,) labels) with weight w = guidance [HS22, Eq. 6]."""
    return Guided(net, label, guidance)
