"""Device support: every tensor the trainer, the bound and the samplers make follows the model's device.

There is no GPU here, so the "meta" device plays one: `MetaAsAccelerator` lets meta tensors compute (shapes
only) and answers the host's reads of them (`.item()`, `.cpu()`) with ones, while any operation that meets a
CPU tensor with a meta one still raises, exactly as a CUDA tensor meeting a CPU one would. A library line that
forgets the device (noise drawn on the CPU and not moved, a schedule value gathered to the wrong place) fails.
"""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import diffusion_lib as dl
from diffusion_lib.devices import resolve_device

aten = torch.ops.aten


class MetaAsAccelerator(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        source = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if source is not None and source.device.type == "meta":
            if func is aten._local_scalar_dense.default:  # .item(), float(), bool()
                return True if source.dtype == torch.bool else (1.0 if source.dtype.is_floating_point else 1)
            target = kwargs.get("device")
            if func is aten._to_copy.default and target is not None and torch.device(target).type == "cpu":
                return torch.ones(source.shape, dtype=kwargs.get("dtype") or source.dtype)
        return func(*args, **kwargs)


def _trainer_on_meta(**overrides):
    config = dl.TrainConfig(**{"steps": 3, "batch_size": 16, "hidden": (8, 8), "ema": 0.9, "device": "cpu",
                               "T": 50, **overrides})
    trainer = dl.Trainer(config)
    trainer.device = torch.device("meta")
    trainer.model.to("meta")
    if trainer.ema_model is not None:
        trainer.ema_model.to("meta")
    trainer.optimizer = torch.optim.Adam(trainer.model.parameters(), lr=config.lr, foreach=True)
    return trainer


@pytest.mark.parametrize("overrides", [
    {},  # simple loss, v-prediction, the MLP
    {"loss": "hybrid", "prediction": "eps"},  # learned variance, the bound's terms in the loss
    {"loss": "vlb", "importance_sampling": True, "steps": 12, "batch_size": 64, "T": 4},  # p_t from recorded terms
    {"data": "digits", "width": 8, "batch_size": 4, "steps": 2},  # the U-Net
], ids=["simple", "hybrid", "vlb-importance", "digits"])
def test_training_follows_the_model_device(overrides):
    trainer = _trainer_on_meta(**overrides)
    with MetaAsAccelerator():
        records = list(trainer.run())
    assert len(records) == trainer.config.steps
    assert all(p.device.type == "meta" for p in trainer.model.parameters())
    assert all(p.device.type == "meta" for p in trainer.ema_model.parameters())


def test_bound_optimal_variance_and_exact_likelihood_follow_the_model_device():
    sched = dl.make_schedule("cosine", 20)
    net = dl.MLP(hidden=(8, 8)).to("meta")
    x_raw = dl.swiss_roll(6, seed=0)
    with MetaAsAccelerator():
        bound = dl.nll_bound(sched, net, dl.swiss_roll_scaling(), x_raw, "eps", "fixed_small",
                             torch.Generator().manual_seed(0))
        var = dl.optimal_variance(sched, net, torch.randn(6, 2), "eps", torch.Generator().manual_seed(0))
        exact = dl.ode_nll(sched, net, dl.swiss_roll_scaling(), x_raw, "eps", steps=2)
    assert exact.nll.device.type == "cpu" and exact.nll.shape == (6,)
    assert bound.total.device.type == "cpu" and bound.total.shape == (6,)  # reported on the CPU, in float64
    assert var.var.dtype == torch.float64 and var.var.shape == (21,)


def test_the_fake_device_catches_a_tensor_left_on_the_cpu():
    # power: the check above would fail for code that forgot to move its noise to the model's device
    net = dl.MLP(hidden=(8, 8)).to("meta")
    xt = torch.randn(4, 2).to("meta")
    with MetaAsAccelerator(), pytest.raises((RuntimeError, NotImplementedError)):
        net(xt, torch.ones(4, dtype=torch.int64).to("meta")) + torch.randn(4, 2)


def test_a_checkpoint_is_device_free(tmp_path):
    # weights trained on an accelerator are saved as CPU tensors, so any machine can load them
    config = dl.TrainConfig(steps=1, batch_size=8, hidden=(8,), T=10, device="cpu").validate()
    trainer = dl.Trainer(config)
    net = dl.MLP(hidden=(8,)).to("meta")
    with MetaAsAccelerator():
        path = dl.save_checkpoint(tmp_path / "meta.pt", net, config, trainer.scaling, trainer.sched, 1)
    state = torch.load(path, weights_only=True)
    assert state["state_dict"] and all(v.device.type == "cpu" for v in state["state_dict"].values())


def test_devices_resolve_with_one_line_errors(tmp_path):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="unknown device"):
        dl.TrainConfig(device="gpu").validate()
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")
        with pytest.raises(dl.CheckpointError, match="no CUDA GPU"):
            config = dl.TrainConfig(steps=1, hidden=(8,), T=10).validate()
            trainer = dl.Trainer(config)
            path = dl.save_checkpoint(tmp_path / "m.pt", trainer.model, config, trainer.scaling, trainer.sched, 1)
            dl.load_checkpoint(path, device="cuda")
