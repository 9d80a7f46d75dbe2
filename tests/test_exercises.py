"""The exercise checks: stubs only raise, solutions pass, typical wrong answers are caught and named.

The nbgrader sources (classroom/source/) hold the solutions; nbgrader releases the student copies
(notebooks/exercises/, see tests/test_classroom.py for the release and the grading). Each exercise is a
function defined in a solution cell and checked by test cells calling `exercises.check_NAME(function, ...)`.
These tests run the setup cell and the exercise cells in-process (no kernel).
"""

import ast
import math
import re
from pathlib import Path

import nbformat
import pytest
import torch

import diffusion_lib as dl
from diffusion_lib import exercises
from diffusion_lib import exercises_advanced as advanced

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "classroom" / "source").glob("*/*.ipynb"))
CHECK_CALL = re.compile(r"exercises\.check_(\w+)\((\w+)[,)]")


def _code_cells(path):
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def _is_exercise_cell(src):
    return "### BEGIN SOLUTION" in src or "raise NotImplementedError" in src


def _exercises_in(path):
    """[(function name, check name)] for one notebook, from its test cells, in order and without repeats."""
    found = [(func, check) for src in _code_cells(path) for check, func in CHECK_CALL.findall(src)]
    return list(dict.fromkeys(found))


def _load(path):
    """Run the notebook's first code cell (imports) and its exercise cells; return the namespace."""
    cells = _code_cells(path)
    namespace = {"__name__": "exercise_notebook"}
    for src in [cells[0]] + [src for src in cells if _is_exercise_cell(src)]:
        code = "\n".join(line for line in src.splitlines() if not line.startswith("%"))  # no IPython magics
        exec(compile(code, str(path), "exec"), namespace)
    return namespace


CASES = [(path.stem, func, check) for path in SOURCES for func, check in _exercises_in(path)]
IDS = [f"{nb[:2]}-{check}" for nb, _, check in CASES]


def test_every_chapter_01_to_11_has_exercises():
    assert [p.stem[:2] for p in SOURCES] == ["01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11"]
    for path in SOURCES:
        assert _exercises_in(path), f"{path.name} has no `exercises.check_...(function)` cell"


def test_every_check_is_used_by_a_notebook():
    assert sorted({check for _, _, check in CASES}) == sorted(exercises.CHECKS)


def test_exercises_are_importable_both_ways():
    assert dl.exercises is exercises
    assert set(exercises.CHECKS.values()) <= {getattr(exercises, n) for n in dir(exercises) if n.startswith("check_")}


@pytest.mark.parametrize("nb,func,check", CASES, ids=IDS)
def test_stub_raises_not_implemented_and_nothing_else(nb, func, check, capsys):
    stub = _load(ROOT / "notebooks" / "exercises" / f"{nb}.ipynb")[func]
    raised = []

    def spy(*args):
        try:
            return stub(*args)
        except BaseException as err:
            raised.append(type(err))
            raise

    assert exercises.CHECKS[check](spy) is False
    assert raised == [NotImplementedError], "the stub was called with real inputs and raised only that"
    assert "not implemented yet" in capsys.readouterr().out


@pytest.mark.parametrize("nb,func,check", CASES, ids=IDS)
def test_solution_passes_its_check(nb, func, check, capsys):
    solution = _load(ROOT / "classroom" / "source" / nb / f"{nb}.ipynb")[func]
    assert exercises.CHECKS[check](solution) is True, capsys.readouterr().out


# deliberately wrong answers, each a mistake a student makes; every one must be caught
def _alpha_bar_cumsum(beta):
    return 1 - torch.cumsum(beta, dim=0)


def _alpha_bar_shifted(beta):  # alpha_bar_{t-1}: off by one
    return torch.cat([torch.ones(1, dtype=beta.dtype), torch.cumprod(1 - beta, dim=0)[:-1]])


def _q_sample_variances(sched, x0, t, eps):  # variances where standard deviations belong
    return sched.alpha_bar[t] * x0 + (1 - sched.alpha_bar[t]) * eps


def _q_sample_previous(sched, x0, t, eps):
    return sched.alpha_bar[t - 1].sqrt() * x0 + (1 - sched.alpha_bar[t - 1]).sqrt() * eps


def _posterior_mean(sched, x0, xt, t):
    ab, ab_prev = sched.alpha_bar[t], sched.alpha_bar[t - 1]
    return (ab_prev.sqrt() * sched.beta[t] * x0 + sched.alpha[t].sqrt() * (1 - ab_prev) * xt) / (1 - ab)


def _posterior_large_variance(sched, x0, xt, t):
    return _posterior_mean(sched, x0, xt, t), sched.beta[t]


def _posterior_no_prev(sched, x0, xt, t):  # alpha_bar_t where alpha_bar_{t-1} belongs
    ab, ab_prev = sched.alpha_bar[t], sched.alpha_bar[t]
    mean = (ab_prev.sqrt() * sched.beta[t] * x0 + sched.alpha[t].sqrt() * (1 - ab_prev) * xt) / (1 - ab)
    return mean, (1 - ab_prev) / (1 - ab) * sched.beta[t]


def _kl_no_half(m1, lv1, m2, lv2):
    return lv2 - lv1 + torch.exp(lv1 - lv2) + (m1 - m2) ** 2 * torch.exp(-lv2) - 1


def _kl_swapped_logvars(m1, lv1, m2, lv2):
    return 0.5 * (lv1 - lv2 + torch.exp(lv1 - lv2) + (m1 - m2) ** 2 * torch.exp(-lv2) - 1)


def _x0_no_sqrt(sched, xt, t, eps):
    return (xt - (1 - sched.alpha_bar[t]).sqrt() * eps) / sched.alpha_bar[t]


def _mu_misprint(sched, xt, t, eps):  # sqrt(1 - alpha_t) in place of beta_t / sqrt(1 - alpha_bar_t)
    return (xt - (1 - sched.alpha[t]).sqrt() * eps) / sched.alpha[t].sqrt()


def _kl(m1, lv1, m2, lv2):
    return 0.5 * (lv2 - lv1 + torch.exp(lv1 - lv2) + (m1 - m2) ** 2 * torch.exp(-lv2) - 1)


def _vlb_kl_everywhere(sched, x0, xt, t, mean, log_var):  # no decoder term at t = 1
    return _kl(_posterior_mean(sched, x0, xt, t), sched.log_beta_tilde_clipped[t], mean, log_var).sum(dim=1)


