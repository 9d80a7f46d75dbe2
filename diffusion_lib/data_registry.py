"""Data sets as plug-ins: everything the trainer, the checkpoints and the CLI need to know about a data set.

Contents: `DataSet`, `DATASETS`, `register_data_set`, `get_data_set`, `SwissRollData`, `DigitsData`.

A data set is a `DataSet` subclass registered under its name; `TrainConfig.data` names it. It says what one
example looks like, how raw data maps to the model's coordinates, which seeded examples train and which
held-out ones score the bound, whether its likelihood is a density (continuous, Gaussian decoder) or a
probability (discretized over `levels` values), which network it trains by default, and what else its
evaluation reports. `Trainer`, `load_checkpoint` and the CLI only ever call these methods, so a new data set
is one subclass and one `register_data_set` call (tests/test_data_registry.py adds scikit-learn's two moons).
"""

import dataclasses
import functools

import torch

DATASETS = {}  # name -> DataSet, in registration order


class DataSet:
    """The interface of a data set. Raw examples are float64 tensors (N, *data_shape) in data coordinates."""

    name = None  # the value of TrainConfig.data and --data
    data_shape = None  # the shape of one example: (D,) for points, (C, H, W) for images
    decoder = "gaussian"  # L_0: "gaussian" (continuous data, a density) or "discretized" over `levels` values
    levels = None  # the number of values per coordinate of discrete data (its decoder's bins)
    bound_batch_size = None  # examples per chunk of the bound (None: all at once)
    num_classes = None  # the number of class labels, for data sets that have them (conditional training)

    def scaling(self, config):
        """The fixed AffineScaling from raw data to the model's coordinates (the same in every run)."""
        raise NotImplementedError

    def training_pool(self, config, round):
        """Raw training examples for pool `round` (0, 1, ...), seeded by (config.seed, round), in the order to
        train on; the trainer takes its batches from consecutive pools. A data set with classes returns
        (examples, labels (N,) int64)."""
        raise NotImplementedError

    def labelled_pool(self, config, round):
        """(examples, labels or None) of training pool `round`: one shape for data with and without classes."""
        pool = self.training_pool(config, round)
        return pool if isinstance(pool, tuple) else (pool, None)

    def held_out(self, n, config, seed):
        """At most n raw examples that no model trained on: the NLL bound is scored on these."""
        raise NotImplementedError

    def variance_data(self, n, config, seed):
        """n raw examples that the bound is not scored on, for the optimal variance (`optimal_variance`)."""
        return self.labelled_pool(config, round=10_000 + seed)[0][:n]

    def build_model(self, config):
        """The untrained default network for this data set (an MLP for points)."""
        from .models import MLP

        return MLP(self.data_shape[0], config.hidden, config.emb_dim, learn_var=config.var == "learned")

    def output(self, x_raw):
        """Samples in raw coordinates as `sample` writes them (discrete data: rounded to its values)."""
        return x_raw

    def evaluate(self, run, samples, x_eval, bound, seed=0, exact_nll=False):
        """(rows, result): lines to print and JSON entries beyond the bound's (`scorecard.evaluate`), for raw
        samples, the bound's held-out examples x_eval and its summary; run is a Trainer or a Checkpoint."""
        if exact_nll:
            raise ValueError(f"--exact-nll is not available for the data set {self.name!r}")
        mean_gap = (samples.mean(dim=0) - x_eval.mean(dim=0)).abs().max().item()
        rows = [("mean gap", f"{mean_gap:.4f} (largest |sample mean - held-out mean| over coordinates)")]
        return rows, {"mean_gap": mean_gap}


def register_data_set(data_set):
    """Make a DataSet instance available as TrainConfig(data=data_set.name) and --data; returns it."""
    if not isinstance(data_set, DataSet) or not isinstance(data_set.name, str) or data_set.data_shape is None:
        raise TypeError("register a DataSet instance with a name and a data_shape")
    if data_set.decoder not in ("gaussian", "discretized") or (data_set.decoder == "discretized"
                                                                 and not data_set.levels):
        raise ValueError("decoder must be 'gaussian', or 'discretized' with its number of levels")
    DATASETS[data_set.name] = data_set
    return data_set


def get_data_set(name):
    """The registered DataSet called `name`; ValueError listing the known names otherwise."""
    if name not in DATASETS:
        raise ValueError(f"unknown data {name!r}; choose one of {tuple(DATASETS)}")
    return DATASETS[name]


