"""The exercises: student copies are current, stubs only raise, solutions pass, wrong answers are caught.

Solution notebooks (notebooks/solutions/) are the source; `.ci/make_exercises.py` writes the student
copies (notebooks/exercises/). Each exercise is a function defined in a cell with a
`# BEGIN SOLUTION` / `# END SOLUTION` region and checked by a later cell calling
`exercises.check_NAME(function)`. These tests run the setup cell and the exercise cells in-process
(no kernel): nbval (`make test`) runs both kinds of notebook top to bottom as well.
"""

import ast
import importlib.util
import math
import re
from pathlib import Path

import nbformat
import pytest
import torch

import diffusion_lib as dl
from diffusion_lib import exercises

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "notebooks" / "solutions").glob("*.ipynb"))
CHECK_CALL = re.compile(r"exercises\.check_(\w+)\((\w+)\)")

_spec = importlib.util.spec_from_file_location("make_exercises", ROOT / ".ci" / "make_exercises.py")
make_exercises = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_exercises)


def _code_cells(path):
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def _exercises_in(path):
    """[(function name, check name)] for one notebook, from its check cells."""
    return [(func, check) for src in _code_cells(path) for check, func in CHECK_CALL.findall(src)]


def _load(path):
    """Run the notebook's first code cell (imports) and its exercise cells; return the namespace."""
    cells = _code_cells(path)
    exercise_cells = [src for src in cells if make_exercises.has_solution(src) or "raise NotImplementedError" in src]
    namespace = {"__name__": "exercise_notebook"}
    for src in [cells[0]] + exercise_cells:
        code = "\n".join(line for line in src.splitlines() if not line.startswith("%"))  # no IPython magics
        exec(compile(code, str(path), "exec"), namespace)
    return namespace


CASES = [(path.name, func, check) for path in SOLUTIONS for func, check in _exercises_in(path)]
IDS = [f"{nb[:2]}-{check}" for nb, _, check in CASES]


def test_every_math_notebook_has_exercises():
    assert [p.name[:2] for p in SOLUTIONS] == ["01", "02", "03", "04", "05"]
    for path in SOLUTIONS:
        assert _exercises_in(path), f"{path.name} has no `exercises.check_...(function)` cell"


def test_every_check_is_used_by_a_notebook():
    assert sorted({check for _, _, check in CASES}) == sorted(exercises.CHECKS)


def test_exercises_are_importable_both_ways():
    assert dl.exercises is exercises
    assert set(exercises.CHECKS.values()) <= {getattr(exercises, n) for n in dir(exercises) if n.startswith("check_")}


def test_student_copies_are_current():
    stale = make_exercises.stale_files()
    assert not stale, f"regenerate with `make exercises`: {[p.name for p in stale]}"