def _vlb_not_summed(sched, x0, xt, t, mean, log_var):
    if t == 1:
        return 0.5 * (math.log(2 * math.pi) + log_var + (x0 - mean) ** 2 * torch.exp(-log_var))
    return _kl(_posterior_mean(sched, x0, xt, t), sched.log_beta_tilde_clipped[t], mean, log_var)


def _mu(sched, xt, t, eps):
    return (xt - sched.beta[t] / (1 - sched.alpha_bar[t]).sqrt() * eps) / sched.alpha[t].sqrt()


def _step_noise_at_the_end(sched, xt, t, eps, z):
    return _mu(sched, xt, t, eps) + sched.log_beta_tilde_clipped[t].exp().sqrt() * z


def _step_large_variance(sched, xt, t, eps, z):
    return _mu(sched, xt, t, eps) + (sched.beta[t].sqrt() * z if t > 1 else 0)


def _schedule_copied_endpoints(T):
    return torch.linspace(1e-4, 0.02, T, dtype=torch.float64)


def _schedule_reaches_one(T):
    return torch.linspace(1e-4, 1.0, T, dtype=torch.float64)


def _schedule_padded(T):  # T + 1 values, slot 0 included
    return torch.cat([torch.zeros(1, dtype=torch.float64), torch.linspace(1e-4, 0.02 * 1000 / T, T, dtype=torch.float64)])


def _schedule_constant(T):  # valid and reaches noise, but wastes nearly every step and the first is brutal
    return torch.full((T,), 0.5, dtype=torch.float64)


def _schedule_brutal_start(T):  # little waste, but the first step removes 10% of the signal
    log_snr = torch.linspace(1.5, -6.0, T + 1, dtype=torch.float64)
    alpha_bar = torch.sigmoid(log_snr)
    alpha_bar[0] = 1.0
    return 1 - alpha_bar[1:] / alpha_bar[:-1]


def _q_step_no_sqrt(sched, x, t, eps):
    return (1 - sched.beta[t]) * x + sched.beta[t] * eps


def _q_step_tilde(sched, x, t, eps):  # beta_tilde_t for beta_t
    return (1 - sched.beta_tilde[t]).sqrt() * x + sched.beta_tilde[t].sqrt() * eps


def _q_jump_from_data(sched, xs, s, t, eps):  # s ignored
    return sched.alpha_bar[t].sqrt() * xs + (1 - sched.alpha_bar[t]).sqrt() * eps


def _q_jump_difference(sched, xs, s, t, eps):
    d = sched.alpha_bar[s] - sched.alpha_bar[t]
    return (1 - d).sqrt() * xs + d.sqrt() * eps


def _sample_t_zero_based(batch_size, T, generator):
    return torch.randint(0, T, (batch_size,), generator=generator)


def _sample_t_no_top(batch_size, T, generator):
    return torch.randint(1, T, (batch_size,), generator=generator)


def _sample_t_unseeded(batch_size, T, generator):
    return torch.randint(1, T + 1, (batch_size,))


def _sample_t_skewed(batch_size, T, generator):  # both ends drawn, but t = T twice as often as the rest
    t = torch.randint(1, T + 2, (batch_size,), generator=generator)
    return t.clamp(max=T)


def _xt(sched, x0, t, eps):
    ab = sched.alpha_bar[t][:, None].float()
    return ab.sqrt() * x0 + (1 - ab).sqrt() * eps


def _loss_sum(model, sched, x0, t, eps):
    return (eps - model(_xt(sched, x0, t, eps), t)).pow(2).sum()


def _loss_x0_target(model, sched, x0, t, eps):
    return (x0 - model(_xt(sched, x0, t, eps), t)).pow(2).mean()


def _loss_detached(model, sched, x0, t, eps):
    return (eps - model(_xt(sched, x0, t, eps), t)).pow(2).mean().detach()


def _step_no_zero_grad(model, optimizer, sched, x0, t, eps):
    loss = (eps - model(_xt(sched, x0, t, eps), t)).pow(2).mean()
    loss.backward()
    optimizer.step()
    return loss.item()


def _step_no_step(model, optimizer, sched, x0, t, eps):
    optimizer.zero_grad()
    loss = (eps - model(_xt(sched, x0, t, eps), t)).pow(2).mean()
    loss.backward()
    return loss.item()


def _step_sum(model, optimizer, sched, x0, t, eps):
    optimizer.zero_grad()
    loss = (eps - model(_xt(sched, x0, t, eps), t)).pow(2).sum()
    loss.backward()
    optimizer.step()
    return loss.item() / eps.numel()


def _weights(sched, xt, t, centres, var):
    d2 = torch.cdist(xt, sched.alpha_bar[t].sqrt() * centres).pow(2)
    return torch.softmax(-d2 / (2 * var), dim=1)


def _memorising_unscaled(sched, xt, t, train):  # x_t compared with x_0^i itself
    d2 = torch.cdist(xt, train).pow(2)
    return torch.softmax(-d2 / (2 * (1 - sched.alpha_bar[t])), dim=1) @ train


def _memorising_nearest(sched, xt, t, train):  # the t -> 1 limit at every t
    return train[_weights(sched, xt, t, train, 1 - sched.alpha_bar[t]).argmax(dim=1)]


def _mixture_no_gain(sched, xt, t, centres, s2):
    ab = sched.alpha_bar[t]
    return _weights(sched, xt, t, centres, ab * s2 + 1 - ab) @ centres


def _mixture_memorising(sched, xt, t, centres, s2):  # s2 ignored
    return _weights(sched, xt, t, centres, 1 - sched.alpha_bar[t]) @ centres


# chapters 07, 10 and 11
def _hybrid_parts(model, sched, x0, t, eps, detach=True):
    xt = dl.q_sample(sched, x0, t, eps)
    eps_pred, r = model(xt, t)
    step = dl.p_mean_variance(sched, xt, t, eps_pred.detach() if detach else eps_pred, "eps", "learned", r)
    return (eps - eps_pred).pow(2).mean(dim=1), dl.vlb_term(sched, x0, xt, t, step.mean, step.log_var)


def _hybrid_no_detach(model, sched, x0, t, eps):
    simple, term = _hybrid_parts(model, sched, x0, t, eps, detach=False)
    return (simple + 0.001 * sched.T * term / x0.shape[1]).mean()


