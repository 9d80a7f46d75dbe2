"""Checks for the exercises of chapters 07, 09, 10 and 11, in the style of `exercises` (which re-exports them).

Contents:
  chapter 07  `check_hybrid_loss` (the stop-gradient of [ND21, Sec. 3.1]), `check_importance_weights`
              (p_t ~ sqrt(E[L_t^2]) and the weights 1 / (T p_t) [ND21, Sec. 3.3]), `check_bound_weight`
              (the bound's term from the simple loss: lambda_t D mse [Ho20, Eq. 12]);
  chapter 09  `check_ddim_step` [SME21, Eq. 12, 16], `check_log_snr_steps` (K steps uniform in the half log-SNR,
              rounded to the nearest trained step [Lu22, Sec. 3.3]), `check_dpm_solver_2m_update` [Lu22b, Alg. 2];
  chapter 10  `check_timestep_embedding` [Va17; Ho20, Sec. 4], `check_discretized_decoder` [Ho20, Eq. 13],
              `check_bound_bits_per_dim`;
  chapter 11  `check_score_from_eps`, `check_hutchinson_divergence` [Hu89; Gr19], `check_hutchinson_variance`,
              `check_flow_log_density` [So21, App. D.2];
  `MISTAKES_ADVANCED`, `BLOCKED_ADVANCED` and `CHECKS_ADVANCED`, merged into `exercises.MISTAKES`,
  `exercises.BLOCKED` and `exercises.CHECKS`.

The chapter 09 references call the library's own step formulas (`sampling._DDIM.coefficients`,
`sampling._DPMSolver.step`, `respacing.select_timesteps`), which are switched off with the samplers while a
student's function runs. The references that have no home in the library (the Jacobian of the test fields, the variance of
Hutchinson's estimate, the Euler accumulation of the change of variables) are written here, each checked
against an independent route in tests/test_exercises.py.
"""

import contextlib
import copy
import io
import math

import torch

from .exercises import FAIL, PASS, SCHEDULES, Case, _call_student, _cases_with_t, _compare, _covered, _schedules
from .likelihood import bits_per_dim, discretized_gaussian_log_likelihood, simple_loss_weight
from .losses import HYBRID_LAMBDA, TimestepSampler, training_losses
from .models import MLP, timestep_embedding
from .respacing import DPM_SOLVER_LAMBDA_MIN, half_log_snr, select_timesteps
from .sampling import _DDIM, _DPMSolver
from .exact_likelihood import score_from_eps

# ---------------------------------------------------------------------------------------------------
# chapter 07: the hybrid loss, importance sampling of t, the bound's weight of the simple loss


def _hybrid_reference(model, sched, x0, t, eps):
    return training_losses(sched, model, x0, t, eps, loss="hybrid", var="learned")[0].mean()


def _hybrid_without_detach(model, sched, x0, t, eps):
    # the bound term sees the mean with its gradient: the "vlb" loss's term, weighted like the hybrid's
    simple = training_losses(sched, model, x0, t, eps, loss="simple", var="learned")[0]
    bound = training_losses(sched, model, x0, t, eps, loss="vlb", var="learned")[0]
    return (simple + HYBRID_LAMBDA * bound).mean()


def _learned_variance_cases(seed, T, schedules, shape):
    """(model, sched, x0, t, eps) with a small MLP that returns (eps, r), r the learned variance's interpolation
    value, varying with the input."""
    gen = torch.Generator().manual_seed(seed)
    cases = []
    for i, (label, sched) in enumerate(_schedules(schedules, T)):
        with torch.random.fork_rng():
            torch.manual_seed(seed * 1000 + i)
            model = MLP(data_dim=shape[1], hidden=(32, 32), emb_dim=16, learn_var=True)
            torch.nn.init.normal_(model.out.weight, std=0.1)  # the variance head starts at zero: wake it up
        x0 = torch.randn(*shape, generator=gen)
        eps = torch.randn(*shape, generator=gen)
        t = torch.randint(1, sched.T + 1, (shape[0],), generator=gen)
        t[0], t[1], t[-1] = 1, 2, sched.T  # the decoder term, the first KL and the last step in every batch
        cases.append(Case(f"{label}, t = {t.tolist()[:4]} ...", (model, sched, x0, t, eps)))
    return cases


def _gradients(loss_fn, model, args):
    model = copy.deepcopy(model)
    loss = loss_fn(model, *args)
    loss.backward()
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


def _same_gradients(got, expected):
    scale = max(float(g.abs().max()) for g in expected)
    return all(torch.allclose(g, e, rtol=1e-4, atol=1e-6 * scale) for g, e in zip(got, expected))


def check_hybrid_loss(student_loss, *, seed=0, T=(10, 1000), schedules=SCHEDULES, shape=(6, 2)):
    """student_loss(model, sched, x0, t, eps) returns the hybrid loss of [ND21, Sec. 3.1], averaged over the batch:
    L_simple + HYBRID_LAMBDA T L_{t-1} / D per example, the bound's term L_{t-1} (nats, L_0 at t = 1) computed from
    the *detached* mean, so the bound trains only the variance. `model(xt, t)` returns (eps_pred, r). The value and
    the gradient of every parameter are compared with the library's."""
    cases = _learned_variance_cases(seed, T, schedules, shape)
    values = io.StringIO()
    with contextlib.redirect_stdout(values):  # the verdict on the values is shown only when they are wrong
        right = _compare("hybrid_loss", student_loss, _hybrid_reference, cases, rtol=1e-5, atol=1e-6,
                         title="hybrid loss", covered="")
    if not right:
        print(values.getvalue(), end="")
        return False
    for case in cases:
        model, *args = case.args
        student_model = copy.deepcopy(model)
        ok, loss = _call_student("hybrid_loss", student_loss, (student_model, *args), case.description)
        if not ok:
            print(f"{FAIL} hybrid loss: {loss}")
            return False
        if not isinstance(loss, torch.Tensor) or not loss.requires_grad:
            print(f"{FAIL} hybrid loss: the loss does not backpropagate to the model: return a tensor, not a float")
            return False
        loss.backward()
        got = [p.grad if p.grad is not None else torch.zeros_like(p) for p in student_model.parameters()]
        if not _same_gradients(got, _gradients(_hybrid_reference, model, args)):
            print(f"{FAIL} hybrid loss: the value is right but the gradients differ from the library's\n"
                  f"   for {case.description}")
            if _same_gradients(got, _gradients(_hybrid_without_detach, model, args)):
                print("   this is the missing stop-gradient: the bound's term moves the mean too; give it the "
                      "detached prediction (eps_pred.detach()) so it trains only the variance")
            return False
    print(f"{PASS} hybrid loss: the value and every parameter's gradient agree with the library in all {len(cases)} "
          f"cases (the bound trains the variance only; {_covered(T, schedules, 'all').split(', t =')[0]}, t = 1, 2 and T "
          f"in every batch)")
    return True


