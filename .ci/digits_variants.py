"""`make digits-variants`: one short training run per U-Net variant on the digits, each evaluated alike.

    python .ci/digits_variants.py [--steps 2000] [--out build/digits_variants] [--csv data/digits_variants.csv]
    python .ci/digits_variants.py --time-only     # re-measure only the ms_per_step column of an existing --csv
    python .ci/digits_variants.py --only resnet-16-add   # redo some runs, keep the other rows of --csv

Every run goes through the command line as a user's would, with the same schedule (cosine, T = 1000),
batch size (128), learning rate (2e-3), number of steps and seed (0); only the U-Net differs:
    train --data digits --block B --width W [--no-scale-shift] --steps S ...
    evaluate --n 360 --nll-n 180 --seed 0   (bits/dim on 180 held-out digits, quality of 360 samples)
The table goes to --csv (read by notebooks/10_digits.ipynb). Two times: train_s, the wall clock of the
whole run as the CLI reports it, and ms_per_step, 50 optimiser steps timed in one process after 5 warm-up
steps (less sensitive to other jobs on the machine; --time-only redoes just these). Both need an otherwise
idle machine (OMP_NUM_THREADS=2). After regenerating data/digits_variants.csv, update data/checksums.sha256.
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

from diffusion_lib.checkpoints import load_checkpoint  # noqa: E402
from diffusion_lib.training import TrainConfig, Trainer  # noqa: E402

VARIANTS = [("resnet", 16, True), ("resnet", 16, False), ("resnet", 32, True), ("convnext", 16, True)]
COMMON = ["--data", "digits", "--prediction", "eps", "--schedule", "cosine", "--T", "1000", "--batch-size", "128", "--lr", "2e-3",
          "--seed", "0", "--quiet"]


def cli(*args):
    res = subprocess.run([sys.executable, "-m", "diffusion_lib", *args], cwd=ROOT, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"python -m diffusion_lib {' '.join(args)} failed:\n{res.stderr}")
    return res.stdout


def ms_per_step(block, width, scale_shift, steps=50, warmup=5):
    """Milliseconds per optimiser step of the variant's training, timed in this process."""
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    config = TrainConfig(data="digits", schedule="cosine", T=1000, batch_size=128, lr=2e-3, seed=0, width=width,
                         block=block, scale_shift=scale_shift, steps=steps + warmup)
    records = Trainer(config).run()
    for _ in range(warmup):
        next(records)
    start = time.perf_counter()
    for _ in records:
        pass
    return 1000 * (time.perf_counter() - start) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--out", default=os.path.join(ROOT, "build", "digits_variants"))
    parser.add_argument("--csv", default=os.path.join(ROOT, "data", "digits_variants.csv"))
    parser.add_argument("--time-only", action="store_true", help="re-measure ms_per_step in an existing --csv")
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME",
                        help="redo only these runs (block-width[-add]), keeping the other rows of --csv")
    args = parser.parse_args()
    if args.time_only:
        with open(args.csv) as f:
            rows = list(csv.DictReader(f))
        for row in rows:
            row["ms_per_step"] = f"{ms_per_step(row['block'], int(row['width']), row['scale_shift'] == 'True'):.0f}"
            print(row, flush=True)
        write(args.csv, rows)
        return
    os.makedirs(args.out, exist_ok=True)
    kept = {}
    if args.only:
        with open(args.csv) as f:
            kept = {name_of(r["block"], r["width"], r["scale_shift"] == "True"): r for r in csv.DictReader(f)}
        unknown = set(args.only) - {name_of(*v) for v in VARIANTS}
        if unknown:
            raise SystemExit(f"unknown runs {sorted(unknown)}; choose from {[name_of(*v) for v in VARIANTS]}")
    rows = []
    for block, width, scale_shift in VARIANTS:
        name = name_of(block, width, scale_shift)
        if args.only and name not in args.only:
            rows.append(kept[name])
            continue
        run = os.path.join(args.out, name)
        flags = ["--block", block, "--width", str(width)] + ([] if scale_shift else ["--no-scale-shift"])
        out = cli("train", *COMMON, *flags, "--steps", str(args.steps), "--out", run, "--force")
        seconds = float(re.search(r"trained \d+ steps in ([\d.]+) s", out).group(1))
        cli("evaluate", "--run", run, "--n", "360", "--nll-n", "180", "--seed", "0", "--quiet",
            "--json", os.path.join(run, "eval.json"), "--force")
        with open(os.path.join(run, "eval.json")) as f:
            result = json.load(f)
        params = sum(p.numel() for p in load_checkpoint(os.path.join(run, "model.pt")).model.parameters())
        rows.append({"block": block, "width": width, "scale_shift": scale_shift, "params": params,
                     "steps": args.steps, "train_s": f"{seconds:.0f}",
                     "ms_per_step": f"{ms_per_step(block, width, scale_shift):.0f}",
                     "bits_per_dim": f"{result['nll_bound_bpd']:.3f}",
                     "frechet": f"{result['frechet']:.1f}", "frechet_floor": f"{result['frechet_floor']:.1f}",
                     "confidence": f"{result['confidence']:.3f}", "class_tv": f"{result['class_tv']:.3f}"})
        print(rows[-1], flush=True)
    write(args.csv, rows)


def name_of(block, width, scale_shift):
    return f"{block}-{width}" + ("" if scale_shift else "-add")


def write(path, rows):
    fields = ["block", "width", "scale_shift", "params", "steps", "train_s", "ms_per_step", "bits_per_dim",
              "frechet", "frechet_floor", "confidence", "class_tv"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
