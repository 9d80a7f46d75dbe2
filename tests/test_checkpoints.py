"""Checkpoints: a faithful round trip, atomic writes, and a clear CheckpointError for every bad file."""

import dataclasses
import os

import pytest
import torch

import diffusion_lib as dl
from diffusion_lib.checkpoints import FORMAT_VERSION, CheckpointError, load_checkpoint, save_checkpoint
from diffusion_lib.training import TrainConfig, Trainer

CONFIG = TrainConfig(T=10, steps=2, batch_size=16, hidden=(8, 8), emb_dim=4, loss="hybrid", var="learned")


@pytest.fixture(scope="module")
def trainer():
    trainer = Trainer(CONFIG)
    list(trainer.run())
    return trainer


@pytest.fixture
def saved(trainer, tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(path, trainer.sampling_model, CONFIG, trainer.scaling, trainer.sched, trainer.step)
    return path


def test_round_trip_gives_the_same_model(trainer, saved):
    ckpt = load_checkpoint(saved)
    assert ckpt.config == CONFIG and ckpt.scaling == trainer.scaling and ckpt.step == 2
    assert torch.equal(ckpt.sched.beta, trainer.sched.beta)
    x, t = torch.randn(5, 2), torch.tensor([1, 3, 5, 7, 10])
    with torch.no_grad():
        for a, b in zip(ckpt.model(x, t), trainer.sampling_model(x, t)):
            assert torch.equal(a, b)
    assert not ckpt.model.training


def test_writes_are_atomic(saved):
    assert os.listdir(saved.parent) == ["model.pt"]  # no temporary file left behind


def _resave(path, **changes):
    state = torch.load(path, weights_only=True)
    state.update(changes)
    torch.save(state, path)


def test_corrupt_and_truncated_files(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(saved)
    saved.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(saved)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at .*train a model first"):
        load_checkpoint(tmp_path / "nothing.pt")


def test_other_format_version(saved):
    _resave(saved, format_version=FORMAT_VERSION + 1)
    with pytest.raises(CheckpointError, match=f"format version {FORMAT_VERSION + 1}.*retrain"):
        load_checkpoint(saved)


def test_schedule_and_T_must_match_what_the_caller_expects(saved):
    with pytest.raises(CheckpointError, match="trained with schedule 'cosine', not 'linear'"):
        load_checkpoint(saved, schedule="linear")
    with pytest.raises(CheckpointError, match="trained with T = 10, not T = 1000"):
        load_checkpoint(saved, T=1000)


def test_betas_that_no_longer_match_the_named_schedule(saved):
    betas = dl.make_schedule("linear", 10).beta[1:]
    _resave(saved, betas=betas)
    with pytest.raises(CheckpointError, match="betas that differ"):
        load_checkpoint(saved)


def test_config_that_was_tampered_with(saved, trainer):
    state = torch.load(saved, weights_only=True)
    _resave(saved, config={**state["config"], "hidden": [16, 16]})
    with pytest.raises(CheckpointError, match="weights do not fit"):
        load_checkpoint(saved)
    _resave(saved, config={**dataclasses.asdict(CONFIG), "colour": "red"})
    with pytest.raises(CheckpointError, match="does not know: \\['colour'\\]"):
        load_checkpoint(saved)