def _hybrid_no_d(model, sched, x0, t, eps):
    simple, term = _hybrid_parts(model, sched, x0, t, eps)
    return (simple + 0.001 * sched.T * term).mean()


def _hybrid_variance_detached_too(model, sched, x0, t, eps):  # the bound trains nothing at all
    xt = dl.q_sample(sched, x0, t, eps)
    eps_pred, r = model(xt, t)
    step = dl.p_mean_variance(sched, xt, t, eps_pred.detach(), "eps", "learned", r.detach())
    term = dl.vlb_term(sched, x0, xt, t, step.mean, step.log_var)
    return ((eps - eps_pred).pow(2).mean(dim=1) + 0.001 * sched.T * term / x0.shape[1]).mean()


def _ddim_parts(sched, t, s, eta):
    ab_t, ab_s = sched.alpha_bar[t], sched.alpha_bar[s]
    return ab_t, ab_s, eta * ((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)).sqrt()


def _ddim_no_eta(sched, x_t, t, s, eps, eta, z):  # s_t of eta = 1 at every eta
    ab_t, ab_s, sigma = _ddim_parts(sched, t, s, 1.0)
    x0 = (x_t - (1 - ab_t).sqrt() * eps) / ab_t.sqrt()
    return ab_s.sqrt() * x0 + (1 - ab_s - sigma ** 2).clamp(min=0).sqrt() * eps + sigma * z


def _ddim_direction_without_sigma(sched, x_t, t, s, eps, eta, z):  # sqrt(1 - ab_s) for sqrt(1 - ab_s - s_t^2)
    ab_t, ab_s, sigma = _ddim_parts(sched, t, s, eta)
    return ab_s.sqrt() * (x_t - (1 - ab_t).sqrt() * eps) / ab_t.sqrt() + (1 - ab_s).sqrt() * eps + sigma * z


