"""The optimal swiss-roll denoiser against Monte Carlo and its limits; the loss floor; the memorising denoiser."""

import math

import pytest
import torch

import diffusion_lib as dl
from diffusion_lib.optimal import (
    irreducible_simple_loss,
    memorising_denoiser,
    memorising_x0,
    optimal_denoiser,
    optimal_eps,
    optimal_x0,
)

NOISE = 0.5
NODES = 2001  # spacing 0.0047 in tau against a bump width >= 0.035 (see `roll_density`): enough, and fast


@pytest.fixture(scope="module")
def setup():
    return dl.make_schedule("linear", 1000), dl.swiss_roll_scaling(NOISE)


def draw_x0(n, scaling, gen):
    """Fresh roll points in model coordinates from a torch generator, (n, 2) float64."""
    tau = torch.rand(n, generator=gen, dtype=torch.float64) * (dl.TAU_RANGE[1] - dl.TAU_RANGE[0]) + dl.TAU_RANGE[0]
    return scaling.to_model(dl.roll_curve(tau) + NOISE * torch.randn(n, 2, generator=gen, dtype=torch.float64))


@pytest.mark.parametrize("t", [50, 200, 500])
def test_optimal_x0_matches_importance_sampling(setup, t):
    # E[x_0 | x_t] = E_{x_0 ~ data}[q(x_t | x_0) x_0] / E[q(x_t | x_0)]: self-normalised importance sampling
    sched, scaling = setup
    gen = torch.Generator().manual_seed(t)
    ab = float(sched.alpha_bar[t])
    xt = math.sqrt(ab) * draw_x0(4, scaling, gen) + math.sqrt(1 - ab) * torch.randn(4, 2, generator=gen, dtype=torch.float64)
    x0 = draw_x0(200_000, scaling, gen)
    exact = optimal_x0(xt, t, sched, scaling, NOISE, num_nodes=NODES)
    for i in range(4):
        log_q = -(xt[i] - math.sqrt(ab) * x0).pow(2).sum(dim=1) / (2 * (1 - ab))
        w = torch.softmax(log_q, dim=0)
        mean = w @ x0
        ess = 1 / w.pow(2).sum()
        # standard error of a self-normalised estimate: weighted std / sqrt(effective sample size)
        se = ((w @ (x0 - mean).pow(2)) / ess).sqrt()
        assert ess > 100
        assert ((exact[i] - mean).abs() <= 5 * se + 1e-4).all(), (t, exact[i], mean, se)


def test_at_t1_the_denoiser_returns_almost_x_t(setup):
    # E[x_0 | x_t] - x_t / sqrt(ab) = E[x_0 - x_t / sqrt(ab) | x_t] = -sqrt((1 - ab) / ab) E[eps | x_t], so by
    # Jensen E|E[x_0 | x_t] - x_t / sqrt(ab)|^2 <= D (1 - ab) / ab: a distance of ~0.014 at beta_1 = 1e-4,
    # against a data noise s = 0.073 and a roll of unit scale (model coordinates)
    sched, scaling = setup
    gen = torch.Generator().manual_seed(1)
    ab = float(sched.alpha_bar[1])
    eps = torch.randn(2000, 2, generator=gen, dtype=torch.float64)
    xt = math.sqrt(ab) * draw_x0(2000, scaling, gen) + math.sqrt(1 - ab) * eps
    x0 = optimal_x0(xt, 1, sched, scaling, NOISE, num_nodes=NODES)
    bound = 2 * (1 - ab) / ab
    assert (x0 - xt / math.sqrt(ab)).pow(2).sum(dim=1).mean() <= bound
    # and x_t itself: |x_t / sqrt(ab) - x_t| <= (1 / sqrt(ab) - 1) |x_t| is another 1e-4 |x_t|
    assert ((x0 - xt).norm(dim=1) <= 5 * math.sqrt(bound) + (1 / math.sqrt(ab) - 1) * xt.norm(dim=1)).all()


def test_at_t_T_the_denoiser_returns_the_data_mean(setup):
    # E|E[x_0 | x_T]|^2 = D Var(x_0) - D mmse <= D ab_T (the best linear denoiser of unit-variance data,
    # mean 0 in model coordinates): the prediction collapses to E[x_0] = 0
    sched, scaling = setup
    gen = torch.Generator().manual_seed(2)
    T, ab = sched.T, sched.alpha_bar_T
    xt = math.sqrt(ab) * draw_x0(500, scaling, gen) + math.sqrt(1 - ab) * torch.randn(500, 2, generator=gen, dtype=torch.float64)
    x0 = optimal_x0(xt, T, sched, scaling, NOISE, num_nodes=NODES)
    assert x0.pow(2).sum(dim=1).mean() <= 1.5 * 2 * ab
    assert x0.norm(dim=1).max() < 0.05


