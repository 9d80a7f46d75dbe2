"""The command line: `python -m diffusion_lib train | sample | evaluate` (see `python -m diffusion_lib -h`).

    python -m diffusion_lib train --schedule cosine --T 1000 --loss simple --steps 5000 --seed 0 --out runs/a
    python -m diffusion_lib train --max-seconds 60 --out runs/b
    python -m diffusion_lib sample --run runs/a --n 5000 --seed 1 --out runs/a/samples.npy
    python -m diffusion_lib sample --run runs/a --sampler dpm_solver --steps 20 --out runs/a/fast.npy   (20 NFE)
    python -m diffusion_lib evaluate --run runs/a --n 5000 --seed 2 --json runs/a/eval.json
    python -m diffusion_lib evaluate --run runs/a --exact-nll     # adds the exact NLL by the probability-flow ODE
    python -m diffusion_lib train --data digits --width 16 --block resnet --batch-size 128 --lr 2e-3 --out runs/d
    python -m diffusion_lib train --betas my_betas.npy --out runs/e    (a schedule of your own: beta_1..beta_T)

A run folder holds `model.pt` (see `checkpoints`) and `train_log.csv` (step, loss). Every file is
written to a temporary name and moved into place, so an interrupted command leaves nothing
half-written. Errors print one line `error: ...` to stderr and exit with status 2 (bad input, missing
or existing files) or 1 (a non-finite loss during training). Ctrl-C during `train` finishes the current
step, saves the weights so far like a completed run, prints one line and exits with status 130.
"""

import argparse
import dataclasses
import json
import os
import shutil
import signal
import sys
import tempfile
import time

import numpy as np
import torch

from .checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from .data_registry import DATASETS, get_data_set
from .devices import DEVICES, resolve_device
from .files import write_atomic
from .posterior import PREDICTIONS
from .reverse import VARIANCES
from .respacing import SPACINGS
from .sampling import SAMPLERS, sample_data, sampling_plan
from .scorecard import evaluate, variances_for
from .schedules import SCHEDULES
from .training import LOSSES, NonFiniteLossError, TrainConfig, Trainer
from .unet import BLOCKS

CHECKPOINT = "model.pt"
TRAIN_LOG = "train_log.csv"
DEFAULTS = TrainConfig()
VAR_N = 2000  # data examples for the optimal variance: standard error ~2 % of the excess over beta_tilde_t


class CLIError(Exception):
    """A user error: printed as one line, exit status `code`."""

    def __init__(self, message, code=2):
        super().__init__(message)
        self.code = code


