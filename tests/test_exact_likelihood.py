"""The probability-flow ODE likelihood against known answers: Gaussian data, the swiss roll's exact density."""

import math

import pytest
import torch

import diffusion_lib as dl
from diffusion_lib.scaling import AffineScaling
from diffusion_lib.exact_likelihood import ALPHA_BAR_END, _interp, _t_of_log_sigma, default_t_end

SCALING = AffineScaling(shift=(1.0, -2.0), scale=3.0)  # raw = 3 y + shift: the NLL gains 2 log 3


def gaussian_data(n, data_var, seed=0):
    """Raw points whose model coordinates are N(0, data_var I), and their exact NLL in raw coordinates."""
    y = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * math.sqrt(data_var)
    nll = 0.5 * y.pow(2).sum(dim=1) / data_var + math.log(2 * math.pi * data_var) + 2 * math.log(SCALING.scale)
    return SCALING.to_data(y), nll


@pytest.mark.parametrize("name", dl.SCHEDULES)
def test_alpha_bar_at_interpolates_the_log_snr(name):
    sched = dl.make_schedule(name, 50)
    t = torch.arange(sched.T + 1, dtype=torch.float64)
    assert torch.allclose(dl.alpha_bar_at(sched, t), sched.alpha_bar, rtol=1e-12, atol=0)
    fine = dl.alpha_bar_at(sched, torch.linspace(0, sched.T, 2001, dtype=torch.float64))
    assert (fine[1:] < fine[:-1]).all()  # strictly decreasing from 1 at t = 0
    lam = lambda ab: torch.log(ab / (1 - ab))  # noqa: E731
    mid = dl.alpha_bar_at(sched, t[1:-1] + 0.5)
    assert torch.allclose(lam(mid), (lam(sched.alpha_bar[1:-1]) + lam(sched.alpha_bar[2:])) / 2, atol=1e-9)
    # below t = 1, sigma = t sigma_1
    sigma = lambda ab: ((1 - ab) / ab).sqrt()  # noqa: E731
    assert float(sigma(dl.alpha_bar_at(sched, 0.25))) == pytest.approx(0.25 * float(sigma(sched.alpha_bar[1])))
    # the solver's time map inverts it
    for tc in (1.0, 1.7, 25.5, 49.99):
        u = math.log(float(sigma(dl.alpha_bar_at(sched, tc))))
        assert _t_of_log_sigma(sched, u) == pytest.approx(tc, abs=1e-9)


def test_the_flow_stops_before_the_clipped_end():
    cosine = dl.make_schedule("cosine", 1000)
    t_end = default_t_end(cosine)
    assert t_end < 1000 and cosine.alpha_bar[t_end] >= ALPHA_BAR_END > cosine.alpha_bar[t_end + 1]
    assert default_t_end(dl.make_schedule("linear", 1000)) == 1000  # alpha_bar_T = 4e-5: nothing to cut


def test_an_error_in_the_clipped_steps_does_not_reach_the_nll():
    # a denoiser that is exact except after t_end, where its error grows with |x| (as a network's does in the
    # tails of N(0, I) it rarely saw): the flow integrates that error over the clipped step's long log-SNR stretch
    sched = dl.make_schedule("cosine", 1000)
    exact = dl.gaussian_data_denoiser(sched, 1.0)
    t_end = default_t_end(sched)

    def model(xt, t):
        bad = (t > t_end).to(xt.dtype).reshape(-1, 1)
        return exact(xt, t) + bad * 0.005 * xt.pow(2).sum(dim=1, keepdim=True) * xt

    x, nll = gaussian_data(200, 1.0, seed=2)
    assert (dl.ode_nll(sched, model, SCALING, x, steps=64).nll - nll).abs().max() < 0.01
    to_T = dl.ode_nll(sched, model, SCALING, x, steps=64, t_end=1000).nll
    assert torch.isfinite(to_T).all() and (to_T - nll).abs().max() > 0.5