def importance_weights(loss_history, uniform_prob):
    """(p_t, 1 / (T p_t)) for t = 1..T from the last K bound terms per t, loss_history (T, K) float64.

    p_t ~ sqrt(mean_k L_{t,k}^2), mixed with the uniform law: (1 - uniform_prob) p_t + uniform_prob / T [ND21, Sec. 3.3].
    The same as `TimestepSampler.probs` once every t has its K terms.
    """
    T, K = loss_history.shape
    sampler = TimestepSampler(T, importance=True, history=K, uniform_prob=uniform_prob)
    sampler.losses[1:] = loss_history
    sampler.counts[1:] = K
    p = sampler.probs()
    return p, 1.0 / (T * p)


def check_importance_weights(student_weights, *, seed=0, T=(10, 1000), history=(10, 3), uniform_prob=(0.001, 0.1)):
    """student_weights(loss_history, uniform_prob) returns (p, weights), both (T,) float64: p_t ~ sqrt(mean_k L_{t,k}^2)
    normalised and mixed with uniform_prob of the uniform law, weights = 1 / (T p_t) (so E_p[weights L_t] = mean_t L_t)."""
    gen = torch.Generator().manual_seed(seed + 70)
    cases = []
    for n in T:
        for k, u in zip(history, uniform_prob):
            # bound terms that fall by orders of magnitude with t, as in a trained model, and vary between draws
            scale = torch.exp(-torch.linspace(0, 6, n, dtype=torch.float64))[:, None]
            losses = scale * torch.rand(n, k, generator=gen, dtype=torch.float64).mul(2).add(0.05)
            cases.append(Case(f"T = {n}, {k} terms per t, uniform_prob = {u}", (losses, u)))
    return _compare("importance_weights", student_weights, importance_weights, cases, rtol=1e-8, atol=1e-12,
                    title="importance sampling of t", covered=f"T = {' and '.join(map(str, T))}, "
                                                          f"uniform_prob = {' and '.join(map(str, uniform_prob))}")


def _bound_weight_reference(sched, t, mse, D):
    return simple_loss_weight(sched, t) * D * mse.double()


def check_bound_weight(student_bound, *, seed=0, T=(10, 1000), schedules=SCHEDULES, batch=5, D=(2, 64),
                       timesteps="all"):
    """student_bound(sched, t, mse, D) returns L_{t-1} in nats (B,) for a network with the fixed variance
    sigma_t^2 = beta_tilde_t, from its simple loss mse (B,) = mean over the D coordinates of (eps - eps_pred)^2:
    lambda_t D mse with lambda_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha_bar_t)) [Ho20, Eq. 12]; t (B,) in 2..T.
    timesteps "edges" uses t = 2 and t = T, "interior" 2 < t < T, "all" both."""
    gen = torch.Generator().manual_seed(seed + 71)
    cases = []
    for label, sched in _schedules(schedules, T):
        for d in D:
            lo, hi = (2, sched.T) if timesteps == "all" else {"edges": (2, 2), "interior": (3, sched.T - 1)}[timesteps]
            t = torch.randint(lo, hi + 1, (batch,), generator=gen) if hi >= lo else torch.full((batch,), 2)
            if timesteps in ("all", "edges"):
                t[0], t[-1] = 2, sched.T
            mse = torch.rand(batch, generator=gen, dtype=torch.float64) * 2
            cases.append(Case(f"{label}, D = {d}, t = {t.tolist()}", (sched, t, mse, d)))
    return _compare("bound_weight", student_bound, _bound_weight_reference, cases, rtol=1e-8, atol=1e-10,
                    title="the bound's term from the simple loss",
                    covered=_covered(T, schedules, timesteps).replace("t = 1 and t = T", "t = 2 and t = T")
                    .replace("1 < t < T", "2 < t < T") + f", D = {D}")


# ---------------------------------------------------------------------------------------------------
# chapter 09: one DDIM step, steps uniform in log-SNR, one DPM-Solver++(2M) step


def ddim_step(sched, x_t, t, s, eps_pred, eta, z):
    """x_s = sqrt(ab_s) x0_hat + sqrt(1 - ab_s - s_t^2) eps_pred + s_t z from t down to s < t (ab_0 = 1), with
    x0_hat = (x_t - sqrt(1 - ab_t) eps_pred) / sqrt(ab_t) and s_t = eta sqrt((1 - ab_s) / (1 - ab_t))
    sqrt(1 - ab_t / ab_s) [SME21, Eq. 12, 16]: the coefficients of the library's DDIM sampler."""
    data, direction, sigma = _DDIM(sched, None, "eps", "fixed_small", None, eta).coefficients(t, s)
    ab_t = float(sched.alpha_bar[t])
    x0_hat = (x_t - math.sqrt(1 - ab_t) * eps_pred) / math.sqrt(ab_t)
    return data * x0_hat + direction * eps_pred + sigma * z


def _step_pairs(T, timesteps, gen):
    """(t, s) pairs with 0 <= s < t <= T: "interior" 1 <= s < t < T, "edges" t = T (to an interior s) and s = 0."""
    def draw(lo, hi):
        return int(torch.randint(lo, hi + 1, (1,), generator=gen))

    pairs = []
    if timesteps in ("all", "interior") and T > 2:
        t = draw(2, T - 1)
        pairs.append((t, draw(1, t - 1)))
    if timesteps in ("all", "edges"):
        pairs += [(T, draw(1, T - 1)), (draw(1, T), 0)]
    if timesteps not in ("all", "edges", "interior"):
        raise ValueError(f"timesteps must be 'all', 'interior' or 'edges', got {timesteps!r}")
    return pairs