class SwissRollData(DataSet):
    """The 2-D swiss roll (`data.swiss_roll`): fresh points for every pool, the exact entropy as the floor."""

    name, data_shape = "swiss_roll", (2,)

    def scaling(self, config):
        from .roll import swiss_roll_scaling

        return swiss_roll_scaling(config.noise)

    def training_pool(self, config, round):
        from .roll import swiss_roll

        # 2^16 fresh points per round: the net keeps seeing new data
        return swiss_roll(max(2 ** 16, config.batch_size), config.noise, seed=pool_seed(config, round))

    def held_out(self, n, config, seed):
        from .roll import swiss_roll

        return swiss_roll(n, config.noise, seed=2_000_000 + seed)

    def variance_data(self, n, config, seed):
        from .roll import swiss_roll

        return swiss_roll(n, config.noise, seed=3_000_000 + seed)

    def evaluate(self, run, samples, x_eval, bound, seed=0, exact_nll=False):
        from .roll_density import swiss_roll_entropy
        from .evaluation import sample_metrics
        from .exact_likelihood import ode_nll

        noise = run.config.noise
        metrics = sample_metrics(samples, noise, seed=seed)
        exact = ode_nll(run.sched, run.sampling_model, run.scaling, x_eval, run.config.prediction).summary() \
            if exact_nll else {}
        # the floor by Monte Carlo over 10x the bound's points (at most 20000: standard error ~0.01 nats)
        floor, floor_se = swiss_roll_entropy(noise, n=min(20_000, 10 * x_eval.shape[0]))
        result = {"entropy_floor": floor, "entropy_floor_se": floor_se, "gap_to_floor": bound["nll_bound"] - floor,
                  **exact, **metrics}
        rows = [("entropy floor", f"{floor:.4f} +- {floor_se:.4f} nats"),
                ("gap to floor", f"{result['gap_to_floor']:.4f} nats"),
                *([("exact NLL (ODE)", f"{exact['exact_nll']:.4f} +- {exact['exact_nll_se']:.4f} nats (median "
                                       f"{exact['exact_nll_median']:.4f}, max {exact['exact_nll_max']:.2f})")]
                  if exact else []),
                ("sliced-W ratio", f"{metrics['sw_ratio']:.3f} (fresh data ~1)"),
                ("on-roll fraction", f"{metrics['on_roll']:.4f} (fresh data ~0.997)"),
                ("coverage TV", f"{metrics['coverage']:.4f} (fresh data ~0.014)")]
        return rows, result


class DigitsData(DataSet):
    """scikit-learn's 8x8 digits (`digits.load_digits`): 17 intensity levels, a U-Net, a classifier's judgement."""

    name, data_shape, decoder, bound_batch_size = "digits", (1, 8, 8), "discretized", 120
    levels, num_classes = 17, 10

    def scaling(self, config):
        from .digits import digits_scaling

        return digits_scaling()

    def _split(self, split):
        return _digits_split(split)

    def training_pool(self, config, round):
        # the training split shuffled: one epoch (or more, for batches larger than the split) per round
        train = self._split("train")
        generator = torch.Generator().manual_seed(pool_seed(config, round))
        n = len(train)
        order = torch.cat([torch.randperm(n, generator=generator) for _ in range(-(-config.batch_size // n))])
        return train.images[order], train.labels[order]

    def held_out(self, n, config, seed):
        return self._split("test").images[:n]

    def variance_data(self, n, config, seed):
        return self._split("train").images[:n]

    def build_model(self, config):
        from .unet import UNet

        return UNet(self.data_shape[0], config.width, block=config.block, scale_shift=config.scale_shift,
                    attention=config.attention, learn_var=config.var == "learned",
                    fourier_features=config.fourier_features,
                    num_classes=self.num_classes if config.conditional else None)

    def output(self, x_raw):
        from .digits import quantize

        return quantize(x_raw)  # the nearest of the 17 intensities

    def evaluate(self, run, samples, x_eval, bound, seed=0, exact_nll=False):
        from .digit_quality import classifier_accuracy, digit_quality, train_classifier

        if exact_nll:
            raise ValueError("--exact-nll is for the swiss roll: the digits are discrete data, whose likelihood is "
                             "the bound's (a density would need dequantization)")
        train, test = self._split("train"), self._split("test")
        classifier = train_classifier(train, seed=seed)
        quality = digit_quality(classifier, samples, test, seed=seed)
        result = {"classifier_accuracy": classifier_accuracy(classifier, test), **dataclasses.asdict(quality)}
        rows = [("classifier", f"{result['classifier_accuracy']:.3f} held-out accuracy"),
                ("class counts", " ".join(str(c) for c in quality.class_counts)),
                ("class TV", f"{quality.class_tv:.3f} (uniform 0)"),
                ("confidence", f"{quality.confidence:.3f} (mean top-class probability)"),
                ("Frechet", f"{quality.frechet:.1f} (real vs real floor {quality.frechet_floor:.1f})")]
        return rows, result


@functools.cache
def _digits_split(split):
    """The digits of one split, loaded once per process (the trainer asks for a pool every epoch)."""
    from .digits import load_digits

    return load_digits(split)


def pool_seed(config, round):
    """The seed of training pool `round`: (seed * 1_000_003 + round) mod 2^32, so a run reproduces."""
    return (config.seed * 1_000_003 + round) % 2 ** 32


register_data_set(SwissRollData())
register_data_set(DigitsData())
