"""Data sets are plug-ins: a third one, registered here and nowhere else, trains, samples and evaluates
through the CLI, and the two built-in ones keep their behaviour."""

import json
import math

import numpy as np
import pytest
import torch
from sklearn.datasets import make_moons

import diffusion_lib as dl
from diffusion_lib.cli import main


class TwoMoons(dl.DataSet):
    """scikit-learn's two moons with noise 0.05: a continuous 2-D data set."""

    name, data_shape = "moons", (2,)

    def scaling(self, config):
        return dl.AffineScaling(shift=(0.5, 0.25), scale=0.7)

    def training_pool(self, config, round):
        points, _ = make_moons(4096, noise=0.05, random_state=(config.seed * 1_000_003 + round) % 2 ** 32)
        return torch.from_numpy(points)

    def held_out(self, n, config, seed):
        points, _ = make_moons(n, noise=0.05, random_state=2_000_000 + seed)
        return torch.from_numpy(points)


@pytest.fixture
def moons():
    data_set = dl.register_data_set(TwoMoons())
    yield data_set
    del dl.DATASETS["moons"]


def test_a_registered_data_set_trains_samples_and_evaluates_through_the_cli(moons, tmp_path, capsys):
    run = tmp_path / "moons"
    assert main(["train", "--data", "moons", "--T", "40", "--steps", "40", "--batch-size", "64", "--hidden", "16",
                 "16", "--seed", "0", "--quiet", "--out", str(run)]) == 0
    ckpt = dl.load_checkpoint(str(run / "model.pt"))
    assert ckpt.config.data == "moons" and ckpt.scaling == moons.scaling(ckpt.config)
    assert main(["sample", "--run", str(run), "--n", "200", "--quiet", "--out", str(tmp_path / "x.npy")]) == 0
    assert np.load(tmp_path / "x.npy").shape == (200, 2)
    assert main(["evaluate", "--run", str(run), "--n", "200", "--nll-n", "100", "--quiet",
                 "--json", str(tmp_path / "e.json")]) == 0
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["data"] == "moons" and result["nll_n"] == 100 and math.isfinite(result["nll_bound"])
    assert math.isfinite(result["mean_gap"]) and "NLL bound" in capsys.readouterr().out
    # the exact likelihood is the roll's extra, not the interface's: one line, status 2
    assert main(["evaluate", "--run", str(run), "--exact-nll", "--quiet", "--n", "10", "--nll-n", "10"]) == 2
    assert "not available for the data set 'moons'" in capsys.readouterr().err


def test_the_same_seed_gives_the_same_batches_and_pools_come_from_the_plug_in(moons):
    config = dl.TrainConfig(data="moons", T=10, batch_size=32, hidden=(8,), seed=3, device="cpu")
    a, b = dl.Trainer(config), dl.Trainer(config)
    assert torch.equal(a.next_batch(), b.next_batch())
    expected = moons.scaling(config).to_model(moons.training_pool(config, 0)).float()[:32]
    assert torch.equal(dl.Trainer(config).next_batch(), expected)


def test_unknown_and_malformed_data_sets_fail_with_one_line(capsys):
    with pytest.raises(ValueError, match=r"unknown data 'moons'; choose one of \('swiss_roll', 'digits'\)"):
        dl.TrainConfig(data="moons").validate()
    with pytest.raises(SystemExit):
        main(["train", "--data", "moons", "--out", "x"])
    assert "invalid choice: 'moons'" in capsys.readouterr().err
    with pytest.raises(TypeError, match="register a DataSet instance"):
        dl.register_data_set(object())
    bad = TwoMoons()
    bad.decoder = "discretized"
    with pytest.raises(ValueError, match="with its number of levels"):
        dl.register_data_set(bad)


def test_the_built_in_data_sets_keep_their_pools():
    # the roll: 2^16 fresh points per round; the digits: the training split, shuffled per round, 1437 images
    roll = dl.get_data_set("swiss_roll")
    config = dl.TrainConfig(seed=1)
    assert torch.equal(roll.training_pool(config, 2), dl.swiss_roll(2 ** 16, 0.5, seed=1_000_003 + 2))
    digits = dl.get_data_set("digits")
    pool, labels = digits.training_pool(dl.TrainConfig(data="digits", batch_size=128), 0)
    train = dl.load_digits("train").images
    assert torch.equal(labels.bincount(), dl.load_digits("train").labels.bincount())
    assert pool.shape == train.shape and torch.equal(pool.sort(dim=0).values, train.sort(dim=0).values)
    assert not torch.equal(pool, train)


class LabelledMoons(TwoMoons):
    """The two moons with their labels (which moon): a data set with classes, using the default variance_data."""

    name, num_classes = "labelled_moons", 2

    def training_pool(self, config, round):
        points, labels = make_moons(4096, noise=0.05, random_state=(config.seed * 1_000_003 + round) % 2 ** 32)
        return torch.from_numpy(points), torch.from_numpy(labels)


def test_labelled_pool_has_one_shape_for_data_with_and_without_classes():
    config = dl.TrainConfig(seed=3)
    plain, labelled = TwoMoons(), LabelledMoons()
    x, labels = plain.labelled_pool(config, 0)
    assert labels is None and torch.equal(x, plain.training_pool(config, 0))
    x, labels = labelled.labelled_pool(config, 0)
    assert torch.equal(x, plain.training_pool(config, 0)) and labels.shape == (4096,) and set(labels.tolist()) == {0, 1}
    # the default variance data are examples (not an (examples, labels) pair) for both
    for data_set in (plain, labelled):
        v = data_set.variance_data(10, config, seed=0)
        assert torch.is_tensor(v) and v.shape == (10, 2)
    assert dl.pool_seed(config, 7) == (3 * 1_000_003 + 7) % 2 ** 32
