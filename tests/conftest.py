"""Shared fixtures for the unit tests.

- `sched`: a test that takes it runs once per named schedule and T in SIZES (12 cases).
- `randn`: standard normal float64 draws from a generator seeded 0 for each test; `randn.generator`
  is that generator, for library functions that draw their own noise.
- `scaled_roll`: the 2-D swiss roll scaled to zero mean and unit average variance.

`reference.py` holds the formulas the tests compare against, written again from the papers without
the library.

Every random number comes from an explicit torch.Generator with a fixed seed and everything is
float64, so a Monte Carlo test computes the same numbers on every run: its tolerance (a few standard
errors, computed from the sample) decides once whether it passes, it cannot flicker.
"""

import functools

import pytest
import torch

import diffusion_lib as dl
from reference import SIZES


# the tests work on small tensors, where a second intra-op thread saves little and, on a busy machine,
# costs a lot: each parallel op waits for both threads to be scheduled (a T = 1000 chain is ~10 000 ops).
# One thread keeps the suite fast and its timing stable. (The notebooks run in their own kernels.)
torch.set_num_threads(1)


@functools.lru_cache(maxsize=None)
def cached_schedule(name, T):
    """make_schedule is cheap but the T = 1000 ones are used by many tests; build each once."""
    return dl.make_schedule(name, T)


def pytest_generate_tests(metafunc):
    if "sched" in metafunc.fixturenames:
        cases = [(name, T) for name in dl.SCHEDULES for T in SIZES]
        metafunc.parametrize("sched", cases, ids=[f"{name}-{T}" for name, T in cases], indirect=True)


@pytest.fixture
def sched(request):
    return cached_schedule(*request.param)


@pytest.fixture
def randn():
    gen = torch.Generator().manual_seed(0)

    def draw(*shape):
        return torch.randn(shape, generator=gen, dtype=torch.float64)

    draw.generator = gen
    return draw


@pytest.fixture(scope="session")
def scaled_roll():
    """2 000 swiss-roll points (seed 1) in the scaled coordinates the diffusion works in, (2000, 2)."""
    return dl.swiss_roll_scaling().to_model(dl.swiss_roll(2000, seed=1))