def test_eps_and_model_agree_with_x0(setup):
    sched, scaling = setup
    gen = torch.Generator().manual_seed(3)
    xt = torch.randn(7, 2, generator=gen, dtype=torch.float64)
    t = torch.tensor([1, 2, 10, 100, 500, 999, 1000])
    x0 = optimal_x0(xt, t, sched, scaling, NOISE, num_nodes=NODES)
    eps = optimal_eps(xt, t, sched, scaling, NOISE, num_nodes=NODES)
    assert torch.allclose(dl.x0_from_eps(sched, xt, t, eps), x0, atol=1e-9)
    model = optimal_denoiser(sched, scaling, NOISE, num_nodes=NODES)
    assert torch.allclose(model(xt, t), eps)
    assert model(xt.float(), t).dtype == torch.float32


def test_denoiser_samples_the_roll():
    # the optimal model in place of a network: samples sit on the roll (T = 50 keeps this fast)
    sched, scaling = dl.make_schedule("cosine", 50), dl.swiss_roll_scaling(NOISE)
    x = dl.sample(sched, optimal_denoiser(sched, scaling, NOISE, num_nodes=NODES), 300,
                  generator=torch.Generator().manual_seed(4))
    dist, _ = dl.nearest_on_roll(scaling.to_data(x.double()), num_nodes=NODES)
    assert dist.median() < 2 * NOISE


def test_irreducible_loss_between_its_bounds(setup):
    # knowing tau can only help: loss >= ab s^2 / (ab s^2 + 1 - ab) (Gaussian data of variance s^2);
    # the best linear denoiser of unit-variance data gives loss <= ab. Near t = 1 both are ~1, at T ~0.
    sched, scaling = setup
    ts = [1, 10, 100, 300, 600, 1000]
    res = irreducible_simple_loss(sched, scaling, NOISE, ts, n=1000, generator=torch.Generator().manual_seed(5),
                                  num_nodes=NODES)
    ab = sched.alpha_bar[ts]
    s2 = (NOISE / scaling.scale) ** 2
    lower, upper = ab * s2 / (ab * s2 + 1 - ab), ab
    assert torch.equal(res.t, torch.tensor(ts))
    # the lower bound is the first term of every draw of the Rao-Blackwellised estimate: it holds exactly
    assert (res.loss >= lower - 1e-12).all(), (res.loss, lower)
    # one-sided, 4 SE: the bound is nearly tight only at t = 600 and T (measured 0.6 SE away), so at most
    # ~2 x 3.2e-5 = 6e-5 false alarms at any seed; the other t are >= 3.6 SE inside the bound
    assert (res.loss <= upper + 4 * res.stderr).all(), (res.loss, upper)
    assert abs(res.loss[0] - 1) < 0.03  # the limit t -> 0: eps cannot be told apart from the data noise
    assert res.loss[-1] < 1e-4  # the limit t -> T: x_T is eps


def test_irreducible_loss_equals_the_mean_squared_residual():
    # the estimator averages tr Cov(eps | x_t) / D in closed form; check it against the definition,
    # the mean of |eps - E[eps | x_t]|^2 / D over independent draws, before, on and after the hump
    sched, scaling = dl.make_schedule("cosine", 1000), dl.swiss_roll_scaling(NOISE)
    ts, n = [55, 162, 336], 4000
    res = irreducible_simple_loss(sched, scaling, NOISE, ts, n=n, generator=torch.Generator().manual_seed(7),
                                  num_nodes=NODES)
    gen = torch.Generator().manual_seed(8)
    for t, loss, se in zip(ts, res.loss, res.stderr):
        ab = float(sched.alpha_bar[t])
        eps = torch.randn(n, 2, generator=gen, dtype=torch.float64)
        xt = math.sqrt(ab) * draw_x0(n, scaling, gen) + math.sqrt(1 - ab) * eps
        residual = (eps - optimal_eps(xt, t, sched, scaling, NOISE, num_nodes=NODES)).pow(2).mean(dim=1)
        direct, direct_se = residual.mean(), residual.std() / math.sqrt(n)
        # 5 standard errors: 5.7e-7 false alarms per check, 2e-6 for the three, at any seed
        assert abs(loss - direct) < 5 * math.hypot(se, direct_se), (t, loss, se, direct, direct_se)
        assert se < 0.6 * direct_se  # conditioning on x_t removes the spread of eps around its mean


