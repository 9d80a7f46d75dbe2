"""`make vlb-seeds`: notebook 07's headline rows over several seeds, so its orderings come with a spread.

    python .ci/vlb_seeds.py [--seeds 0 1 2] [--csv data/vlb_seeds.csv]
    python .ci/vlb_seeds.py --schedule linear --T 100 --csv build/vlb_seeds_linear100.csv   # another setting

Each seed trains the networks of notebook 07 with its committed settings (cosine schedule, T = 1000, 3000 steps of
batch 256, MLP widths 128 128 128, roll noise 0.5; the recipes below are the notebook's) and scores each row
exactly as the notebook does with SEED = seed: the bound on -log p(x) over every t on N_NLL = 1000 fresh points
(seed + 2) with the noise draws of generator seed + 4, the optimal variance [Bao22] from N_VAR = 1000 other
fresh points (seed + 3), 2000 samples (generator seed + 5) for the sample metrics, and the exact NLL by the
probability-flow ODE [So21] on the first N_ODE = 500 of the bound's points (32 RK4 steps, as notebook 07). All in
nats per example, raw coordinates. Columns:
    bound, bound_se      the bound's mean and standard error
    gap                  bound minus the entropy floor (dl.swiss_roll_entropy, 20000 points)
    vs_ref, vs_ref_se    bound minus the bound of "simple + optimal", paired (same points, same noise)
    exact_nll, exact_nll_se        the network's ODE NLL on N_ODE points (it depends on the network, not the variance)
    exact_excess, exact_excess_se  ODE NLL minus the true -log p(x) of the same points, paired
    bound_minus_exact, _se         the bound minus the same network's ODE NLL on the N_ODE points, paired
    sw_ratio, on_roll, coverage    the sample metrics of notebook 06
A few minutes on 2 cores. After regenerating data/vlb_seeds.csv, update data/checksums.sha256.
"""

import argparse
import csv
import math
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

import diffusion_lib as dl  # noqa: E402

# notebook 07's parameters cell and recipes (the networks its headline rows need)
SETTINGS = dict(steps=3000, batch_size=256, hidden=(128, 128, 128), noise=0.5)
N_SAMPLES, N_NLL, N_VAR, N_ODE, ODE_STEPS = 2000, 1000, 1000, 500, 32
RECIPES = {"simple": dict(loss="simple", prediction="eps"),
           "vlb-fixed": dict(loss="vlb", prediction="eps", var="fixed_large", importance_sampling=True),
           "hybrid": dict(loss="hybrid", prediction="eps"),
           "vlb-is": dict(loss="vlb", prediction="eps", importance_sampling=True)}
ROWS = {"simple + fixed_small": ("simple", "fixed_small"),
        "simple + fixed_large": ("simple", "fixed_large"),
        "simple + optimal": ("simple", "optimal"),
        "vlb-fixed + fixed_large": ("vlb-fixed", "fixed_large"),
        "hybrid + learned": ("hybrid", "learned"),
        "vlb-is + learned": ("vlb-is", "learned")}
REFERENCE = "simple + optimal"
FIELDS = ["row", "schedule", "T", "seed", "floor", "floor_se", "bound", "bound_se", "gap", "vs_ref", "vs_ref_se",
          "exact_nll", "exact_nll_se", "exact_excess", "exact_excess_se", "bound_minus_exact", "bound_minus_exact_se",
          "sw_ratio", "on_roll", "coverage"]


def mean_se(v):
    return float(v.mean()), float(v.std() / math.sqrt(v.numel()))


