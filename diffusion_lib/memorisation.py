"""Does a generative model copy its training data? Nearest-neighbour distances, a test on their lower tail,
and a training set small enough to be memorised.

Contents: `nearest_distances`, `CopyTest`, `copy_test`, `FixedTrainingSet`.

The fair reference for "how close to a training example is a sample?" is the same distance for held-out
examples, which the model never saw: a model that generalises draws samples no closer to its training set
than new data from the same distribution is [Me20]. A model that copies puts many samples (almost) on top
of training examples, so the closest of all the distances, samples' and held-out examples' pooled, are mostly
samples'. Under the null hypothesis that a sample's distance is distributed like a held-out example's (the
n + m distances exchangeable), the number X of samples among the k smallest pooled distances is
hypergeometric, whatever that distribution is:

    P(X = j) = C(n, j) C(m, k - j) / C(n + m, k),    E[X] = k n / (n + m)

so `copy_test`'s p-value P(X >= observed) is exact at every seed and sample size (ties broken at random).
[Me20] C. Meehan, K. Chaudhuri, S. Dasgupta. A Non-Parametric Test to Detect Data-Copying in Generative
Models. AISTATS 2020.
"""

import math
from dataclasses import dataclass

import torch

from .data_registry import DataSet, get_data_set

CHUNK = 1024  # queries per block of the distance matrix: 1024 x N references in float64


def nearest_distances(queries, references, chunk=CHUNK):
    """The Euclidean distance from each query to its nearest reference, and that reference's index.

    Examples of any shape are flattened: queries (N, ...) and references (M, ...) with the same shape per
    example. Candidates come from |q|^2 + |r|^2 - 2 q.r in float64, chunk queries at a time (5000 x 1437
    digits takes a fraction of a second); the returned distance is recomputed as |q - r| for the chosen
    pair, so an exact copy gets exactly 0. Returns (distances float64 (N,), indices int64 (N,)).
    """
    q, r = torch.as_tensor(queries), torch.as_tensor(references)
    if q.ndim < 2 or r.ndim < 2 or q.shape[1:] != r.shape[1:] or r.shape[0] == 0:
        raise ValueError(f"queries (N, ...) and references (M >= 1, ...) need the same shape per example, got "
                         f"{tuple(q.shape)} and {tuple(r.shape)}")
    q, r = q.double().reshape(q.shape[0], -1), r.double().reshape(r.shape[0], -1)
    if not (torch.isfinite(q).all() and torch.isfinite(r).all()):
        raise ValueError("queries or references contain NaN or inf")
    r_sq = r.pow(2).sum(dim=1)  # (M,)
    index = torch.empty(q.shape[0], dtype=torch.int64)
    for start in range(0, q.shape[0], chunk):
        block = q[start:start + chunk]
        # |q - r|^2 up to |q|^2, which does not change the argmin
        index[start:start + chunk] = (r_sq - 2 * block @ r.T).argmin(dim=1)
    return (q - r[index]).norm(dim=1), index


@dataclass
class CopyTest:
    """Are samples over-represented among the closest distances to the training set? (module docstring)"""

    n: int  # samples
    m: int  # held-out examples
    k: int  # the k smallest of the n + m pooled distances form the tail
    in_tail: int  # samples among them
    expected: float  # k n / (n + m): the null hypothesis' mean of in_tail
    p_value: float  # P(X >= in_tail), X hypergeometric: small when the samples crowd the training set


def _hypergeometric_tail(n, m, k, x):
    """P(X >= x) for X ~ Hypergeometric(n + m items, n marked, k drawn), exact in integers."""
    total = math.comb(n + m, k)
    return sum(math.comb(n, j) * math.comb(m, k - j) for j in range(max(x, 0), min(n, k) + 1)) / total


