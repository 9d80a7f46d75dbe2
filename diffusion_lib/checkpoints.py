"""Saving and loading a trained model with everything needed to use it again, safely.

Contents: `FORMAT_VERSION`, `CheckpointError`, `Checkpoint`, `save_checkpoint`, `load_checkpoint`.

A checkpoint holds the weights to sample from, the full TrainConfig (schedule, T, parameterisation,
variance, network sizes...), the data scaling, the schedule's betas and a format version. It is written
to a temporary file in the same folder and moved into place with os.replace, so a crash never leaves a
half-written checkpoint. It is read with torch.load(..., weights_only=True), which unpickles only
tensors and plain containers. Any doubt (unreadable file, other format version, betas that no longer
match the named schedule, a schedule or T other than the caller expects) raises CheckpointError:
a checkpoint never silently gives a wrong result.
"""

import dataclasses
import os
from dataclasses import dataclass

import torch

from .scaling import AffineScaling
from .devices import resolve_device
from .files import write_atomic
from .training import TrainConfig, build_model

FORMAT_VERSION = 1
_KEYS = ("format_version", "config", "scaling", "betas", "state_dict", "step")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: corrupt, from another format version, or for another schedule."""


@dataclass
class Checkpoint:
    """A loaded model, ready for `sampling.sample` and `evaluation.nll_bound`."""

    model: torch.nn.Module  # the weights to sample from (the EMA copy when training used one), eval mode
    config: TrainConfig
    sched: object  # NoiseSchedule rebuilt from config (schedule and T, or its custom betas), checked against the betas
    scaling: AffineScaling
    step: int  # optimiser steps the weights have seen

    @property
    def sampling_model(self):
        """The weights to sample from (the name a Trainer uses too)."""
        return self.model


def save_checkpoint(path, model, config, scaling, sched, step):
    """Write the checkpoint atomically (temporary file + os.replace) and return its path."""
    state = {
        "format_version": FORMAT_VERSION,
        "config": dataclasses.asdict(config),
        "scaling": {"shift": list(scaling.shift), "scale": float(scaling.scale)},
        "betas": sched.beta[1:].clone(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},  # device-free
        "step": int(step),
    }
    return write_atomic(path, lambda f: torch.save(state, f), sync=True)


def load_checkpoint(path, schedule=None, T=None, device="cpu"):
    """Load a checkpoint onto `device` (see `devices.DEVICES`; the file holds CPU tensors, whatever device
    trained it); `schedule` and `T`, if given, must match it. Raises CheckpointError."""
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path}: train a model first (python -m diffusion_lib train)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # zip, pickle and EOF errors all mean the same thing here
        # one line: torch's own message runs to paragraphs (weights_only advice, a request to file an issue)
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt or truncated file; "
                              f"{type(err).__name__}): retrain or restore it") from None
    if not isinstance(state, dict) or any(k not in state for k in _KEYS):
        raise CheckpointError(f"{path} is not a diffusion_lib checkpoint (missing fields)")
    if state["format_version"] != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {state['format_version']!r}, but this "
                              f"diffusion_lib reads version {FORMAT_VERSION}: retrain the model")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(state["config"]) - fields
    if unknown:
        raise CheckpointError(f"{path} has config fields this version does not know: {sorted(unknown)}")
    raw = dict(state["config"])
    raw["hidden"] = tuple(raw.get("hidden", TrainConfig.hidden))
    raw["fourier_features"] = tuple(raw.get("fourier_features", ()))
    if raw.get("betas") is not None:
        raw["betas"] = tuple(raw["betas"])
    config = TrainConfig(**raw)
    if schedule is not None and schedule != config.schedule:
        raise CheckpointError(f"{path} was trained with schedule {config.schedule!r}, not {schedule!r}")
    if T is not None and T != config.T:
        raise CheckpointError(f"{path} was trained with T = {config.T}, not T = {T}")
    try:
        config.validate()
        sched = config.noise_schedule()
    except ValueError as err:
        raise CheckpointError(f"{path} holds an invalid config: {err}") from err
    betas = state["betas"]
    if not (isinstance(betas, torch.Tensor) and betas.shape == sched.beta[1:].shape
            and torch.allclose(betas.double(), sched.beta[1:], rtol=1e-12, atol=0)):
        raise CheckpointError(f"{path} was trained with betas that differ from today's {config.schedule!r} "
                              f"schedule at T = {config.T}: its samples and bounds would be wrong")
    model = build_model(config)
    try:
        model.load_state_dict(state["state_dict"])
    except (RuntimeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: the weights do not fit the configured network: {err}") from err
    scaling = AffineScaling(shift=tuple(state["scaling"]["shift"]), scale=float(state["scaling"]["scale"]))
    try:
        model = model.to(resolve_device(device))
    except ValueError as err:
        raise CheckpointError(str(err)) from None
    return Checkpoint(model=model.eval(), config=config, sched=sched, scaling=scaling, step=int(state["step"]))
