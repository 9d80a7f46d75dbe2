"""Checks for the exercises: test a student's function against the library on random inputs and edges.

Contents: one `check_*` per exercise (`CHECKS` lists them by name): `check_alpha_bar`, `check_q_step`,
`check_q_sample`, `check_q_jump`, `check_schedule`, `check_posterior`, `check_x0_from_eps`,
`check_mu_from_eps`, `check_normal_kl`, `check_vlb_term`, `check_ancestral_step`, `check_sample_t`,
`check_simple_loss`, `check_training_step`, `check_memorising_x0`, `check_mixture_x0`; and from
`exercises_advanced` (chapters 07, 09, 10, 11): `check_hybrid_loss`, `check_importance_weights`, `check_bound_weight`,
`check_ddim_step`, `check_log_snr_steps`, `check_dpm_solver_2m_update`,
`check_timestep_embedding`, `check_discretized_decoder`, `check_bound_bits_per_dim`, `check_score_from_eps`,
`check_hutchinson_divergence`, `check_hutchinson_variance`, `check_flow_log_density`;
`MISTAKES` (the typical wrong answers each check recognises);
`BLOCKED` (the library functions switched off while a student's function runs); `ReferenceUnavailable`.

Each check calls the student's function on seeded random inputs for every schedule, at T = 10 and
T = 1000 and at the edge cases t = 1 and t = T (t is a Python int), compares with the reference in
this package and prints a short verdict: what passed, or the first input where the answers differ and
by how much, and the name of the mistake when the answer is a typical wrong one (the sqrt(1 - alpha_t)
misprint, a missing square root, an off-by-one t, ...). It returns True or False, so a cell (and an
nbgrader test cell) can `assert check_...(my_function)`. A function that still raises
NotImplementedError gets "not implemented yet", never a traceback.

Keyword arguments choose other inputs (the graded assignments' hidden tests use them): `seed`, `T`
(the chain lengths), `schedules` (names or `NoiseSchedule` objects), `shape` (B, D) and `timesteps`
("all", "interior" for 1 < t < T only, "edges" for t = 1 and t = T only).

No shortcut through the library: while the student's function runs, the library's reference for that
exercise and the functions it calls (`BLOCKED[name]`) are replaced everywhere (the package's modules,
the student's globals, defaults and closure) by stubs that raise `ReferenceUnavailable`, so
`return dl.q_sample(sched, x0, t, eps)` fails its check. The student's function gets copies of the
inputs, so changing them in place cannot fool a check either.
"""

import contextlib
import copy
import math
import sys
import warnings
from dataclasses import dataclass

import torch

from .forward import q_sample, q_step
from .likelihood import normal_kl, vlb_term
from .losses import training_losses
from .models import MLP
from .optimal import memorising_x0
from .posterior import mu_from_eps, q_posterior, x0_from_eps
from .reverse import p_mean_variance
from .schedules import SCHEDULES, SIGNAL_LEFT_WARNING, NoiseSchedule, ScheduleWarning, make_schedule

PASS, FAIL = "\u2705", "\u274c"
NOT_IMPLEMENTED = "not implemented yet (replace `raise NotImplementedError` with your code)"

# check_schedule judges a design, at T >= DESIGN_MIN_T (at T = 10 one step is already 10% of the chain)
NOISE_FLOOR = 1e-3  # alpha_bar_t below this: x_t keeps less than 3% of the data's scale, a wasted step
MAX_WASTED_SHARE = 0.25  # at most a quarter of the steps may be wasted (the linear schedule wastes 17%)
MAX_FIRST_STEP_LOSS = 0.05  # the first step may remove at most 5% of the signal: 1 - sqrt(alpha_bar_1)
DESIGN_MIN_T = 100
SCHEDULE_CRITERIA = ("valid", "noise", "waste", "first_step")


class ReferenceUnavailable(RuntimeError):
    """Raised by a library function that is switched off while a student's function is checked."""


@dataclass
class Case:
    description: str  # shown to the student when this case fails
    args: tuple


# ---------------------------------------------------------------------------------------------------
# no shortcut through the library


def _lib_modules():
    return [m for name, m in list(sys.modules.items())
            if m is not None and (name == "diffusion_lib" or name.startswith("diffusion_lib."))]


def _resolve(dotted):
    """'q_sample' or 'NoiseSchedule.from_betas' -> (owner, attribute, object) in the package."""
    import diffusion_lib

    *owner_path, attr = dotted.split(".")
    owner = diffusion_lib
    for part in owner_path:
        owner = getattr(owner, part)
    return owner, attr, owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)


def _stub(dotted, exercise):
    def stub(*args, **kwargs):
        raise ReferenceUnavailable(f"dl.{dotted} is the library's answer to the {exercise} exercise and is "
                                   "switched off while your function is checked: write the formula yourself")
    return stub


@contextlib.contextmanager
def references_off(student, names, exercise="this"):
    """Within the block, every library function in `names` (and class attributes 'Class.attr') raises
    ReferenceUnavailable wherever it is reachable: the package's modules, the student's globals, its
    default arguments and its closure. Everything is restored on exit."""
    restore = []
    try:
        functions = {}
        for dotted in names:
            owner, attr, obj = _resolve(dotted)
            if isinstance(owner, type):  # a method or classmethod: patch the class itself
                restore.append((owner, attr, obj))
                setattr(owner, attr, _stub(dotted, exercise) if not isinstance(obj, classmethod)
                        else classmethod(lambda cls, *a, _d=dotted, **k: _stub(_d, exercise)()))
            else:
                functions[id(obj)] = (obj, _stub(dotted, exercise))
        if functions:
            namespaces = [vars(m) for m in _lib_modules()]
            namespaces.append(getattr(student, "__globals__", {}))
            for namespace in namespaces:
                for key, value in list(namespace.items()):
                    if id(value) in functions and functions[id(value)][0] is value:
                        restore.append((namespace, key, value))
                        namespace[key] = functions[id(value)][1]
            defaults = getattr(student, "__defaults__", None)
            if defaults and any(id(d) in functions for d in defaults):
                restore.append((student, "__defaults__", defaults))
                student.__defaults__ = tuple(functions[id(d)][1] if id(d) in functions else d for d in defaults)
            for cell in getattr(student, "__closure__", None) or ():
                try:
                    value = cell.cell_contents
                except ValueError:  # an empty cell
                    continue
                if id(value) in functions and functions[id(value)][0] is value:
                    restore.append((cell, "cell_contents", value))
                    cell.cell_contents = functions[id(value)][1]
        yield
    finally:
        for owner, key, value in reversed(restore):
            if isinstance(owner, dict):
                owner[key] = value
            else:
                setattr(owner, key, value)