def _checked(convert, valid, expected):
    """An argparse type: convert the text, then require valid(value); else "expected <expected>, got ..."."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not valid(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


_positive_int = _checked(int, lambda v: v >= 1, "a positive integer")
_positive_float = _checked(float, lambda v: 0 < v < float("inf"), "a positive number")
_ema_decay = _checked(float, lambda v: 0 <= v < 1, "a decay in [0, 1)")
_probability = _checked(float, lambda v: 0 < v < 1, "a probability in (0, 1)")
_non_negative_float = _checked(float, lambda v: 0 <= v < float("inf"), "a number >= 0")


def _eta(text):
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1] (0 = deterministic DDIM, 1 = DDPM), got {text!r}")
    return value


def _add_device_argument(parser):
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="where the network runs: auto (a CUDA GPU when there is one, else the CPU), cpu, cuda, mps")


def _add_sampler_arguments(parser):
    parser.add_argument("--sampler", choices=SAMPLERS, default="ancestral",
                        help="ancestral (Algorithm 2), ddim, euler, heun or dpm_solver (DPM-Solver++(2M))")
    parser.add_argument("--steps", type=_positive_int, default=None,
                        help="timesteps the sampler visits (default: every step; heun calls the network 2K - 1 times)")
    parser.add_argument("--spacing", choices=SPACINGS, default=None,
                        help="which steps with --steps (default: the sampler's own, see sampling.DEFAULT_SPACING)")
    parser.add_argument("--eta", type=_eta, default=None, help="DDIM's noise, 0 (default) to 1 (--sampler ddim)")


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m diffusion_lib",
                                     description="Train, sample and evaluate DDPMs on the 2-D swiss roll, "
                                                 "the 8x8 digits, or any registered data set.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,sample,evaluate}")

    train = sub.add_parser("train", help="train a model (Algorithm 1) into a run folder")
    train.add_argument("--out", required=True, help="run folder to create (holds model.pt and train_log.csv)")
    train.add_argument("--data", choices=tuple(DATASETS), default=DEFAULTS.data,
                       help="the data set (a plug-in registered in data_registry.DATASETS)")
    train.add_argument("--noise", type=_positive_float, default=DEFAULTS.noise, help="data noise, raw units")
    train.add_argument("--schedule", choices=SCHEDULES, default=DEFAULTS.schedule)
    train.add_argument("--T", type=_positive_int, default=DEFAULTS.T, help="diffusion steps")
    train.add_argument("--betas", default=None, metavar="FILE.npy",
                       help="a schedule of your own: a 1-D float array beta_1..beta_T saved with numpy.save "
                            "(overrides --schedule and --T)")
    train.add_argument("--loss", choices=LOSSES, default=DEFAULTS.loss)
    train.add_argument("--prediction", choices=PREDICTIONS, default=DEFAULTS.prediction)
    train.add_argument("--var", choices=VARIANCES, default=None,
                       help="reverse variance (default: learned for vlb/hybrid, else fixed_small)")
    train.add_argument("--steps", type=_positive_int, default=DEFAULTS.steps, help="maximum optimiser steps")
    train.add_argument("--max-seconds", type=_positive_float, default=None, help="wall-clock training budget")
    train.add_argument("--batch-size", type=_positive_int, default=DEFAULTS.batch_size)
    train.add_argument("--lr", type=_positive_float, default=DEFAULTS.lr)
    train.add_argument("--lr-schedule", choices=("constant", "cosine"), default=DEFAULTS.lr_schedule)
    train.add_argument("--ema", type=_ema_decay, default=DEFAULTS.ema, help="EMA decay, 0 for none")
    train.add_argument("--importance-sampling", action="store_true", help="importance-sample t (vlb loss)")
    train.add_argument("--hidden", type=_positive_int, nargs="+", default=list(DEFAULTS.hidden),
                       help="MLP layer widths (swiss roll)")
    train.add_argument("--width", type=_positive_int, default=DEFAULTS.width, help="U-Net base channels (digits)")
    train.add_argument("--block", choices=BLOCKS, default=DEFAULTS.block, help="U-Net block (digits)")
    train.add_argument("--no-scale-shift", action="store_true",
                       help="add the time embedding instead of AdaGN scale-shift (digits, resnet blocks)")
    train.add_argument("--no-attention", action="store_true", help="no U-Net self-attention (digits)")
    train.add_argument("--fourier-features", type=int, nargs="*", default=[], metavar="N",
                       help="U-Net input features sin, cos(2^N pi x_t), e.g. 3 4 5 (digits; 4: the period of the "
                            "level gap)")
    train.add_argument("--conditional", action="store_true",
                       help="train on the class labels for classifier-free guidance (data sets with classes: digits)")
    train.add_argument("--label-drop", type=_probability, default=DEFAULTS.label_drop,
                       help="with --conditional: the rate at which a label is replaced by the null label")
    train.add_argument("--seed", type=int, default=DEFAULTS.seed)
    _add_device_argument(train)
    train.add_argument("--force", action="store_true", help="replace an existing run folder")
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    samp = sub.add_parser("sample", help="draw samples (Algorithm 2) in raw data coordinates as .npy")
    samp.add_argument("--run", required=True, help="run folder written by train")
    samp.add_argument("--n", type=_positive_int, default=5000)
    samp.add_argument("--seed", type=int, default=0)
    samp.add_argument("--var", choices=VARIANCES, default=None,
                      help="override the run's reverse variance (optimal: estimated from data first, see --var-n)")
    samp.add_argument("--var-n", type=_positive_int, default=VAR_N, help="data examples for --var optimal")
    _add_sampler_arguments(samp)
    _add_device_argument(samp)
    samp.add_argument("--label", type=int, default=None,
                      help="the class to draw (a --conditional run); without it, the unconditional model")
    samp.add_argument("--guidance", type=_non_negative_float, default=0.0,
                      help="classifier-free guidance weight w >= 0 with --label (0: the plain conditional model)")
    samp.add_argument("--out", required=True,
                      help="output .npy file: (N, 2) points, or (N, 1, 8, 8) digits with intensities 0..16")
    samp.add_argument("--force", action="store_true", help="replace an existing output file")
    samp.add_argument("--quiet", action="store_true")

    ev = sub.add_parser("evaluate", help="NLL bound, entropy floor and sample metrics")
    ev.add_argument("--run", required=True)
    ev.add_argument("--n", type=_positive_int, default=5000, help="samples for the sample metrics")
    ev.add_argument("--nll-n", type=_positive_int, default=2000,
                    help="data points for the NLL bound (digits: at most the 360 held-out images)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--var", choices=VARIANCES, default=None,
                    help="override the run's reverse variance (optimal: estimated from data first, see --var-n)")
    ev.add_argument("--var-n", type=_positive_int, default=VAR_N, help="data examples for --var optimal")
    _add_sampler_arguments(ev)
    _add_device_argument(ev)
    ev.add_argument("--exact-nll", action="store_true",
                    help="also the exact NLL by the probability-flow ODE on the bound's points (swiss roll)")
    ev.add_argument("--json", default=None, help="write the results to this JSON file")
    ev.add_argument("--force", action="store_true", help="replace an existing JSON file")
    ev.add_argument("--quiet", action="store_true")
    return parser


def _check_output(path, force):
    if os.path.exists(path) and not force:
        raise CLIError(f"{path} already exists; pass --force to replace it")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CLIError(f"the folder {folder} for {path} does not exist")


def _load_run(run, device="cpu"):
    if not os.path.isdir(run):
        raise CLIError(f"run folder {run} does not exist; create it with: python -m diffusion_lib train --out {run}")
    try:
        return load_checkpoint(os.path.join(run, CHECKPOINT), device=device)
    except CheckpointError as err:
        raise CLIError(str(err)) from err


def _load_betas(path):
    """The 1-D float array beta_1..beta_T in a .npy file, as a tuple; CLIError (one line) for a bad file."""
    if not os.path.isfile(path):
        raise CLIError(f"--betas: no file {path}")
    try:
        betas = np.load(path, allow_pickle=False)
    except Exception as err:  # not a .npy file, truncated, or a pickled object array
        raise CLIError(f"--betas: {path} is not a readable .npy array ({type(err).__name__})") from None
    if not isinstance(betas, np.ndarray) or betas.ndim != 1 or betas.size < 1 or betas.dtype.kind not in "fiu":
        shape = getattr(betas, "shape", "?")
        raise CLIError(f"--betas: {path} must hold a 1-D float array beta_1..beta_T, got shape {shape} "
                       f"and dtype {getattr(betas, 'dtype', '?')}")
    return tuple(float(b) for b in betas)


class _StopOnCtrlC:
    """Within the block the first Ctrl-C (SIGINT) only sets `self.requested`; a second one interrupts at once."""

    def __enter__(self):
        self.requested, self._previous = False, None
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave Ctrl-C alone
            pass
        return self

    def _handle(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def cmd_train(args):
    betas = _load_betas(args.betas) if args.betas is not None else None
    try:
        config = TrainConfig(data=args.data, noise=args.noise, schedule=args.schedule, T=args.T, betas=betas,
                             loss=args.loss, prediction=args.prediction, var=args.var, steps=args.steps,
                             batch_size=args.batch_size,
                             lr=args.lr, lr_schedule=args.lr_schedule, seed=args.seed, max_seconds=args.max_seconds,
                             ema=args.ema, importance_sampling=args.importance_sampling,
                             hidden=tuple(args.hidden), width=args.width, block=args.block,
                             scale_shift=not args.no_scale_shift, attention=not args.no_attention,
                             fourier_features=tuple(args.fourier_features),
                             device=args.device, conditional=args.conditional,
                             label_drop=args.label_drop).validate()
        resolve_device(config.device)
    except ValueError as err:
        raise CLIError(str(err)) from err
    out = args.out
    if os.path.exists(out) and not args.force:
        raise CLIError(f"{out} already exists; pass --force to replace it")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise CLIError(f"the parent folder {parent} of {out} does not exist")
    trainer = Trainer(config, progress=not args.quiet)
    log, failure, start = [], None, time.perf_counter()
    # Ctrl-C stops between two steps, so the weights saved below are those after a whole step
    with _StopOnCtrlC() as ctrl_c:
        try:
            for record in trainer.run():
                log.append((record.step, record.loss))
                if ctrl_c.requested:
                    break
        except NonFiniteLossError as err:
            failure = err
    seconds = time.perf_counter() - start
    if trainer.step == 0:
        if ctrl_c.requested:
            print("interrupted before the first step: nothing was written", file=sys.stderr)
            return 130
        raise CLIError(f"{failure} Nothing was written.", code=1)
    # build the run in a temporary folder and move it into place: never a half-written run
    tmp = tempfile.mkdtemp(prefix=".run-", dir=parent)
    try:
        save_checkpoint(os.path.join(tmp, CHECKPOINT), trainer.sampling_model, config, trainer.scaling,
                        trainer.sched, trainer.step)
        with open(os.path.join(tmp, TRAIN_LOG), "w") as f:
            f.write("step,loss\n")
            f.writelines(f"{s},{v:.6g}\n" for s, v in log)
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(dataclasses.asdict(config), f, indent=2)
        if os.path.exists(out):
            shutil.rmtree(out) if os.path.isdir(out) else os.remove(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if failure is not None:
        raise CLIError(f"{failure} The last good checkpoint (step {trainer.step}) is in {out}/{CHECKPOINT}.", code=1)
    if ctrl_c.requested:
        print(f"interrupted at step {trainer.step} of {config.steps}: saved the weights so far to "
              f"{os.path.join(out, CHECKPOINT)}", file=sys.stderr)
        return 130
    last = sum(v for _, v in log[-100:]) / len(log[-100:])
    print(f"trained {trainer.step} steps in {seconds:.1f} s on {trainer.device.type}, final loss {last:.4f} "
          f"(mean of the last {len(log[-100:])}); saved {os.path.join(out, CHECKPOINT)}")


def _plan(ckpt, args):
    """The sampler's plan for this run (its timesteps and NFE), with a one-line error for bad --steps/--eta."""
    if args.eta is not None and args.sampler != "ddim":
        raise CLIError(f"--eta is DDIM's noise: use it with --sampler ddim, not {args.sampler}")
    try:
        return sampling_plan(ckpt.sched, args.sampler, args.steps, args.spacing)
    except ValueError as err:
        raise CLIError(f"--steps: {err}") from None