def test_irreducible_loss_is_precise_enough_to_show_its_hump():
    # on the cosine schedule the floor falls to ~0.62 near t = 100, then rises to ~0.71 near t = 230
    # (x_t stops telling the roll's arms apart) before it falls to 0: a real hump of ~0.09. At the
    # notebook's n = 1000 the squared-residual estimator had standard errors of ~0.02 there, and one
    # 3-se draw drew a spike at t = 162; the Rao-Blackwellised one must resolve the hump many times over.
    sched, scaling = dl.make_schedule("cosine", 1000), dl.swiss_roll_scaling(NOISE)
    t_grid = torch.unique(torch.logspace(0, 3, 20).round().long())  # the notebook's grid
    res = irreducible_simple_loss(sched, scaling, NOISE, t_grid, n=1000, generator=torch.Generator().manual_seed(1),
                                  num_nodes=NODES)
    # over 30 seeds the largest of the 20 standard errors was 0.0105 +- 0.0004 (max 0.0112): 0.012 is 4 sd above
    assert (res.stderr < 0.012).all(), res.stderr
    # the hump itself, at the dip (t = 113) and the top (t = 234) with n = 4000: ~0.093 against a combined SE
    # of ~0.0065, so 5 SE leaves a margin of ~9 SE (P < 1e-18 of a false alarm at any seed). At n = 1000 the
    # hump is only ~7 +- 1.1 SE, and a 5-SE check there failed at 2 of 30 seeds.
    res = irreducible_simple_loss(sched, scaling, NOISE, [113, 234], n=4000, generator=torch.Generator().manual_seed(2),
                                  num_nodes=NODES)
    (dip, top), se = res.loss.tolist(), math.hypot(*res.stderr.tolist())
    assert top - dip > 5 * se, (dip, top, se)


def test_memorising_denoiser_returns_the_nearest_training_point(scaled_roll):
    sched = dl.make_schedule("linear", 1000)
    train = scaled_roll[:30]  # sparse enough that the nearest point is clear at t = 1
    gen = torch.Generator().manual_seed(6)
    ab = float(sched.alpha_bar[1])
    # x_t near (not at) training points, and far from all of them
    xt = torch.cat([math.sqrt(ab) * train[:20] + math.sqrt(1 - ab) * torch.randn(20, 2, generator=gen, dtype=torch.float64),
                    torch.randn(20, 2, generator=gen, dtype=torch.float64)])
    d2, idx = (torch.cdist(xt, math.sqrt(ab) * train) ** 2).topk(2, dim=1, largest=False)
    nearest = train[idx[:, 0]]
    # the softmax is one-hot up to exp(-(d_2^2 - d_1^2) / (2 (1 - ab))) times the distance between the two:
    # exact to 1e-8 wherever that gap exceeds 2 (1 - ab) * 25 (most points here; some training points
    # are 0.01 apart, as close as the step's noise sqrt(1 - ab), and there the answer is a genuine average)
    one_hot = (d2[:, 1] - d2[:, 0]) > 50 * (1 - ab)
    assert one_hot.sum() >= 25
    x0 = memorising_x0(xt, 1, sched, train)
    assert torch.allclose(x0[one_hot], nearest[one_hot], atol=1e-8)
    eps = memorising_denoiser(sched, train)(xt, torch.ones(40, dtype=torch.int64))
    assert torch.allclose(dl.x0_from_eps(sched, xt, 1, eps)[one_hot], nearest[one_hot], atol=1e-6)
    # at t = T the prediction is close to the mean of the training points
    x0_T = memorising_x0(xt, sched.T, sched, train)
    assert (x0_T - train.mean(dim=0)).norm(dim=1).max() < 0.05


def test_bad_input(setup):
    sched, scaling = setup
    with pytest.raises(ValueError, match="1..T"):
        optimal_x0(torch.zeros(2, 2), 0, sched, scaling)
    with pytest.raises(ValueError, match="noise"):
        optimal_x0(torch.zeros(2, 2), 1, sched, scaling, noise=-1.0)
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        optimal_x0(torch.zeros(2, 2, 1), 1, sched, scaling)
