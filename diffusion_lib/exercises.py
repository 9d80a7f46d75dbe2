"""Checks for the exercises: test a student's function against the library on random inputs and edges.

Contents: one `check_*` per exercise (`CHECKS` lists them by name): `check_alpha_bar`, `check_q_sample`,
`check_posterior`, `check_normal_kl`, `check_x0_from_eps`, `check_mu_from_eps`, `check_vlb_term`,
`check_ancestral_step`, `check_schedule`.

Each check calls the student's function on seeded random inputs for every schedule, at T = 10 and
T = 1000 and at the edge cases t = 1 and t = T (t is a Python int), compares with the reference in
this package and prints a short verdict: what passed, or the first input where the answers differ and
by how much. It returns True or False, so a cell can also `assert check_...(my_function)`. A function
that still raises NotImplementedError gets "not implemented yet", never a traceback.

The student's function gets copies of the inputs, so changing them in place cannot fool the check.
"""

import math
import warnings
from dataclasses import dataclass

import torch

from .forward import q_sample
from .likelihood import normal_kl, vlb_term
from .posterior import mu_from_eps, q_posterior, x0_from_eps
from .reverse import p_mean_variance
from .schedules import SCHEDULES, SIGNAL_LEFT_WARNING, NoiseSchedule, ScheduleWarning, make_schedule

PASS, FAIL = "\u2705", "\u274c"
NOT_IMPLEMENTED = "not implemented yet (replace `raise NotImplementedError` with your code)"


@dataclass
class Case:
    description: str  # shown to the student when this case fails
    args: tuple


def _cases_with_t(seed=0, batch=5, dims=2):
    """(sched, x0, xt, t, eps) cases over all schedules, T = 10 and 1000, t = 1, T and one in between."""
    gen = torch.Generator().manual_seed(seed)
    cases = []
    for name in SCHEDULES:
        for T in (10, 1000):
            sched = make_schedule(name, T)
            for t in (1, T, int(torch.randint(2, T, (1,), generator=gen))):
                x0 = torch.randn(batch, dims, generator=gen, dtype=torch.float64)
                eps = torch.randn(batch, dims, generator=gen, dtype=torch.float64)
                xt = q_sample(sched, x0, t, eps)
                cases.append(Case(f"schedule {name!r}, T = {T}, t = {t}", (sched, x0, xt, t, eps)))
    return cases


def _copy(arg):
    return arg.clone() if isinstance(arg, torch.Tensor) else arg


