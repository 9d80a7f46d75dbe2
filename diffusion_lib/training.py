"""Training the reverse process (Algorithm 1): the config, the loop, the EMA weights, the time budget.

Contents: `TrainConfig`, `TrainRecord`, `NonFiniteLossError`, `Trainer` (the losses and the sampler
of t live in `losses`).

    repeat: x_0 ~ q(x_0), t ~ Uniform{1..T}, eps ~ N(0, I)
            take a gradient step on ||eps - eps_theta(sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, t)||^2
                                                                                 [Ho20, Alg. 1]
The loss is one of `losses.LOSSES` (simple, vlb, hybrid); t is drawn by `losses.TimestepSampler`
(uniform, or importance-sampled for the bound). The weights to sample from are an EMA of the trained ones.
Everything about the data comes from its plug-in (`data_registry.DataSet`, named by `TrainConfig.data`): the
scaling to model coordinates (training works in those and keeps the scaling), the seeded training pools and
the default network (`build_model`: an MLP for the roll, a U-Net for the digits). Nothing here names a data set.
"""

import copy
import math
import time
from dataclasses import dataclass

import torch

from .data_registry import DATASETS, get_data_set
from .devices import DEVICES, resolve_device
from .files import progress_bar
from .losses import LOSSES, TimestepSampler, training_losses
from .posterior import PREDICTIONS
from .reverse import VARIANCES
from .schedules import SCHEDULES, NoiseSchedule, make_schedule
from .unet import BLOCKS