def copy_test(sample_distances, held_out_distances, tail=0.05, margin=1.0, generator=None):
    """Count the samples among the smallest `tail` fraction of the pooled nearest-training distances.

    Args: sample_distances (n,) and held_out_distances (m,), each example's distance to its nearest training
    example (`nearest_distances`); tail in (0, 1): k = max(1, round(tail (n + m))); generator a torch.Generator
    that breaks ties at random (equal distances are common for discrete data such as the digits); margin in
    (0, 1]: the sample distances are divided by it first, so the null hypothesis becomes "a sample's distance
    is distributed like margin x a held-out example's" (samples that are smoother, more typical examples than
    real ones sit somewhat closer to everything without copying anything; a copy stays at distance 0).
    Returns CopyTest; its p_value is exact under exchangeability, so asserting p_value > alpha raises a false
    alarm with probability at most alpha. A sampler that copies a fraction c of its samples puts about
    c n + (k - c n) / 2 of them in the tail (all of it once c n >= k).
    """
    s, h = torch.as_tensor(sample_distances).double().reshape(-1), torch.as_tensor(held_out_distances).double().reshape(-1)
    if s.numel() == 0 or h.numel() == 0 or not 0 < tail < 1 or not 0 < margin <= 1:
        raise ValueError(f"need samples and held-out distances, a tail fraction in (0, 1) and a margin in (0, 1], "
                         f"got {s.numel()}, {h.numel()}, {tail!r} and {margin!r}")
    s = s / margin
    n, m = s.numel(), h.numel()
    k = max(1, round(tail * (n + m)))
    pooled = torch.cat([s, h])
    is_sample = torch.cat([torch.ones(n, dtype=torch.bool), torch.zeros(m, dtype=torch.bool)])
    shuffle = torch.randperm(n + m, generator=generator)  # random order among ties, then a stable sort
    order = shuffle[torch.sort(pooled[shuffle], stable=True).indices]
    in_tail = int(is_sample[order[:k]].sum())
    return CopyTest(n=n, m=m, k=k, in_tail=in_tail, expected=k * n / (n + m),
                    p_value=_hypergeometric_tail(n, m, k, in_tail))


class FixedTrainingSet(DataSet):
    """A registered data set cut down to n fixed training examples, the same ones in every training pool.

    The examples are the first n of the base data set's pool 0 (seeded by `TrainConfig.seed`); each pool
    repeats them, shuffled, to at least 2^16 examples, so training runs many epochs over the same few.
    Everything else (scaling, held-out data, network, evaluation) is the base data set's. Register an
    instance (`dl.register_data_set(dl.FixedTrainingSet("swiss_roll", 64))`) and train with data=its name.
    """

    def __init__(self, base, n, name=None):
        self.base = get_data_set(base) if isinstance(base, str) else base
        if not (isinstance(n, int) and n >= 1):
            raise ValueError(f"n must be a positive number of training examples, got {n!r}")
        self.n = n
        self.name = name or f"{self.base.name}_{n}"
        self.data_shape, self.decoder, self.levels = self.base.data_shape, self.base.decoder, self.base.levels
        self.bound_batch_size = self.base.bound_batch_size

    def examples(self, config):
        """The n raw training examples (n, *data_shape) (a labelled base's labels are dropped: unconditional)."""
        pool = self.base.labelled_pool(config, 0)[0]
        if pool.shape[0] < self.n:
            raise ValueError(f"{self.base.name}'s pool holds {pool.shape[0]} examples, fewer than n = {self.n}")
        return pool[:self.n]

    def scaling(self, config):
        return self.base.scaling(config)

    def training_pool(self, config, round):
        from .data_registry import pool_seed

        x = self.examples(config)
        repeats = -(-max(2 ** 16, config.batch_size) // self.n)
        generator = torch.Generator().manual_seed(pool_seed(config, round))
        return x.repeat(repeats, *([1] * (x.ndim - 1)))[torch.randperm(repeats * self.n, generator=generator)]

    def held_out(self, n, config, seed):
        return self.base.held_out(n, config, seed)

    def variance_data(self, n, config, seed):
        return self.base.variance_data(n, config, seed)

    def build_model(self, config):
        return self.base.build_model(config)

    def output(self, x_raw):
        return self.base.output(x_raw)

    def evaluate(self, run, samples, x_eval, bound, seed=0, exact_nll=False):
        return self.base.evaluate(run, samples, x_eval, bound, seed=seed, exact_nll=exact_nll)
