"""Comparing two samples of points: the energy distance and a permutation two-sample test.

    E(X, Y) = 2 E||X - Y|| - E||X - X'|| - E||Y - Y'||   (>= 0, and 0 only when the laws agree)

[SR13] Szekely & Rizzo 2013, "Energy statistics". The permutation test asks how often relabelling
the pooled points at random gives a distance at least as large: a p-value that is valid for any
distribution, which is what "the chain and the closed form agree" needs.
"""

from dataclasses import dataclass

import torch


def energy_distance(x, y):
    """The (V-statistic) energy distance between samples x (N, D) and y (M, D), a float."""
    x, y = x.double().reshape(x.shape[0], -1), y.double().reshape(y.shape[0], -1)
    return float(2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean())


@dataclass
class TwoSampleResult:
    statistic: float  # the energy distance of the two samples as given
    p_value: float  # fraction of random relabellings with a statistic at least as large


def two_sample_test(x, y, num_permutations=200, seed=0):
    """Permutation test of "x and y come from the same distribution" with the energy distance."""
    if num_permutations < 1:
        raise ValueError("num_permutations must be at least 1")
    x, y = x.double().reshape(x.shape[0], -1), y.double().reshape(y.shape[0], -1)
    pooled = torch.cat([x, y])
    dist = torch.cdist(pooled, pooled)
    n = x.shape[0]

    def statistic(idx):
        a, b = idx[:n], idx[n:]
        return float(2 * dist[a][:, b].mean() - dist[a][:, a].mean() - dist[b][:, b].mean())

    observed = statistic(torch.arange(pooled.shape[0]))
    gen = torch.Generator().manual_seed(seed)
    exceed = sum(statistic(torch.randperm(pooled.shape[0], generator=gen)) >= observed
                 for _ in range(num_permutations))
    return TwoSampleResult(statistic=observed, p_value=(1 + exceed) / (1 + num_permutations))