def test_score_is_minus_eps_over_sigma_tweedie():
    sched = dl.make_schedule("cosine", 100)
    data_var = 0.4
    model = dl.gaussian_data_denoiser(sched, data_var)
    x = torch.randn(7, 2, dtype=torch.float64)
    for t in (1, 30, 99):
        ab = float(sched.alpha_bar[t])
        score = dl.score_from_eps(sched, model(x, torch.full((7,), t)), t)
        # q(x_t) = N(0, (ab s^2 + 1 - ab) I), so grad log q = -x / (ab s^2 + 1 - ab)
        assert torch.allclose(score, -x / (ab * data_var + 1 - ab), rtol=1e-10)
    # the roll: the optimal eps against a finite difference of log q_t, a swiss roll with wider noise
    scaling = dl.swiss_roll_scaling(0.5)
    x = torch.tensor([[0.3, -0.2], [1.2, 0.9], [-0.7, 0.1]], dtype=torch.float64)
    for t in (5, 40):
        ab = float(sched.alpha_bar[t])
        noise = scaling.scale * math.sqrt((ab * (0.5 / scaling.scale) ** 2 + 1 - ab) / ab)

        def log_q(y, ab=ab, noise=noise):  # x_t = sqrt(ab) (raw - shift) / scale with raw ~ the roll of this noise
            return dl.swiss_roll_log_density(scaling.to_data(y / math.sqrt(ab)), noise)

        h = 1e-5
        grad = torch.stack([(log_q(x + h * e) - log_q(x - h * e)) / (2 * h) for e in torch.eye(2, dtype=torch.float64)],
                           dim=1)
        score = dl.score_from_eps(sched, dl.optimal_eps(x, t, sched, scaling), t)
        assert torch.allclose(score, grad, atol=1e-5 * (1 + grad.abs().max()))


@pytest.mark.parametrize("name,data_var", [("cosine", 0.5), ("linear", 2.0), ("sigmoid", 1.0)])
def test_gaussian_data_gives_the_exact_nll(name, data_var):
    sched = dl.make_schedule(name, 1000)
    x, nll = gaussian_data(200, data_var)
    result = dl.ode_nll(sched, dl.gaussian_data_denoiser(sched, data_var), SCALING, x, steps=64)
    err = result.nll - nll
    assert err.abs().max() < 0.01 and abs(float(err.mean())) < 0.01
    assert result.nll.dtype == torch.float64 and result.nll.shape == (200,)
    assert torch.allclose(result.nll, result.prior + result.flow)


def test_predictions_x0_mu_and_v_give_the_same_nll():
    sched = dl.make_schedule("cosine", 200)
    eps_model = dl.gaussian_data_denoiser(sched, 0.7)

    def x0_model(xt, t):
        ab = dl.alpha_bar_at(sched, t).reshape(-1, 1)
        return (xt - (1 - ab).sqrt() * eps_model(xt, t)) / ab.sqrt()

    def mu_model(xt, t):
        tc = float(t[0])
        x0 = x0_model(xt, t)
        return _interp(sched.posterior_coef_x0, tc) * x0 + _interp(sched.posterior_coef_xt, tc) * xt

    def v_model(xt, t):  # v = sqrt(abar) eps - sqrt(1 - abar) x_0 [Sa22]
        ab = dl.alpha_bar_at(sched, t).reshape(-1, 1)
        return ab.sqrt() * eps_model(xt, t) - (1 - ab).sqrt() * x0_model(xt, t)

    x, _ = gaussian_data(50, 0.7)
    ref = dl.ode_nll(sched, eps_model, SCALING, x, steps=32).nll
    for prediction, model in (("x0", x0_model), ("mu", mu_model), ("v", v_model)):
        out = dl.ode_nll(sched, model, SCALING, x, prediction=prediction, steps=32).nll
        assert torch.allclose(out, ref, atol=1e-8), prediction


def test_halving_the_step_moves_the_gaussian_nll_by_less_than_the_tolerance():
    sched = dl.make_schedule("cosine", 1000)
    x, nll = gaussian_data(100, 0.5, seed=1)
    model = dl.gaussian_data_denoiser(sched, 0.5)
    coarse, fine = (dl.ode_nll(sched, model, SCALING, x, steps=s).nll for s in (64, 128))
    assert (coarse - fine).abs().max() < 1e-3  # the tolerance stated in ode_nll's docstring
    # and the check has power: 8 steps are visibly worse
    assert (dl.ode_nll(sched, model, SCALING, x, steps=8).nll - nll).abs().max() > 1e-3


