"""Bad input: each mistake raises a clear error, whose type and message are checked."""

import math

import pytest
import torch

import diffusion_lib as dl

T = 10
SCHED = dl.make_schedule("cosine", T)


def points(b=4, d=2):
    return torch.zeros(b, d, dtype=torch.float64)


# ---------------------------------------------------------------------------------------------------
# schedules

def test_unknown_schedule_lists_the_names():
    with pytest.raises(ValueError, match=r"unknown schedule 'cosin'; choose one of \('linear', 'quadratic', "
                                         r"'sigmoid', 'cosine'\)"):
        dl.make_schedule("cosin", 100)


@pytest.mark.parametrize("bad_T", [0, -5, 2.5, 10.0, "10", None, True])
def test_T_must_be_a_positive_integer(bad_T):
    with pytest.raises(ValueError, match="T must be a positive integer number of steps"):
        dl.make_schedule("linear", bad_T)


@pytest.mark.parametrize("betas", [[1.0, 0.1], [0.0, 0.1], [-0.1, 0.5], [1.5], [0.2, 0.3, 1.0 + 1e-12]])
def test_betas_outside_the_open_unit_interval(betas):
    with pytest.raises(ValueError, match=r"every beta_t must lie in the open interval \(0, 1\)"):
        dl.NoiseSchedule.from_betas(betas)


@pytest.mark.parametrize("betas", [[0.1, math.nan], [math.inf, 0.2], [-math.inf]])
def test_betas_must_be_finite(betas):
    with pytest.raises(ValueError, match="betas must be finite; found NaN or inf"):
        dl.NoiseSchedule.from_betas(betas)


@pytest.mark.parametrize("betas", [[[0.1, 0.2], [0.3, 0.4]], [], 0.5])
def test_betas_must_be_a_non_empty_1d_sequence(betas):
    with pytest.raises(ValueError, match=r"non-empty 1-D sequence beta_1..beta_T"):
        dl.NoiseSchedule.from_betas(betas)


# ---------------------------------------------------------------------------------------------------
# timesteps: every function where t enters checks 1 <= t <= T and its type

WITH_T = {
    "q_step": lambda t: dl.q_step(SCHED, points(), t, points()),
    "q_marginal": lambda t: dl.q_marginal(SCHED, points(), t),
    "q_sample": lambda t: dl.q_sample(SCHED, points(), t, points()),
    "q_posterior": lambda t: dl.q_posterior(SCHED, points(), points(), t),
    "x0_from_eps": lambda t: dl.x0_from_eps(SCHED, points(), t, points()),
    "eps_from_x0": lambda t: dl.eps_from_x0(SCHED, points(), t, points()),
    "mu_from_eps": lambda t: dl.mu_from_eps(SCHED, points(), t, points()),
    "mu_from_x0": lambda t: dl.mu_from_x0(SCHED, points(), t, points()),
    "x0_from_mu": lambda t: dl.x0_from_mu(SCHED, points(), t, points()),
    "reverse_variance": lambda t: dl.reverse_variance(SCHED, t, points()),
    "p_mean_variance": lambda t: dl.p_mean_variance(SCHED, points(), t, points()),
    "vlb_term": lambda t: dl.vlb_term(SCHED, points(), points(), t, points(), points()),
    "simple_loss_weight": lambda t: dl.simple_loss_weight(SCHED, t),
}


@pytest.mark.parametrize("name", WITH_T)
@pytest.mark.parametrize("bad_t", [0, T + 1, torch.tensor([1, 2, 0, 3]), torch.tensor([1, 2, T + 1, 3])])
def test_t_outside_1_to_T(name, bad_t):
    # the message names the valid range and the paper's convention (0 is the data, not a step)
    with pytest.raises(ValueError, match=r"timesteps must lie in 1\.\.T = 1\.\.10 \(the paper's numbering; "
                                         r"0 is the data x_0\)"):
        WITH_T[name](bad_t)


@pytest.mark.parametrize("name", WITH_T)
def test_t_must_be_integer(name):
    with pytest.raises(TypeError, match="t must be an int or an int64 tensor of timesteps, got float"):
        WITH_T[name](2.0)
    with pytest.raises(TypeError, match="t must hold integer timesteps 1..T, got dtype torch.float32"):
        WITH_T[name](torch.tensor([1.0, 2.0, 3.0, 4.0]))
    with pytest.raises(TypeError, match="got a bool"):
        WITH_T[name](True)


@pytest.mark.parametrize("name", [n for n in WITH_T if n != "simple_loss_weight"])  # the weight has no batch
def test_t_with_the_wrong_batch_size(name):
    with pytest.raises(ValueError, match="t has 3 timesteps but the batch has 4 examples"):
        WITH_T[name](torch.tensor([1, 2, 3]))


def test_t_must_be_at_most_1d():
    with pytest.raises(ValueError, match=r"t must be an int or a 1-D \(B,\) tensor, got shape \(2, 2\)"):
        dl.q_marginal(SCHED, points(), torch.ones(2, 2, dtype=torch.int64))


# ---------------------------------------------------------------------------------------------------
# data: shapes, NaN, types

