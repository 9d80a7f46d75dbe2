"""A schedule of your own end to end (TrainConfig.betas, checkpoints, `train --betas`), Ctrl-C during
`train`, one-line errors for a corrupt checkpoint, the schedule name checked by TrainConfig.validate,
and no change to the caller's global random state from Trainer or train_classifier."""

import os
import signal

import numpy as np
import pytest
import torch

import diffusion_lib as dl
from diffusion_lib import cli
from diffusion_lib.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from diffusion_lib.cli import main
from diffusion_lib.training import build_model

TINY = ["--steps", "30", "--batch-size", "64", "--hidden", "16", "16", "--quiet"]
CUSTOM = tuple(float(b) for b in np.linspace(1e-3, 0.5, 20))  # 20 steps, alpha_bar_T ~ 1e-3


def tiny_config(**changes):
    base = dict(T=20, steps=5, batch_size=32, hidden=(16, 16), seed=3)
    return dl.TrainConfig(**{**base, **changes})


def test_config_betas_override_schedule_and_T():
    config = tiny_config(schedule="linear", T=1000, betas=list(CUSTOM)).validate()
    assert (config.schedule, config.T, config.betas) == ("custom", 20, CUSTOM)
    sched = config.noise_schedule()
    assert torch.equal(sched.beta[1:], torch.tensor(CUSTOM, dtype=torch.float64))
    trainer = dl.Trainer(config)
    assert torch.equal(trainer.sched.beta, sched.beta)
    assert [r.step for r in trainer.run()] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("betas", [[1.0, 0.1], [0.0, 0.2], [[0.1, 0.2]], [], [float("nan")]])
def test_config_rejects_bad_betas(betas):
    with pytest.raises(ValueError, match="beta"):
        tiny_config(betas=betas).validate()


def test_config_checks_the_schedule_name():
    with pytest.raises(ValueError, match="unknown schedule 'cosin'.*cosine"):
        tiny_config(schedule="cosin").validate()


def test_checkpoint_stores_and_rebuilds_custom_betas(tmp_path):
    config = tiny_config(betas=CUSTOM).validate()
    trainer = dl.Trainer(config)
    for _ in trainer.run():
        pass
    path = save_checkpoint(tmp_path / "model.pt", trainer.sampling_model, config, trainer.scaling, trainer.sched,
                           trainer.step)
    ckpt = load_checkpoint(path)
    assert ckpt.config.betas == CUSTOM and ckpt.config.schedule == "custom" and ckpt.config.T == 20
    assert torch.equal(ckpt.sched.beta, trainer.sched.beta)
    # stored betas that disagree with the config's are refused, as for named schedules
    state = torch.load(path, weights_only=True)
    state["betas"] = state["betas"] * 1.01
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="betas that differ"):
        load_checkpoint(path)


def test_train_with_a_betas_file(tmp_path, capsys):
    np.save(tmp_path / "betas.npy", np.array(CUSTOM))
    out = tmp_path / "run"
    assert main(["train", *TINY, "--betas", str(tmp_path / "betas.npy"), "--out", str(out)]) == 0
    ckpt = load_checkpoint(out / "model.pt")
    assert ckpt.sched.T == 20 and torch.allclose(ckpt.sched.beta[1:], torch.tensor(CUSTOM, dtype=torch.float64))
    assert main(["sample", "--run", str(out), "--n", "10", "--out", str(tmp_path / "x.npy"), "--quiet"]) == 0
    assert np.load(tmp_path / "x.npy").shape == (10, 2)


@pytest.mark.parametrize("content, message", [
    (None, "no file"),
    (b"not numpy", "not a readable .npy array"),
    (np.full((3, 2), 0.1), "1-D float array"),
    (np.array(["a", "b"]), "1-D float array"),
    (np.array([0.1, 1.5]), "open interval"),
])
def test_train_with_a_bad_betas_file_is_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "betas.npy"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        np.save(path, content)
    assert main(["train", *TINY, "--betas", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


def test_ctrl_c_during_train_saves_the_last_good_weights(tmp_path, capsys, monkeypatch):
    # send ourselves SIGINT (what Ctrl-C does) in the middle of step 7: training stops after that step
    real_step = dl.Trainer.train_step

    def step_then_ctrl_c(self, progress):
        result = real_step(self, progress)
        if self.step == 7:
            os.kill(os.getpid(), signal.SIGINT)
        return result

    monkeypatch.setattr(dl.Trainer, "train_step", step_then_ctrl_c)
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN in a background job
    out = tmp_path / "run"
    assert main(["train", *TINY, "--T", "20", "--steps", "1000", "--out", str(out)]) == 130
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "interrupted at step 7 of 1000" in captured.err, captured.err
    assert load_checkpoint(out / "model.pt").step == 7
    assert sorted(os.listdir(out)) == ["config.json", "model.pt", "train_log.csv"]
    assert [p for p in os.listdir(tmp_path) if p.startswith(".")] == []  # no temporary folder left behind
    assert signal.getsignal(signal.SIGINT) is before  # Ctrl-C handling restored to what it was


def test_ctrl_c_before_the_first_step_writes_nothing(tmp_path, capsys, monkeypatch):
    class Interrupted(cli._StopOnCtrlC):
        def __enter__(self):
            super().__enter__()
            self.requested = True
            return self

    monkeypatch.setattr(cli, "_StopOnCtrlC", Interrupted)
    monkeypatch.setattr(dl.Trainer, "run", lambda self: iter(()))
    assert main(["train", *TINY, "--T", "20", "--out", str(tmp_path / "run")]) == 130
    assert "nothing was written" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_corrupt_checkpoint_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--T", "20", "--out", str(out)]) == 0
    data = (out / "model.pt").read_bytes()
    for broken in (data[: len(data) // 2], b"not a checkpoint at all", data[:100]):
        (out / "model.pt").write_bytes(broken)
        with pytest.raises(CheckpointError) as caught:
            load_checkpoint(out / "model.pt")
        assert "\n" not in str(caught.value) and "corrupt or truncated" in str(caught.value)
        assert main(["sample", "--run", str(out), "--n", "5", "--out", str(tmp_path / "x.npy"), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "weights_only" not in err, err


def test_trainer_leaves_the_global_random_state_alone_and_keeps_its_weights():
    config = tiny_config(seed=11)
    torch.manual_seed(12345)
    before = torch.random.get_rng_state()
    trainer = dl.Trainer(config)
    assert torch.equal(torch.random.get_rng_state(), before)
    # the same initial weights as a global seed would give (stored notebook outputs do not change)
    torch.manual_seed(11)
    reference = build_model(config.validate())
    for (name, a), (_, b) in zip(trainer.model.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name


def test_train_classifier_leaves_the_global_random_state_alone():
    from diffusion_lib.digit_quality import DigitClassifier, train_classifier

    digits = dl.load_digits("train")
    torch.manual_seed(54321)
    before = torch.random.get_rng_state()
    model = train_classifier(digits, epochs=0, seed=5)
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(5)
    reference = DigitClassifier()
    for (name, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name
