"""`make bench`: train the default recipe time-boxed, sample, evaluate, and print one table.

    python .ci/bench.py [--out build/bench] [--skip-losses]

Runs, each through the command line exactly as a user would:
  default-60s   python -m diffusion_lib train --max-seconds 60          (the default recipe)
  default-20s   python -m diffusion_lib train --max-seconds 20
  hybrid-60s    ... --loss hybrid --max-seconds 60                     (learned variance [ND21])
  vlb-is-60s    ... --loss vlb --importance-sampling --max-seconds 60  (learned variance)
  vlb-60s       ... --loss vlb --max-seconds 60                        (uniform t, learned variance)
  vlb-fixed-60s ... --loss vlb --var fixed_large --importance-sampling --max-seconds 60
                (the true bound with a fixed variance, as in [Ho20, Table 1])
(all but the two default runs are skipped with --skip-losses), then `sample --n 5000` and
`evaluate --n 5000` for each, with every reverse variance listed in EVALS (the same network scored with
fixed_small, fixed_large and the optimal variance [Bao22]), and finally the sampler's time per step for
a batch of 5000 against one bare forward pass of the network on that batch.
Targets: 60 s: sw_ratio <= 1.3, on_roll >= 0.99, coverage <= 0.025; 20 s: sw_ratio <= 1.5, on_roll >= 0.95;
the default model's bound with the optimal variance <= entropy + 0.10 nats, the hybrid's <= entropy + 0.15;
sampler step <= 1.3 x forward pass. Then the few-step table (FAST) of the default model: sampler, steps, NFE,
metrics, seconds and overhead (targets in its footer). Timings need an otherwise idle machine (OMP_NUM_THREADS=2).
"""

import argparse
import json
import os
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from diffusion_lib.checkpoints import load_checkpoint  # noqa: E402
from diffusion_lib.evaluation import sample_metrics  # noqa: E402
from diffusion_lib.sampling import sample, sample_data, sampling_plan  # noqa: E402

RUNS = [("default-60s", ["--max-seconds", "60"]), ("default-20s", ["--max-seconds", "20"]),
        ("hybrid-60s", ["--loss", "hybrid", "--max-seconds", "60"]),
        # the bound's terms differ by orders of magnitude across t: importance sampling of t [ND21, Sec. 3.3]
        ("vlb-is-60s", ["--loss", "vlb", "--importance-sampling", "--max-seconds", "60"]),
        ("vlb-60s", ["--loss", "vlb", "--max-seconds", "60"]),
        ("vlb-fixed-60s", ["--loss", "vlb", "--var", "fixed_large", "--importance-sampling", "--max-seconds", "60"])]
# reverse variances each run is evaluated with, besides its own (the run's config.var)
EVALS = {"default-60s": ["fixed_large", "optimal"], "hybrid-60s": ["optimal"], "vlb-is-60s": ["optimal"]}
# the few-step table of the default model: (sampler, visited steps); Heun calls the network 2K - 1 times
FAST = [("ancestral", None), ("ancestral", 50), ("ancestral", 20), ("ddim", 50), ("ddim", 20),
        ("dpm_solver", 50), ("dpm_solver", 20), ("dpm_solver", 10), ("heun", 25), ("heun", 10)]


def cli(*args):
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "diffusion_lib", *args], cwd=ROOT, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"`python -m diffusion_lib {' '.join(args)}` failed: {res.stderr.strip()}")
    return time.perf_counter() - start


def sampler_timing(run, n=5000, bare_calls=100):
    """(bare forward ms, sampler ms per step, sampler wall seconds, T) for a batch of n.

    The bare forward pass is the mean over bare_calls calls (varying t) measured just before and just
    after the sampler, so both see the same machine load; a median would flatter the network.
    """
    ckpt = load_checkpoint(os.path.join(run, "model.pt"))
    model, sched = ckpt.model, ckpt.sched
    x = torch.randn(n, 2)

    def bare():
        with torch.inference_mode():
            start = time.perf_counter()
            for i in range(bare_calls):
                model(x, torch.full((n,), 1 + (i * 37) % sched.T, dtype=torch.int64))
            return (time.perf_counter() - start) / bare_calls

    before = bare()
    start = time.perf_counter()
    sample(sched, model, n, ckpt.config.prediction, ckpt.config.var, torch.Generator().manual_seed(0))
    wall = time.perf_counter() - start
    forward = (before + bare()) / 2
    return 1e3 * forward, 1e3 * wall / sched.T, wall, sched.T


