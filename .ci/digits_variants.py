"""`make digits-variants`: which parts of notebook 10's recipe matter? Short training runs, each evaluated alike.

    python .ci/digits_variants.py [--steps 2000] [--seeds 0 1] [--out build/digits_variants] [--csv data/digits_variants.csv]
    python .ci/digits_variants.py --only resnet-16-add   # redo some runs, keep the other rows of --csv

Every run goes through the command line as a user's would, with the checkpoint's recipe (`make digits-checkpoint`:
the cosine schedule cut to the 17 levels, T = 1000, eps, conditional with label drop 0.2, batch 128, learning rate
2e-3, input Fourier features 3 4) for --steps steps and each seed; one thing differs per variant: the schedule
(the plain cosine of [ND21], the starting point), no Fourier features, or the U-Net's block (ConvNeXt) or time
embedding (added instead of AdaGN).
    train ... --seed S --steps N
    evaluate --n 360 --nll-n 180 --var V --var-n 180 --sampler dpm_solver --steps 25 --seed S
with V = fixed_small and optimal for the two schedules, optimal for the U-Net variants: bits/dim (with standard
error) on 180 held-out digits, the quality of 360 samples. ms_per_step: 50 optimiser steps timed in one process
after 5 warm-up steps; train_s: the wall clock the CLI reports. Both need an otherwise idle machine
(OMP_NUM_THREADS=2). After regenerating data/digits_variants.csv, update data/checksums.sha256.
"""

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import diffusion_lib as dl  # noqa: E402
from diffusion_lib.checkpoints import load_checkpoint  # noqa: E402
from diffusion_lib.training import TrainConfig, Trainer  # noqa: E402

# name: (schedule, block, width, AdaGN, Fourier features, the variances to evaluate); the first is the recipe,
# each other one changes one part of it
VARIANTS = {"recipe": ("levels", "resnet", 16, True, (3, 4), ("fixed_small", "optimal")),
            "no-fourier": ("levels", "resnet", 16, True, (), ("optimal",)),
            "plain-cosine": ("cosine", "resnet", 16, True, (3, 4), ("fixed_small", "optimal")),
            "time-added": ("levels", "resnet", 16, False, (3, 4), ("optimal",)),
            "convnext": ("levels", "convnext", 16, True, (3, 4), ("optimal",))}
COMMON = ["--data", "digits", "--prediction", "eps", "--T", "1000", "--batch-size", "128", "--lr", "2e-3",
          "--conditional", "--label-drop", "0.2", "--quiet"]
FIELDS = ["variant", "schedule", "block", "width", "scale_shift", "fourier", "seed", "params", "steps", "train_s", "ms_per_step",
          "var", "bits_per_dim", "bits_per_dim_se", "frechet", "frechet_se", "frechet_floor", "confidence",
          "class_tv"]


def levels_betas(path, T=1000):
    """The checkpoint's schedule: the cosine cut to the digits' 17 levels, saved for --betas."""
    import numpy as np

    np.save(path, dl.cosine_log_snr_betas(T, *dl.log_snr_range_for_levels(dl.DIGIT_LEVELS)).numpy())
    return path


def cli(*args):
    res = subprocess.run([sys.executable, "-m", "diffusion_lib", *args], cwd=ROOT, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"python -m diffusion_lib {' '.join(args)} failed:\n{res.stderr}")
    return res.stdout


def ms_per_step(config, steps=50, warmup=5):
    """Milliseconds per optimiser step of a run's training, timed in this process."""
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    records = Trainer(TrainConfig(**{**vars(config), "steps": steps + warmup})).run()
    for _ in range(warmup):
        next(records)
    start = time.perf_counter()
    for _ in records:
        pass
    return 1000 * (time.perf_counter() - start) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", default=os.path.join(ROOT, "build", "digits_variants"))
    parser.add_argument("--csv", default=os.path.join(ROOT, "data", "digits_variants.csv"))
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME",
                        help=f"redo only these variants, keeping the other rows of --csv (names: {list(VARIANTS)})")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    betas = levels_betas(os.path.join(args.out, "levels_betas.npy"))
    kept = []
    if args.only:
        unknown = set(args.only) - set(VARIANTS)
        if unknown:
            raise SystemExit(f"unknown variants {sorted(unknown)}; choose from {list(VARIANTS)}")
        with open(args.csv) as f:
            kept = [r for r in csv.DictReader(f) if r["variant"] not in args.only]
    rows = []
    for name, (schedule, block, width, scale_shift, fourier, variances) in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        for seed in args.seeds:
            run = os.path.join(args.out, f"{name}-seed{seed}")
            flags = ["--block", block, "--width", str(width), "--seed", str(seed), "--steps", str(args.steps)]
            flags += ["--betas", betas] if schedule == "levels" else ["--schedule", schedule]
            flags += [] if scale_shift else ["--no-scale-shift"]
            flags += ["--fourier-features", *map(str, fourier)] if fourier else []
            out = cli("train", *COMMON, *flags, "--out", run, "--force")
            seconds = float(re.search(r"trained \d+ steps in ([\d.]+) s", out).group(1))
            ckpt = load_checkpoint(os.path.join(run, "model.pt"))
            params = sum(p.numel() for p in ckpt.model.parameters())
            timing = f"{ms_per_step(ckpt.config):.0f}"
            for var in variances:
                result_path = os.path.join(run, f"eval_{var}.json")
                cli("evaluate", "--run", run, "--n", "360", "--nll-n", "180", "--var", var, "--var-n", "180",
                    "--sampler", "dpm_solver", "--steps", "25", "--seed", str(seed), "--quiet", "--json", result_path,
                    "--force")
                with open(result_path) as f:
                    result = json.load(f)
                bits_se = dl.bits_per_dim(result["nll_bound_se"], 64)
                rows.append({"variant": name, "schedule": schedule, "block": block, "width": width,
                             "scale_shift": scale_shift, "fourier": " ".join(map(str, fourier)), "seed": seed,
                             "params": params, "steps": args.steps,
                             "train_s": f"{seconds:.0f}", "ms_per_step": timing, "var": var,
                             "bits_per_dim": f"{result['nll_bound_bpd']:.3f}", "bits_per_dim_se": f"{bits_se:.3f}",
                             "frechet": f"{result['frechet']:.1f}", "frechet_se": f"{result['frechet_se']:.1f}",
                             "frechet_floor": f"{result['frechet_floor']:.1f}",
                             "confidence": f"{result['confidence']:.3f}", "class_tv": f"{result['class_tv']:.3f}"})
                print(rows[-1], flush=True)
    order = list(VARIANTS)
    write(args.csv, sorted(kept + rows, key=lambda r: (order.index(r["variant"]), int(r["seed"]), r["var"])))


def write(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