def test_x0_and_eps_of_mismatched_shape():
    with pytest.raises(ValueError, match=r"eps has shape \(4, 3\) but must match \(4, 2\)"):
        dl.q_sample(SCHED, points(4, 2), 1, points(4, 3))
    with pytest.raises(ValueError, match=r"eps has shape \(5, 2\) but must match \(4, 2\)"):
        dl.q_step(SCHED, points(4, 2), 1, points(5, 2))
    with pytest.raises(ValueError, match=r"xt has shape \(4, 3\) but must match \(4, 2\)"):
        dl.q_posterior(SCHED, points(4, 2), points(4, 3), 2)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nan_or_inf_in_x0(bad):
    x0 = points()
    x0[1, 0] = bad
    match = "x0 contains NaN or inf values"
    with pytest.raises(ValueError, match=match):
        dl.q_sample(SCHED, x0, 1, points())
    with pytest.raises(ValueError, match=match):
        dl.q_marginal(SCHED, x0, 1)
    with pytest.raises(ValueError, match=match):
        dl.q_posterior(SCHED, x0, points(), 1)
    with pytest.raises(ValueError, match=match):
        dl.prior_kl(SCHED, x0)
    with pytest.raises(ValueError, match=match):
        dl.bound_terms(SCHED, dl.gaussian_data_denoiser(SCHED, 1.0), x0)
    with pytest.raises(ValueError, match=match):
        next(dl.q_chain(SCHED, x0))  # a generator: the check runs at the first step
    with pytest.raises(ValueError, match="x_prev contains NaN or inf values"):
        dl.q_step(SCHED, x0, 1, points())
    with pytest.raises(ValueError, match="eps contains NaN or inf values"):
        dl.q_sample(SCHED, points(), 1, x0)


def test_data_must_be_a_floating_tensor_with_a_batch_dimension():
    with pytest.raises(TypeError, match=r"x0 must be a torch.Tensor of shape \(B, ...\), got list"):
        dl.q_marginal(SCHED, [[0.0, 0.0]], 1)
    with pytest.raises(TypeError, match="x0 must be a floating-point tensor, got dtype torch.int64"):
        dl.q_marginal(SCHED, torch.zeros(4, 2, dtype=torch.int64), 1)
    with pytest.raises(ValueError, match=r"x0 must have a batch dimension \(B, ...\), got a scalar"):
        dl.q_marginal(SCHED, torch.tensor(0.0, dtype=torch.float64), 1)


def test_discretized_decoder_needs_data_in_minus_one_one():
    x = torch.tensor([[0.5, 1.2]], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"discretized likelihood needs data scaled to \[-1, 1\]"):
        dl.discretized_gaussian_log_likelihood(x, torch.zeros_like(x), torch.zeros_like(x))


# ---------------------------------------------------------------------------------------------------
# the choices the notebooks compare: prediction, var, decoder

def test_unknown_prediction():
    with pytest.raises(ValueError, match=r"unknown prediction 'epsilon'; choose one of \('eps', 'x0', 'mu', 'v'\)"):
        dl.convert_prediction(SCHED, points(), 1, points(), "epsilon")
    with pytest.raises(ValueError, match="unknown prediction 'velocity'"):
        dl.p_mean_variance(SCHED, points(), 1, points(), prediction="velocity")
    with pytest.raises(ValueError, match="unknown prediction 'score'"):
        dl.bound_terms(SCHED, dl.gaussian_data_denoiser(SCHED, 1.0), points(), prediction="score")


def test_unknown_var():
    msg = r"unknown var 'fixed'; choose one of \('fixed_small', 'fixed_large', 'learned', 'optimal'\)"
    with pytest.raises(ValueError, match=msg):
        dl.reverse_variance(SCHED, 1, points(), "fixed")
    with pytest.raises(ValueError, match=msg):
        dl.p_mean_variance(SCHED, points(), 1, points(), var="fixed")
    with pytest.raises(ValueError, match=msg):
        dl.simple_loss_weight(SCHED, 1, "fixed")
    # the simple-loss weight exists only for a fixed variance
    with pytest.raises(ValueError, match="the weight needs a fixed variance: choose 'fixed_small' or 'fixed_large'"):
        dl.simple_loss_weight(SCHED, 1, "learned")


def test_unknown_decoder():
    msg = r"unknown decoder 'bernoulli'; choose one of \('gaussian', 'discretized'\)"
    with pytest.raises(ValueError, match=msg):
        dl.vlb_term(SCHED, points(), points(), 1, points(), points(), decoder="bernoulli")
    with pytest.raises(ValueError, match=msg):
        dl.bound_terms(SCHED, dl.gaussian_data_denoiser(SCHED, 1.0), points(), decoder="bernoulli")


def test_learned_variance_needs_var_interp():
    with pytest.raises(ValueError, match="var=\"learned\" needs the network's interpolation value var_interp"):
        dl.reverse_variance(SCHED, 1, points(), "learned")
    with pytest.raises(ValueError, match="var=\"learned\" needs the network's interpolation value var_interp"):
        dl.p_mean_variance(SCHED, points(), 1, points(), var="learned")
    # a model that returns only its prediction cannot drive a learned variance
    with pytest.raises(ValueError, match=r"var=\"learned\" needs a model that returns \(prediction, var_interp\)"):
        dl.model_step(SCHED, lambda xt, t: torch.zeros_like(xt), points(), 1, var="learned")


def test_two_sample_test_needs_permutations():
    with pytest.raises(ValueError, match="num_permutations must be at least 1"):
        dl.two_sample_test(points(), points(), num_permutations=0)


def test_training_losses_name_the_allowed_values():
    sched = dl.make_schedule("linear", 10)
    x0, t = torch.zeros(4, 2), torch.full((4,), 3)
    eps, model = torch.zeros(4, 2), lambda xt, t: torch.zeros_like(xt)  # noqa: E731
    for kwargs, message in (({"loss": "l1"}, r"unknown loss 'l1'; choose one of \('simple'"),
                            ({"prediction": "velocity"}, r"unknown prediction 'velocity'; choose one of \('eps'"),
                            ({"var": "big"}, r"unknown var 'big'; choose one of \('fixed_small'")):
        with pytest.raises(ValueError, match=message):
            dl.training_losses(sched, model, x0, t, eps, **kwargs)