def _as_parts(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _compare(name, student, reference, cases, rtol=1e-6, atol=1e-8,
             covered="every schedule, T = 10 and 1000, t = 1 and t = T included"):
    """Run both functions on every case; print and return the verdict."""
    for case in cases:
        # the reference first, on the original inputs; the student gets copies
        expected_parts = _as_parts(reference(*case.args))
        try:
            got = student(*(_copy(a) for a in case.args))
        except NotImplementedError:
            print(f"{FAIL} {name}: {NOT_IMPLEMENTED}")
            return False
        except Exception as err:  # the student sees their own error, briefly
            print(f"{FAIL} {name}: raised {type(err).__name__}: {err}\n   for {case.description}")
            return False
        if got is None:
            print(f"{FAIL} {name}: returned None; did you forget `return`?")
            return False
        got_parts = _as_parts(got)
        if len(got_parts) != len(expected_parts):
            print(f"{FAIL} {name}: returned {len(got_parts)} value(s), expected {len(expected_parts)}")
            return False
        for i, (g, e) in enumerate(zip(got_parts, expected_parts)):
            what = f"output {i + 1} of {len(got_parts)}" if len(got_parts) > 1 else "the output"
            try:
                g = torch.as_tensor(g, dtype=torch.float64)
            except (TypeError, ValueError, RuntimeError):
                print(f"{FAIL} {name}: {what} is a {type(g).__name__}, expected a tensor")
                return False
            e = torch.as_tensor(e, dtype=torch.float64)
            try:
                # a scalar where the library expands to the data's shape is fine
                g = g.broadcast_to(e.shape)
            except RuntimeError:
                print(f"{FAIL} {name}: {what} has shape {tuple(g.shape)}, expected {tuple(e.shape)}\n"
                      f"   for {case.description}")
                return False
            if not torch.allclose(g, e, rtol=rtol, atol=atol):
                diff = (g - e).abs().nan_to_num(math.inf).max().item()
                print(f"{FAIL} {name}: {what} differs for {case.description}: max |difference| = {diff:.3g}\n"
                      f"   expected {[round(v, 6) for v in e.flatten()[:3].tolist()]} ...\n"
                      f"   got      {[round(v, 6) for v in g.flatten()[:3].tolist()]} ...")
                return False
    print(f"{PASS} {name}: all {len(cases)} cases agree with the library ({covered})")
    return True


def check_alpha_bar(student_alpha_bar):
    """student_alpha_bar(beta) with beta (T,) = beta_1..beta_T returns alpha_bar_1..alpha_bar_T, shape (T,)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ScheduleWarning)  # T = 1 leaves signal on purpose: an edge case
        cases = [Case(f"schedule {n!r}, T = {T}", (make_schedule(n, T).beta[1:],))
                 for n in SCHEDULES for T in (1, 10, 1000)]
        return _compare("alpha_bar from beta", student_alpha_bar,
                        lambda beta: NoiseSchedule.from_betas(beta).alpha_bar[1:], cases,
                        covered="every schedule, T = 1, 10 and 1000")


def check_q_sample(student_q_sample):
    """student_q_sample(sched, x0, t, eps) returns x_t, like dl.q_sample [Ho20, Eq. 4]; t is an int."""
    cases = [Case(c.description, (c.args[0], c.args[1], c.args[3], c.args[4])) for c in _cases_with_t()]
    return _compare("q_sample", student_q_sample, q_sample, cases)


def check_posterior(student_q_posterior):
    """student_q_posterior(sched, x0, xt, t) returns (mean, var) of q(x_{t-1} | x_t, x_0) [Ho20, Eq. 6-7]."""
    cases = [Case(c.description, c.args[:4]) for c in _cases_with_t()]
    return _compare("q_posterior", student_q_posterior, q_posterior, cases)


def check_normal_kl(student_normal_kl):
    """student_normal_kl(mean1, logvar1, mean2, logvar2) returns the elementwise KL in nats (tensors in, tensor out)."""
    gen = torch.Generator().manual_seed(1)
    zeros = torch.zeros(3, dtype=torch.float64)
    cases = [Case("two equal Gaussians (the KL is 0)", (zeros, zeros, zeros, zeros)),
             Case("equal variances, different means", (zeros, zeros, zeros + 2.0, zeros)),
             Case("equal means, different variances", (zeros, zeros - 1.0, zeros, zeros + 1.0))]
    for i in range(5):
        args = tuple(torch.randn(4, generator=gen, dtype=torch.float64) for _ in range(4))
        cases.append(Case(f"random means and log-variances #{i + 1}", args))
    return _compare("normal_kl", student_normal_kl, normal_kl, cases, covered="equal, shifted and random Gaussians")


def check_x0_from_eps(student_x0_from_eps):
    """student_x0_from_eps(sched, xt, t, eps) returns the x_0 implied by a noise prediction [Ho20, Eq. 4]."""
    cases = [Case(c.description, (c.args[0], c.args[2], c.args[3], c.args[4])) for c in _cases_with_t()]
    return _compare("x0_from_eps", student_x0_from_eps, x0_from_eps, cases)


def check_mu_from_eps(student_mu_from_eps):
    """student_mu_from_eps(sched, xt, t, eps) returns mu = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t)."""
    cases = [Case(c.description, (c.args[0], c.args[2], c.args[3], c.args[4])) for c in _cases_with_t()]
    return _compare("mu_from_eps", student_mu_from_eps, mu_from_eps, cases)


def _vlb_reference(sched, x0, xt, t, model_mean, model_log_var):
    return vlb_term(sched, x0, xt, t, model_mean, model_log_var, decoder="gaussian")


def check_vlb_term(student_vlb_term):
    """student_vlb_term(sched, x0, xt, t, model_mean, model_log_var) returns the bound's term at step t
    per example in nats, shape (B,): L_{t-1} (a Gaussian KL) for t >= 2, L_0 = -log N(x_0; mean, var) at t = 1.
    """
    gen = torch.Generator().manual_seed(2)
    cases = []
    for c in _cases_with_t():
        sched, x0, xt, t, _ = c.args
        mean = x0 + 0.1 * torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
        log_var = sched.log_beta_tilde_clipped[t].expand_as(x0)
        cases.append(Case(c.description, (sched, x0, xt, t, mean, log_var)))
    return _compare("vlb_term", student_vlb_term, _vlb_reference, cases)


def _ancestral_reference(sched, xt, t, eps_pred, z):
    step = p_mean_variance(sched, eps_pred, xt, t, prediction="eps", var_type="fixed_small")
    return step.mean + (step.var.sqrt() * z if t > 1 else 0.0)


def check_ancestral_step(student_step):
    """student_step(sched, xt, t, eps_pred, z) returns x_{t-1} = mu_theta + sigma_t z with
    sigma_t^2 = beta_tilde_t, and no noise at t = 1 [Ho20, Algorithm 2]."""
    gen = torch.Generator().manual_seed(3)
    cases = [Case(c.description, (c.args[0], c.args[2], c.args[3], c.args[4],
                                  torch.randn(c.args[4].shape, generator=gen, dtype=torch.float64)))
             for c in _cases_with_t()]
    return _compare("ancestral step", student_step, _ancestral_reference, cases)


def check_schedule(student_betas):
    """student_betas(T) returns beta_1..beta_T for any T: checks validity and that x_T ends near N(0, I).

    Valid means T finite values, each in the open interval (0, 1), for T = 10, 100 and 1000, with at most
    SIGNAL_LEFT_WARNING (10%) of x_0's scale left in x_T. The verdict also says how many steps the
    schedule spends on nearly pure noise (alpha_bar_t <= 0.01): fewer is better [ND21, Sec. 3.2].
    """
    wasted = {}
    for T in (10, 100, 1000):
        try:
            betas = student_betas(T)
        except NotImplementedError:
            print(f"{FAIL} schedule: {NOT_IMPLEMENTED}")
            return False
        except Exception as err:
            print(f"{FAIL} schedule: raised {type(err).__name__}: {err}\n   for T = {T}")
            return False
        try:
            betas = torch.as_tensor(betas, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            print(f"{FAIL} schedule: for T = {T} returned a {type(betas).__name__}, expected {T} numbers")
            return False
        if betas.shape != (T,):
            print(f"{FAIL} schedule: for T = {T} expected {T} betas, got shape {tuple(betas.shape)}")
            return False
        if not torch.isfinite(betas).all() or not ((betas > 0) & (betas < 1)).all():
            print(f"{FAIL} schedule: for T = {T} every beta must be finite and inside (0, 1); "
                  f"got min {betas.min().item():.3g}, max {betas.max().item():.3g}")
            return False
        alpha_bar = torch.cumprod(1 - betas, dim=0)
        signal = math.sqrt(float(alpha_bar[-1]))
        if signal > SIGNAL_LEFT_WARNING:
            print(f"{FAIL} schedule: for T = {T} x_T keeps sqrt(alpha_bar_T) = {signal:.3f} of the data "
                  f"(more than {SIGNAL_LEFT_WARNING}): the chain does not reach N(0, I); use larger betas")
            return False
        wasted[T] = int((alpha_bar <= 0.01).sum()) / T
    print(f"{PASS} schedule: valid for T = 10, 100 and 1000, and x_T is close to N(0, I) "
          f"(signal left at T = 1000: {signal:.2e}); steps spent on nearly pure noise: "
          + ", ".join(f"{frac:.0%} at T = {T}" for T, frac in wasted.items()))
    return True


CHECKS = {name: globals()[f"check_{name}"] for name in (
    "alpha_bar", "q_sample", "posterior", "normal_kl", "x0_from_eps", "mu_from_eps", "vlb_term",
    "ancestral_step", "schedule")}
