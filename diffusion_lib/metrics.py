"""Comparing two samples of points: the energy distance and a permutation two-sample test.

    E(X, Y) = 2 E||X - Y|| - E||X - X'|| - E||Y - Y'||   (>= 0, and 0 only when the laws agree)

[SR13] Szekely & Rizzo 2013, "Energy statistics". The permutation test asks how often relabelling
the pooled points at random gives a distance at least as large: a p-value that is valid for any
distribution, which is what "the chain and the closed form agree" needs.
"""

from dataclasses import dataclass

import torch

_BLOCK = 1024  # relabellings per matrix product in two_sample_test


def energy_distance(x, y):
    """The (V-statistic) energy distance between samples x (N, D) and y (M, D), a float."""
    x, y = x.double().reshape(x.shape[0], -1), y.double().reshape(y.shape[0], -1)
    return float(2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean())


@dataclass
class TwoSampleResult:
    statistic: float  # the energy distance of the two samples as given
    p_value: float  # fraction of random relabellings with a statistic at least as large


def two_sample_test(x, y, num_permutations=200, seed=0):
    """Permutation test of "x and y come from the same distribution" with the energy distance.

    The p-value (1 + #relabellings at least as extreme) / (1 + num_permutations) is valid for any law:
    under "same distribution", P(p <= a) <= a. An assert `p > a` therefore fails by chance at most a
    fraction a of the time, and can reject only when num_permutations >= 1 / a - 1.
    """
    if num_permutations < 1:
        raise ValueError("num_permutations must be at least 1")
    x, y = x.double().reshape(x.shape[0], -1), y.double().reshape(y.shape[0], -1)
    pooled = torch.cat([x, y])
    dist = torch.cdist(pooled, pooled)
    n, m = x.shape[0], y.shape[0]
    gen = torch.Generator().manual_seed(seed)
    total = dist.sum()
    # row 0 is the observed labelling, the others random relabellings; z[k] marks the "x" points.
    # the three sums of distances are quadratic forms in z: one matrix product per block of relabellings
    # (blocks keep memory flat when a small false-alarm rate needs tens of thousands of them)
    stats = []
    perms = [torch.arange(n + m)] + [torch.randperm(n + m, generator=gen) for _ in range(num_permutations)]
    for start in range(0, len(perms), _BLOCK):
        block = perms[start:start + _BLOCK]
        z = torch.zeros(len(block), n + m, dtype=torch.float64)
        for k, perm in enumerate(block):
            z[k, perm[:n]] = 1.0
        dz = z @ dist
        sum_xx = (dz * z).sum(dim=1)
        sum_xy = (dz * (1 - z)).sum(dim=1)
        sum_yy = total - 2 * sum_xy - sum_xx
        stats.append(2 * sum_xy / (n * m) - sum_xx / n ** 2 - sum_yy / m ** 2)
    stats = torch.cat(stats)
    observed = float(stats[0])
    exceed = int((stats[1:] >= observed).sum())
    return TwoSampleResult(statistic=observed, p_value=(1 + exceed) / (1 + num_permutations))