# what each exercise may not call (the reference, and the functions that would do its work)
BLOCKED = {
    "alpha_bar": ("NoiseSchedule.__init__", "NoiseSchedule.from_betas", "make_schedule"),
    "q_step": ("q_step", "q_chain"),
    "q_sample": ("q_sample", "q_marginal", "forward.q_step", "q_chain"),
    "q_jump": ("q_sample", "q_marginal", "q_step", "q_chain"),
    "schedule": ("make_schedule", "schedules.linear_betas", "schedules.quadratic_betas", "schedules.sigmoid_betas",
                 "schedules.cosine_betas"),
    "posterior": ("q_posterior", "mu_from_x0", "mu_from_eps", "x0_from_eps", "convert_prediction", "p_mean_variance",
                  "reverse_variance"),
    "x0_from_eps": ("x0_from_eps", "x0_from_mu", "convert_prediction", "p_mean_variance"),
    "mu_from_eps": ("mu_from_eps", "mu_from_x0", "x0_from_eps", "q_posterior", "convert_prediction",
                    "p_mean_variance"),
    "normal_kl": ("normal_kl", "prior_kl"),
    "vlb_term": ("vlb_term", "normal_kl", "q_posterior", "gaussian_log_likelihood",
                 "discretized_gaussian_log_likelihood", "bound_terms", "mu_from_x0"),
    "ancestral_step": ("p_mean_variance", "mu_from_eps", "mu_from_x0", "x0_from_eps", "convert_prediction",
                       "reverse_variance", "q_posterior", "sample_loop", "sample", "step_coefficients",
                       "model_step"),
    "sample_t": ("TimestepSampler.sample", "TimestepSampler.probs"),
    "simple_loss": ("training_losses", "q_sample", "q_marginal", "Trainer.train_step"),
    "training_step": ("training_losses", "q_sample", "q_marginal", "Trainer.train_step", "Trainer.run"),
    "memorising_x0": ("memorising_x0", "memorising_denoiser", "optimal.optimal_x0", "optimal._mixture_posterior",
                      "optimal._mixture_x0"),
    "mixture_x0": ("memorising_x0", "memorising_denoiser", "optimal.optimal_x0", "optimal._mixture_posterior",
                   "optimal._mixture_x0"),
}

# attributes of the schedule a student's function may not read in an exercise (they hold its answer)
HIDDEN_SCHEDULE_ATTRIBUTES = {
    "posterior": ("beta_tilde", "posterior_coef_x0", "posterior_coef_xt", "log_beta_tilde_clipped"),
}


class _RestrictedSchedule(NoiseSchedule):
    """A copy of a schedule without some of its derived arrays (they hold an exercise's answer)."""

    def __getattr__(self, name):  # only called for attributes that are missing
        if name in self.__dict__.get("_hidden", ()):
            raise AttributeError(f"sched.{name} holds this exercise's answer and is switched off while your "
                                 f"function is checked; compute it from sched.beta, sched.alpha and sched.alpha_bar")
        raise AttributeError(name)


def _restricted(sched, hidden):
    view = copy.copy(sched)
    view.__class__ = _RestrictedSchedule
    for name in hidden:
        view.__dict__.pop(name, None)
    view.__dict__["_hidden"] = tuple(hidden)
    return view


# ---------------------------------------------------------------------------------------------------
# inputs


def _schedules(schedules, T):
    """[(label, NoiseSchedule)] for names x T and for schedule objects as they are."""
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ScheduleWarning)  # short chains leave signal on purpose: edge cases
        for item in schedules:
            if isinstance(item, NoiseSchedule):
                out.append((f"schedule {item.name!r}, T = {item.T}", item))
            else:
                out.extend((f"schedule {item!r}, T = {n}", make_schedule(item, n)) for n in T)
    return out


def _timesteps(T, which, gen):
    ts = []
    if which in ("all", "edges"):
        ts += [1, T] if T > 1 else [1]
    if which in ("all", "interior") and T > 2:
        ts.append(int(torch.randint(2, T, (1,), generator=gen)))
    if which not in ("all", "edges", "interior"):
        raise ValueError(f"timesteps must be 'all', 'interior' or 'edges', got {which!r}")
    return ts


def _cases_with_t(seed=0, T=(10, 1000), schedules=SCHEDULES, shape=(5, 2), timesteps="all"):
    """(sched, x0, xt, t, eps) cases over the schedules and T, at t = 1, T and one t in between."""
    gen = torch.Generator().manual_seed(seed)
    cases = []
    for label, sched in _schedules(schedules, T):
        for t in _timesteps(sched.T, timesteps, gen):
            x0 = torch.randn(*shape, generator=gen, dtype=torch.float64)
            eps = torch.randn(*shape, generator=gen, dtype=torch.float64)
            xt = q_sample(sched, x0, t, eps)
            cases.append(Case(f"{label}, t = {t}", (sched, x0, xt, t, eps)))
    if not cases:
        raise ValueError("no case to check: choose T > 2 for timesteps='interior'")
    return cases


def _copy(arg):
    return arg.clone() if isinstance(arg, torch.Tensor) else arg