def test_student_copies_contain_no_solution_and_no_output():
    for path in sorted((ROOT / "notebooks" / "exercises").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            assert "SOLUTION" not in cell.source, path.name
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, path.name


@pytest.mark.parametrize("nb,func,check", CASES, ids=IDS)
def test_stub_raises_not_implemented_and_nothing_else(nb, func, check, capsys):
    stub = _load(ROOT / "notebooks" / "exercises" / nb)[func]
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
    solution = _load(ROOT / "notebooks" / "solutions" / nb)[func]
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


def _posterior_large_variance(sched, x0, xt, t):
    return dl.q_posterior(sched, x0, xt, t)[0], sched.beta[t]


def _posterior_no_prev(sched, x0, xt, t):  # alpha_bar_t where alpha_bar_{t-1} belongs
    ab, ab_prev = sched.alpha_bar[t], sched.alpha_bar[t]
    mean = (ab_prev.sqrt() * sched.beta[t] * x0 + sched.alpha[t].sqrt() * (1 - ab_prev) * xt) / (1 - ab)
    return mean, sched.beta_tilde[t]


def _kl_no_half(m1, lv1, m2, lv2):
    return lv2 - lv1 + torch.exp(lv1 - lv2) + (m1 - m2) ** 2 * torch.exp(-lv2) - 1


def _kl_swapped_logvars(m1, lv1, m2, lv2):
    return 0.5 * (lv1 - lv2 + torch.exp(lv1 - lv2) + (m1 - m2) ** 2 * torch.exp(-lv2) - 1)


def _x0_no_sqrt(sched, xt, t, eps):
    return (xt - (1 - sched.alpha_bar[t]).sqrt() * eps) / sched.alpha_bar[t]


def _mu_misprint(sched, xt, t, eps):  # sqrt(1 - alpha_t) in place of beta_t / sqrt(1 - alpha_bar_t)
    return (xt - (1 - sched.alpha[t]).sqrt() * eps) / sched.alpha[t].sqrt()


def _vlb_kl_everywhere(sched, x0, xt, t, mean, log_var):  # no decoder term at t = 1
    true_mean, true_var = dl.q_posterior(sched, x0, xt, t)
    return dl.normal_kl(true_mean, true_var.log(), mean, log_var).sum(dim=1)


def _vlb_not_summed(sched, x0, xt, t, mean, log_var):
    if t == 1:
        return 0.5 * (math.log(2 * math.pi) + log_var + (x0 - mean) ** 2 * torch.exp(-log_var))
    true_mean, true_var = dl.q_posterior(sched, x0, xt, t)
    return dl.normal_kl(true_mean, true_var.log(), mean, log_var)


def _step_noise_at_the_end(sched, xt, t, eps, z):
    mean = dl.mu_from_eps(sched, xt, t, eps)
    return mean + sched.log_beta_tilde_clipped[t].exp().sqrt() * z


def _step_large_variance(sched, xt, t, eps, z):
    return dl.mu_from_eps(sched, xt, t, eps) + (sched.beta[t].sqrt() * z if t > 1 else 0)


def _schedule_copied_endpoints(T):
    return torch.linspace(1e-4, 0.02, T, dtype=torch.float64)


def _schedule_reaches_one(T):
    return torch.linspace(1e-4, 1.0, T, dtype=torch.float64)


def _schedule_padded(T):  # T + 1 values, slot 0 included
    return torch.cat([torch.zeros(1, dtype=torch.float64), dl.make_schedule("cosine", T).beta[1:]])


WRONG = {
    "alpha_bar": [_alpha_bar_cumsum, _alpha_bar_shifted],
    "q_sample": [_q_sample_variances, _q_sample_previous],
    "posterior": [_posterior_large_variance, _posterior_no_prev],
    "normal_kl": [_kl_no_half, _kl_swapped_logvars],
    "x0_from_eps": [_x0_no_sqrt],
    "mu_from_eps": [_mu_misprint],
    "vlb_term": [_vlb_kl_everywhere, _vlb_not_summed],
    "ancestral_step": [_step_noise_at_the_end, _step_large_variance],
    "schedule": [_schedule_copied_endpoints, _schedule_reaches_one, _schedule_padded],
}


def test_every_check_has_wrong_answers():
    assert set(WRONG) == set(exercises.CHECKS)


@pytest.mark.parametrize("check,wrong", [(c, w) for c, ws in WRONG.items() for w in ws],
                         ids=[w.__name__.strip("_") for ws in WRONG.values() for w in ws])
def test_wrong_answer_is_caught(check, wrong, capsys):
    assert exercises.CHECKS[check](wrong) is False
    out = capsys.readouterr().out
    assert out.startswith(exercises.FAIL) and "not implemented" not in out


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
        out = dl.q_sample(sched, x0, t, eps)
        x0.zero_()
        eps.zero_()
        return out

    assert exercises.check_q_sample(sneaky) is True


def test_strip_solutions_keeps_the_indentation():
    src = "def f(x):\n    '''doc'''\n    # BEGIN SOLUTION\n    y = x + 1\n    return y\n    # END SOLUTION\n\nf"
    assert make_exercises.strip_solutions(src) == "def f(x):\n    '''doc'''\n    raise NotImplementedError\n\nf"


@pytest.mark.parametrize("src", ["# BEGIN SOLUTION\nx = 1", "x = 1\n# END SOLUTION",
                                 "# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION\n# END SOLUTION"])
def test_broken_regions_are_errors(src):
    with pytest.raises(make_exercises.RegionError):
        make_exercises.strip_solutions(src)


def test_cells_tagged_solution_are_left_out():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("question"),
                                         nbformat.v4.new_markdown_cell("answer", metadata={"tags": ["solution"]}),
                                         nbformat.v4.new_code_cell("1 + 1", execution_count=1)])
    student = make_exercises.student_version(nb)
    assert [c.source for c in student.cells] == ["question", "1 + 1"]
    assert student.cells[1].execution_count is None


def test_exercise_cells_parse():
    # every solution region sits inside a function, so a stub is a function that raises when called
    for path in SOLUTIONS:
        for src in _code_cells(path):
            if make_exercises.has_solution(src):
                tree = ast.parse(src)
                assert all(isinstance(node, ast.FunctionDef) for node in tree.body), path.name
