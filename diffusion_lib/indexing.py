"""Checking inputs and gathering schedule values at timesteps t, broadcast to any data shape.

`gather(values, t, x)` is the one place where a length-(T + 1) schedule array meets a batch:
it returns values[t] shaped (B, 1, ..., 1) so it broadcasts against points (B, D) and images
(B, C, H, W) alike. `t` is a Python int (the same step for the whole batch) or an int64 (B,) tensor,
always in the paper's range 1..T.
"""

import torch


def check_t(t, T, batch_size=None):
    """Validate timesteps t in 1..T and return them as an int64 tensor (0-d or (B,))."""
    if isinstance(t, bool):
        raise TypeError("t must be an int or an int64 tensor of timesteps, got a bool")
    if isinstance(t, int):
        t = torch.tensor(t, dtype=torch.int64)
    elif isinstance(t, torch.Tensor):
        if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
            raise TypeError(f"t must hold integer timesteps 1..T, got dtype {t.dtype}")
        if t.ndim > 1:
            raise ValueError(f"t must be an int or a 1-D (B,) tensor, got shape {tuple(t.shape)}")
        t = t.to(torch.int64)
    else:
        raise TypeError(f"t must be an int or an int64 tensor of timesteps, got {type(t).__name__}")
    t_host = t.cpu()  # read on the CPU: one small copy from a GPU, as any check of values needs
    if t.numel() and (t_host.min() < 1 or t_host.max() > T):
        raise ValueError(
            f"timesteps must lie in 1..T = 1..{T} (the paper's numbering; 0 is the data x_0), "
            f"got values in [{int(t_host.min())}, {int(t_host.max())}]")
    if batch_size is not None and t.ndim == 1 and t.shape[0] != batch_size:
        raise ValueError(f"t has {t.shape[0]} timesteps but the batch has {batch_size} examples")
    return t


def check_data(name, x, like=None):
    """Raise a clear error if x is not a finite floating (B, ...) tensor (shaped like `like`)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, ...), got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim < 1:
        raise ValueError(f"{name} must have a batch dimension (B, ...), got a scalar")
    if like is not None and x.shape != like.shape:
        raise ValueError(f"{name} has shape {tuple(x.shape)} but must match {tuple(like.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf values")


def gather(values, t, x):
    """values[t] broadcast to x: shape (B, 1, ..., 1) for a (B,) t, or a 0-d tensor for an int t.

    values is a float64 (T + 1,) schedule array, gathered where it lives (the CPU); only the gathered
    values move, already in x's dtype (MPS has no float64). The result has x's dtype and device.
    """
    out = values[t.to(values.device)].to(device=x.device, dtype=x.dtype)
    if out.ndim == 1:
        out = out.reshape(out.shape[0], *([1] * (x.ndim - 1)))
    return out