def sampler_table(run, n=5000):
    """One row per FAST entry: sampler, steps, NFE, sample metrics of n samples, seconds, and the overhead
    against the same number of bare forward passes on the batch (measured right after, same load)."""
    ckpt = load_checkpoint(os.path.join(run, "model.pt"))
    cfg, model, sched = ckpt.config, ckpt.model, ckpt.sched
    rows = []
    for sampler, steps in FAST:
        plan = sampling_plan(sched, sampler, steps)
        start = time.perf_counter()
        x = sample_data(sched, model, ckpt.scaling, n, cfg.prediction, cfg.var, torch.Generator().manual_seed(1),
                        sampler=sampler, steps=steps)
        wall = time.perf_counter() - start
        xt = torch.randn(n, 2)
        with torch.inference_mode():
            start = time.perf_counter()
            for t in plan.timesteps + plan.timesteps[1:] * (sampler == "heun"):
                model(xt, torch.full((n,), t, dtype=torch.int64))
            bare = time.perf_counter() - start
        rows.append((sampler, len(plan.timesteps), plan.nfe, sample_metrics(x, cfg.noise, seed=2), wall, bare))
    header = f"{'sampler':<11} {'steps':>5} {'NFE':>5} {'sw_ratio':>8} {'on_roll':>8} {'coverage':>8} {'s':>6} {'overhead':>8}"
    print(f"\nfew steps: the default-60s network ({cfg.prediction}), {n} samples, one row per sampler and steps")
    print(header)
    print("-" * len(header))
    for sampler, steps, nfe, m, wall, bare in rows:
        print(f"{sampler:<11} {steps:>5} {nfe:>5} {m['sw_ratio']:>8.3f} {m['on_roll']:>8.4f} {m['coverage']:>8.4f} "
              f"{wall:>6.2f} {wall / bare:>8.2f}")
    print("targets: <= 50 NFE sw_ratio <= 1.3, on_roll >= 0.99, coverage <= 0.025; 20 NFE sw_ratio <= 1.5, "
          "on_roll >= 0.98, coverage <= 0.03, <= 1 s, overhead <= 1.3")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "build", "bench"))
    parser.add_argument("--skip-losses", action="store_true", help="only the two default-recipe runs")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    runs = RUNS[:2] if args.skip_losses else RUNS
    results, failures = [], []
    for name, flags in runs:
        run = os.path.join(args.out, name)
        try:
            train_s = cli("train", *flags, "--seed", "0", "--out", run, "--force", "--quiet")
            sample_s = cli("sample", "--run", run, "--n", "5000", "--seed", "1", "--out",
                           os.path.join(run, "samples.npy"), "--force", "--quiet")
        except RuntimeError as err:  # a diverged run is a result too: report it and go on
            failures.append((name, str(err)))
            print(f"bench: {name} FAILED", file=sys.stderr, flush=True)
            continue
        for var in [None, *EVALS.get(name, [])]:
            out = os.path.join(run, f"eval-{var or 'own'}.json")
            try:
                # the exact NLL by the probability-flow ODE depends only on the mean: once per network
                cli("evaluate", "--run", run, "--n", "5000", "--seed", "2", "--json", out, "--force", "--quiet",
                    *(["--var", var] if var else ["--exact-nll"]))
            except RuntimeError as err:
                failures.append((f"{name} ({var or 'own'})", str(err)))
                continue
            with open(out) as f:
                results.append((name, train_s, sample_s, json.load(f)))
        print(f"bench: {name} done", file=sys.stderr, flush=True)

    floor = results[0][3]["entropy_floor"]
    header = (f"{'run':<13} {'loss':<7} {'pred':<4} {'var':<12} {'steps':>6} {'sw_ratio':>8} {'on_roll':>8} "
              f"{'coverage':>8} {'NLL bound':>10} {'+-':>6} {'gap':>7} {'exact NLL':>9} {'train s':>7} {'sample s':>8}")
    print(f"\nswiss roll, noise 0.5, n = 5000; entropy floor {floor:.4f} nats "
          f"(+- {results[0][3]['entropy_floor_se']:.4f}); NLL bound in nats per example, raw coordinates")
    print(header)
    print("-" * len(header))
    for name, train_s, sample_s, r in results:
        exact = f"{r['exact_nll']:>9.4f}" if "exact_nll" in r else f"{'':>9}"
        print(f"{name:<13} {r['loss']:<7} {r.get('prediction', ''):<4} {r['var']:<12} {r['train_steps']:>6} "
              f"{r['sw_ratio']:>8.3f} "
              f"{r['on_roll']:>8.4f} {r['coverage']:>8.4f} {r['nll_bound']:>10.4f} {r['nll_bound_se']:>6.4f} "
              f"{r['gap_to_floor']:>7.4f} {exact} {train_s:>7.1f} {sample_s:>8.1f}")
    for name, message in failures:
        print(f"{name:<12} FAILED: {message.splitlines()[-1]}")
    forward_ms, step_ms, wall, T = sampler_timing(os.path.join(args.out, "default-60s"))
    print(f"\nsampler, batch 5000, T = {T}: {step_ms:.2f} ms per step vs {forward_ms:.2f} ms for one bare forward "
          f"pass (ratio {step_ms / forward_ms:.2f}); {wall:.1f} s for 5000 samples")
    print("(train s and sample s are wall times of the CLI commands, including start-up)")
    sampler_table(os.path.join(args.out, "default-60s"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