def _as_parts(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _close(got, expected, rtol, atol):
    try:
        g = torch.as_tensor(got, dtype=torch.float64).broadcast_to(torch.as_tensor(expected).shape)
    except (TypeError, ValueError, RuntimeError):
        return False
    return bool(torch.allclose(g, torch.as_tensor(expected, dtype=torch.float64), rtol=rtol, atol=atol))


def _recognise(name, args, got_parts, expected_parts, rtol, atol, single=False):
    """The label of the typical mistake that produces the student's answer on these inputs, or None.

    Every output must be the mistake's or the reference's, and one at least the mistake's where it differs
    from the reference (so a posterior with only its mean off by one is still named)."""
    for label, wrong in MISTAKES.get(name, ()):
        try:
            wrong_parts = (wrong(*args),) if single else _as_parts(wrong(*args))
        except Exception:  # a mistake that does not apply to these inputs
            continue
        if len(wrong_parts) != len(got_parts):
            continue
        named = False
        for g, w, e in zip(got_parts, wrong_parts, expected_parts):
            if _close(g, w, rtol, atol) and not _close(w, e, rtol, atol):
                named = True
            elif not _close(g, e, rtol, atol):
                break
        else:
            if named:
                return label
    return None


def _call_student(name, student, args, description):
    """(True, result) or (False, the verdict line) for one call under the exercise's restrictions."""
    hidden = HIDDEN_SCHEDULE_ATTRIBUTES.get(name, ())
    args = tuple(_restricted(a, hidden) if hidden and isinstance(a, NoiseSchedule) else _copy(a) for a in args)
    try:
        # warnings go to stdout: a graded cell that writes to stderr scores zero in nbgrader
        with references_off(student, BLOCKED.get(name, ()), name), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = student(*args)
        for warning in caught[:3]:
            print(f"   warning from your function: {warning.category.__name__}: {warning.message}")
        return True, result
    except NotImplementedError:
        return False, NOT_IMPLEMENTED
    except ReferenceUnavailable as err:
        return False, f"your function calls the library: {err}"
    except AttributeError as err:
        if "switched off" in str(err):
            return False, f"your function reads the answer from the schedule: {err}"
        return False, f"raised AttributeError: {err}\n   for {description}"
    except Exception as err:  # the student sees their own error, briefly
        return False, f"raised {type(err).__name__}: {err}\n   for {description}"


def _compare(name, student, reference, cases, rtol=1e-6, atol=1e-8, title=None,
             covered="every schedule, T = 10 and 1000, t = 1 and t = T included", single=False):
    """Run both functions on every case; print and return the verdict. single: the output is one value even when
    it is a list (a list of timesteps), not a tuple of outputs."""
    title = title or name
    for case in cases:
        # the reference first, on the original inputs; the student gets copies
        expected_parts = (reference(*case.args),) if single else _as_parts(reference(*case.args))
        ok, got = _call_student(name, student, case.args, case.description)
        if not ok:
            print(f"{FAIL} {title}: {got}")
            return False
        if got is None:
            print(f"{FAIL} {title}: returned None; did you forget `return`?")
            return False
        got_parts = (got,) if single else _as_parts(got)
        if len(got_parts) != len(expected_parts):
            print(f"{FAIL} {title}: returned {len(got_parts)} value(s), expected {len(expected_parts)}")
            return False
        for i, (g, e) in enumerate(zip(got_parts, expected_parts)):
            what = f"output {i + 1} of {len(got_parts)}" if len(got_parts) > 1 else "the output"
            try:
                g = torch.as_tensor(g.detach() if isinstance(g, torch.Tensor) else g, dtype=torch.float64)
            except (TypeError, ValueError, RuntimeError):
                print(f"{FAIL} {title}: {what} is a {type(g).__name__}, expected a tensor")
                return False
            e = torch.as_tensor(e.detach() if isinstance(e, torch.Tensor) else e, dtype=torch.float64)
            try:
                # a scalar where the library expands to the data's shape is fine
                g = g.broadcast_to(e.shape)
            except RuntimeError:
                print(f"{FAIL} {title}: {what} has shape {tuple(g.shape)}, expected {tuple(e.shape)}\n"
                      f"   for {case.description}")
                return False
            if not torch.allclose(g, e, rtol=rtol, atol=atol):
                diff = (g - e).abs().nan_to_num(math.inf).max().item()
                print(f"{FAIL} {title}: {what} differs for {case.description}: max |difference| = {diff:.3g}\n"
                      f"   expected {[round(v, 6) for v in e.flatten()[:3].tolist()]} ...\n"
                      f"   got      {[round(v, 6) for v in g.flatten()[:3].tolist()]} ...")
                mistake = _recognise(name, case.args, got_parts, expected_parts, rtol, atol, single)
                if mistake:
                    print(f"   this is {mistake}")
                return False
    print(f"{PASS} {title}: all {len(cases)} cases agree with the library ({covered})")
    return True


def _covered(T, schedules, timesteps):
    names = "every schedule" if tuple(schedules) == SCHEDULES else f"{len(tuple(schedules))} schedule(s)"
    edges = {"all": ", t = 1 and t = T included", "edges": ", t = 1 and t = T", "interior": ", 1 < t < T"}[timesteps]
    return f"{names}, T = {' and '.join(map(str, T))}{edges}"


# ---------------------------------------------------------------------------------------------------
# chapter 01: the forward process


def check_alpha_bar(student_alpha_bar, *, seed=None, T=(1, 10, 1000), schedules=SCHEDULES):
    """student_alpha_bar(beta) with beta (T,) = beta_1..beta_T returns alpha_bar_1..alpha_bar_T, shape (T,).

    With a seed, random increasing betas of each length in T are checked too.
    """
    cases = [Case(label, (sched.beta[1:],)) for label, sched in _schedules(schedules, T)]
    if seed is not None:
        gen = torch.Generator().manual_seed(seed)
        for n in T:
            beta = torch.sort(torch.rand(n, generator=gen, dtype=torch.float64) * 0.1 + 1e-4).values
            cases.append(Case(f"random betas, T = {n}", (beta,)))
    return _compare("alpha_bar", student_alpha_bar, lambda beta: torch.cumprod(1 - beta, dim=0), cases,
                    title="alpha_bar from beta",
                    covered=f"{'every schedule' if tuple(schedules) == SCHEDULES else 'the schedules'}, "
                            f"T = {', '.join(map(str, T))}")


def check_q_step(student_q_step, *, seed=0, T=(10, 1000), schedules=SCHEDULES, shape=(5, 2), timesteps="all"):
    """student_q_step(sched, x_prev, t, eps) returns x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps [Ho20, Eq. 2]."""
    cases = [Case(c.description, (c.args[0], c.args[2], c.args[3], c.args[4]))
             for c in _cases_with_t(seed, T, schedules, shape, timesteps)]
    return _compare("q_step", student_q_step, q_step, cases, covered=_covered(T, schedules, timesteps))


# ---------------------------------------------------------------------------------------------------
# chapter 02: the closed-form marginals


def check_q_sample(student_q_sample, *, seed=0, T=(10, 1000), schedules=SCHEDULES, shape=(5, 2), timesteps="all"):
    """student_q_sample(sched, x0, t, eps) returns x_t, like dl.q_sample [Ho20, Eq. 4]; t is an int."""
    cases = [Case(c.description, (c.args[0], c.args[1], c.args[3], c.args[4]))
             for c in _cases_with_t(seed, T, schedules, shape, timesteps)]
    return _compare("q_sample", student_q_sample, q_sample, cases, covered=_covered(T, schedules, timesteps))


def q_jump(sched, xs, s, t, eps):
    """x_t from x_s (s < t) in one jump: sqrt(alpha_bar_t / alpha_bar_s) x_s + sqrt(1 - alpha_bar_t / alpha_bar_s) eps.

    q(x_t | x_s) = N(sqrt(alpha_bar_t / alpha_bar_s) x_s, (1 - alpha_bar_t / alpha_bar_s) I); s = 0 is q_sample.
    """
    ratio = sched.alpha_bar[t] / sched.alpha_bar[s]
    return ratio.sqrt() * xs + (1 - ratio).sqrt() * eps


def _jump_cases(seed, T, schedules, shape, timesteps):
    gen = torch.Generator().manual_seed(seed + 1000)
    cases = []
    for c in _cases_with_t(seed, T, schedules, shape, timesteps):
        sched, x0, _, t, eps = c.args
        s = int(torch.randint(0, t, (1,), generator=gen))  # 0 <= s < t
        xs = q_sample(sched, x0, s, eps.flip(0)) if s > 0 else x0
        cases.append(Case(f"{c.description}, s = {s}", (sched, xs, s, t, eps)))
    return cases


def check_q_jump(student_q_jump, *, seed=0, T=(10, 1000), schedules=SCHEDULES, shape=(5, 2), timesteps="all"):
    """student_q_jump(sched, xs, s, t, eps) returns x_t drawn from q(x_t | x_s), 0 <= s < t, s and t ints."""
    return _compare("q_jump", student_q_jump, q_jump, _jump_cases(seed, T, schedules, shape, timesteps),
                    title="q(x_t | x_s)", covered=_covered(T, schedules, timesteps) + ", s from 0 to t - 1")


# ---------------------------------------------------------------------------------------------------
# chapter 03: a schedule of your own


def schedule_report(betas, T):
    """{criterion: (passed, reason)} for a candidate beta_1..beta_T (see check_schedule)."""
    try:
        betas = torch.as_tensor(betas, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        return {"valid": (False, f"for T = {T} returned a {type(betas).__name__}, expected {T} numbers")}
    if betas.shape != (T,):
        return {"valid": (False, f"for T = {T} expected {T} betas, got shape {tuple(betas.shape)}")}
    if not torch.isfinite(betas).all() or not ((betas > 0) & (betas < 1)).all():
        return {"valid": (False, f"for T = {T} every beta must be finite and inside (0, 1); "
                                 f"got min {betas.min().item():.3g}, max {betas.max().item():.3g}")}
    report = {"valid": (True, "")}
    alpha_bar = torch.cumprod(1 - betas, dim=0)
    signal = math.sqrt(float(alpha_bar[-1]))
    report["noise"] = (signal <= SIGNAL_LEFT_WARNING,
                       f"for T = {T} x_T keeps sqrt(alpha_bar_T) = {signal:.3f} of the data (more than "
                       f"{SIGNAL_LEFT_WARNING}): the chain does not reach N(0, I); use larger betas")
    wasted = float((alpha_bar < NOISE_FLOOR).double().mean())
    first = 1 - math.sqrt(float(alpha_bar[0]))
    if T >= DESIGN_MIN_T:
        report["waste"] = (wasted <= MAX_WASTED_SHARE,
                           f"for T = {T} {wasted:.0%} of the steps have alpha_bar_t < {NOISE_FLOOR:g} (more than "
                           f"{MAX_WASTED_SHARE:.0%}): they only shuffle pure noise; let alpha_bar_t fall more slowly")
        report["first_step"] = (first <= MAX_FIRST_STEP_LOSS,
                                f"for T = {T} the first step removes {first:.1%} of the signal, 1 - sqrt(alpha_bar_1) "
                                f"(more than {MAX_FIRST_STEP_LOSS:.0%}): the finest details are lost at once; "
                                f"make beta_1 smaller [ND21, Sec. 3.2]")
    report["_numbers"] = (True, (wasted, first, signal))
    return report


def check_schedule(student_betas, *, T=(10, 100, 1000), require=SCHEDULE_CRITERIA):
    """student_betas(T) returns beta_1..beta_T for any T; the check judges the design, criterion by criterion:

    "valid"      T finite values, each in the open interval (0, 1);
    "noise"      x_T is close to N(0, I): sqrt(alpha_bar_T) <= SIGNAL_LEFT_WARNING (0.1);
    "waste"      at most MAX_WASTED_SHARE (25%) of the steps have alpha_bar_t < NOISE_FLOOR (1e-3);
    "first_step" the first step removes at most MAX_FIRST_STEP_LOSS (5%) of the signal, 1 - sqrt(alpha_bar_1)
                 [ND21, Sec. 3.2].
    "waste" and "first_step" are judged at T >= DESIGN_MIN_T (100) only. `require` chooses the criteria.
    """
    unknown = set(require) - set(SCHEDULE_CRITERIA)
    if unknown:
        raise ValueError(f"unknown criteria {sorted(unknown)}; choose from {SCHEDULE_CRITERIA}")
    numbers = {}
    for n in T:
        ok, betas = _call_student("schedule", student_betas, (n,), f"T = {n}")
        if not ok:
            print(f"{FAIL} schedule: {betas}")
            return False
        report = schedule_report(betas, n)
        for criterion in ("valid",) + tuple(c for c in SCHEDULE_CRITERIA[1:] if c in require):
            if criterion in report and not report[criterion][0]:
                print(f"{FAIL} schedule: {report[criterion][1]}")
                return False
        numbers[n] = report["_numbers"][1]
    design = [n for n in T if n >= DESIGN_MIN_T]
    parts = [f"valid for T = {', '.join(map(str, T))}"]
    if "noise" in require:
        parts.append(f"x_T is close to N(0, I) (signal left at T = {T[-1]}: {numbers[T[-1]][2]:.2e})")
    if "waste" in require and design:
        parts.append("steps wasted (alpha_bar_t < 1e-3): "
                     + ", ".join(f"{numbers[n][0]:.0%} at T = {n}" for n in design) + f" (at most {MAX_WASTED_SHARE:.0%})")
    if "first_step" in require and design:
        parts.append("signal removed by the first step: "
                     + ", ".join(f"{numbers[n][1]:.2%} at T = {n}" for n in design)
                     + f" (at most {MAX_FIRST_STEP_LOSS:.0%})")
    print(f"{PASS} schedule: " + "; ".join(parts))
    return True


# ---------------------------------------------------------------------------------------------------
# chapter 04: the posterior and the parameterisations


def check_posterior(student_q_posterior, *, seed=0, T=(10, 1000), schedules=SCHEDULES, shape=(5, 2),
                    timesteps="all"):
    """student_q_posterior(sched, x0, xt, t) returns (mean, var) of q(x_{t-1} | x_t, x_0) [Ho20, Eq. 6-7].

    The schedule it gets has no beta_tilde and no posterior coefficients: they hold the answer.
    """
    cases = [Case(c.description, c.args[:4]) for c in _cases_with_t(seed, T, schedules, shape, timesteps)]
    return _compare("posterior", student_q_posterior, q_posterior, cases, title="q_posterior",
                    covered=_covered(T, schedules, timesteps))


def check_x0_from_eps(student_x0_from_eps, *, seed=0, T=(10, 1000), schedules=SCHEDULES, shape=(5, 2),
                      timesteps="all"):
    """student_x0_from_eps(sched, xt, t, eps) returns the x_0 implied by a noise prediction [Ho20, Eq. 4]."""
    cases = [Case(c.description, (c.args[0], c.args[2], c.args[3], c.args[4]))
             for c in _cases_with_t(seed, T, schedules, shape, timesteps)]
    return _compare("x0_from_eps", student_x0_from_eps, x0_from_eps, cases, covered=_covered(T, schedules, timesteps))


def check_mu_from_eps(student_mu_from_eps, *, seed=0, T=(10, 1000), schedules=SCHEDULES, shape=(5, 2),
                      timesteps="all"):
    """student_mu_from_eps(sched, xt, t, eps) returns mu = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t)."""
    cases = [Case(c.description, (c.args[0], c.args[2], c.args[3], c.args[4]))
             for c in _cases_with_t(seed, T, schedules, shape, timesteps)]
    return _compare("mu_from_eps", student_mu_from_eps, mu_from_eps, cases, covered=_covered(T, schedules, timesteps))


# ---------------------------------------------------------------------------------------------------
# chapter 05: the bound and one sampling step


def check_normal_kl(student_normal_kl, *, seed=1, shape=(4,)):
    """student_normal_kl(mean1, logvar1, mean2, logvar2) returns the elementwise KL in nats (tensors in, tensor out)."""
    gen = torch.Generator().manual_seed(seed)
    zeros = torch.zeros(3, dtype=torch.float64)
    cases = [Case("two equal Gaussians (the KL is 0)", (zeros, zeros, zeros, zeros)),
             Case("equal variances, different means", (zeros, zeros, zeros + 2.0, zeros)),
             Case("equal means, different variances", (zeros, zeros - 1.0, zeros, zeros + 1.0))]
    for i in range(5):
        args = tuple(torch.randn(*shape, generator=gen, dtype=torch.float64) for _ in range(4))
        cases.append(Case(f"random means and log-variances #{i + 1}", args))
    return _compare("normal_kl", student_normal_kl, normal_kl, cases, covered="equal, shifted and random Gaussians")


def _vlb_reference(sched, x0, xt, t, model_mean, model_log_var):
    return vlb_term(sched, x0, xt, t, model_mean, model_log_var, decoder="gaussian")


def check_vlb_term(student_vlb_term, *, seed=0, T=(10, 1000), schedules=SCHEDULES, shape=(5, 2), timesteps="all"):
    """student_vlb_term(sched, x0, xt, t, model_mean, model_log_var) returns the bound's term at step t
    per example in nats, shape (B,): L_{t-1} (a Gaussian KL) for t >= 2, L_0 = -log N(x_0; mean, var) at t = 1.
    """
    gen = torch.Generator().manual_seed(seed + 2)
    cases = []
    for c in _cases_with_t(seed, T, schedules, shape, timesteps):
        sched, x0, xt, t, _ = c.args
        mean = x0 + 0.1 * torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
        log_var = sched.log_beta_tilde_clipped[t].expand_as(x0)
        cases.append(Case(c.description, (sched, x0, xt, t, mean, log_var)))
    return _compare("vlb_term", student_vlb_term, _vlb_reference, cases, covered=_covered(T, schedules, timesteps))


def _ancestral_reference(sched, xt, t, eps_pred, z):
    step = p_mean_variance(sched, xt, t, eps_pred, prediction="eps", var="fixed_small")
    return step.mean + (step.var.sqrt() * z if t > 1 else 0.0)


def check_ancestral_step(student_step, *, seed=0, T=(10, 1000), schedules=SCHEDULES, shape=(5, 2), timesteps="all"):
    """student_step(sched, xt, t, eps_pred, z) returns x_{t-1} = mu_theta + sigma_t z with
    sigma_t^2 = beta_tilde_t, and no noise at t = 1 [Ho20, Algorithm 2]."""
    gen = torch.Generator().manual_seed(seed + 3)
    cases = [Case(c.description, (c.args[0], c.args[2], c.args[3], c.args[4],
                                  torch.randn(c.args[4].shape, generator=gen, dtype=torch.float64)))
             for c in _cases_with_t(seed, T, schedules, shape, timesteps)]
    return _compare("ancestral_step", student_step, _ancestral_reference, cases, title="ancestral step",
                    covered=_covered(T, schedules, timesteps))


# ---------------------------------------------------------------------------------------------------
# chapter 06: training (Algorithm 1)

UNIFORMITY_P_VALUE = 1e-6  # a correct sampler fails the uniformity test with this probability per seed


def check_sample_t(student_sample_t, *, seed=0, T=(10, 1000), n=200_000):
    """student_sample_t(batch_size, T, generator) returns a (B,) int64 tensor of timesteps drawn uniformly
    from 1..T with `generator`. Checked: type and shape, the range 1..T with both ends drawn, that the same
    generator seed gives the same draws, and uniformity (a chi-square test whose false-alarm probability is
    UNIFORMITY_P_VALUE = 1e-6)."""
    from scipy.stats import chi2

    for n_steps in T:
        where = f"for T = {n_steps}"
        ok, t = _call_student("sample_t", student_sample_t, (n, n_steps, torch.Generator().manual_seed(seed)), where)
        if not ok:
            print(f"{FAIL} sample_t: {t}")
            return False
        if not isinstance(t, torch.Tensor) or t.shape != (n,) or t.dtype != torch.int64:
            got = f"{type(t).__name__} {tuple(t.shape)} {t.dtype}" if isinstance(t, torch.Tensor) else type(t).__name__
            print(f"{FAIL} sample_t: {where} expected an int64 tensor of shape ({n},), got {got}")
            return False
        if int(t.min()) < 1:
            print(f"{FAIL} sample_t: {where} drew t = {int(t.min())}: timesteps run from 1 to T\n"
                  f"   this is the 0-based off-by-one: torch.randint's upper end is exclusive and t starts at 1, "
                  f"use torch.randint(1, T + 1, ...)")
            return False
        if int(t.max()) > n_steps:
            print(f"{FAIL} sample_t: {where} drew t = {int(t.max())} > T")
            return False
        if int(t.max()) < n_steps:
            print(f"{FAIL} sample_t: {where} never drew t = T in {n} draws\n"
                  f"   this is the off-by-one at the top: torch.randint(1, T) excludes T, use torch.randint(1, T + 1, ...)")
            return False
        ok, again = _call_student("sample_t", student_sample_t, (n, n_steps, torch.Generator().manual_seed(seed)), where)
        if not ok or not isinstance(again, torch.Tensor) or not torch.equal(t, again):
            print(f"{FAIL} sample_t: {where} two generators with the same seed gave different timesteps: "
                  f"draw with `generator=generator` so a run reproduces")
            return False
        counts = torch.bincount(t - 1, minlength=n_steps).double()
        expected = n / n_steps
        stat = float(((counts - expected) ** 2 / expected).sum())
        p = float(chi2.sf(stat, n_steps - 1))
        if p < UNIFORMITY_P_VALUE:
            print(f"{FAIL} sample_t: {where} the timesteps are not uniform on 1..T (chi-square p = {p:.1e} < "
                  f"{UNIFORMITY_P_VALUE:g}); the rarest t was drawn {int(counts.min())} times, the commonest "
                  f"{int(counts.max())}, expected {expected:.0f}")
            return False
    print(f"{PASS} sample_t: int64 timesteps in 1..T, both ends drawn, reproducible from the generator and "
          f"uniform (chi-square test), T = {' and '.join(map(str, T))}")
    return True


def _model_cases(seed, T, schedules, shape):
    """(model, sched, x0, t, eps) with a small seeded MLP, float32 data and one t per example (int64 (B,))."""
    gen = torch.Generator().manual_seed(seed)
    cases = []
    for i, (label, sched) in enumerate(_schedules(schedules, T)):
        with torch.random.fork_rng():
            torch.manual_seed(seed * 1000 + i)
            model = MLP(data_dim=shape[1], hidden=(32, 32), emb_dim=16)
        x0 = torch.randn(*shape, generator=gen)
        eps = torch.randn(*shape, generator=gen)
        t = torch.randint(1, sched.T + 1, (shape[0],), generator=gen)
        t[0], t[-1] = 1, sched.T  # the edges in every batch
        cases.append(Case(f"{label}, t = {t.tolist()[:4]} ...", (model, sched, x0, t, eps)))
    return cases


def _simple_loss_reference(model, sched, x0, t, eps):
    return training_losses(sched, model, x0, t, eps, loss="simple")[0].mean()


def check_simple_loss(student_loss, *, seed=0, T=(10, 1000), schedules=SCHEDULES, shape=(6, 2)):
    """student_loss(model, sched, x0, t, eps) returns L_simple = mean over the batch and the D coordinates of
    (eps - model(x_t, t))^2 with x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps [Ho20, Eq. 14],
    a 0-d tensor that backpropagates to the model. t is an int64 (B,) tensor, one timestep per example."""
    cases = _model_cases(seed, T, schedules, shape)
    model, sched, x0, t, eps = cases[0].args
    ok, loss = _call_student("simple_loss", student_loss, (model, sched, x0, t, eps), cases[0].description)
    if not ok:
        print(f"{FAIL} simple loss: {loss}")
        return False
    if isinstance(loss, torch.Tensor) and not loss.requires_grad:
        print(f"{FAIL} simple loss: the loss does not backpropagate to the model (no grad): "
              f"do not detach it or convert it to a float")
        return False
    return _compare("simple_loss", student_loss, _simple_loss_reference, cases, rtol=1e-5, atol=1e-6,
                    title="simple loss", covered=_covered(T, schedules, "all").replace("t = 1 and t = T", "t = 1 and T"))


def _reference_steps(model, sched, batches, make_optimizer):
    optimizer = make_optimizer(model)
    params, losses = [], []
    for x0, t, eps in batches:
        optimizer.zero_grad()
        loss = _simple_loss_reference(model, sched, x0, t, eps)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        params.append([p.detach().clone() for p in model.parameters()])
    return params, losses


def check_training_step(student_step, *, seed=0, T=(10, 1000), schedules=SCHEDULES, shape=(6, 2), optimizer="sgd"):
    """student_step(model, optimizer, sched, x0, t, eps) does one step of Algorithm 1 [Ho20]: zero the
    gradients, compute L_simple, backpropagate, step the optimizer; it returns the loss as a float.
    Two consecutive steps are compared with the library's, parameter by parameter. `optimizer`: "sgd"
    (SGD with momentum) or "adam"."""
    def make_optimizer(model):
        if optimizer == "adam":
            # a large eps keeps Adam's first steps smooth in the gradient: with the default 1e-8 a gradient entry
            # of 1e-9 moves its parameter by about lr, so float rounding in a correct loss could fail the check
            return torch.optim.Adam(model.parameters(), lr=1e-2, eps=1e-3)
        return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    gen = torch.Generator().manual_seed(seed + 7)
    for case in _model_cases(seed, T, schedules, shape):
        model, sched, x0, t, eps = case.args
        second = (torch.randn(*shape, generator=gen), torch.randint(1, sched.T + 1, (shape[0],), generator=gen),
                  torch.randn(*shape, generator=gen))
        batches = [(x0, t, eps), second]
        student_model = copy.deepcopy(model)
        ref_params, ref_losses = _reference_steps(copy.deepcopy(model), sched, batches, make_optimizer)
        student_optimizer = make_optimizer(student_model)
        for k, (bx0, bt, beps) in enumerate(batches):
            ok, loss = _call_student("training_step", student_step,
                                     (student_model, student_optimizer, sched, bx0, bt, beps), case.description)
            if not ok:
                print(f"{FAIL} training step: {loss}")
                return False
            which = ("first", "second")[k]
            try:
                loss = float(loss.detach() if isinstance(loss, torch.Tensor) else loss)
            except (TypeError, ValueError, RuntimeError):
                print(f"{FAIL} training step: returned a {type(loss).__name__}, expected the loss as a float")
                return False
            if not math.isclose(loss, ref_losses[k], rel_tol=1e-4, abs_tol=1e-6):
                print(f"{FAIL} training step: the {which} step's loss is {loss:.6g}, expected {ref_losses[k]:.6g}\n"
                      f"   for {case.description}")
                return False
            got = [p.detach() for p in student_model.parameters()]
            if all(torch.equal(g, p) for g, p in zip(got, (ref_params[k - 1] if k else
                                                              [p.detach() for p in model.parameters()]))):
                print(f"{FAIL} training step: the parameters did not change in the {which} step: "
                      f"call optimizer.step() after loss.backward()")
                return False
            worst = max(float((g - p).abs().max()) for g, p in zip(got, ref_params[k]))
            if worst > 1e-4:
                hint = ("\n   the first step agrees and the second does not: the gradients accumulate; "
                        "call optimizer.zero_grad() before loss.backward()") if k == 1 else ""
                print(f"{FAIL} training step: the parameters after the {which} step differ from Algorithm 1's by up "
                      f"to {worst:.3g}\n   for {case.description}{hint}")
                return False
    print(f"{PASS} training step: two consecutive steps match Algorithm 1 ({optimizer}), "
          f"{_covered(T, schedules, 'all').split(', t =')[0]}")
    return True


# ---------------------------------------------------------------------------------------------------
# chapter 08: the optimal denoiser


def _memorising_reference(sched, xt, t, train_x0):
    return memorising_x0(xt, t, sched, train_x0)


def _denoiser_cases(seed, T, schedules, shape, timesteps, n_train):
    """(sched, xt, t, centres) with x_t drawn from the mixture of the centres, so every weight matters."""
    gen = torch.Generator().manual_seed(seed + 80)
    cases = []
    for c in _cases_with_t(seed, T, schedules, shape, timesteps):
        sched, _, _, t, eps = c.args
        centres = 1.5 * torch.randn(n_train, shape[1], generator=gen, dtype=torch.float64)
        pick = torch.randint(0, n_train, (shape[0],), generator=gen)
        x0 = centres[pick] + 0.1 * torch.randn(shape, generator=gen, dtype=torch.float64)
        cases.append(Case(f"{c.description}, {n_train} training points", (sched, q_sample(sched, x0, t, eps), t, centres)))
    return cases


def check_memorising_x0(student_x0, *, seed=0, T=(10, 1000), schedules=SCHEDULES, shape=(5, 2), timesteps="all",
                        n_train=7):
    """student_x0(sched, xt, t, train_x0) returns E[x_0 | x_t] when x_0 is uniform over the N training points
    train_x0 (N, D): sum_i w_i x_0^i with w = softmax_i(-|x_t - sqrt(alpha_bar_t) x_0^i|^2 / (2 (1 - alpha_bar_t))),
    shape (B, D); t is an int."""
    cases = _denoiser_cases(seed, T, schedules, shape, timesteps, n_train)
    return _compare("memorising_x0", student_x0, _memorising_reference, cases, rtol=1e-6, atol=1e-7,
                    title="memorising E[x_0 | x_t]", covered=_covered(T, schedules, timesteps))


def mixture_x0(sched, xt, t, centres, s2):
    """E[x_0 | x_t] for x_0 ~ (1/K) sum_k N(c_k, s2 I): the weights of `memorising_x0` with v_t = alpha_bar_t s2 +
    1 - alpha_bar_t, and within a component the Gaussian conditioning c + sqrt(alpha_bar_t) s2 / v_t (x_t - sqrt(alpha_bar_t) c).
    The optimal denoiser of the swiss roll is this mixture over the roll's quadrature nodes (`optimal_x0`)."""
    from .optimal import _mixture_x0

    return _mixture_x0(xt.double(), sched.alpha_bar[t], centres.double(),
                       torch.zeros(centres.shape[0], dtype=torch.float64), s2)


def check_mixture_x0(student_x0, *, seed=0, T=(10, 1000), schedules=SCHEDULES, shape=(5, 2), timesteps="all",
                     n_centres=7, s2=(0.04, 0.3)):
    """student_x0(sched, xt, t, centres, s2) returns E[x_0 | x_t] for x_0 ~ (1/K) sum_k N(c_k, s2 I), (B, D)."""
    cases = []
    for i, c in enumerate(_denoiser_cases(seed, T, schedules, shape, timesteps, n_centres)):
        cases.append(Case(c.description.replace("training points", f"centres, s2 = {s2[i % len(s2)]}"),
                          c.args + (s2[i % len(s2)],)))
    return _compare("mixture_x0", student_x0, mixture_x0, cases, rtol=1e-6, atol=1e-7,
                    title="mixture E[x_0 | x_t]", covered=_covered(T, schedules, timesteps) + f", s2 = {s2}")


# ---------------------------------------------------------------------------------------------------
# typical wrong answers: (what the student did, a function that does it) per check


def _wrong_alpha_bar_shifted(beta):
    return torch.cat([torch.ones(1, dtype=beta.dtype), torch.cumprod(1 - beta, dim=0)[:-1]])


def _posterior_mean(sched, x0, xt, t, ab, ab_prev):
    beta, alpha = sched.beta[t], sched.alpha[t]
    return (ab_prev.sqrt() * beta * x0 + alpha.sqrt() * (1 - ab_prev) * xt) / (1 - ab)


def _misprinted_mu(sched, xt, t, eps):
    return (xt - (1 - sched.alpha[t]).sqrt() * eps) / sched.alpha[t].sqrt()


def _kl(m1, lv1, m2, lv2):
    return 0.5 * (lv2 - lv1 + torch.exp(lv1 - lv2) + (m1 - m2) ** 2 * torch.exp(-lv2) - 1)


def _decoder_nll(x0, mean, log_var):
    return 0.5 * (math.log(2 * math.pi) + log_var + (x0 - mean) ** 2 * torch.exp(-log_var))


MISTAKES = {
    "alpha_bar": [
        ("1 - cumsum(beta): the sum of the betas where the product of (1 - beta_s) belongs",
         lambda beta: 1 - torch.cumsum(beta, dim=0)),
        ("cumprod(beta): the product of the betas where the product of alpha_s = 1 - beta_s belongs",
         lambda beta: torch.cumprod(beta, dim=0)),
        ("alpha_bar_{t-1}: an off-by-one t (the product must include beta_t itself)", _wrong_alpha_bar_shifted),
    ],
    "q_step": [
        ("the step without square roots: (1 - beta_t) x_{t-1} + beta_t eps (variances where standard deviations belong)",
         lambda sched, x, t, eps: (1 - sched.beta[t]) * x + sched.beta[t] * eps),
        ("the step without the damping factor: x_{t-1} + sqrt(beta_t) eps (the variance explodes)",
         lambda sched, x, t, eps: x + sched.beta[t].sqrt() * eps),
        ("the closed-form jump from x_0 (alpha_bar_t) where one step (beta_t) belongs",
         lambda sched, x, t, eps: sched.alpha_bar[t].sqrt() * x + (1 - sched.alpha_bar[t]).sqrt() * eps),
    ],
    "q_sample": [
        ("a missing square root: alpha_bar_t x_0 + (1 - alpha_bar_t) eps (variances where standard deviations belong)",
         lambda sched, x0, t, eps: sched.alpha_bar[t] * x0 + (1 - sched.alpha_bar[t]) * eps),
        ("a missing square root on the noise: sqrt(alpha_bar_t) x_0 + (1 - alpha_bar_t) eps",
         lambda sched, x0, t, eps: sched.alpha_bar[t].sqrt() * x0 + (1 - sched.alpha_bar[t]) * eps),
        ("alpha_t (one step) where alpha_bar_t (all t steps) belongs",
         lambda sched, x0, t, eps: sched.alpha[t].sqrt() * x0 + (1 - sched.alpha[t]).sqrt() * eps),
        ("alpha_bar_{t-1}: an off-by-one t",
         lambda sched, x0, t, eps: sched.alpha_bar[t - 1].sqrt() * x0 + (1 - sched.alpha_bar[t - 1]).sqrt() * eps),
    ],
    "q_jump": [
        ("the jump from x_0 (alpha_bar_t alone) where the jump from x_s (alpha_bar_t / alpha_bar_s) belongs",
         lambda sched, xs, s, t, eps: q_sample(sched, xs, t, eps)),
        ("alpha_bar_t - alpha_bar_s where the ratio alpha_bar_t / alpha_bar_s belongs",
         lambda sched, xs, s, t, eps: (1 - (sched.alpha_bar[s] - sched.alpha_bar[t])).sqrt() * xs
         + (sched.alpha_bar[s] - sched.alpha_bar[t]).sqrt() * eps),
        ("a missing square root: (alpha_bar_t / alpha_bar_s) x_s + (1 - alpha_bar_t / alpha_bar_s) eps",
         lambda sched, xs, s, t, eps: sched.alpha_bar[t] / sched.alpha_bar[s] * xs
         + (1 - sched.alpha_bar[t] / sched.alpha_bar[s]) * eps),
    ],
    "posterior": [
        ("beta_t for beta_tilde_t: the forward step's variance where the posterior's belongs",
         lambda sched, x0, xt, t: (q_posterior(sched, x0, xt, t)[0], sched.beta[t])),
        ("alpha_bar_t where alpha_bar_{t-1} belongs: an off-by-one t",
         lambda sched, x0, xt, t: (_posterior_mean(sched, x0, xt, t, sched.alpha_bar[t], sched.alpha_bar[t]),
                                   sched.beta[t])),
        ("sqrt(alpha_bar_{t-1}) and sqrt(alpha_t) swapped between the coefficients of x_0 and x_t",
         lambda sched, x0, xt, t: ((sched.alpha[t].sqrt() * sched.beta[t] * x0 + sched.alpha_bar[t - 1].sqrt()
                                    * (1 - sched.alpha_bar[t - 1]) * xt) / (1 - sched.alpha_bar[t]), sched.beta_tilde[t])),
    ],
    "x0_from_eps": [
        ("a missing square root: dividing by alpha_bar_t where sqrt(alpha_bar_t) belongs",
         lambda sched, xt, t, eps: (xt - (1 - sched.alpha_bar[t]).sqrt() * eps) / sched.alpha_bar[t]),
        ("a missing square root on the noise: (x_t - (1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)",
         lambda sched, xt, t, eps: (xt - (1 - sched.alpha_bar[t]) * eps) / sched.alpha_bar[t].sqrt()),
        ("alpha_t (one step) where alpha_bar_t belongs",
         lambda sched, xt, t, eps: (xt - (1 - sched.alpha[t]).sqrt() * eps) / sched.alpha[t].sqrt()),
    ],
    "mu_from_eps": [
        ("the sqrt(1 - alpha_t) misprint of [Ho20, Eq. 11]: the noise term needs beta_t / sqrt(1 - alpha_bar_t)",
         _misprinted_mu),
        ("a missing 1 / sqrt(alpha_t): x_t - beta_t / sqrt(1 - alpha_bar_t) eps is not divided by sqrt(alpha_t)",
         lambda sched, xt, t, eps: xt - sched.beta[t] / (1 - sched.alpha_bar[t]).sqrt() * eps),
        ("the x_0 formula where the mean's belongs: (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)",
         lambda sched, xt, t, eps: x0_from_eps(sched, xt, t, eps)),
    ],
    "normal_kl": [
        ("the KL without its factor 1/2", lambda m1, lv1, m2, lv2: 2 * _kl(m1, lv1, m2, lv2)),
        ("the KL in the other direction, KL(p2 || p1): the log-variances are swapped",
         lambda m1, lv1, m2, lv2: _kl(m2, lv2, m1, lv1)),
        ("standard deviations where variances belong (exp(logvar / 2) in place of exp(logvar))",
         lambda m1, lv1, m2, lv2: 0.5 * (0.5 * (lv2 - lv1) + torch.exp((lv1 - lv2) / 2)
                                          + (m1 - m2) ** 2 * torch.exp(-lv2 / 2) - 1)),
    ],
    "vlb_term": [
        ("the KL at t = 1 too: L_0 is the decoder's negative log-density -log N(x_0; mean, var), not a KL",
         lambda sched, x0, xt, t, mean, lv: _kl(*q_posterior(sched, x0, xt, t)[:1],
                                                sched.log_beta_tilde_clipped[t], mean, lv).sum(dim=1)),
        ("the KL in the other direction, KL(p_theta || q)",
         lambda sched, x0, xt, t, mean, lv: _kl(mean, lv, q_posterior(sched, x0, xt, t)[0],
                                                sched.log_beta_tilde_clipped[t]).sum(dim=1) if t > 1
         else _decoder_nll(x0, mean, lv).sum(dim=1)),
        ("beta_t for the posterior variance beta_tilde_t inside the KL",
         lambda sched, x0, xt, t, mean, lv: _kl(q_posterior(sched, x0, xt, t)[0], sched.beta[t].log(),
                                                mean, lv).sum(dim=1) if t > 1
         else _decoder_nll(x0, mean, lv).sum(dim=1)),
    ],
    "ancestral_step": [
        ("noise added at the last step t = 1 as well: Algorithm 2 returns the mean there",
         lambda sched, xt, t, eps, z: mu_from_eps(sched, xt, t, eps) + sched.log_beta_tilde_clipped[t].exp().sqrt() * z),
        ("sigma_t^2 = beta_t (the 'fixed_large' choice) where this exercise asks for beta_tilde_t",
         lambda sched, xt, t, eps, z: mu_from_eps(sched, xt, t, eps) + (sched.beta[t].sqrt() * z if t > 1 else 0.0)),
        ("the sqrt(1 - alpha_t) misprint of [Ho20, Eq. 11] in the mean",
         lambda sched, xt, t, eps, z: _misprinted_mu(sched, xt, t, eps) + (sched.beta_tilde[t].sqrt() * z if t > 1 else 0.0)),
        ("beta_tilde_t where its square root sigma_t belongs (a missing square root)",
         lambda sched, xt, t, eps, z: mu_from_eps(sched, xt, t, eps) + (sched.beta_tilde[t] * z if t > 1 else 0.0)),
    ],
    "simple_loss": [
        ("the sum over the batch and the coordinates where the mean belongs",
         lambda model, sched, x0, t, eps: _simple_loss_reference(model, sched, x0, t, eps) * eps.numel()),
        ("x_0 as the target: this network predicts the noise eps",
         lambda model, sched, x0, t, eps: training_losses(sched, model, x0, t, eps, prediction="x0")[0].mean()),
        ("x_t without square roots (alpha_bar_t x_0 + (1 - alpha_bar_t) eps)",
         lambda model, sched, x0, t, eps: (model((sched.alpha_bar[t, None] * x0 + (1 - sched.alpha_bar[t, None]) * eps)
                                                 .float(), t) - eps).pow(2).mean()),
        ("t - 1 given to the network (and to alpha_bar): the network's t is the paper's t = 1..T",
         lambda model, sched, x0, t, eps: (model((sched.alpha_bar[t - 1, None].sqrt() * x0 + (1 - sched.alpha_bar[
             t - 1, None]).sqrt() * eps).float(), t - 1) - eps).pow(2).mean()),
    ],
}


def _softmax_weights(sched, xt, t, centres, scale=None, var=None):
    ab = sched.alpha_bar[t]
    scale = ab.sqrt() if scale is None else scale
    var = (1 - ab) if var is None else var
    d2 = (xt[:, None, :] - scale * centres[None]).pow(2).sum(dim=2)
    return torch.softmax(-d2 / (2 * var), dim=1)


MISTAKES["memorising_x0"] = [
    ("the weights without sqrt(alpha_bar_t): x_t is compared with x_0^i where sqrt(alpha_bar_t) x_0^i is its mean",
     lambda sched, xt, t, c: _softmax_weights(sched, xt, t, c, scale=1.0) @ c),
    ("alpha_bar_t for the noise variance 1 - alpha_bar_t in the weights",
     lambda sched, xt, t, c: _softmax_weights(sched, xt, t, c, var=sched.alpha_bar[t]) @ c),
    ("the softmax over the batch (dim=0) where it belongs over the training points (dim=1)",
     lambda sched, xt, t, c: torch.softmax(-(xt[:, None, :] - sched.alpha_bar[t].sqrt() * c[None]).pow(2).sum(dim=2)
                                           / (2 * (1 - sched.alpha_bar[t])), dim=0) @ c),
    ("the nearest training point (the t -> 1 limit) where the weighted average belongs",
     lambda sched, xt, t, c: c[_softmax_weights(sched, xt, t, c).argmax(dim=1)]),
]
MISTAKES["mixture_x0"] = [
    ("the mean of the centres only: within a component x_t still tells about x_0 (the gain sqrt(ab) s2 / v_t is missing)",
     lambda sched, xt, t, c, s2: _softmax_weights(sched, xt, t, c, var=sched.alpha_bar[t] * s2 + 1 - sched.alpha_bar[t]) @ c),
    ("1 - alpha_bar_t for v_t = alpha_bar_t s2 + 1 - alpha_bar_t in the weights (the components' own spread ignored)",
     lambda sched, xt, t, c, s2: (lambda w, ab: w @ c + ab.sqrt() * s2 / (ab * s2 + 1 - ab) * (xt - ab.sqrt() * (w @ c)))(
         _softmax_weights(sched, xt, t, c), sched.alpha_bar[t])),
]

CHECKS = {name: globals()[f"check_{name}"] for name in (
    "alpha_bar", "q_step", "q_sample", "q_jump", "schedule", "posterior", "x0_from_eps", "mu_from_eps",
    "normal_kl", "vlb_term", "ancestral_step", "sample_t", "simple_loss", "training_step", "memorising_x0",
    "mixture_x0")}

# chapters 07, 09, 10 and 11 live in their own module; their checks, mistakes and switched-off references join these
from .exercises_advanced import (  # noqa: E402, F401  (re-exported; the module imports the helpers above)
    BLOCKED_ADVANCED,
    CHECKS_ADVANCED,
    MISTAKES_ADVANCED,
    check_bound_bits_per_dim,
    check_bound_weight,
    check_ddim_step,
    check_discretized_decoder,
    check_dpm_solver_2m_update,
    check_flow_log_density,
    check_hutchinson_divergence,
    check_hutchinson_variance,
    check_hybrid_loss,
    check_importance_weights,
    check_log_snr_steps,
    check_score_from_eps,
    check_timestep_embedding,
)

BLOCKED.update(BLOCKED_ADVANCED)
MISTAKES.update(MISTAKES_ADVANCED)
CHECKS.update(CHECKS_ADVANCED)
