"""The command line: a tiny train -> sample -> evaluate run end to end, and every error path."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import diffusion_lib as dl
from diffusion_lib.cli import main

TINY = ["--T", "20", "--steps", "30", "--batch-size", "64", "--hidden", "16", "16", "--quiet"]


def run_cli(*args):
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    return subprocess.run([sys.executable, "-m", "diffusion_lib", *args], capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "a"
    assert main(["train", *TINY, "--schedule", "cosine", "--loss", "hybrid", "--seed", "0", "--out", str(out)]) == 0
    return out


def test_end_to_end_train_sample_evaluate(tmp_path):
    run = tmp_path / "a"
    res = run_cli("train", *TINY, "--schedule", "linear", "--loss", "simple", "--seed", "0", "--out", str(run))
    assert res.returncode == 0, res.stderr
    assert "trained 30 steps" in res.stdout
    assert sorted(os.listdir(run)) == ["config.json", "model.pt", "train_log.csv"]
    res = run_cli("sample", "--run", str(run), "--n", "100", "--seed", "1", "--out", str(run / "samples.npy"), "--quiet")
    assert res.returncode == 0, res.stderr
    x = np.load(run / "samples.npy")
    assert x.shape == (100, 2) and np.isfinite(x).all()
    res = run_cli("evaluate", "--run", str(run), "--n", "200", "--nll-n", "50", "--seed", "2",
                  "--json", str(run / "eval.json"), "--quiet")
    assert res.returncode == 0, res.stderr
    result = json.loads((run / "eval.json").read_text())
    for key in ("nll_bound", "nll_bound_bpd", "L_T", "sum_L_t_minus_1", "L_0", "entropy_floor", "gap_to_floor",
                "sw_ratio", "on_roll", "coverage"):
        assert np.isfinite(result[key]), key
    assert result["nll_bound"] == pytest.approx(result["L_T"] + result["sum_L_t_minus_1"] + result["L_0"])
    assert "NLL bound" in res.stdout and "entropy floor" in res.stdout


def test_digits_train_sample_evaluate(tmp_path):
    run = tmp_path / "d"
    res = run_cli("train", "--data", "digits", "--T", "10", "--steps", "3", "--batch-size", "16", "--width", "8",
                  "--block", "convnext", "--no-attention", "--quiet", "--out", str(run))
    assert res.returncode == 0, res.stderr
    config = json.loads((run / "config.json").read_text())
    assert (config["data"], config["width"], config["block"], config["attention"]) == ("digits", 8, "convnext", False)
    res = run_cli("sample", "--run", str(run), "--n", "5", "--out", str(run / "samples.npy"), "--quiet")
    assert res.returncode == 0, res.stderr
    x = np.load(run / "samples.npy")
    assert x.shape == (5, 1, 8, 8) and set(np.unique(x)) <= set(range(17))
    res = run_cli("evaluate", "--run", str(run), "--n", "20", "--nll-n", "8", "--json", str(run / "eval.json"),
                  "--quiet")
    assert res.returncode == 0, res.stderr
    result = json.loads((run / "eval.json").read_text())
    assert result["nll_bound"] == pytest.approx(result["L_T"] + result["sum_L_t_minus_1"] + result["L_0"])
    assert sum(result["class_counts"]) == 20 and result["classifier_accuracy"] > 0.9
    assert result["frechet_floor"] > 0 and "bits/dim" in res.stdout and "Frechet" in res.stdout
    res = run_cli("evaluate", "--run", str(run), "--exact-nll", "--quiet")
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "--exact-nll is for continuous data" in res.stderr


def test_evaluate_exact_nll(run_dir, tmp_path, capsys):
    out = tmp_path / "eval.json"
    args = ["evaluate", "--run", str(run_dir), "--n", "50", "--nll-n", "30", "--seed", "3", "--quiet"]
    assert main([*args, "--exact-nll", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert "exact NLL (ODE)" in printed and f"{result['exact_nll']:.4f} +- {result['exact_nll_se']:.4f} nats" in printed
    # the same numbers as the library on the same points (the evaluation set of seed 3)
    ckpt = dl.load_checkpoint(str(run_dir / "model.pt"))
    direct = dl.ode_nll(ckpt.sched, ckpt.model, ckpt.scaling, dl.swiss_roll(30, 0.5, seed=2_000_003),
                         ckpt.config.prediction).summary()
    assert result["exact_nll"] == pytest.approx(direct["exact_nll"], abs=1e-9)
    assert result["exact_nll_se"] == pytest.approx(direct["exact_nll_se"], abs=1e-9) and result["exact_nll_se"] > 0
    # without the flag the JSON has no exact NLL
    assert main([*args, "--json", str(tmp_path / "plain.json")]) == 0
    assert "exact_nll" not in json.loads((tmp_path / "plain.json").read_text())
    assert "exact NLL" not in capsys.readouterr().out


def test_sampling_is_reproducible_from_the_seed(run_dir, tmp_path):
    paths = [tmp_path / f"{name}.npy" for name in "abc"]
    for path, seed in zip(paths, ("1", "1", "2")):
        assert main(["sample", "--run", str(run_dir), "--n", "50", "--seed", seed, "--out", str(path), "--quiet"]) == 0
    a, b, c = (np.load(p) for p in paths)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_bad_flags_exit_with_usage(capsys):
    for argv, message in ((["train", "--out", "x", "--loss", "l1"], "invalid choice: 'l1'"),
                          (["train", "--out", "x", "--T", "0"], "expected a positive integer"),
                          (["train", "--out", "x", "--var", "huge"], "invalid choice: 'huge'"),
                          (["sample", "--run", "x"], "the following arguments are required: --out"),
                          (["fly"], "invalid choice: 'fly'")):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        assert message in capsys.readouterr().err


def test_inconsistent_config_is_refused(tmp_path, capsys):
    assert main(["train", *TINY, "--loss", "simple", "--var", "learned", "--out", str(tmp_path / "r")]) == 2
    assert "simple loss cannot train a learned variance" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_missing_run_folder(tmp_path, capsys):
    assert main(["sample", "--run", str(tmp_path / "nope"), "--out", str(tmp_path / "s.npy")]) == 2
    err = capsys.readouterr().err
    assert "run folder" in err and "does not exist" in err and "diffusion_lib train --out" in err
    assert main(["evaluate", "--run", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "s.npy").exists()


def test_existing_outputs_need_force(run_dir, tmp_path, capsys):
    assert main(["train", *TINY, "--out", str(run_dir)]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    out = tmp_path / "s.npy"
    out.write_bytes(b"keep me")
    assert main(["sample", "--run", str(run_dir), "--n", "10", "--out", str(out), "--quiet"]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"
    assert main(["sample", "--run", str(run_dir), "--n", "10", "--out", str(out), "--quiet", "--force"]) == 0
    assert np.load(out).shape == (10, 2)


def test_corrupt_checkpoint_in_the_run_folder(tmp_path, capsys):
    run = tmp_path / "broken"
    run.mkdir()
    (run / "model.pt").write_bytes(b"garbage")
    assert main(["sample", "--run", str(run), "--out", str(tmp_path / "s.npy")]) == 2
    assert "corrupt or truncated" in capsys.readouterr().err
    assert not (tmp_path / "s.npy").exists()


def test_non_finite_loss_keeps_the_last_good_checkpoint(tmp_path, capsys):
    run = tmp_path / "nan"
    code = main(["train", *TINY, "--lr", "1e30", "--lr-schedule", "constant", "--ema", "0", "--out", str(run)])
    err = capsys.readouterr().err
    assert code == 1 and "non-finite" in err and "at step" in err
    if "Nothing was written" in err:  # the very first loss was already non-finite
        assert not run.exists()
    else:
        assert "last good checkpoint" in err and (run / "model.pt").exists()
        assert main(["sample", "--run", str(run), "--n", "5", "--out", str(tmp_path / "s.npy"), "--quiet"]) in (0, 1)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporary folders left


def test_optimal_variance_from_the_command_line(tmp_path, capsys):
    run = tmp_path / "s"
    assert main(["train", *TINY, "--schedule", "cosine", "--seed", "0", "--out", str(run)]) == 0
    assert json.loads((run / "config.json").read_text())["var"] == "fixed_small"  # the simple loss's default
    results = {}
    for var in ("fixed_small", "optimal"):
        out = tmp_path / f"{var}.json"
        assert main(["evaluate", "--run", str(run), "--n", "100", "--nll-n", "300", "--var", var, "--var-n", "300",
                     "--seed", "3", "--json", str(out), "--quiet"]) == 0
        results[var] = json.loads(out.read_text())
    assert results["optimal"]["var"] == "optimal"
    # a barely trained mean misses by far more than beta_tilde_t covers: the optimal variance gains nats
    assert results["optimal"]["nll_bound"] < results["fixed_small"]["nll_bound"] - 1.0
    assert main(["sample", "--run", str(run), "--n", "20", "--var", "optimal", "--var-n", "50",
                 "--out", str(tmp_path / "x.npy"), "--quiet"]) == 0
    assert np.isfinite(np.load(tmp_path / "x.npy")).all()
    assert main(["train", *TINY, "--var", "optimal", "--out", str(tmp_path / "r")]) == 2
    assert "estimated after training" in capsys.readouterr().err


def test_sampler_and_steps_from_the_command_line(run_dir, tmp_path, capsys):
    # --sampler/--steps reach the library unchanged, and evaluate reports sampler, steps and nfe
    for sampler, steps, nfe in (("dpm_solver", 5, 5), ("heun", 4, 7), ("ancestral", None, 20)):
        out = tmp_path / f"{sampler}.json"
        flags = ["--sampler", sampler] + ([] if steps is None else ["--steps", str(steps)])
        assert main(["evaluate", "--run", str(run_dir), "--n", "60", "--nll-n", "20", "--seed", "4", *flags,
                     "--json", str(out), "--quiet"]) == 0
        result = json.loads(out.read_text())
        assert (result["sampler"], result["steps"], result["nfe"]) == (sampler, steps or 20, nfe)
        assert result["train_steps"] == 30 and f"{nfe} NFE" in capsys.readouterr().out
    path = tmp_path / "fast.npy"
    assert main(["sample", "--run", str(run_dir), "--n", "40", "--seed", "5", "--sampler", "ddim", "--steps", "6",
                 "--eta", "0.5", "--out", str(path), "--quiet"]) == 0
    ckpt = dl.load_checkpoint(str(run_dir / "model.pt"))
    direct = dl.sample_data(ckpt.sched, ckpt.model, ckpt.scaling, 40, ckpt.config.prediction, ckpt.config.var,
                            torch.Generator().manual_seed(5), sampler="ddim", steps=6, eta=0.5)
    assert np.allclose(np.load(path), direct.numpy())
    assert "sampler ddim, 6 steps, 6 NFE" in capsys.readouterr().out
    for flags, message in ((["--steps", "21"], "--steps: steps must be an int in 1..19 (sampling starts at t = 19"),
                           (["--sampler", "heun", "--eta", "0.3"], "--eta is DDIM's noise")):
        code = main(["sample", "--run", str(run_dir), "--out", str(tmp_path / "x.npy"), "--quiet", *flags])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and message in err, err