@dataclass
class TrainConfig:
    """Everything that defines a training run; the CLI and the notebooks build one of these."""

    data: str = "swiss_roll"  # the data set: a name registered in data_registry.DATASETS (swiss_roll | digits)
    noise: float = 0.5  # data noise: standard deviation around the roll, raw coordinates
    schedule: str = "cosine"  # noise schedule: linear | quadratic | sigmoid | cosine
    T: int = 1000  # number of diffusion steps
    betas: tuple | None = None  # a schedule of your own, beta_1..beta_T: overrides schedule ("custom") and T
    loss: str = "simple"  # simple | vlb | hybrid (see LOSSES)
    # what the net predicts: eps | x0 | mu | v. v [Sa22] keeps both ends of the chain well conditioned: an
    # eps-net's error is magnified 1/sqrt(alpha_T) ~ 32x at the cosine schedule's clipped last step, which
    # cost ~0.2 nats of bound there (notebook 07); [Ho20]'s eps is the choice of notebooks 06, 08, 09
    prediction: str = "v"
    var: str | None = None  # reverse variance: fixed_small | fixed_large | learned (None: default_variance(loss))
    steps: int = 20_000  # number of optimiser steps (an upper bound when max_seconds is set)
    batch_size: int = 512  # examples per step
    lr: float = 4e-3  # peak learning rate of Adam (4e-3 beat 2e-3 at 3000 steps: on_roll 0.965 vs 0.940)
    lr_schedule: str = "cosine"  # constant | cosine (decay to 0 over steps or max_seconds)
    warmup_steps: int = 100  # linear learning-rate warm-up
    seed: int = 0  # seeds the data, t, eps and the initial weights: same seed, same run
    max_seconds: float | None = None  # wall-clock budget; training stops when it runs out
    ema: float = 0.999  # EMA decay of the weights used for sampling (0 turns it off)
    importance_sampling: bool = False  # draw t by the scale of recent bound terms (vlb loss only)
    hidden: tuple = (256, 256, 256)  # MLP layer widths (swiss roll)
    emb_dim: int = 64  # timestep embedding size (MLP)
    width: int = 16  # U-Net base channels (digits)
    block: str = "resnet"  # U-Net block: resnet | convnext (digits)
    scale_shift: bool = True  # resnet blocks: time embedding as AdaGN scale and shift, else added (digits)
    attention: bool = True  # U-Net self-attention at the lowest resolution (digits)
    # U-Net input features sin, cos(2^n pi x_t) for these n [Kingma21]: 4 has the period of the digits'
    # level gap 1/8, so the network can tell the level at small noise, where the likelihood is won (digits)
    fourier_features: tuple = ()
    # where the network trains: cpu | auto (CUDA when available, else the CPU) | cuda | mps. The CLI's --device
    # defaults to auto; code that calls the network itself must put its inputs on `trainer.device`
    device: str = "cpu"
    # classifier-free guidance [HS22]: train on class labels (data sets with classes: digits), each replaced by
    # the null label with probability label_drop, so one network is both conditional and unconditional
    conditional: bool = False
    label_drop: float = 0.1

    def __post_init__(self):
        if self.var is None:
            self.var = default_variance(self.loss)

    def validate(self):
        """Raise ValueError with the allowed values for any bad field; return self.

        Custom betas are checked (1-D, each in (0, 1)) and set schedule = "custom" and T = len(betas).
        """
        if self.var == "optimal":
            raise ValueError("the optimal variance is estimated after training, from data: train with "
                             "fixed_small (or leave var unset) and pass --var optimal to sample or evaluate")
        if self.betas is not None:
            betas = NoiseSchedule.from_betas(self.betas).beta[1:]  # raises ValueError for a bad sequence
            self.betas, self.schedule, self.T = tuple(betas.tolist()), "custom", betas.numel()
        elif self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of {SCHEDULES} (or give betas)")
        choices = {"device": DEVICES, "data": tuple(DATASETS), "loss": LOSSES, "prediction": PREDICTIONS, "var": VARIANCES,
                   "lr_schedule": ("constant", "cosine"), "block": BLOCKS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; choose one of {allowed}")
        if self.betas is not None and self.betas[-1] == 1 and self.prediction == "eps":
            raise ValueError("a schedule with zero terminal SNR (beta_T = 1) needs prediction 'v' or 'x0': an "
                             "eps-network's x_0 at t = T divides by sqrt(alpha_bar_T) = 0")
        positive = {"T": self.T, "steps": self.steps, "batch_size": self.batch_size, "lr": self.lr,
                    "width": self.width}
        for name, value in positive.items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive, got {value!r}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError(f"max_seconds must be positive, got {self.max_seconds!r}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema must be a decay in [0, 1), got {self.ema!r}")
        if self.conditional and get_data_set(self.data).num_classes is None:
            raise ValueError(f"conditional training needs class labels, and the data {self.data!r} has none")
        if self.conditional and not 0 < self.label_drop < 1:
            raise ValueError(f"label_drop must be a probability in (0, 1) (the unconditional model learns from the "
                             f"dropped labels), got {self.label_drop!r}")
        if self.importance_sampling and self.loss != "vlb":
            raise ValueError("importance_sampling applies to the 'vlb' loss only")
        if self.var == "learned" and self.loss == "simple":
            raise ValueError("the simple loss cannot train a learned variance: use loss 'vlb' or 'hybrid'")
        return self

    def noise_schedule(self):
        """The NoiseSchedule of this run: the custom betas if given, else make_schedule(schedule, T)."""
        if self.betas is not None:
            return NoiseSchedule.from_betas(self.betas, name="custom")
        return make_schedule(self.schedule, self.T)


def default_variance(loss):
    """The reverse variance a loss trains with by default: learned for the bound's losses, else fixed_small.

    The bound (vlb, hybrid) can train v [ND21, Eq. 15]; the simple loss cannot, and [Ho20] sample with
    beta_tilde_t or beta_t (any variance can be chosen after training, including "optimal").
    """
    return "learned" if loss in ("vlb", "hybrid") else "fixed_small"


def build_model(config):
    """The untrained network a TrainConfig describes: its data set's default (an MLP for the swiss roll,
    a U-Net for the digits)."""
    return get_data_set(config.data).build_model(config)


@dataclass
class TrainRecord:
    """One training step: the step number (1-based), the batch loss, the learning rate, seconds so far."""

    step: int
    loss: float
    lr: float
    seconds: float


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; the model keeps the weights from before that step."""

    def __init__(self, step, loss):
        self.step, self.loss = step, loss
        super().__init__(f"the loss became non-finite ({loss}) at step {step}; training stopped and "
                         f"the model keeps the last good weights (after step {step - 1}). "
                         "Try a smaller learning rate.")


class Trainer:
    """One training run: the schedule, the data scaling, the network, its EMA copy and the optimiser.

    `trainer.run()` is a generator of TrainRecord; stop consuming it at any time. The model to sample
    from is `trainer.sampling_model` (the EMA weights when config.ema > 0).
    """

    def __init__(self, config, model=None, progress=False):
        self.config = config.validate()
        self.progress = progress
        self.sched = config.noise_schedule()
        self.data_set = get_data_set(config.data)
        self.scaling = self.data_set.scaling(config)
        self.data_shape = self.data_set.data_shape
        if model is None:
            # the initial weights come from the seed; fork_rng leaves the caller's global generator untouched
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed)
                model = build_model(config)
        self.device = resolve_device(config.device)
        self.model = model.to(self.device)
        self.ema_model = copy.deepcopy(self.model).requires_grad_(False) if config.ema > 0 else None
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, foreach=True)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.t_sampler = TimestepSampler(config.T, importance=config.importance_sampling)
        self.step = 0
        self._pool, self._pool_labels, self._pool_pos, self._pool_round = None, None, 0, 0
        self.batch_labels = None  # the class labels of the last batch (conditional training), null label for dropped

    @property
    def sampling_model(self):
        return self.ema_model if self.ema_model is not None else self.model

    def data_pool(self, round):
        """The examples of pool `round` (0, 1, ...), in model coordinates (float32), in the order drawn.

        The data set's `training_pool` (swiss roll: 2^16 fresh points; digits: the training split shuffled),
        seeded by (seed, round), so a run reproduces and a notebook can look at what was trained on.
        """
        return self._labelled_pool(round)[0]

    def _labelled_pool(self, round):
        """(examples in model coordinates, labels (N,) int64 or None) of pool `round`."""
        examples, labels = self.data_set.labelled_pool(self.config, round)
        return self.scaling.to_model(examples).float(), labels

    def next_batch(self):
        """The next batch of training examples in model coordinates (float32), from the seeded pools, on
        the model's device."""
        n = self.config.batch_size
        if self._pool is None or self._pool_pos + n > self._pool.shape[0]:
            self._pool, self._pool_labels = self._labelled_pool(self._pool_round)
            self._pool_pos, self._pool_round = 0, self._pool_round + 1
        batch = self._pool[self._pool_pos:self._pool_pos + n]
        if self._pool_labels is not None:
            self.batch_labels = self._pool_labels[self._pool_pos:self._pool_pos + n]
        self._pool_pos += n
        return batch.to(self.device)

    def lr_at(self, progress):
        """The learning rate at training progress in [0, 1] (after warm-up)."""
        cfg = self.config
        warm = min(1.0, (self.step + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else 1.0
        decay = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))) if cfg.lr_schedule == "cosine" else 1.0
        return cfg.lr * warm * decay

    def train_step(self, progress):
        """One step of Algorithm 1; returns (batch loss, learning rate used), or raises NonFiniteLossError."""
        cfg = self.config
        x0 = self.next_batch()
        # t and eps are drawn on the CPU from the seeded generator, then moved: a seed means the same run anywhere
        t, weights = self.t_sampler.sample(x0.shape[0], self.generator)
        t = t.to(self.device)
        eps = torch.randn(x0.shape, generator=self.generator).to(self.device)
        model = self.model
        if cfg.conditional:
            # each label becomes the null label (index num_classes) with probability label_drop [HS22, Alg. 1]
            drop = torch.rand(x0.shape[0], generator=self.generator) < cfg.label_drop
            labels = torch.where(drop, self.data_set.num_classes, self.batch_labels).to(self.device)
            self.batch_labels = labels

            def model(xt, t):
                return self.model(xt, t, labels)
        losses, terms = training_losses(self.sched, model, x0, t, eps, cfg.loss, cfg.prediction, cfg.var)
        loss = (losses * weights.to(device=losses.device, dtype=losses.dtype)).mean()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NonFiniteLossError(self.step + 1, value)
        if cfg.importance_sampling:
            self.t_sampler.update(t, terms)
        lr = self.lr_at(progress)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        if self.ema_model is not None:
            # early on a shorter average (warm-up of the decay), as in many EMA implementations
            decay = min(cfg.ema, (1 + self.step) / (10 + self.step))
            with torch.no_grad():
                torch._foreach_lerp_(list(self.ema_model.parameters()), list(self.model.parameters()), 1 - decay)
        return value, lr

    def run(self):
        """Train, yielding a TrainRecord per step, until config.steps or config.max_seconds is reached.

        With max_seconds, the learning-rate schedule follows the larger of step / steps and
        elapsed / max_seconds, so a time-boxed run still decays to the end; such a run reproduces
        only as far as both stopped at the same step.
        """
        cfg = self.config
        bar = progress_bar(None, self.progress, f"train ({cfg.loss})", total=cfg.steps)
        start, running = time.perf_counter(), None
        try:
            while self.step < cfg.steps:
                elapsed = time.perf_counter() - start
                if cfg.max_seconds is not None and elapsed >= cfg.max_seconds:
                    break
                progress = self.step / cfg.steps
                if cfg.max_seconds is not None:
                    progress = max(progress, elapsed / cfg.max_seconds)
                value, lr = self.train_step(progress)
                running = value if running is None else 0.99 * running + 0.01 * value
                if bar is not None:
                    bar.update(1)
                    if self.step % 50 == 0:
                        bar.set_postfix(loss=f"{running:.4f}")
                yield TrainRecord(self.step, value, lr, time.perf_counter() - start)
        finally:
            if bar is not None:
                bar.close()