def test_hutchinson_is_unbiased_for_the_trace():
    torch.manual_seed(0)
    net = dl.MLP(2, (32, 32), 16)  # a random network: its Jacobian is far from diagonal
    sched = dl.make_schedule("linear", 100)
    x = dl.swiss_roll(400, 0.5, seed=3)
    scaling = dl.swiss_roll_scaling(0.5)
    exact = dl.ode_nll(sched, net, scaling, x, steps=16)
    hutch = dl.ode_nll(sched, net, scaling, x, steps=16, divergence="hutchinson",
                       generator=torch.Generator().manual_seed(1))
    assert torch.allclose(hutch.x_end, exact.x_end)  # the path does not depend on the probes
    diff = hutch.nll - exact.nll
    se = float(diff.std()) / math.sqrt(diff.numel())
    assert se > 1e-4  # the estimate is random (the off-diagonal terms enter)...
    assert abs(float(diff.mean())) < 5 * se  # ...and unbiased (false alarm 6e-7)
    four = dl.ode_nll(sched, net, scaling, x, steps=16, divergence="hutchinson", num_probes=4,
                      generator=torch.Generator().manual_seed(2))
    assert float((four.nll - exact.nll).std()) < 0.75 * float(diff.std())  # 4 probes: half the spread


def test_hutchinson_on_images():
    sched = dl.make_schedule("cosine", 100)
    y = torch.randn(20, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    scaling = AffineScaling(shift=(0.0,), scale=1.0)
    result = dl.ode_nll(sched, dl.gaussian_data_denoiser(sched, 1.0), scaling, y, steps=64, divergence="hutchinson",
                        generator=torch.Generator().manual_seed(0))
    nll = 0.5 * y.pow(2).sum(dim=(1, 2, 3)) + 8 * math.log(2 * math.pi)
    # the exact denoiser's Jacobian is a multiple of I, so v^T J v = tr J for any +-1 probe
    assert result.x_end.shape == y.shape and (result.nll - nll).abs().max() < 1e-3


def test_summary_reports_the_distribution():
    values = torch.cat([torch.zeros(98, dtype=torch.float64), torch.tensor([1.0, 100.0], dtype=torch.float64)])
    result = dl.ODENLL(nll=values, prior=values, flow=0 * values, x_end=torch.zeros(100, 2), num_dims=2,
                       steps=1, t_end=1.0)
    s = result.summary(trim=0.01)
    assert s["exact_nll"] == pytest.approx(1.01) and s["exact_nll_median"] == 0.0 and s["exact_nll_max"] == 100.0
    assert s["exact_nll_trimmed"] == pytest.approx(1 / 98) and s["exact_nll_se"] == pytest.approx(values.std() / 10)
    assert s["exact_nll_bpd"] == pytest.approx(1.01 / (2 * math.log(2)))


@pytest.mark.parametrize("kwargs,message", [
    ({"prediction": "score"}, "unknown prediction"), ({"divergence": "trace"}, "unknown divergence"),
    ({"steps": 0}, "steps must be a positive integer"), ({"num_probes": 1.5}, "num_probes must be"),
    ({"t_end": 0}, "t_end must be a time in [1, T]"), ({"t_end": 1e9}, "t_end must be"),
])
def test_bad_input_gets_one_line(kwargs, message):
    sched = dl.make_schedule("cosine", 10)
    with pytest.raises(ValueError) as info:
        dl.ode_nll(sched, dl.gaussian_data_denoiser(sched, 1.0), SCALING, torch.zeros(3, 2), **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_bad_data_and_times():
    sched = dl.make_schedule("cosine", 10)
    model = dl.gaussian_data_denoiser(sched, 1.0)
    with pytest.raises(ValueError, match="NaN or inf"):
        dl.ode_nll(sched, model, SCALING, torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(TypeError, match="floating-point"):
        dl.ode_nll(sched, model, SCALING, torch.zeros(2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"continuous t must lie in \[0, T\]"):
        dl.alpha_bar_at(sched, 10.5)


@pytest.mark.slow
def test_the_optimal_denoiser_gives_the_swiss_roll_density_point_by_point():
    sched = dl.make_schedule("cosine", 1000)
    scaling = dl.swiss_roll_scaling(0.5)
    model = dl.optimal_denoiser(sched, scaling, num_nodes=2001)
    x = dl.swiss_roll(100, 0.5, seed=11)
    truth = -dl.swiss_roll_log_density(x)
    coarse, fine = (dl.ode_nll(sched, model, scaling, x, steps=s).nll for s in (64, 128))
    assert float((fine - truth).abs().mean()) <= 0.02 and float((fine - truth).abs().max()) <= 0.02
    assert float((coarse - fine).abs().mean()) < 1e-3  # the stated tolerance, on the roll
