"""The fixed affine map between a data set's raw coordinates and the coordinates the diffusion works in.

Contents: `AffineScaling`.

model = (data - shift) / scale with one scalar scale, so shapes are not distorted and densities change by a
constant Jacobian: every data set plug-in (`data_registry.DataSet.scaling`) returns one.
"""

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AffineScaling:
    """model = (data - shift) / scale, data = model * scale + shift, with one scalar scale.

    Densities transform with the Jacobian: log p_data(x) = log p_model(y) - D log(scale).
    """

    shift: tuple  # per-coordinate mean of the raw data
    scale: float  # one isotropic standard deviation, so shapes are not distorted

    def to_model(self, x):
        """Raw data coordinates -> the scaled coordinates the diffusion works in."""
        return (x - torch.as_tensor(self.shift, dtype=x.dtype)) / self.scale

    def to_data(self, y):
        """Scaled coordinates -> raw data coordinates."""
        return y * self.scale + torch.as_tensor(self.shift, dtype=y.dtype)

    def nll_to_data(self, nll_model, num_dims):
        """An NLL in nats measured in model coordinates, converted to raw data coordinates."""
        return nll_model + num_dims * math.log(self.scale)