def _sample(ckpt, args, variances=None):
    """args.n samples (raw coordinates) with the sampler, variance, label and guidance the command line asks for."""
    cfg = ckpt.config
    generator = torch.Generator().manual_seed(args.seed)
    try:
        x = sample_data(ckpt.sched, ckpt.model, ckpt.scaling, args.n, cfg.prediction, args.var or cfg.var, generator,
                        progress=not args.quiet, data_shape=get_data_set(cfg.data).data_shape, variances=variances,
                        sampler=args.sampler, steps=args.steps, spacing=args.spacing, eta=args.eta, label=args.label,
                        guidance=args.guidance)
    except ValueError as err:  # a label for an unconditional run, a class out of range, guidance without a label
        raise CLIError(str(err)) from None
    if not torch.isfinite(x).all():
        raise CLIError("the sampler produced NaN or inf values: the model is broken; retrain it", code=1)
    return x


def cmd_sample(args):
    _check_output(args.out, args.force)
    ckpt = _load_run(args.run, args.device)
    plan = _plan(ckpt, args)
    variances = variances_for(ckpt, args.var, args.var_n, args.seed, progress=not args.quiet)
    start = time.perf_counter()
    x = _sample(ckpt, args, variances)
    seconds = time.perf_counter() - start
    x = get_data_set(ckpt.config.data).output(x).numpy()  # discrete data: the nearest of its values
    write_atomic(args.out, lambda f: np.save(f, x))
    print(f"wrote {x.shape[0]} samples (raw data coordinates) to {args.out}: sampler {plan.sampler}, "
          f"{len(plan.timesteps)} steps, {plan.nfe} NFE, {seconds:.2f} s")