def check_ddim_step(student_step, *, seed=0, T=(10, 1000), schedules=SCHEDULES, shape=(5, 2), etas=(0.0, 0.4, 1.0),
                    timesteps="all"):
    """student_step(sched, x_t, t, s, eps_pred, eta, z) returns x_s after one DDIM step from t to s < t (ints, s = 0
    the data, alpha_bar_0 = 1): x_s = sqrt(ab_s) x0_hat + sqrt(1 - ab_s - s_t^2) eps_pred + s_t z with
    s_t = eta sqrt((1 - ab_s) / (1 - ab_t)) sqrt(1 - ab_t / ab_s) [SME21, Eq. 12, 16].
    timesteps "interior" uses 1 <= s < t < T, "edges" t = T and s = 0, "all" both."""
    gen = torch.Generator().manual_seed(seed + 90)
    cases = []
    for label, sched in _schedules(schedules, T):
        for t, s in _step_pairs(sched.T, timesteps, gen):
            for eta in etas:
                x_t, eps, z = (torch.randn(*shape, generator=gen, dtype=torch.float64) for _ in range(3))
                cases.append(Case(f"{label}, t = {t}, s = {s}, eta = {eta}", (sched, x_t, t, s, eps, eta, z)))
    where = {"all": ", s = 0 and t = T included", "edges": ", t = T and s = 0", "interior": ", 1 <= s < t < T"}
    return _compare("ddim_step", student_step, ddim_step, cases, rtol=1e-6, atol=1e-8, title="DDIM step",
                    covered=_covered(T, schedules, "all").split(", t =")[0] + where[timesteps]
                    + f", eta = {', '.join(map(str, etas))}")


def log_snr_steps(sched, K, t_max):
    """K timesteps in 1..t_max, increasing, evenly spaced in the half log-SNR lambda_t = log(sqrt(ab_t) /
    sqrt(1 - ab_t)) from lambda_1 to lambda_{t_max}, each the trained step with the nearest lambda [Lu22, Sec. 3.3]:
    `select_timesteps(sched, K, "log_snr", lambda_min)` with lambda_min = lambda_{t_max}."""
    steps = select_timesteps(sched, K, "log_snr", float(half_log_snr(sched)[t_max]))
    assert steps[-1] == t_max, (steps, t_max)
    return torch.tensor(steps)


def _clean_log_snr_case(sched, K, t_max, margin=1e-3):
    """True when rounding every target to its nearest lambda gives K distinct steps, none near a tie (so neither the
    library's rule for collisions nor float32 rounding can decide the answer)."""
    lam = half_log_snr(sched)[1:t_max + 1]
    targets = torch.linspace(float(lam[0]), float(lam[-1]), K, dtype=torch.float64)
    dist = (lam[None, :] - targets[:, None]).abs().sort(dim=1).values
    nearest = (lam[None, :] - targets[:, None]).abs().argmin(dim=1) + 1
    return len(set(nearest.tolist())) == K and bool((dist[:, 1] - dist[:, 0] > margin).all()) \
        and nearest.tolist() == log_snr_steps(sched, K, t_max).tolist()


