"""Classifier-free guidance [HS22]: the guided prediction, the null label, conditional training and the CLI."""

import math

import numpy as np
import pytest
import torch

import diffusion_lib as dl
from diffusion_lib.cli import main


def _net(**kw):
    torch.manual_seed(0)
    net = dl.UNet(1, 8, num_classes=10, **kw)
    with torch.no_grad():  # a label embedding that matters (it starts at zero)
        net.label.weight.normal_()
    return net.eval()


def _inputs(n=6):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(1, 100, (n,), generator=g)


def test_guidance_zero_is_the_conditional_model_and_no_label_is_the_null_label():
    net, (x, t) = _net(), _inputs()
    labels = torch.arange(6) % 10
    with torch.no_grad():
        assert torch.equal(dl.guided(net, labels, 0.0)(x, t), net(x, t, labels))
        assert torch.equal(net(x, t), net(x, t, torch.full((6,), 10)))  # the unconditional path is the null label
        assert not torch.allclose(net(x, t, labels), net(x, t))  # and the label does change the prediction


@pytest.mark.parametrize("learn_var", [False, True])
def test_the_guided_prediction_is_1_plus_w_conditional_minus_w_unconditional(learn_var):
    net, (x, t) = _net(learn_var=learn_var), _inputs()
    w = 2.5
    with torch.no_grad():
        out = dl.guided(net, 3, w)(x, t)
        cond, uncond = net(x, t, torch.full((6,), 3)), net(x, t)
    if learn_var:  # the variance's interpolation value is the conditional one
        out, r = out
        cond, r_cond = cond
        uncond = uncond[0]
        assert torch.allclose(r, r_cond, atol=1e-6)
    assert torch.allclose(out, (1 + w) * cond - w * uncond, atol=1e-5)  # one batched call vs two calls


def test_guided_sampling_is_seeded_and_checks_its_arguments():
    net, sched = _net(), dl.make_schedule("cosine", 20)
    draw = lambda: dl.sample(sched, net, 4, "eps", "fixed_small", torch.Generator().manual_seed(0),  # noqa: E731
                             data_shape=(1, 8, 8), label=7, guidance=1.0)
    assert torch.equal(draw(), draw())
    with pytest.raises(ValueError, match="give a label as well"):
        dl.sample(sched, net, 4, data_shape=(1, 8, 8), guidance=1.0)
    with pytest.raises(ValueError, match="label must be a class 0..9"):
        dl.guided(net, 10)
    with pytest.raises(ValueError, match="guidance must be a weight w >= 0"):
        dl.guided(net, 1, -1.0)
    with pytest.raises(ValueError, match="needs a class-conditional network"):
        dl.guided(dl.UNet(1, 8), 1)
    with pytest.raises(ValueError, match="this UNet is unconditional"):
        dl.UNet(1, 8)(*_inputs(), torch.zeros(6, dtype=torch.int64))


def test_conditional_training_drops_labels_at_the_stated_rate():
    config = dl.TrainConfig(data="digits", conditional=True, label_drop=0.2, width=8, batch_size=400, steps=5,
                            T=50, device="cpu")
    trainer = dl.Trainer(config)
    dropped, total = 0, 0
    for _ in trainer.run():
        dropped += int((trainer.batch_labels == 10).sum())
        total += trainer.batch_labels.numel()
    # binomial: the share is within 5 standard errors of 0.2 (false alarm 6e-7 at any seed); a forgotten drop
    # gives 0 and a drop of every label gives 1, both hundreds of standard errors away
    se = math.sqrt(0.2 * 0.8 / total)
    assert abs(dropped / total - 0.2) < 5 * se
    assert trainer.model.num_classes == 10


def test_conditional_training_needs_labels():
    with pytest.raises(ValueError, match="has none"):
        dl.TrainConfig(conditional=True).validate()
    with pytest.raises(ValueError, match="label_drop must be a probability"):
        dl.TrainConfig(data="digits", conditional=True, label_drop=0.0).validate()


def test_cli_conditional_train_and_guided_sample(tmp_path, capsys):
    run = tmp_path / "cond"
    assert main(["train", "--data", "digits", "--conditional", "--label-drop", "0.2", "--width", "8", "--T", "20",
                 "--steps", "3", "--batch-size", "16", "--quiet", "--out", str(run)]) == 0
    ckpt = dl.load_checkpoint(str(run / "model.pt"))
    assert ckpt.config.conditional and ckpt.config.label_drop == 0.2 and ckpt.model.num_classes == 10
    out = tmp_path / "x.npy"
    assert main(["sample", "--run", str(run), "--n", "3", "--label", "4", "--guidance", "2", "--quiet",
                 "--out", str(out)]) == 0
    assert np.load(out).shape == (3, 1, 8, 8)
    assert main(["sample", "--run", str(run), "--n", "3", "--label", "12", "--quiet",
                 "--out", str(tmp_path / "y.npy")]) == 2
    assert "label must be a class 0..9" in capsys.readouterr().err
