"""The 2-D swiss roll from scikit-learn, and the fixed affine map that scales it for diffusion.

scikit-learn's `make_swiss_roll` draws tau ~ Uniform[1.5 pi, 4.5 pi], puts the point
(tau cos tau, y, tau sin tau) on a 3-D roll and adds N(0, noise^2) to each coordinate. We keep the
(x, z) plane, so in 2-D

    x_0 = c(tau) + noise * n,   c(tau) = (tau cos tau, tau sin tau),   n ~ N(0, I_2)

exactly: a distribution whose density is a 1-D integral over tau (used for the entropy floor).

Diffusion schedules were designed for data of unit scale, while the raw roll spans about -10..13.
`swiss_roll_scaling(noise)` is the affine map (`scaling.AffineScaling`) to zero mean and unit variance per coordinate on
average, computed from the distribution itself (not from a sample), so it is the same in every run.
"""

import math
import numpy as np
import torch
from sklearn.datasets import make_swiss_roll

from .scaling import AffineScaling

TAU_RANGE = (1.5 * math.pi, 4.5 * math.pi)


def roll_curve(tau):
    """c(tau) = (tau cos tau, tau sin tau): the noiseless roll, (N,) -> (N, 2)."""
    tau = torch.as_tensor(tau, dtype=torch.float64)
    return torch.stack([tau * torch.cos(tau), tau * torch.sin(tau)], dim=-1)


def swiss_roll(n, noise=0.5, seed=0, return_tau=False):
    """n points of the 2-D swiss roll in raw coordinates, a float64 (n, 2) tensor.

    Same seed, same points (scikit-learn's generator). With return_tau, also the roll parameter (n,).
    """
    if int(n) < 1:
        raise ValueError(f"n must be a positive number of points, got {n!r}")
    if not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a finite standard deviation >= 0, got {noise!r}")
    points, tau = make_swiss_roll(int(n), noise=noise, random_state=seed)
    x0 = torch.from_numpy(np.ascontiguousarray(points[:, [0, 2]]))
    return (x0, torch.from_numpy(tau)) if return_tau else x0


def swiss_roll_scaling(noise=0.5, num_nodes=200_001):
    """The exact mean and average per-coordinate std of the 2-D swiss roll, as an AffineScaling.

    Moments of c(tau) by the trapezoidal rule over tau; the noise adds noise^2 to each variance.
    """
    tau = torch.linspace(*TAU_RANGE, num_nodes, dtype=torch.float64)
    c = roll_curve(tau)
    length = TAU_RANGE[1] - TAU_RANGE[0]
    mean = torch.trapezoid(c, tau, dim=0) / length
    second = torch.trapezoid(c ** 2, tau, dim=0) / length
    var = second - mean ** 2 + noise ** 2
    return AffineScaling(shift=tuple(mean.tolist()), scale=float(var.mean().sqrt()))