def check_log_snr_steps(student_steps, *, seed=0, T=(50, 1000), schedules=SCHEDULES, K=(2, 5, 10, 20), cases_per=3):
    """student_steps(sched, K, t_max) returns K distinct timesteps (ints, increasing) in 1..t_max, evenly spaced in
    the half log-SNR lambda_t = log(sqrt(ab_t) / sqrt(1 - ab_t)) from t = 1 to t = t_max and each rounded to the
    trained step with the nearest lambda (as `select_timesteps(sched, K, "log_snr", lambda_min)`). Only inputs where
    no two targets round to the same step are used; t_max is T, the start of DPM-Solver's cut-off, or in between."""
    gen = torch.Generator().manual_seed(seed + 91)
    cases = []
    for label, sched in _schedules(schedules, T):
        cut = select_timesteps(sched, None, "uniform", DPM_SOLVER_LAMBDA_MIN)[-1]
        drawn = [(int(torch.randint(2, 25, (1,), generator=gen)),
                  int(torch.randint(sched.T // 2, sched.T + 1, (1,), generator=gen))) for _ in range(8)]
        # t_max = T, the cut-off's t_max, a random one: the first clean case of each in turn
        groups = [[(k, sched.T) for k in K], [(k, cut) for k in K] if cut < sched.T else [], drawn]
        groups = [[(k, t_max) for k, t_max in g if 2 <= k < t_max and _clean_log_snr_case(sched, k, t_max)] for g in groups]
        kept = [case for round_ in zip(*(g + [None] * cases_per for g in groups)) for case in round_ if case]
        cases += [Case(f"{label}, K = {k}, t_max = {t_max}", (sched, k, t_max)) for k, t_max in kept[:cases_per]]
    if not cases:
        raise ValueError("no case without collisions: choose larger T or smaller K")
    return _compare("log_snr_steps", student_steps, log_snr_steps, cases, rtol=0, atol=0, single=True,
                    title="steps uniform in log-SNR",
                    covered=f"{_covered(T, schedules, 'all').split(', t =')[0]}, {len(cases)} choices of K and t_max")


class _GivenPrediction:
    """Stands in for the network in a sampler's step: x0_hat at (x, t) is the given tensor."""

    def __init__(self, x0):
        self.x0 = x0

    def x0_eps(self, x, t):
        return self.x0, None


def dpm_solver_2m_update(sched, x_t, t, s, x0_t, x0_prev, h_prev):
    """One DPM-Solver++(2M) step from t to s < t [Lu22b, Alg. 2], the library's: h = lambda_s - lambda_t,
    x_s = sqrt((1 - ab_s) / (1 - ab_t)) x_t + sqrt(ab_s) (1 - e^{-h}) D, D = (1 + 1/(2r)) x0_t - x0_prev / (2r) with
    r = h_prev / h, or D = x0_t on the first step (x0_prev None); x0_t itself at s = 0."""
    stepper = _DPMSolver(sched, None, "eps", "fixed_small", None, None)
    if x0_prev is not None:
        stepper.previous = (x0_prev, h_prev)
    return stepper.step(_GivenPrediction(x0_t), x_t, t, s, None)


def check_dpm_solver_2m_update(student_update, *, seed=0, T=(10, 1000), schedules=SCHEDULES, shape=(5, 2), K=(4, 8),
                               timesteps="all"):
    """student_update(sched, x_t, t, s, x0_t, x0_prev, h_prev) returns x_s after one DPM-Solver++(2M) step from t to
    s < t [Lu22b, Alg. 2]; x0_prev is the prediction at the previously visited step and h_prev = lambda_t - lambda_prev
    (both None on the first step: first order). Steps t > s of log-SNR plans with K steps; "interior" are second-order
    steps to s > 0, "edges" the first step (x0_prev None) and the last (s = 0: the result is x0_t), "all" both."""
    if timesteps not in ("all", "edges", "interior"):
        raise ValueError(f"timesteps must be 'all', 'interior' or 'edges', got {timesteps!r}")
    gen = torch.Generator().manual_seed(seed + 92)
    cases = []
    for label, sched in _schedules(schedules, T):
        lam = half_log_snr(sched).tolist()
        t_max = select_timesteps(sched, None, "uniform", DPM_SOLVER_LAMBDA_MIN)[-1]
        for k in K:
            plan = select_timesteps(sched, min(k, t_max), "log_snr", DPM_SOLVER_LAMBDA_MIN)[::-1] + [0]
            if len(plan) < 4:
                continue
            i = int(torch.randint(1, len(plan) - 2, (1,), generator=gen))  # a step with a previous one and s > 0
            chosen = ([(0, False), (len(plan) - 2, True)] if timesteps in ("all", "edges") else []) + \
                ([(i, True)] if timesteps in ("all", "interior") else [])
            for j, with_prev in chosen:
                t, s = plan[j], plan[j + 1]
                x_t, x0_t, x0_prev = (torch.randn(*shape, generator=gen, dtype=torch.float64) for _ in range(3))
                prev, h_prev = (x0_prev, lam[t] - lam[plan[j - 1]]) if with_prev else (None, None)
                order = "the first step" if not with_prev else "the last step" if s == 0 else "a second-order step"
                cases.append(Case(f"{label}, {order}: t = {t}, s = {s}" + (f" (previous t = {plan[j - 1]})"
                                                                          if with_prev else ""),
                                  (sched, x_t, t, s, x0_t, prev, h_prev)))
    where = {"all": "the first step, second-order steps and the last step", "edges": "the first and the last step",
             "interior": "second-order steps"}[timesteps]
    return _compare("dpm_solver_2m_update", student_update, dpm_solver_2m_update, cases, rtol=1e-6, atol=1e-8,
                    title="DPM-Solver++(2M) step",
                    covered=f"{_covered(T, schedules, 'all').split(', t =')[0]}, {where}")


# ---------------------------------------------------------------------------------------------------
# chapter 10: the U-Net's time embedding, the discretized decoder, bits per dimension


def check_timestep_embedding(student_embedding, *, seed=0, T=1000, dims=(2, 8, 32), batch=6):
    """student_embedding(t, dim) returns the sinusoidal embedding (B, dim) of integer timesteps t (B,):
    cos(t w_i) in the first dim/2 columns, sin(t w_i) in the last, w_i = 10000^(-i / (dim / 2)), i = 0..dim/2 - 1."""
    gen = torch.Generator().manual_seed(seed + 100)
    cases = []
    for dim in dims:
        t = torch.randint(1, T + 1, (batch,), generator=gen)
        t[0], t[-1] = 1, T
        cases.append(Case(f"dim = {dim}, t = {t.tolist()}", (t, dim)))
    return _compare("timestep_embedding", student_embedding, timestep_embedding, cases, rtol=0, atol=1e-3,
                    title="timestep embedding", covered=f"dim = {', '.join(map(str, dims))}, t from 1 to {T}")


def _decoder_reference(x, mean, log_var, levels):
    return discretized_gaussian_log_likelihood(x, mean, log_var, levels)


def check_discretized_decoder(student_log_lik, *, seed=0, levels=(17,), shape=(4, 8), where="all", stds=(0.03, 0.3)):
    """student_log_lik(x, mean, log_var, levels) returns log P(x) elementwise in nats for x on the grid of `levels`
    values in [-1, 1]: log(Phi((x + delta - mean) / sigma) - Phi((x - delta - mean) / sigma)), delta = 1 / (levels - 1),
    with -inf for the lower edge of x = -1 and +inf for the upper edge of x = 1 [Ho20, Eq. 13].
    where: "interior" (x inside, no end bin), "edges" (x = -1 and x = 1 only) or "all"."""
    values = {"all": "values from -1 to 1", "interior": "values inside (-1, 1)", "edges": "x = -1 and x = 1 only"}[where]
    gen = torch.Generator().manual_seed(seed + 101)
    cases = []
    for n in levels:
        grid = torch.linspace(-1, 1, n, dtype=torch.float64)
        for std in stds:
            if where == "edges":
                idx = torch.randint(0, 2, shape, generator=gen) * (n - 1)
            else:
                idx = torch.randint(1 if where == "interior" else 0, n - 1 if where == "interior" else n, shape,
                                    generator=gen)
            x = grid[idx]
            mean = x + std * torch.randn(shape, generator=gen, dtype=torch.float64).clamp(-3, 3)
            log_var = torch.full(shape, 2 * math.log(std), dtype=torch.float64)
            cases.append(Case(f"levels = {n}, sigma = {std}, {values}", (x, mean, log_var, n)))
    return _compare("discretized_decoder", student_log_lik, _decoder_reference, cases, rtol=1e-6, atol=1e-6,
                    title="discretized decoder", covered=f"levels = {levels}, sigma = {stds}, {values}")


def bound_bits_per_dim(prior, steps, num_dims):
    """The bound per example in bits per dimension from its terms in nats: (L_T + sum_t L_{t-1}) / (D ln 2), (B,)."""
    return bits_per_dim(prior.double() + steps.double().sum(dim=0), num_dims)


def check_bound_bits_per_dim(student_bpd, *, seed=0, T=(10, 1000), batch=5, num_dims=(64, 2)):
    """student_bpd(prior, steps, num_dims) returns the bound in bits per dimension (B,) from L_T (B,) and the terms
    steps (T, B), steps[t - 1] the term at step t, all in nats per example."""
    gen = torch.Generator().manual_seed(seed + 102)
    cases = []
    for n in T:
        for d in num_dims:
            prior = torch.rand(batch, generator=gen, dtype=torch.float64) * 1e-3
            steps = torch.rand(n, batch, generator=gen, dtype=torch.float64) * 20 / n
            steps[0] = -d * torch.rand(batch, generator=gen, dtype=torch.float64)  # L_0: a density can exceed 1
            cases.append(Case(f"T = {n}, D = {d}", (prior, steps, d)))
    return _compare("bound_bits_per_dim", student_bpd, bound_bits_per_dim, cases, rtol=1e-10, atol=1e-12,
                    title="bits per dimension", covered=f"T = {T}, D = {num_dims}")


# ---------------------------------------------------------------------------------------------------
# chapter 11: the score, Hutchinson's estimator, the change of variables


def check_score_from_eps(student_score, *, seed=0, T=(10, 1000), schedules=SCHEDULES, shape=(5, 2), timesteps="all"):
    """student_score(sched, eps, t) returns grad log q(x_t) = -eps / sqrt(1 - alpha_bar_t) for a prediction eps of
    the noise at x_t (Tweedie's formula); t is an int."""
    cases = [Case(c.description, (c.args[0], c.args[4], c.args[3])) for c in _cases_with_t(seed, T, schedules, shape,
                                                                                              timesteps)]
    return _compare("score_from_eps", student_score, score_from_eps, cases, title="score from eps",
                    covered=_covered(T, schedules, timesteps))


class SmoothField:
    """f(x) = c(s) (tanh(x W) M + x A) per example, x (B, D): a smooth field whose Jacobian is known in closed form,
    J_b = c(s) (A^T + M^T diag(1 - tanh^2(x_b W)) W^T), and so its divergence tr J_b."""

    def __init__(self, dim, gen, hidden=5):
        self.W = torch.randn(dim, hidden, generator=gen, dtype=torch.float64)
        self.M = torch.randn(hidden, dim, generator=gen, dtype=torch.float64) / math.sqrt(hidden)
        self.A = torch.randn(dim, dim, generator=gen, dtype=torch.float64) / math.sqrt(dim)

    @staticmethod
    def c(s):
        return 1.0 + 0.5 * math.sin(3 * s)

    def __call__(self, x, s=0.0):
        return self.c(s) * (torch.tanh(x @ self.W) @ self.M + x @ self.A)

    def jacobian(self, x, s=0.0):
        """(B, D, D) with J[b, i, j] = d f_i / d x_j at x_b."""
        slope = 1 - torch.tanh(x @ self.W) ** 2  # (B, H)
        return self.c(s) * (self.A.T + torch.einsum("hi,bh,jh->bij", self.M, slope, self.W))

    def velocity_and_divergence(self, x, s):
        """The right-hand side of dx/ds and its divergence (B,), for the change of variables."""
        return self(x, s), torch.diagonal(self.jacobian(x, s), dim1=1, dim2=2).sum(dim=1)


def hutchinson_divergence(f, x, probes):
    """mean_k v_k^T J v_k per example (B,) with J the Jacobian of f at x and probes v (K, B, D) [Hu89]: unbiased for
    tr J when E[v v^T] = I. Computed here from the closed-form Jacobian of a `SmoothField`."""
    return torch.einsum("kbi,bij,kbj->b", probes, f.jacobian(x), probes) / probes.shape[0]


def _field_cases(seed, dims, batch, num_probes):
    gen = torch.Generator().manual_seed(seed + 110)
    cases = []
    for d in dims:
        f = SmoothField(d, gen)
        x = torch.randn(batch, d, generator=gen, dtype=torch.float64)
        probes = torch.randint(0, 2, (num_probes, batch, d), generator=gen).double() * 2 - 1
        cases.append(Case(f"D = {d}, {num_probes} probes", (f, x, probes)))
    return cases


def check_hutchinson_divergence(student_div, *, seed=0, dims=(2, 5), batch=4, num_probes=3):
    """student_div(f, x, probes) returns Hutchinson's estimate of div f = tr(df/dx) per example (B,):
    mean over the K probes v of v^T (df/dx) v, with one vector-Jacobian product per probe (torch.autograd.grad).
    f maps (B, D) to (B, D), example by example; probes (K, B, D) are +-1."""
    return _compare("hutchinson_divergence", student_div, hutchinson_divergence,
                    _field_cases(seed, dims, batch, num_probes), rtol=1e-6, atol=1e-8, title="Hutchinson's estimate",
                    covered=f"D = {dims}, {num_probes} Rademacher probes")


def hutchinson_variance(J):
    """The variance of v^T J v for one Rademacher probe v, per matrix J (B, D, D): with S = (J + J^T) / 2,
    Var = 2 (||S||_F^2 - sum_i S_ii^2) (the diagonal is estimated without error, since v_i^2 = 1)."""
    S = (J + J.transpose(1, 2)) / 2
    return 2 * (S.pow(2).sum(dim=(1, 2)) - torch.diagonal(S, dim1=1, dim2=2).pow(2).sum(dim=1))


def check_hutchinson_variance(student_var, *, seed=0, dims=(2, 3, 6), batch=4):
    """student_var(J) returns Var(v^T J v) for a Rademacher probe v (entries +-1, equally likely), (B,), J (B, D, D)."""
    gen = torch.Generator().manual_seed(seed + 111)
    cases = [Case("a diagonal J (the estimate is exact)", (torch.diag_embed(torch.randn(batch, 3, generator=gen,
                                                                                      dtype=torch.float64)),))]
    for d in dims:
        cases.append(Case(f"random J, D = {d}", (torch.randn(batch, d, d, generator=gen, dtype=torch.float64),)))
    return _compare("hutchinson_variance", student_var, hutchinson_variance, cases, rtol=1e-8, atol=1e-10,
                    title="variance of Hutchinson's estimate", covered=f"D = {dims}, a diagonal J")


def standard_normal_log_density(x):
    """log N(x; 0, I) per example (B,), nats."""
    return -0.5 * (x.pow(2).sum(dim=1) + x.shape[1] * math.log(2 * math.pi))


def flow_log_density(field, x0, s_grid):
    """log p_0(x_0) (B,) by the change of variables along dx/ds = f(x, s) from s_grid[0] to s_grid[-1], Euler steps:
    x_{k+1} = x_k + h_k f(x_k, s_k), log p_0(x_0) = log N(x_K; 0, I) + sum_k h_k div f(x_k, s_k) [So21, App. D.2].
    field(x, s) returns (f (B, D), div f (B,))."""
    x, integral = x0, torch.zeros(x0.shape[0], dtype=torch.float64)
    for k in range(len(s_grid) - 1):
        h = float(s_grid[k + 1] - s_grid[k])
        velocity, div = field(x, float(s_grid[k]))
        x, integral = x + h * velocity, integral + h * div
    return standard_normal_log_density(x) + integral


def check_flow_log_density(student_log_density, *, seed=0, dims=(2, 4), batch=4, steps=(3, 20)):
    """student_log_density(field, x0, s_grid) returns log p_0(x_0) (B,) in nats: Euler steps x_{k+1} = x_k + h_k f
    along the grid, the divergence accumulated the same way, and the end point scored under N(0, I)."""
    gen = torch.Generator().manual_seed(seed + 112)
    cases = []
    for d in dims:
        for n in steps:
            f = SmoothField(d, gen)
            s_grid = torch.sort(torch.rand(n + 1, generator=gen, dtype=torch.float64)).values
            s_grid[0], s_grid[-1] = 0.0, 1.0
            x0 = torch.randn(batch, d, generator=gen, dtype=torch.float64)
            cases.append(Case(f"D = {d}, {n} uneven steps", (f.velocity_and_divergence, x0, s_grid)))
    return _compare("flow_log_density", student_log_density, flow_log_density, cases, rtol=1e-8, atol=1e-8,
                    title="change of variables", covered=f"D = {dims}, {steps} uneven Euler steps")


# ---------------------------------------------------------------------------------------------------
# what each exercise may not call, and the typical wrong answers


BLOCKED_ADVANCED = {
    "hybrid_loss": ("training_losses", "Trainer.train_step", "Trainer.run"),
    "importance_weights": ("TimestepSampler.probs", "TimestepSampler.sample"),
    "bound_weight": ("simple_loss_weight", "vlb_term", "normal_kl", "bound_terms", "training_losses"),
    "ddim_step": ("sampling._DDIM.coefficients", "sampling._DDIM.step", "sampling._Euler.step",
                  "sampling._DPMSolver.step", "sample_loop", "sample", "sample_data", "ddim_invert"),
    "log_snr_steps": ("select_timesteps", "respacing._nearest_steps", "half_log_snr", "sampling_plan"),
    "dpm_solver_2m_update": ("sampling._DPMSolver.step", "sampling._DDIM.coefficients", "sampling._DDIM.step",
                             "sampling._Euler.step", "sample_loop", "sample", "sample_data"),
    "timestep_embedding": ("timestep_embedding",),
    "discretized_decoder": ("discretized_gaussian_log_likelihood", "likelihood._log_ndtr_diff", "vlb_term",
                            "bound_terms"),
    "bound_bits_per_dim": ("bits_per_dim",),
    "score_from_eps": ("score_from_eps",),
    "hutchinson_divergence": ("ode_nll", "exact_likelihood._Field.eps_and_div"),
    "hutchinson_variance": (),
    "flow_log_density": ("ode_nll", "exact_likelihood._rk4", "exact_likelihood._solve"),
}


def _probs_from(loss_history, u, stat, mix=True):
    p = stat(loss_history)
    p = p / p.sum()
    return p * (1 - u) + u / p.numel() if mix else p


def _rms(history):
    return history.pow(2).mean(dim=1).sqrt()


def _embedding(t, dim, sin_first=False, denominator=None, shift=0):
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float64) / (denominator(half)
                                                                                      if denominator else half))
    args = (t.double() - shift)[:, None] * freqs[None]
    parts = [torch.sin(args), torch.cos(args)] if sin_first else [torch.cos(args), torch.sin(args)]
    return torch.cat(parts, dim=1)


def _decoder(x, mean, log_var, delta, edges=True):
    std = torch.exp(0.5 * log_var)
    normal = torch.distributions.Normal(mean, std)
    upper = torch.where((x > 1 - 1e-6) & edges, torch.ones_like(x), normal.cdf(x + delta))
    lower = torch.where((x < -1 + 1e-6) & edges, torch.zeros_like(x), normal.cdf(x - delta))
    return torch.log(upper - lower)


def _euler(field, x0, s_grid, prior=standard_normal_log_density, sign=1.0, at_start=False):
    x, integral = x0, torch.zeros(x0.shape[0], dtype=torch.float64)
    for k in range(len(s_grid) - 1):
        h = float(s_grid[k + 1] - s_grid[k])
        velocity, div = field(x, float(s_grid[k]))
        x, integral = x + h * velocity, integral + h * div
    return prior(x0 if at_start else x) + sign * integral


def _ddim(sched, x_t, t, s, eps, eta, z, ab=None, eta_in_sigma=True, direction_sigma=True):
    ab = sched.alpha_bar if ab is None else ab
    ab_t, ab_s = float(ab[t]), float(ab[s])
    sigma = (eta if eta_in_sigma else 1.0) * math.sqrt((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s))
    x0_hat = (x_t - math.sqrt(1 - ab_t) * eps) / math.sqrt(ab_t)
    direction = math.sqrt(max(1 - ab_s - (sigma ** 2 if direction_sigma else 0.0), 0.0))
    return math.sqrt(ab_s) * x0_hat + direction * eps + sigma * z


def _log_snr_rounded(sched, K, t_max, values):
    """K targets evenly spaced in `values` (a function of t, monotone) from t = 1 to t_max, each rounded to the
    nearest step."""
    v = values[1:t_max + 1]
    targets = torch.linspace(float(v[0]), float(v[-1]), K, dtype=torch.float64)
    return ((v[None, :] - targets[:, None]).abs().argmin(dim=1) + 1).tolist()


def _dpm(sched, x_t, t, s, x0_t, x0_prev, h_prev, invert_r=False, sign=1.0, alpha_ratio=False):
    lam = half_log_snr(sched)
    ab_t, ab_s = float(sched.alpha_bar[t]), float(sched.alpha_bar[s])
    if s == 0:
        return x0_t
    h = float(lam[s] - lam[t])
    d = x0_t
    if x0_prev is not None:
        r = h / h_prev if invert_r else h_prev / h
        d = (1 + 1 / (2 * r)) * x0_t - x0_prev / (2 * r)
    ratio = math.sqrt(ab_s / ab_t) if alpha_ratio else math.sqrt((1 - ab_s) / (1 - ab_t))
    return ratio * x_t - sign * math.sqrt(ab_s) * math.expm1(-h) * d


MISTAKES_ADVANCED = {
    "hybrid_loss": [
        ("the bound's term without the division by D: lambda T L_{t-1} where lambda T L_{t-1} / D belongs "
         "(the simple loss is a mean over the D coordinates, the bound a sum)",
         lambda model, sched, x0, t, eps: (training_losses(sched, model, x0, t, eps, loss="simple", var="learned")[0]
                                           + HYBRID_LAMBDA * x0[0].numel() * training_losses(
                                               sched, model, x0, t, eps, loss="vlb", var="learned")[0]).mean()),
        ("the bound's term without the factor T: one term L_{t-1} estimates the sum over t only when multiplied by T",
         lambda model, sched, x0, t, eps: (training_losses(sched, model, x0, t, eps, loss="simple", var="learned")[0]
                                           + HYBRID_LAMBDA / sched.T * training_losses(
                                               sched, model, x0, t, eps, loss="vlb", var="learned")[0]).mean()),
        ("the simple loss alone: the bound's term, which trains the variance, is missing",
         lambda model, sched, x0, t, eps: training_losses(sched, model, x0, t, eps, loss="simple",
                                                          var="learned")[0].mean()),
    ],
    "importance_weights": [
        ("weights p_t where 1 / (T p_t) belongs: the loss must be divided by how often its t is drawn",
         lambda h, u: (lambda p: (p, p))(importance_weights(h, u)[0])),
        ("weights 1 / p_t: the factor 1 / T is missing (the weighted loss is T times too large)",
         lambda h, u: (lambda p: (p, 1 / p))(importance_weights(h, u)[0])),
        ("p_t ~ mean L_t where the root mean square sqrt(mean L_t^2) belongs",
         lambda h, u: (lambda p: (p, 1 / (p.numel() * p)))(_probs_from(h, u, lambda x: x.mean(dim=1)))),
        ("p_t ~ mean L_t^2 without the square root",
         lambda h, u: (lambda p: (p, 1 / (p.numel() * p)))(_probs_from(h, u, lambda x: x.pow(2).mean(dim=1)))),
        ("no uniform mixing: (1 - uniform_prob) p_t + uniform_prob / T keeps every t drawn",
         lambda h, u: (lambda p: (p, 1 / (p.numel() * p)))(_probs_from(h, u, _rms, mix=False))),
        ("uniform_prob where uniform_prob / T belongs in the mixture (the probabilities no longer sum to 1)",
         lambda h, u: (lambda p: (p, 1 / (p.numel() * p)))(_probs_from(h, 0.0, _rms) * (1 - u) + u)),
    ],
    "bound_weight": [
        ("the factor D missing: the simple loss is a mean over the D coordinates, the bound's term a sum",
         lambda sched, t, mse, D: simple_loss_weight(sched, t) * mse),
        ("sigma_t^2 = beta_t (the 'fixed_large' variance) where beta_tilde_t belongs",
         lambda sched, t, mse, D: simple_loss_weight(sched, t, "fixed_large") * D * mse),
        ("the factor 1/2 missing from lambda_t",
         lambda sched, t, mse, D: 2 * simple_loss_weight(sched, t) * D * mse),
        ("alpha_bar_t where alpha_t belongs in lambda_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha_bar_t))",
         lambda sched, t, mse, D: simple_loss_weight(sched, t) * sched.alpha[t] / sched.alpha_bar[t] * D * mse),
    ],
    "ddim_step": [
        ("s_t without eta: the ancestral step's noise at every eta (eta = 0 must be deterministic)",
         lambda sched, x_t, t, s, eps, eta, z: _ddim(sched, x_t, t, s, eps, eta, z, eta_in_sigma=False)),
        ("sqrt(1 - alpha_bar_s) where sqrt(1 - alpha_bar_s - s_t^2) belongs: the noise s_t z takes its share of the "
         "variance from the direction to x_t", lambda sched, x_t, t, s, eps, eta, z: _ddim(sched, x_t, t, s, eps, eta, z,
                                                                                           direction_sigma=False)),
        ("alpha_t where alpha_bar_t belongs: DDIM's alpha_t [SME21] is DDPM's alpha_bar_t",
         lambda sched, x_t, t, s, eps, eta, z: _ddim(sched, x_t, t, s, eps, eta, z, ab=sched.alpha)),
    ],
    "log_snr_steps": [
        ("steps uniform in t: the uniform spacing, not the log-SNR one",
         lambda sched, K, t_max: _log_snr_rounded(sched, K, t_max, torch.arange(t_max + 1, dtype=torch.float64))),
        ("steps uniform in log(alpha_bar_t) alone: lambda_t = log(sqrt(alpha_bar_t) / sqrt(1 - alpha_bar_t)) needs the "
         "noise's share too", lambda sched, K, t_max: _log_snr_rounded(sched, K, t_max, sched.alpha_bar.log())),
        ("t_max ignored: the steps spread from t = 1 to T",
         lambda sched, K, t_max: _log_snr_rounded(sched, K, sched.T, half_log_snr(sched))),
        ("the steps in decreasing order (the order a sampler visits them): return them increasing, like "
         "dl.select_timesteps", lambda sched, K, t_max: log_snr_steps(sched, K, t_max).flip(0)),
    ],
    "dpm_solver_2m_update": [
        ("r = h / h_prev where r = h_prev / h belongs (the ratio inverted)",
         lambda *args: _dpm(*args, invert_r=True)),
        ("the sign of expm1: sqrt(alpha_bar_s) (1 - e^{-h}) D = -sqrt(alpha_bar_s) expm1(-h) D adds the prediction",
         lambda *args: _dpm(*args, sign=-1.0)),
        ("sqrt(alpha_bar_s / alpha_bar_t) x_t where the noise levels' ratio sqrt((1 - alpha_bar_s) / (1 - alpha_bar_t)) "
         "belongs", lambda *args: _dpm(*args, alpha_ratio=True)),
        ("x0_prev ignored: the first-order step (DDIM) everywhere, right on the first and the last step only",
         lambda sched, x_t, t, s, x0_t, x0_prev, h_prev: _dpm(sched, x_t, t, s, x0_t, None, None)),
    ],
    "timestep_embedding": [
        ("sin and cos swapped: cos(t w_i) fills the first half, sin(t w_i) the second",
         lambda t, dim: _embedding(t, dim, sin_first=True)),
        ("w_i = 10000^(-i / (dim/2 - 1)): an off-by-one in the exponent (the library divides by dim / 2)",
         lambda t, dim: _embedding(t, dim, denominator=lambda half: max(half - 1, 1))),
        ("t - 1 embedded: the network's t is the paper's t = 1..T",
         lambda t, dim: _embedding(t, dim, shift=1)),
        ("cos and sin interleaved (cos, sin, cos, sin, ...) where the halves are concatenated",
         lambda t, dim: torch.stack([_embedding(t, dim)[:, :dim // 2], _embedding(t, dim)[:, dim // 2:]],
                                    dim=2).reshape(t.shape[0], dim)),
    ],
    "discretized_decoder": [
        ("an off-by-one in the bin width: delta = 1 / levels where 1 / (levels - 1) belongs (levels values, "
         "levels - 1 gaps)", lambda x, m, lv, n: _decoder(x, m, lv, 1.0 / n)),
        ("the full spacing 2 / (levels - 1) as the half-width: the bins overlap",
         lambda x, m, lv, n: _decoder(x, m, lv, 2.0 / (n - 1))),
        ("the edge bins forgotten: x = -1 owns everything below it and x = 1 everything above (to -inf and +inf)",
         lambda x, m, lv, n: _decoder(x, m, lv, 1.0 / (n - 1), edges=False)),
        ("the density log N(x; mean, sigma^2) where the probability of the bin belongs",
         lambda x, m, lv, n: -0.5 * (math.log(2 * math.pi) + lv + (x - m) ** 2 * torch.exp(-lv))),
        ("log2 where the natural log belongs: the decoder's log-likelihood is in nats",
         lambda x, m, lv, n: _decoder(x, m, lv, 1.0 / (n - 1)) / math.log(2)),
    ],
    "bound_bits_per_dim": [
        ("nats per dimension: the division by ln 2 is missing (log2 vs ln)",
         lambda prior, steps, d: (prior + steps.sum(dim=0)) / d),
        ("multiplied by ln 2 where it divides: bits = nats / ln 2",
         lambda prior, steps, d: (prior + steps.sum(dim=0)) * math.log(2) / d),
        ("bits per image: the division by the number of dimensions D is missing",
         lambda prior, steps, d: (prior + steps.sum(dim=0)) / math.log(2)),
        ("the prior term L_T left out", lambda prior, steps, d: bits_per_dim(steps.sum(dim=0), d)),
        ("the mean over t where the bound sums its terms",
         lambda prior, steps, d: bits_per_dim(prior + steps.mean(dim=0), d)),
    ],
    "score_from_eps": [
        ("a missing square root: -eps / (1 - alpha_bar_t) where -eps / sqrt(1 - alpha_bar_t) belongs",
         lambda sched, eps, t: -eps / (1 - sched.alpha_bar[t])),
        ("the sign: the score points away from the noise, -eps / sqrt(1 - alpha_bar_t)",
         lambda sched, eps, t: eps / (1 - sched.alpha_bar[t]).sqrt()),
        ("sqrt(alpha_bar_t) where sqrt(1 - alpha_bar_t) belongs",
         lambda sched, eps, t: -eps / sched.alpha_bar[t].sqrt()),
        ("alpha_bar_{t-1}: an off-by-one t", lambda sched, eps, t: -eps / (1 - sched.alpha_bar[t - 1]).sqrt()),
    ],
    "hutchinson_divergence": [
        ("the sum over the probes where their mean belongs",
         lambda f, x, v: hutchinson_divergence(f, x, v) * v.shape[0]),
        ("the exact trace: this exercise asks for Hutchinson's estimate with the given probes",
         lambda f, x, v: torch.diagonal(f.jacobian(x), dim1=1, dim2=2).sum(dim=1)),
        ("1^T J v: the vector-Jacobian product summed without the second probe",
         lambda f, x, v: torch.einsum("bij,kbj->b", f.jacobian(x), v) / v.shape[0]),
    ],
    "hutchinson_variance": [
        ("the Gaussian probes' variance 2 ||S||_F^2: with +-1 probes v_i^2 = 1 and the diagonal adds no variance",
         lambda J: 2 * ((J + J.transpose(1, 2)) / 2).pow(2).sum(dim=(1, 2))),
        ("J not symmetrised: v^T J v only sees S = (J + J^T) / 2, so Var = 2 sum_{i != j} S_ij^2",
         lambda J: 2 * (J.pow(2).sum(dim=(1, 2)) - torch.diagonal(J, dim1=1, dim2=2).pow(2).sum(dim=1))),
        ("the factor 2 missing", lambda J: hutchinson_variance(J) / 2),
    ],
    "flow_log_density": [
        ("the sign of the integral: log p_0 = log p_T + int div f ds (the flow spreads the density out)",
         lambda field, x0, s: _euler(field, x0, s, sign=-1.0)),
        ("the prior scored at the start x_0 where the end point x_T belongs",
         lambda field, x0, s: _euler(field, x0, s, at_start=True)),
        ("log N(x; 0, I) without its constant -D/2 log(2 pi)",
         lambda field, x0, s: _euler(field, x0, s, prior=lambda x: -0.5 * x.pow(2).sum(dim=1))),
        ("the divergence left out: the prior alone", lambda field, x0, s: _euler(field, x0, s, sign=0.0)),
    ],
}

CHECKS_ADVANCED = {name: globals()[f"check_{name}"] for name in MISTAKES_ADVANCED}