def cmd_evaluate(args):
    if args.json is not None:
        _check_output(args.json, args.force)
    ckpt = _load_run(args.run, args.device)
    _plan(ckpt, args)  # a one-line error for bad --steps or --eta before any work
    try:
        evaluation = evaluate(ckpt, n=args.n, nll_n=args.nll_n, seed=args.seed, var=args.var, var_n=args.var_n,
                              sampler=args.sampler, steps=args.steps, spacing=args.spacing, eta=args.eta,
                              exact_nll=args.exact_nll, progress=not args.quiet)
    except ValueError as err:
        raise CLIError(str(err)) from None
    except FloatingPointError as err:
        raise CLIError(str(err), code=1) from None
    return _report(args, evaluation.rows, {"run": args.run, **evaluation.result})


def _report(args, rows, result):
    print("\n".join(f"{name:<17} {value}" for name, value in rows))
    if args.json is not None:
        write_atomic(args.json, lambda f: f.write(json.dumps(result, indent=2).encode()))
        print(f"wrote {args.json}")
    return result


def main(argv=None):
    args = build_parser().parse_args(argv)  # argparse exits with status 2 and a usage line on bad flags
    try:
        code = {"train": cmd_train, "sample": cmd_sample, "evaluate": cmd_evaluate}[args.command](args)
    except CLIError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.code
    return code if isinstance(code, int) else 0  # train returns 130 after Ctrl-C; the others return results
