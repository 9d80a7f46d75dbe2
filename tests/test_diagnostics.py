"""The prior diagnostics behind notebooks 00, 02 and 03: `summarize_prior`, `prior_table`, `first_step_below`."""

import math

import pytest
import torch

import diffusion_lib as dl


@pytest.fixture
def x0():
    scaling = dl.swiss_roll_scaling(0.5)
    return scaling.to_model(dl.swiss_roll(300, noise=0.5, seed=0))


@pytest.mark.parametrize("name", dl.SCHEDULES)
@pytest.mark.parametrize("T", [10, 1000])
def test_summarize_prior_matches_closed_form(x0, name, T):
    # KL(N(m, s^2) || N(0, 1)) = (s^2 + m^2 - 1 - log s^2) / 2 per coordinate, m = sqrt(a) x0, s^2 = 1 - a
    sched = dl.make_schedule(name, T)
    a = sched.alpha_bar_T
    per_coord = 0.5 * ((1 - a) + a * x0 ** 2 - 1 - math.log(1 - a))
    expected = float(per_coord.sum(dim=1).mean())
    s = dl.summarize_prior(sched, x0)
    assert s.name == name and s.T == T
    assert s.alpha_bar_T == pytest.approx(float(torch.prod(1 - sched.beta[1:])), rel=1e-12)
    assert s.signal_left == pytest.approx(math.sqrt(a), rel=1e-12)
    assert s.prior_kl == pytest.approx(expected, rel=1e-9)
    assert s.prior_kl_bpd == pytest.approx(expected / (2 * math.log(2)), rel=1e-9)


def test_prior_table_has_one_line_per_schedule(x0):
    scheds = [dl.make_schedule(name, 100) for name in dl.SCHEDULES]
    lines = dl.prior_table(scheds, x0).splitlines()
    assert len(lines) == 1 + len(scheds)
    assert "L_T [nats]" in lines[0]
    for line, sched in zip(lines[1:], scheds):
        fields = line.split()
        assert fields[0] == sched.name and int(fields[1]) == 100
        assert float(fields[2]) == pytest.approx(sched.alpha_bar_T, rel=1e-3)


def test_prior_table_rejects_empty(x0):
    with pytest.raises(ValueError, match="at least one"):
        dl.prior_table([], x0)


@pytest.mark.parametrize("name", dl.SCHEDULES)
@pytest.mark.parametrize("level", [0.5, 0.01])
def test_first_step_below_matches_a_loop(name, level):
    sched = dl.make_schedule(name, 100)
    expected = next(t for t in range(1, sched.T + 1) if sched.alpha_bar[t] <= level)
    assert dl.first_step_below(sched, level) == expected


def test_first_step_below_none_and_bad_level():
    with pytest.warns(dl.ScheduleWarning):
        sched = dl.NoiseSchedule.from_betas(torch.full((10,), 1e-3))
    assert dl.first_step_below(sched, 0.5) is None
    with pytest.raises(ValueError, match="fraction"):
        dl.first_step_below(sched, 1.5)

