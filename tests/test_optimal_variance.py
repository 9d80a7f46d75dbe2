"""The optimal reverse variance [Bao22], the unconstrained learned variance [ND21, Eq. 15], the SNR form of
the bound's weights, the importance sampler against a transcription of improved-diffusion's, paired errors."""

import math

import numpy as np
import pytest
import torch

import diffusion_lib as dl


def gaussian_data(n, data_var, seed=0, dim=2):
    gen = torch.Generator().manual_seed(seed)
    return math.sqrt(data_var) * torch.randn(n, dim, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_estimate_equals_the_closed_form_on_gaussian_data(name):
    # with the exact denoiser of N(0, s^2 I), E||x_0 - x0_hat||^2 / D = Var(x_0 | x_t): closed form
    sched, data_var = dl.make_schedule(name, 50), 0.7
    model = dl.gaussian_data_denoiser(sched, data_var)
    est = dl.optimal_variance(sched, model, gaussian_data(4000, data_var), generator=torch.Generator().manual_seed(1))
    exact = dl.gaussian_optimal_variance(sched, data_var)
    t = torch.arange(1, sched.T + 1)
    # 5 standard errors per t: a false alarm of 5.7e-7 per t, 2.9e-5 for the 50 t at any seed; a missing c_t^2 or a
    # wrong t misses by far more
    z = (est.var[t] - exact[t]).abs() / est.se[t]
    assert (z < 5).all(), f"largest deviation {float(z.max()):.1f} standard errors at t = {int(t[z.argmax()])}"
    assert (est.var[2:] >= sched.beta_tilde[2:]).all()  # never below the posterior's own variance
    assert (exact[2:] < sched.beta[2:]).all()  # and, for this data, below beta_t


def test_each_term_is_smallest_at_the_optimal_variance():
    # bound_terms and optimal_variance draw x_t alike from the same seed, so on those very draws the
    # estimated variance minimises every term's mean over all scalars: beta_tilde_t, beta_t or any other
    sched = dl.make_schedule("cosine", 30)
    model = dl.gaussian_data_denoiser(sched, 2.0)  # the denoiser of the wrong data variance: an imperfect mean
    x0 = gaussian_data(500, 0.5).float()

    def mean_terms(var, variances=None):
        gen = torch.Generator().manual_seed(3)
        return dl.bound_terms(sched, model, x0, var=var, generator=gen, variances=variances).steps.mean(dim=1)

    opt = dl.optimal_variance(sched, model, x0, generator=torch.Generator().manual_seed(3))
    best = mean_terms("optimal", opt.var)
    others = {"fixed_small": mean_terms("fixed_small"), "fixed_large": mean_terms("fixed_large")}
    for factor in (0.5, 0.9, 0.99, 1.01, 1.1, 2.0):
        others[f"x{factor}"] = mean_terms("optimal", opt.var * factor)
    for name, terms in others.items():
        assert (terms >= best - 1e-9).all(), name
    assert (others["x0.99"] > best).all() and (others["x1.01"] > best).all()


def test_optimal_bound_by_sampling_matches_its_closed_form():
    sched, data_var = dl.make_schedule("linear", 40), 0.5
    model = dl.gaussian_data_denoiser(sched, data_var)
    variances = dl.gaussian_optimal_variance(sched, data_var)
    x0 = gaussian_data(20_000, data_var, seed=5)
    terms = dl.bound_terms(sched, model, x0, var="optimal", generator=torch.Generator().manual_seed(6),
                           variances=variances)
    exact = dl.gaussian_bound_exact(sched, data_var, 2, var="optimal")
    se = terms.total.std() / math.sqrt(x0.shape[0])
    assert abs(float(terms.total.mean() - exact.total)) < 5 * float(se)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_optimal_variance_is_never_worse_in_closed_form(name):
    sched = dl.make_schedule(name, 100)
    small, large, opt = (dl.gaussian_bound_exact(sched, 0.5, 2, v) for v in ("fixed_small", "fixed_large", "optimal"))
    assert (opt.steps <= small.steps + 1e-12).all() and (opt.steps <= large.steps + 1e-12).all()
    # with the exact mean the remaining KL at t >= 2 is only the log ratio of the variances
    beta_tilde = sched.beta_tilde[2:]
    expected = 0.5 * 2 * (dl.gaussian_optimal_variance(sched, 0.5)[2:] / beta_tilde).log()
    torch.testing.assert_close(opt.steps[1:, 0], expected)


def test_sampler_and_bound_take_the_optimal_variances():
    sched = dl.make_schedule("cosine", 20)
    variances = torch.linspace(0.01, 0.5, sched.T + 1, dtype=torch.float64)
    coef = dl.step_coefficients(sched, "eps", "optimal", variances)
    assert coef.std[1:] == pytest.approx(variances[1:].sqrt().tolist())
    with pytest.raises(ValueError, match=r"needs variances=dl.optimal_variance"):
        dl.sample(sched, lambda x, t: x, 4, var="optimal")
    with pytest.raises(ValueError, match=r"positive \(T \+ 1,\)"):
        dl.reverse_variance(sched, 3, torch.zeros(2, 2), "optimal", variances=variances[:5])


def test_learned_variance_is_unconstrained_and_starts_halfway():
    model = dl.MLP(2, (16, 16), 8, learn_var=True)
    x, t = torch.randn(5, 2), torch.tensor([1, 2, 3, 4, 5])
    _, v = model(x, t)
    assert torch.equal(v, torch.full_like(v, 0.5))  # zero-initialised head, v = (raw + 1) / 2
    with torch.no_grad():
        model.out.bias[2:] = 3.0
    _, v = model(x, t)
    assert torch.allclose(v, torch.full_like(v, 2.0))  # beyond beta_t: nothing squashes v into [0, 1]
    unet = dl.UNet(1, 8, learn_var=True)
    _, v = unet(torch.randn(2, 1, 8, 8), torch.tensor([1, 7]))
    assert torch.equal(v, torch.full_like(v, 0.5))


def test_bound_weights_in_snr_form(sched):
    # eps form, fixed_small: lambda_t = 1/2 (SNR(t-1) / SNR(t) - 1); x_0 form: 1/2 (SNR(t-1) - SNR(t))
    if sched.T < 2:
        return
    t = torch.arange(2, sched.T + 1)
    snr = sched.snr
    torch.testing.assert_close(dl.simple_loss_weight(sched, t), 0.5 * (snr[t - 1] / snr[t] - 1))
    x0_weight = sched.posterior_coef_x0[t] ** 2 / (2 * sched.beta_tilde[t])
    torch.testing.assert_close(x0_weight, 0.5 * (snr[t - 1] - snr[t]), rtol=1e-9, atol=0)


class ReferenceResampler:
    """improved-diffusion's LossSecondMomentResampler (resample.py), transcribed with numpy, 0-based t."""

    def __init__(self, T, history_per_term=10, uniform_prob=0.001):
        self.T, self.history_per_term, self.uniform_prob = T, history_per_term, uniform_prob
        self._loss_history = np.zeros([T, history_per_term], dtype=np.float64)
        self._loss_counts = np.zeros([T], dtype=int)

    def weights(self):
        if not (self._loss_counts == self.history_per_term).all():
            return np.ones([self.T], dtype=np.float64)
        weights = np.sqrt(np.mean(self._loss_history ** 2, axis=-1))
        weights /= np.sum(weights)
        weights *= 1 - self.uniform_prob
        weights += self.uniform_prob / len(weights)
        return weights

    def update_with_all_losses(self, ts, losses):
        for t, loss in zip(ts, losses):
            if self._loss_counts[t] == self.history_per_term:
                self._loss_history[t, :-1] = self._loss_history[t, 1:]
                self._loss_history[t, -1] = loss
            else:
                self._loss_history[t, self._loss_counts[t]] = loss
                self._loss_counts[t] += 1


def test_importance_sampler_matches_improved_diffusion():
    T, rng = 25, np.random.default_rng(0)
    ours, ref = dl.TimestepSampler(T, importance=True), ReferenceResampler(T)
    for _ in range(40):
        t = rng.integers(1, T + 1, size=64)
        losses = rng.gamma(2.0, 1.0 / t)  # a scale that falls with t, fresh each round
        ours.update(torch.as_tensor(t), torch.as_tensor(losses))
        ref.update_with_all_losses(t - 1, losses)
        p_ref = ref.weights() / ref.weights().sum()
        np.testing.assert_allclose(ours.probs().numpy(), p_ref, rtol=1e-12, atol=0)
    assert ours.probs().min() >= 0.001 / T  # a total uniform mass of 0.001, i.e. 0.001 / T per step
    t, weights = ours.sample(1000, torch.Generator().manual_seed(0))
    np.testing.assert_allclose(weights.numpy(), 1 / (T * p_ref[t.numpy() - 1]), rtol=1e-12)


def test_paired_difference():
    gen = torch.Generator().manual_seed(0)
    shared = 10 * torch.randn(400, generator=gen, dtype=torch.float64)  # how hard each point is
    a, b = shared + 0.1 * torch.randn(400, generator=gen, dtype=torch.float64), shared + 0.05
    mean, se = dl.paired_difference(a, b)
    d = a - b
    assert mean == pytest.approx(float(d.mean())) and se == pytest.approx(float(d.std() / 20))
    assert se < 0.01 < float(a.std() / 20)  # pairing removes the shared spread
    with pytest.raises(ValueError, match="same N"):
        dl.paired_difference(a, b[:10])


def test_default_variance_is_decided_by_the_config():
    assert dl.TrainConfig().var == "fixed_small"
    assert dl.TrainConfig(loss="hybrid").var == "learned" and dl.TrainConfig(loss="vlb").var == "learned"
    assert dl.TrainConfig(loss="vlb", var="fixed_large").var == "fixed_large"
    with pytest.raises(ValueError, match="estimated after training"):
        dl.TrainConfig(var="optimal").validate()


def test_vectorised_history_update_equals_one_by_one():
    T, history, rng = 7, 3, np.random.default_rng(1)
    fast = dl.TimestepSampler(T, importance=True, history=history)
    slow_losses, slow_counts = np.zeros((T + 1, history)), np.zeros(T + 1, dtype=int)
    for _ in range(20):
        t = rng.integers(1, T + 1, size=int(rng.integers(1, 30)))  # many repeats of a step in one batch
        losses = rng.normal(size=t.shape)
        fast.update(torch.as_tensor(t), torch.as_tensor(losses))
        for ti, li in zip(t, losses):  # the definition: one by one into each step's ring buffer
            slow_losses[ti, slow_counts[ti] % history] = li
            slow_counts[ti] += 1
        np.testing.assert_array_equal(fast.counts.numpy(), slow_counts)
        np.testing.assert_array_equal(fast.losses.numpy(), slow_losses)