def run_seed(seed, schedule, T, floor, floor_se):
    """The rows of one seed, as notebook 07 computes them with SEED = seed."""
    noise = SETTINGS["noise"]
    trainers = {}
    for name, recipe in RECIPES.items():
        start = time.perf_counter()
        config = dl.TrainConfig(schedule=schedule, T=T, seed=seed, **SETTINGS, **recipe)
        trainers[name] = dl.Trainer(config)
        for _ in trainers[name].run():
            pass
        print(f"seed {seed}: trained {name} in {time.perf_counter() - start:.0f} s", flush=True)
    x_nll = dl.swiss_roll(N_NLL, noise, seed=seed + 2)
    truth = -dl.swiss_roll_log_density(x_nll[:N_ODE], noise)
    exact = {}
    for name, tr in trainers.items():
        exact[name] = dl.ode_nll(tr.sched, tr.sampling_model, tr.scaling, x_nll[:N_ODE], tr.config.prediction,
                                 steps=ODE_STEPS).nll
    bounds, metrics = {}, {}
    for row, (name, var) in ROWS.items():
        tr, cfg = trainers[name], trainers[name].config
        variances = None
        if var == "optimal":
            x0 = tr.scaling.to_model(dl.swiss_roll(N_VAR, noise, seed=seed + 3)).float()
            variances = dl.optimal_variance(tr.sched, tr.sampling_model, x0, cfg.prediction,
                                            torch.Generator().manual_seed(seed + 3)).var
        bounds[row] = dl.nll_bound(tr.sched, tr.sampling_model, tr.scaling, x_nll, cfg.prediction, var,
                                   generator=torch.Generator().manual_seed(seed + 4), variances=variances)
        samples = dl.sample_data(tr.sched, tr.sampling_model, tr.scaling, N_SAMPLES, cfg.prediction, var,
                                 generator=torch.Generator().manual_seed(seed + 5), variances=variances)
        finite = bool(torch.isfinite(samples).all())
        metrics[row] = dl.sample_metrics(samples, noise) if finite else dict(sw_ratio=math.nan, on_roll=math.nan,
                                                                              coverage=math.nan)
    rows = []
    for row, (name, _) in ROWS.items():
        s = bounds[row].summary()
        vs_ref = dl.paired_difference(bounds[row], bounds[REFERENCE]) if row != REFERENCE else (0.0, 0.0)
        e, e_se = mean_se(exact[name])
        excess = mean_se(exact[name] - truth)
        above = mean_se(bounds[row].total[:N_ODE] - exact[name])
        rows.append({"row": row, "schedule": schedule, "T": T, "seed": seed, "floor": f"{floor:.4f}",
                     "floor_se": f"{floor_se:.4f}", "bound": f"{s['nll_bound']:.4f}", "bound_se": f"{s['nll_bound_se']:.4f}",
                     "gap": f"{s['nll_bound'] - floor:.4f}", "vs_ref": f"{vs_ref[0]:.4f}", "vs_ref_se": f"{vs_ref[1]:.4f}",
                     "exact_nll": f"{e:.4f}", "exact_nll_se": f"{e_se:.4f}",
                     "exact_excess": f"{excess[0]:.4f}", "exact_excess_se": f"{excess[1]:.4f}",
                     "bound_minus_exact": f"{above[0]:.4f}", "bound_minus_exact_se": f"{above[1]:.4f}",
                     **{k: f"{metrics[row][k]:.4f}" for k in ("sw_ratio", "on_roll", "coverage")}})
        print(rows[-1], flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--schedule", default="cosine", help="notebook 07's SCHEDULE (committed: cosine)")
    parser.add_argument("--T", type=int, default=1000, help="notebook 07's T (committed: 1000)")
    parser.add_argument("--csv", default=os.path.join(ROOT, "data", "vlb_seeds.csv"))
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    floor, floor_se = dl.swiss_roll_entropy(SETTINGS["noise"], n=20_000)
    rows = [r for seed in args.seeds for r in run_seed(seed, args.schedule, args.T, floor, floor_se)]
    os.makedirs(os.path.dirname(os.path.abspath(args.csv)), exist_ok=True)
    with open(args.csv, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.csv}")


if __name__ == "__main__":
    main()
