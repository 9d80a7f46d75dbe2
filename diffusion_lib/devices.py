"""Where the networks run: the CPU, or a GPU when there is one.

Contents: `DEVICES`, `resolve_device`, `model_device`.

Everything random is drawn on the CPU from seeded `torch.Generator`s and then moved, so a seed gives the
same noise on every device (the network's arithmetic still differs slightly between devices). The schedule
arrays stay float64 on the CPU and are gathered there (`indexing.gather`); only the gathered values move,
in the data's dtype, because Apple's MPS has no float64.
"""

import torch

DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name="auto"):
    """The torch.device for a name in DEVICES: "auto" is CUDA when available, else the CPU.

    Raises ValueError (one line) for an unknown name or a device this machine does not have.
    """
    if isinstance(name, torch.device):
        name = name.type
    if name not in DEVICES:
        raise ValueError(f"unknown device {name!r}; choose one of {DEVICES}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but this torch sees no CUDA GPU: use 'auto' or 'cpu'")
    if name == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' was asked for, but this machine has no Apple MPS backend: use 'auto' or 'cpu'")
    return torch.device(name)


def model_device(model):
    """The device of a model's parameters (an nn.Module), or the CPU for a plain callable or a parameter-free model."""
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            return p.device
    return torch.device("cpu")