def _ddim_alpha(sched, x_t, t, s, eps, eta, z):  # DDPM's alpha_t for DDIM's alpha (= DDPM's alpha_bar)
    a_t, a_s = sched.alpha[t], sched.alpha[s]
    sigma = eta * ((1 - a_s) / (1 - a_t) * (1 - a_t / a_s)).clamp(min=0).sqrt()
    return a_s.sqrt() * (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt() + (1 - a_s - sigma ** 2).clamp(min=0).sqrt() * eps \
        + sigma * z


def _rounded_steps(values, K, t_max):
    v = values[1:t_max + 1]
    targets = torch.linspace(float(v[0]), float(v[-1]), K, dtype=torch.float64)
    return ((v[None, :] - targets[:, None]).abs().argmin(dim=1) + 1).tolist()


def _steps_uniform_in_t(sched, K, t_max):
    return _rounded_steps(torch.arange(sched.T + 1, dtype=torch.float64), K, t_max)


def _steps_uniform_in_log_alpha_bar(sched, K, t_max):
    return _rounded_steps(sched.alpha_bar.log(), K, t_max)


def _steps_decreasing(sched, K, t_max):
    ab = sched.alpha_bar
    return _rounded_steps(0.5 * (ab.log() - torch.log1p(-ab)), K, t_max)[::-1]


def _dpm(sched, x_t, t, s, x0_t, x0_prev, h_prev, invert=False, sign=1.0, alpha_ratio=False, first_order=False):
    if s == 0:
        return x0_t
    ab = sched.alpha_bar
    lam = 0.5 * (ab.log() - torch.log1p(-ab))
    h = lam[s] - lam[t]
    D = x0_t
    if x0_prev is not None and not first_order:
        r = h / h_prev if invert else h_prev / h
        D = (1 + 1 / (2 * r)) * x0_t - x0_prev / (2 * r)
    ratio = (ab[s] / ab[t]).sqrt() if alpha_ratio else ((1 - ab[s]) / (1 - ab[t])).sqrt()
    return ratio * x_t - sign * ab[s].sqrt() * torch.expm1(-h) * D


def _dpm_r_inverted(*args):
    return _dpm(*args, invert=True)


def _dpm_expm1_sign(*args):
    return _dpm(*args, sign=-1.0)


def _dpm_alpha_ratio(*args):
    return _dpm(*args, alpha_ratio=True)


def _dpm_first_order(*args):
    return _dpm(*args, first_order=True)


def _rms_probs(history, u, mix=True):
    p = history.pow(2).mean(dim=1).sqrt()
    p = p / p.sum()
    return (1 - u) * p + u / p.numel() if mix else p


def _importance_weights_p(history, u):  # weighted by p_t where 1 / (T p_t) belongs
    p = _rms_probs(history, u)
    return p, p


def _importance_no_t(history, u):
    p = _rms_probs(history, u)
    return p, 1 / p


def _importance_mean(history, u):  # p_t ~ mean L_t
    p = history.mean(dim=1) / history.mean(dim=1).sum()
    p = (1 - u) * p + u / p.numel()
    return p, 1 / (p.numel() * p)


def _importance_no_mixing(history, u):
    p = _rms_probs(history, u, mix=False)
    return p, 1 / (p.numel() * p)


def _lambda(sched, t, var):
    return sched.beta[t] ** 2 / (2 * var * sched.alpha[t] * (1 - sched.alpha_bar[t]))


def _beta_tilde(sched, t):
    return (1 - sched.alpha_bar[t - 1]) / (1 - sched.alpha_bar[t]) * sched.beta[t]


def _bound_no_d(sched, t, mse, D):
    return _lambda(sched, t, _beta_tilde(sched, t)) * mse


def _bound_large_variance(sched, t, mse, D):
    return _lambda(sched, t, sched.beta[t]) * D * mse


def _bound_no_half(sched, t, mse, D):
    return 2 * _lambda(sched, t, _beta_tilde(sched, t)) * D * mse


def _embedding(t, dim, denominator=None, sin_first=False):
    half = dim // 2
    args = t.double()[:, None] * 10000.0 ** (-torch.arange(half, dtype=torch.float64) / (denominator or half))
    return torch.cat([args.sin(), args.cos()] if sin_first else [args.cos(), args.sin()], dim=1)


def _embedding_sin_first(t, dim):
    return _embedding(t, dim, sin_first=True)


def _embedding_off_by_one(t, dim):  # 10000^(-i / (half - 1)), tensor2tensor's convention
    return _embedding(t, dim, denominator=max(dim // 2 - 1, 1))


def _embedding_zero_based(t, dim):
    return _embedding(t - 1, dim)


def _decoder(x, mean, log_var, delta, edges=True):
    s = (0.5 * log_var).exp()
    up, lo = torch.special.ndtr((x + delta - mean) / s), torch.special.ndtr((x - delta - mean) / s)
    if edges:
        up, lo = torch.where(x > 1 - delta / 2, 1.0, up), torch.where(x < -1 + delta / 2, 0.0, lo)
    return torch.log(up - lo)


def _decoder_bin_off_by_one(x, mean, log_var, levels):
    return _decoder(x, mean, log_var, 1.0 / levels)


def _decoder_no_edges(x, mean, log_var, levels):
    return _decoder(x, mean, log_var, 1.0 / (levels - 1), edges=False)


def _decoder_log2(x, mean, log_var, levels):
    return _decoder(x, mean, log_var, 1.0 / (levels - 1)) / math.log(2)


def _bpd_nats(prior, steps, num_dims):
    return (prior + steps.sum(dim=0)) / num_dims


def _bpd_per_image(prior, steps, num_dims):
    return (prior + steps.sum(dim=0)) / math.log(2)


def _bpd_no_prior(prior, steps, num_dims):
    return steps.sum(dim=0) / (num_dims * math.log(2))


def _score_no_sqrt(sched, eps, t):
    return -eps / (1 - sched.alpha_bar[t])


def _score_sign(sched, eps, t):
    return eps / (1 - sched.alpha_bar[t]).sqrt()


def _score_previous(sched, eps, t):
    return -eps / (1 - sched.alpha_bar[t - 1]).sqrt().clamp(min=1e-12)


def _vjps(f, x, probes):
    x = x.detach().requires_grad_(True)
    fx = f(x)
    return x, fx, [torch.autograd.grad(fx, x, grad_outputs=v, retain_graph=True)[0] for v in probes]


def _hutchinson_sum(f, x, probes):  # the sum over the probes where their mean belongs
    _, _, vjps = _vjps(f, x, probes)
    return sum((g * v).sum(dim=1) for g, v in zip(vjps, probes))


def _hutchinson_exact_trace(f, x, probes):
    x = x.detach().requires_grad_(True)
    fx = f(x)
    return sum(torch.autograd.grad(fx[:, i].sum(), x, retain_graph=True)[0][:, i] for i in range(x.shape[1]))


def _hutchinson_one_sided(f, x, probes):  # 1^T J v
    _, _, vjps = _vjps(f, x, probes)
    return sum(g.sum(dim=1) for g in vjps) / probes.shape[0]


def _variance_gaussian(J):
    return 2 * ((J + J.transpose(1, 2)) / 2).pow(2).sum(dim=(1, 2))


def _variance_not_symmetrised(J):
    off = J - torch.diag_embed(torch.diagonal(J, dim1=1, dim2=2))
    return 2 * off.pow(2).sum(dim=(1, 2))


def _flow(field, x0, s_grid, sign=1.0, constant=True, prior_at_start=False):
    x, acc = x0, torch.zeros(x0.shape[0], dtype=x0.dtype)
    for k in range(len(s_grid) - 1):
        h = s_grid[k + 1] - s_grid[k]
        f, div = field(x, float(s_grid[k]))
        x, acc = x + h * f, acc + h * div
    end = x0 if prior_at_start else x
    return -0.5 * (end.pow(2).sum(dim=1) + (end.shape[1] * math.log(2 * math.pi) if constant else 0)) + sign * acc


def _flow_sign(field, x0, s_grid):
    return _flow(field, x0, s_grid, sign=-1.0)


def _flow_no_constant(field, x0, s_grid):
    return _flow(field, x0, s_grid, constant=False)


def _flow_prior_at_start(field, x0, s_grid):
    return _flow(field, x0, s_grid, prior_at_start=True)


WRONG = {
    "alpha_bar": [_alpha_bar_cumsum, _alpha_bar_shifted],
    "q_sample": [_q_sample_variances, _q_sample_previous],
    "posterior": [_posterior_large_variance, _posterior_no_prev],
    "normal_kl": [_kl_no_half, _kl_swapped_logvars],
    "x0_from_eps": [_x0_no_sqrt],
    "mu_from_eps": [_mu_misprint],
    "vlb_term": [_vlb_kl_everywhere, _vlb_not_summed],
    "ancestral_step": [_step_noise_at_the_end, _step_large_variance],
    "schedule": [_schedule_copied_endpoints, _schedule_reaches_one, _schedule_padded, _schedule_constant,
                 _schedule_brutal_start],
    "q_step": [_q_step_no_sqrt, _q_step_tilde],
    "q_jump": [_q_jump_from_data, _q_jump_difference],
    "sample_t": [_sample_t_zero_based, _sample_t_no_top, _sample_t_unseeded, _sample_t_skewed],
    "simple_loss": [_loss_sum, _loss_x0_target, _loss_detached],
    "training_step": [_step_no_zero_grad, _step_no_step, _step_sum],
    "memorising_x0": [_memorising_unscaled, _memorising_nearest],
    "mixture_x0": [_mixture_no_gain, _mixture_memorising],
    "hybrid_loss": [_hybrid_no_detach, _hybrid_no_d, _hybrid_variance_detached_too],
    "importance_weights": [_importance_weights_p, _importance_no_t, _importance_mean, _importance_no_mixing],
    "bound_weight": [_bound_no_d, _bound_large_variance, _bound_no_half],
    "ddim_step": [_ddim_no_eta, _ddim_direction_without_sigma, _ddim_alpha],
    "log_snr_steps": [_steps_uniform_in_t, _steps_uniform_in_log_alpha_bar, _steps_decreasing],
    "dpm_solver_2m_update": [_dpm_r_inverted, _dpm_expm1_sign, _dpm_alpha_ratio, _dpm_first_order],
    "timestep_embedding": [_embedding_sin_first, _embedding_off_by_one, _embedding_zero_based],
    "discretized_decoder": [_decoder_bin_off_by_one, _decoder_no_edges, _decoder_log2],
    "bound_bits_per_dim": [_bpd_nats, _bpd_per_image, _bpd_no_prior],
    "score_from_eps": [_score_no_sqrt, _score_sign, _score_previous],
    "hutchinson_divergence": [_hutchinson_sum, _hutchinson_exact_trace, _hutchinson_one_sided],
    "hutchinson_variance": [_variance_gaussian, _variance_not_symmetrised],
    "flow_log_density": [_flow_sign, _flow_no_constant, _flow_prior_at_start],
}


def test_every_check_has_wrong_answers():
    assert set(WRONG) == set(exercises.CHECKS)


@pytest.mark.parametrize("check,wrong", [(c, w) for c, ws in WRONG.items() for w in ws],
                         ids=[w.__name__.strip("_") for ws in WRONG.values() for w in ws])
def test_wrong_answer_is_caught(check, wrong, capsys):
    assert exercises.CHECKS[check](wrong) is False
    out = capsys.readouterr().out
    assert out.startswith(exercises.FAIL) and "not implemented" not in out
    assert "calls the library" not in out, "caught as a wrong answer, not as a shortcut"


def test_verdict_names_the_first_failing_input_and_the_difference(capsys):
    exercises.check_mu_from_eps(_mu_misprint)
    out = capsys.readouterr().out
    assert "differs for schedule 'linear', T = 10, t = 1" in out and "max |difference| =" in out


def test_verdict_for_other_errors(capsys):
    assert exercises.check_q_sample(lambda sched, x0, t, eps: None) is False
    assert "forget `return`" in capsys.readouterr().out
    assert exercises.check_q_sample(lambda sched, x0, t, eps: x0 @ x0) is False
    assert "raised RuntimeError" in capsys.readouterr().out
    assert exercises.check_posterior(lambda sched, x0, xt, t: x0) is False
    assert "returned 1 value(s), expected 2" in capsys.readouterr().out


def test_changing_the_inputs_in_place_cannot_fool_a_check():
    def sneaky(sched, x0, t, eps):
        out = sched.alpha_bar[t].sqrt() * x0 + (1 - sched.alpha_bar[t]).sqrt() * eps
        x0.zero_()
        eps.zero_()
        return out

    assert exercises.check_q_sample(sneaky) is True


# ---------------------------------------------------------------------------------------------------
# the verdicts name typical mistakes; the design criteria of check_schedule


@pytest.mark.parametrize("check,wrong,words", [
    ("mu_from_eps", _mu_misprint, "sqrt(1 - alpha_t) misprint"),
    ("q_sample", _q_sample_variances, "missing square root"),
    ("q_sample", _q_sample_previous, "off-by-one t"),
    ("alpha_bar", _alpha_bar_shifted, "off-by-one t"),
    ("alpha_bar", _alpha_bar_cumsum, "sum of the betas"),
    ("posterior", _posterior_large_variance, "beta_t for beta_tilde_t"),
    ("posterior", _posterior_no_prev, "off-by-one t"),
    ("normal_kl", _kl_no_half, "factor 1/2"),
    ("x0_from_eps", _x0_no_sqrt, "missing square root"),
    ("vlb_term", _vlb_kl_everywhere, "L_0 is the decoder"),
    ("ancestral_step", _step_noise_at_the_end, "noise added at the last step"),
    ("ancestral_step", _step_large_variance, "'fixed_large'"),
    ("q_jump", _q_jump_from_data, "jump from x_0"),
    ("q_step", _q_step_no_sqrt, "without square roots"),
    ("sample_t", _sample_t_zero_based, "0-based off-by-one"),
    ("sample_t", _sample_t_no_top, "off-by-one at the top"),
    ("simple_loss", _loss_sum, "sum over the batch"),
    ("simple_loss", _loss_x0_target, "x_0 as the target"),
    ("training_step", _step_no_zero_grad, "zero_grad"),
    ("training_step", _step_no_step, "optimizer.step()"),
    ("hybrid_loss", _hybrid_no_detach, "missing stop-gradient"),
    ("hybrid_loss", _hybrid_no_d, "division by D"),
    ("importance_weights", _importance_weights_p, "weights p_t where 1 / (T p_t) belongs"),
    ("importance_weights", _importance_no_t, "factor 1 / T is missing"),
    ("importance_weights", _importance_no_mixing, "no uniform mixing"),
    ("bound_weight", _bound_no_d, "the factor D missing"),
    ("bound_weight", _bound_large_variance, "'fixed_large'"),
    ("ddim_step", _ddim_no_eta, "s_t without eta"),
    ("ddim_step", _ddim_direction_without_sigma, "sqrt(1 - alpha_bar_s) where sqrt(1 - alpha_bar_s - s_t^2) belongs"),
    ("ddim_step", _ddim_alpha, "alpha_t where alpha_bar_t belongs"),
    ("log_snr_steps", _steps_uniform_in_t, "steps uniform in t"),
    ("log_snr_steps", _steps_uniform_in_log_alpha_bar, "log(alpha_bar_t) alone"),
    ("log_snr_steps", _steps_decreasing, "decreasing order"),
    ("dpm_solver_2m_update", _dpm_r_inverted, "the ratio inverted"),
    ("dpm_solver_2m_update", _dpm_expm1_sign, "the sign of expm1"),
    ("dpm_solver_2m_update", _dpm_alpha_ratio, "noise levels' ratio"),
    ("dpm_solver_2m_update", _dpm_first_order, "x0_prev ignored"),
    ("timestep_embedding", _embedding_sin_first, "sin and cos swapped"),
    ("timestep_embedding", _embedding_off_by_one, "off-by-one in the exponent"),
    ("discretized_decoder", _decoder_bin_off_by_one, "off-by-one in the bin width"),
    ("discretized_decoder", _decoder_no_edges, "edge bins forgotten"),
    ("discretized_decoder", _decoder_log2, "log2 where the natural log belongs"),
    ("bound_bits_per_dim", _bpd_nats, "log2 vs ln"),
    ("bound_bits_per_dim", _bpd_per_image, "bits per image"),
    ("score_from_eps", _score_no_sqrt, "missing square root"),
    ("score_from_eps", _score_sign, "the sign"),
    ("hutchinson_divergence", _hutchinson_sum, "sum over the probes"),
    ("hutchinson_divergence", _hutchinson_exact_trace, "the exact trace"),
    ("hutchinson_variance", _variance_gaussian, "Gaussian probes' variance"),
    ("hutchinson_variance", _variance_not_symmetrised, "not symmetrised"),
    ("flow_log_density", _flow_sign, "sign of the integral"),
    ("flow_log_density", _flow_no_constant, "without its constant"),
    ("flow_log_density", _flow_prior_at_start, "scored at the start"),
], ids=lambda v: v if isinstance(v, str) and " " not in v else None)
def test_verdict_names_the_mistake(check, wrong, words, capsys):
    assert exercises.CHECKS[check](wrong) is False
    assert words in capsys.readouterr().out


def test_every_recognised_mistake_differs_from_the_reference():
    # a "mistake" that equals the reference would name a correct answer wrong; on the check's own cases
    # every listed mistake must disagree with the library somewhere
    cases = {"alpha_bar": [(dl.make_schedule(n, 10).beta[1:],) for n in dl.SCHEDULES]}
    refs = {"alpha_bar": lambda beta: torch.cumprod(1 - beta, dim=0)}
    for c in exercises._cases_with_t():
        sched, x0, xt, t, eps = c.args
        cases.setdefault("q_sample", []).append((sched, x0, t, eps))
        cases.setdefault("x0_from_eps", []).append((sched, xt, t, eps))
        cases.setdefault("mu_from_eps", []).append((sched, xt, t, eps))
    refs.update(q_sample=dl.q_sample, x0_from_eps=dl.x0_from_eps, mu_from_eps=dl.mu_from_eps)
    for name, args_list in cases.items():
        for label, wrong in exercises.MISTAKES[name]:
            assert any(not torch.allclose(torch.as_tensor(wrong(*a), dtype=torch.float64).broadcast_to(refs[name](*a).shape),
                                          refs[name](*a).double()) for a in args_list), label


def test_schedule_design_criteria(capsys):
    assert exercises.check_schedule(_schedule_constant) is False
    out = capsys.readouterr().out
    assert "of the steps have alpha_bar_t < 0.001 (more than 25%)" in out
    assert exercises.check_schedule(_schedule_constant, require=("valid", "noise")) is True
    capsys.readouterr()
    assert exercises.check_schedule(_schedule_constant, require=("first_step",)) is False
    assert "the first step removes 29.3% of the signal" in capsys.readouterr().out
    assert exercises.check_schedule(_schedule_brutal_start) is False
    assert "first step removes" in capsys.readouterr().out
    with pytest.raises(ValueError):
        exercises.check_schedule(_schedule_constant, require=("pretty",))


@pytest.mark.parametrize("name", dl.SCHEDULES)
def test_the_library_schedules_pass_the_design_check(name, capsys):
    # the thresholds are stated so that every published schedule passes; the reference is copied inline
    # because the check switches dl.make_schedule off
    betas = {T: dl.make_schedule(name, T).beta[1:] for T in (10, 100, 1000)}
    assert exercises.check_schedule(lambda T: betas[T]) is True, capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------
# no shortcut through the library


def test_the_reference_is_switched_off_everywhere_a_student_can_reach_it(capsys):
    from diffusion_lib import q_sample as imported

    def via_module(sched, x0, t, eps):
        return dl.q_sample(sched, x0, t, eps)

    def via_default(sched, x0, t, eps, _f=dl.q_sample):
        return _f(sched, x0, t, eps)

    def make_closure():
        f = dl.forward.q_sample

        def via_closure(sched, x0, t, eps):
            return f(sched, x0, t, eps)
        return via_closure

    def via_name(sched, x0, t, eps):
        return imported(sched, x0, t, eps)

    for student in (via_module, via_default, make_closure(), via_name):
        assert exercises.check_q_sample(student) is False
        assert "switched off" in capsys.readouterr().out
    # and everything is restored afterwards
    assert dl.q_sample is dl.forward.q_sample is imported and via_default.__defaults__ == (dl.q_sample,)
    sched = dl.make_schedule("cosine", 10)
    assert dl.q_sample(sched, torch.zeros(2, 2, dtype=torch.float64), 3, torch.zeros(2, 2, dtype=torch.float64)).shape == (2, 2)


def test_class_attributes_and_schedule_arrays_are_switched_off_and_restored(capsys):
    assert exercises.check_alpha_bar(lambda beta: dl.NoiseSchedule.from_betas(beta).alpha_bar[1:]) is False
    assert "switched off" in capsys.readouterr().out
    assert dl.NoiseSchedule.from_betas(torch.full((3,), 0.9, dtype=torch.float64)).T == 3
    assert exercises.check_posterior(lambda sched, x0, xt, t: (_posterior_mean(sched, x0, xt, t), sched.beta_tilde[t])) is False
    assert "sched.beta_tilde holds this exercise's answer" in capsys.readouterr().out
    assert dl.make_schedule("linear", 10).beta_tilde.shape == (11,)


def test_legitimate_routes_are_not_switched_off(capsys):
    # mu from eps through x_0 and the schedule's posterior coefficients is a correct derivation, not the reference
    def via_x0(sched, xt, t, eps):
        x0 = (xt - (1 - sched.alpha_bar[t]).sqrt() * eps) / sched.alpha_bar[t].sqrt()
        return sched.posterior_coef_x0[t] * x0 + sched.posterior_coef_xt[t] * xt

    assert exercises.check_mu_from_eps(via_x0) is True, capsys.readouterr().out


def test_hidden_test_arguments_change_the_inputs(capsys):
    # seeds, shapes, schedules and T reach the cases: a function that only works for (5, 2) fails a (3, 5) test
    def fixed_shape(sched, x0, t, eps):
        return sched.alpha_bar[t].sqrt() * x0.reshape(5, 2) + (1 - sched.alpha_bar[t]).sqrt() * eps.reshape(5, 2)

    assert exercises.check_q_sample(fixed_shape) is True
    assert exercises.check_q_sample(fixed_shape, shape=(3, 5)) is False
    custom = dl.NoiseSchedule.from_betas(torch.linspace(1e-3, 0.3, 37, dtype=torch.float64), name="custom")
    a = exercises._cases_with_t(seed=41, T=(7, 250), schedules=("cosine", custom), shape=(3, 5))
    b = exercises._cases_with_t()
    assert {c.description for c in a}.isdisjoint({c.description for c in b})
    assert all(c.args[1].shape == (3, 5) for c in a)
    assert [c.description.split(", t = ")[1] for c in exercises._cases_with_t(timesteps="edges")][:2] == ["1", "10"]


def test_warnings_of_a_student_function_go_to_stdout(capsys):
    import warnings

    def noisy(sched, x0, t, eps):
        warnings.warn("careful", UserWarning, stacklevel=2)
        return sched.alpha_bar[t].sqrt() * x0 + (1 - sched.alpha_bar[t]).sqrt() * eps

    assert exercises.check_q_sample(noisy) is True
    captured = capsys.readouterr()
    assert "warning from your function: UserWarning: careful" in captured.out and captured.err == ""


def test_q_jump_is_the_chain_from_s_to_t():
    # the jump's closed form against the chain of single steps (Monte Carlo, 5 standard errors)
    sched = dl.make_schedule("cosine", 50)
    s, t, n = 7, 31, 40_000
    xs = torch.tensor([[1.5, -0.7]], dtype=torch.float64).expand(n, 2)
    gen = torch.Generator().manual_seed(0)
    x = xs
    for step in range(s + 1, t + 1):
        x = dl.q_step(sched, x, step, torch.randn(x.shape, generator=gen, dtype=x.dtype))
    ratio = sched.alpha_bar[t] / sched.alpha_bar[s]
    mean, var = ratio.sqrt() * xs[0], 1 - ratio
    assert ((x.mean(0) - mean).abs() < 5 * (var / n).sqrt()).all()
    assert ((x.var(0) - var).abs() < 5 * var * math.sqrt(2 / n)).all()
    # and the reference implements it: same noise, same x_t; s = 0 is q_sample
    eps = torch.randn(3, 2, generator=gen, dtype=torch.float64)
    x3 = torch.randn(3, 2, generator=gen, dtype=torch.float64)
    assert torch.allclose(exercises.q_jump(sched, x3, s, t, eps), mean.new_tensor(0) + ratio.sqrt() * x3 + var.sqrt() * eps)
    assert torch.allclose(exercises.q_jump(sched, x3, 0, t, eps), dl.q_sample(sched, x3, t, eps))


def test_mixture_x0_is_bayes_rule_by_importance_sampling():
    # E[x_0 | x_t] of a Gaussian mixture, against a weighted Monte Carlo mean over the prior (5 standard errors)
    sched = dl.make_schedule("cosine", 100)
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[1.0, 0.0], [-1.0, 0.5], [0.0, -1.5]], dtype=torch.float64)
    s2, t, n = 0.09, 40, 400_000
    x0 = centres[torch.randint(0, 3, (n,), generator=gen)] + math.sqrt(s2) * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    ab = sched.alpha_bar[t]
    for xt in (torch.tensor([[0.3, 0.1]], dtype=torch.float64), torch.tensor([[-0.6, 0.4]], dtype=torch.float64)):
        log_w = -(xt - ab.sqrt() * x0).pow(2).sum(dim=1) / (2 * (1 - ab))
        w = torch.softmax(log_w, dim=0)
        mc = w @ x0
        ess = 1 / w.pow(2).sum()
        se = ((w[:, None] * (x0 - mc) ** 2).sum(dim=0) / ess).sqrt()
        assert ((exercises.mixture_x0(sched, xt, t, centres, s2)[0] - mc).abs() < 5 * se).all()
    # and with s2 = 0 it is the memorising denoiser of the centres
    xt = torch.randn(6, 2, generator=gen, dtype=torch.float64)
    assert torch.allclose(exercises.mixture_x0(sched, xt, t, centres, 0.0), dl.memorising_x0(xt, t, sched, centres))


def test_exercise_cells_parse():
    # every solution region sits inside a function, so a stub is a function that raises when called
    for path in SOURCES:
        for src in _code_cells(path):
            if "### BEGIN SOLUTION" in src:
                tree = ast.parse(src)
                assert all(isinstance(node, ast.FunctionDef) for node in tree.body), path.name


# ---------------------------------------------------------------------------------------------------
# the references of chapters 07, 10 and 11 that live in the checks, each against an independent route


def test_bound_weight_is_the_kl_of_the_two_means():
    # L_{t-1} with a shared variance beta_tilde_t: the library's KL of the posterior and the model's mean
    gen = torch.Generator().manual_seed(5)
    for name in dl.SCHEDULES:
        sched = dl.make_schedule(name, 50)
        t = torch.tensor([2, 3, 17, 49, 50])
        x0, eps = torch.randn(5, 3, generator=gen, dtype=torch.float64), torch.randn(5, 3, generator=gen, dtype=torch.float64)
        eps_pred = eps + 0.3 * torch.randn(5, 3, generator=gen, dtype=torch.float64)
        xt = dl.q_sample(sched, x0, t, eps)
        step = dl.p_mean_variance(sched, xt, t, eps_pred, "eps", "fixed_small")
        kl = dl.vlb_term(sched, x0, xt, t, step.mean, step.log_var)
        mse = (eps - eps_pred).pow(2).mean(dim=1)
        assert torch.allclose(advanced._bound_weight_reference(sched, t, mse, 3), kl, rtol=1e-8), name
        snr = sched.alpha_bar / (1 - sched.alpha_bar)
        via_snr = 0.5 * (snr[t - 1] / snr[t] - 1) * 3 * mse
        assert torch.allclose(advanced._bound_weight_reference(sched, t, mse, 3), via_snr, rtol=1e-8)


def test_importance_weights_are_unbiased_and_follow_the_rms():
    history = torch.rand(6, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64) + 0.1
    p, w = advanced.importance_weights(history, 0.1)
    assert torch.isclose(p.sum(), torch.tensor(1.0, dtype=torch.float64))
    f = torch.arange(1.0, 7.0, dtype=torch.float64) ** 2
    assert torch.isclose((p * w * f).sum(), f.mean())  # E_p[w f(t)] = mean_t f(t), exactly
    rms = history.pow(2).mean(dim=1).sqrt()
    assert torch.allclose((p - 0.1 / 6) / 0.9, rms / rms.sum())


def test_discretized_decoder_probabilities_sum_to_one():
    grid = torch.linspace(-1, 1, 17, dtype=torch.float64)
    for mean, std in ((0.3, 0.05), (-0.97, 0.2), (1.4, 0.5)):
        log_p = advanced._decoder_reference(
            grid, torch.full_like(grid, mean), torch.full_like(grid, 2 * math.log(std)), 17)
        assert torch.isclose(log_p.exp().sum(), torch.tensor(1.0, dtype=torch.float64), atol=1e-12)


def test_bound_bits_per_dim_of_a_known_bound():
    prior, steps = torch.tensor([0.0, 1.0], dtype=torch.float64), torch.full((4, 2), 64 * math.log(2) / 4, dtype=torch.float64)
    assert torch.allclose(advanced.bound_bits_per_dim(prior, steps, 64), torch.tensor([1.0, 1 + 1 / (64 * math.log(2))],
                                                                                      dtype=torch.float64))


def test_smooth_field_jacobian_and_hutchinson_against_autograd():
    gen = torch.Generator().manual_seed(9)
    f = advanced.SmoothField(3, gen)
    x = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    auto = torch.stack([torch.autograd.functional.jacobian(lambda y: f(y[None], 0.7)[0], x[b]) for b in range(4)])
    assert torch.allclose(f.jacobian(x, 0.7), auto, atol=1e-12)
    # with all 2^D sign vectors as probes the estimate is the exact trace (E[v v^T] = I over them)
    signs = torch.tensor([[a, b, c] for a in (-1.0, 1.0) for b in (-1.0, 1.0) for c in (-1.0, 1.0)], dtype=torch.float64)
    probes = signs[:, None, :].expand(8, 4, 3)
    trace = torch.diagonal(f.jacobian(x), dim1=1, dim2=2).sum(dim=1)
    assert torch.allclose(advanced.hutchinson_divergence(f, x, probes), trace, atol=1e-12)


def test_hutchinson_variance_by_enumerating_every_probe():
    J = torch.randn(3, 4, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    signs = torch.tensor([[(k >> i & 1) * 2.0 - 1 for i in range(4)] for k in range(16)], dtype=torch.float64)
    estimates = torch.einsum("ki,bij,kj->bk", signs, J, signs)  # every probe equally likely
    assert torch.allclose(estimates.mean(dim=1), torch.diagonal(J, dim1=1, dim2=2).sum(dim=1))
    assert torch.allclose(advanced.hutchinson_variance(J), estimates.var(dim=1, unbiased=False))


def test_flow_log_density_converges_to_the_exact_density_of_a_linear_flow():
    # dx/ds = -a x from s = 0 to 1 maps N(0, e^{2a} I) onto N(0, I): log p_0 = log N(x_0; 0, e^{2a} I)
    a, D = 0.8, 2
    x0 = torch.randn(5, D, generator=torch.Generator().manual_seed(6), dtype=torch.float64)

    def field(x, s):
        return -a * x, torch.full((x.shape[0],), -a * D, dtype=torch.float64)

    exact = -0.5 * (x0.pow(2).sum(dim=1) * math.exp(-2 * a) + D * math.log(2 * math.pi) + 2 * D * a)
    errors = [float((advanced.flow_log_density(field, x0, torch.linspace(0, 1, n + 1, dtype=torch.float64)) - exact).abs().max())
              for n in (100, 200)]
    assert errors[1] < 0.6 * errors[0] and errors[1] < 0.02  # first order: the error halves with the step


# the chapter 09 references (the library's own step formulas) against independent routes


def test_ddim_step_is_the_ancestral_step_at_eta_1_and_euler_at_eta_0():
    gen = torch.Generator().manual_seed(5)
    for name in dl.SCHEDULES:
        sched = dl.make_schedule(name, 100)
        for t in (1, 2, 37, 100):
            x_t, eps, z = (torch.randn(4, 2, generator=gen, dtype=torch.float64) for _ in range(3))
            step = dl.p_mean_variance(sched, x_t, t, eps, prediction="eps", var="fixed_small")
            ancestral = step.mean + (step.var.sqrt() * z if t > 1 else 0.0)
            assert torch.allclose(advanced.ddim_step(sched, x_t, t, t - 1, eps, 1.0, z), ancestral, rtol=1e-9, atol=1e-9)
            s = t // 3
            sigma = ((1 - sched.alpha_bar) / sched.alpha_bar).sqrt()  # x / sqrt(ab) moves by eps d sigma [SME21, Eq. 14]
            euler = (x_t / sched.alpha_bar[t].sqrt() + (sigma[s] - sigma[t]) * eps) * sched.alpha_bar[s].sqrt()
            assert torch.allclose(advanced.ddim_step(sched, x_t, t, s, eps, 0.0, z), euler, rtol=1e-9, atol=1e-9)


def test_log_snr_steps_are_the_nearest_steps_to_an_even_lambda_grid():
    # where no two targets share a nearest step, the reference is the brute-force nearest step of each target
    for name in dl.SCHEDULES:
        sched = dl.make_schedule(name, 1000)
        lam = dl.half_log_snr(sched)
        for K, t_max in ((5, 1000), (4, 996), (3, 600)):
            grid = torch.linspace(float(lam[1]), float(lam[t_max]), K, dtype=torch.float64)
            nearest = [min(range(1, t_max + 1), key=lambda t: abs(float(lam[t]) - float(g))) for g in grid]
            assert len(set(nearest)) == K, (name, K, t_max)
            assert advanced.log_snr_steps(sched, K, t_max).tolist() == nearest


def test_dpm_solver_updates_chained_are_the_sampler():
    # the reference step, chained by hand over a plan, reproduces dl.sample(sampler="dpm_solver"); its first-order
    # step is the DDIM step with eta = 0 (DPM-Solver++(1) = DDIM [Lu22b, Sec. 4])
    sched = dl.make_schedule("cosine", 200)
    model = dl.gaussian_data_denoiser(sched, 0.3)
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(3))
    plan = dl.sampling_plan(sched, "dpm_solver", 8).timesteps
    lam = dl.half_log_snr(sched)
    x, prev = x_T.double(), None
    for t, s in zip(plan, plan[1:] + [0]):
        eps = model(x, torch.full((64,), t))
        x0 = dl.x0_from_eps(sched, x, t, eps)
        if prev is None and s > 0:
            assert torch.allclose(advanced.dpm_solver_2m_update(sched, x, t, s, x0, None, None),
                                  advanced.ddim_step(sched, x, t, s, eps, 0.0, torch.zeros_like(x)), rtol=1e-9, atol=1e-9)
        x_next = advanced.dpm_solver_2m_update(sched, x, t, s, x0, *(prev or (None, None)))
        prev = (x0, float(lam[s] - lam[t]))
        x = x_next
    assert torch.allclose(x.float(), dl.sample(sched, model, 64, sampler="dpm_solver", steps=8, x_T=x_T), atol=1e-4)
