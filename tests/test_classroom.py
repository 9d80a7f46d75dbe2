"""The graded assignments: nbgrader builds them from classroom/ and grades them as the table says.

classroom/source/<assignment>/<assignment>.ipynb are nbgrader sources; .ci/make_assignments.py runs
`nbgrader generate_assignment` in a copy of the course folder (temporary gradebook). The slow tests
release every assignment once, hand in three kinds of submission per assignment (the solutions, the
untouched release, and typical mistakes from the table below) and grade them all with one
`nbgrader autograde` call, then read the points from the gradebook.
"""

import importlib.util
import re
import shutil
import subprocess
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "classroom" / "source").glob("*/*.ipynb"))
ASSIGNMENTS = [p.stem for p in SOURCES]

_spec = importlib.util.spec_from_file_location("make_assignments", ROOT / ".ci" / "make_assignments.py")
make_assignments = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_assignments)


def _nbgrader_meta(cell):
    return cell.get("metadata", {}).get("nbgrader", {})


def _grade_cells(nb):
    return [c for c in nb.cells if _nbgrader_meta(c).get("grade")]


def _solution_code(nb):
    """{grade_id: the solution cell's code without the solution markers}."""
    return {_nbgrader_meta(c)["grade_id"]: "\n".join(line for line in c.source.splitlines()
                                                     if line.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION"))
            for c in nb.cells if _nbgrader_meta(c).get("solution")}


# ---------------------------------------------------------------------------------------------------
# the sources are well-formed nbgrader assignments (fast)


def test_one_assignment_per_chapter_01_to_11():
    assert ASSIGNMENTS == ["01_forward_process", "02_closed_form_marginals", "03_beta_schedules", "04_posterior",
                           "05_vlb_and_simple_loss", "06_training_the_reverse_process", "07_vlb_vs_simple_loss",
                           "08_optimal_denoiser", "09_faster_sampling", "10_digits", "11_exact_likelihood"]
    for name in ASSIGNMENTS:
        assert (ROOT / "notebooks" / f"{name}.ipynb").exists(), f"{name} has no lecture notebook of the same name"


@pytest.mark.parametrize("path", SOURCES, ids=ASSIGNMENTS)
def test_source_is_an_nbgrader_assignment(path):
    nb = nbformat.read(path, as_version=4)
    ids = [_nbgrader_meta(c).get("grade_id") for c in nb.cells]
    assert all(ids) and len(set(ids)) == len(ids), "every cell has a unique nbgrader grade_id"
    for cell in nb.cells:
        meta = _nbgrader_meta(cell)
        assert meta["schema_version"] == 3
        if meta["solution"]:
            assert cell.cell_type == "code" and not meta["grade"] and not meta["locked"]
            assert "### BEGIN SOLUTION" in cell.source and "### END SOLUTION" in cell.source
        else:
            assert meta["locked"], f"{meta['grade_id']}: every cell but the solutions is read-only"
        if meta["grade"]:
            assert cell.cell_type == "code" and meta["points"] > 0
            assert cell.source.lstrip().startswith(("assert exercises.check_", "# hidden tests"))
    solutions = [_nbgrader_meta(c)["grade_id"].removesuffix("_solution") for c in nb.cells if _nbgrader_meta(c)["solution"]]
    graded = [_nbgrader_meta(c)["grade_id"] for c in _grade_cells(nb)]
    for exercise in solutions:
        tests = [g for g in graded if g.startswith(exercise + "_")]
        assert tests, f"{exercise} has no autograded test"
        hidden = [c for c in _grade_cells(nb) if _nbgrader_meta(c)["grade_id"] in tests and "BEGIN HIDDEN TESTS" in c.source]
        assert hidden, f"{exercise} has no hidden test"
    assert set(graded) <= {f"{e}_{k}" for e in solutions for k in ("public", "interior", "edges", "hidden", "valid",
                                                                       "noise", "waste", "first_step")}


@pytest.mark.parametrize("path", SOURCES, ids=ASSIGNMENTS)
def test_header_states_time_points_and_learning_outcomes(path):
    nb = nbformat.read(path, as_version=4)
    header = nb.cells[0].source
    minutes = int(re.search(r"\*\*Time:\*\* about (\d+) minutes", header).group(1))
    assert 20 <= minutes <= 60
    points = int(re.search(r"\*\*Points:\*\* (\d+)", header).group(1))
    assert points == sum(_nbgrader_meta(c)["points"] for c in _grade_cells(nb))
    assert "**Learning outcomes.**" in header and header.count("\n- ") >= 2
    for cell in nb.cells:  # "## Exercise k: ... (n points)" adds up per exercise
        match = re.match(r"## Exercise \d+: .* \((\d+) points?\)", cell.source)
        if match:
            assert int(match.group(1)) > 0


# ---------------------------------------------------------------------------------------------------
# answer keys for the prose exercises of the lecture notebooks 00-11 (teachers only, never released)

KEYED = ["00_notation", "01_forward_process", "02_closed_form_marginals", "03_beta_schedules", "04_posterior",
         "05_vlb_and_simple_loss", "06_training_the_reverse_process", "07_vlb_vs_simple_loss", "08_optimal_denoiser",
         "09_faster_sampling", "10_digits", "11_exact_likelihood"]


def _prose_exercises(lecture):
    """{k: the text of exercise k} from the "## Exercises" section of a lecture notebook."""
    nb = nbformat.read(ROOT / "notebooks" / f"{lecture}.ipynb", as_version=4)
    sections = [c.source.split("## Exercises", 1)[1] for c in nb.cells
                if c.cell_type == "markdown" and "## Exercises" in c.source]
    assert len(sections) == 1, f"{lecture} has {len(sections)} Exercises sections"
    section = sections[0].split("\n## ", 1)[0]
    return {int(k): " ".join(text.split()) for k, text in re.findall(r"^(\d+)\. (.*(?:\n {2,}.*)*)", section, flags=re.M)}


def _keys(lecture):
    """{k: (quoted opening words, answer)} from classroom/answer_keys/<lecture>.md."""
    text = (ROOT / "classroom" / "answer_keys" / f"{lecture}.md").read_text()
    out = {}
    for k, body in re.findall(r"^## Exercise (\d+)\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S):
        quote = re.match(r"> (.+)\n", body)
        out[int(k)] = (quote.group(1).strip() if quote else "", body[quote.end():].strip() if quote else body.strip())
    return out


@pytest.mark.parametrize("lecture", KEYED)
def test_every_prose_exercise_has_an_answer_key_with_its_number(lecture):
    exercises, keys = _prose_exercises(lecture), _keys(lecture)
    assert exercises, f"{lecture}: no numbered exercise found"
    assert sorted(keys) == sorted(exercises), f"{lecture}: exercises {sorted(exercises)}, keys {sorted(keys)}"
    for k, text in exercises.items():
        quote, answer = keys[k]
        assert quote and text.startswith(quote), \
            f"{lecture} exercise {k}: the key quotes {quote!r}, the exercise reads {text[:60]!r}"
        assert len(answer) > 80 and re.search(r"\d\.\d|\d\s*[%e]|= \*\*", answer), f"{lecture} exercise {k}: no number in the key"


def test_answer_keys_are_not_released():
    # nbgrader releases classroom/source only; the keys live beside it, and no student copy mentions them
    assert not list((ROOT / "classroom" / "source").rglob("*.md"))
    for path in (ROOT / "notebooks" / "exercises").glob("*.ipynb"):
        assert "answer_keys" not in path.read_text()


# ---------------------------------------------------------------------------------------------------
# typical mistakes and the points they keep: (student, assignment, exercise, mistake, code, points)
# An exercise's points are those of its test cells (grade_id "<exercise>_..."); exercises not listed for a
# student keep the solution and must score full marks.

MISTAKES = [
    ("mistakes", "01_forward_process", "alpha_bar", "1 - cumsum(beta), the sum for the product",
     "def alpha_bar_from_beta(beta):\n    return 1 - torch.cumsum(beta, dim=0)", 0),
    ("mistakes", "01_forward_process", "q_step", "beta_tilde_t for beta_t",
     "def my_q_step(sched, x_prev, t, eps):\n    b = sched.beta_tilde[t]\n"
     "    return (1 - b).sqrt() * x_prev + b.sqrt() * eps", 0),
    ("mistakes-2", "01_forward_process", "alpha_bar", "alpha_bar_{t-1}: an off-by-one t",
     "def alpha_bar_from_beta(beta):\n"
     "    return torch.cat([torch.ones(1, dtype=beta.dtype), torch.cumprod(1 - beta, dim=0)[:-1]])", 0),
    ("mistakes-2", "01_forward_process", "q_step", "beta_{t-1}: an off-by-one t",
     "def my_q_step(sched, x_prev, t, eps):\n    b = sched.beta[t - 1]\n    return (1 - b).sqrt() * x_prev + b.sqrt() * eps", 0),
    ("mistakes", "02_closed_form_marginals", "q_sample", "the library shortcut dl.q_sample",
     "def my_q_sample(sched, x0, t, eps):\n    return dl.q_sample(sched, x0, t, eps)", 0),
    ("mistakes", "02_closed_form_marginals", "q_jump", "the jump from x_0 (s ignored): right for s = 0 only",
     "def my_q_jump(sched, xs, s, t, eps):\n    a = sched.alpha_bar[t]\n    return a.sqrt() * xs + (1 - a).sqrt() * eps", 0),
    ("mistakes-2", "02_closed_form_marginals", "q_sample", "a missing square root (variances for standard deviations)",
     "def my_q_sample(sched, x0, t, eps):\n    a = sched.alpha_bar[t]\n    return a * x0 + (1 - a) * eps", 0),
    ("mistakes", "03_beta_schedules", "schedule", "constant beta_t = 0.5: valid and noisy, but wasteful and brutal",
     "def my_betas(T):\n    return torch.full((T,), 0.5, dtype=torch.float64)", 2),
    ("mistakes-2", "03_beta_schedules", "schedule", "DDPM's endpoints copied to every T: no noise at T = 10",
     "def my_betas(T):\n    return torch.linspace(1e-4, 0.02, T, dtype=torch.float64)", 3),
    ("mistakes-3", "03_beta_schedules", "schedule", "the library shortcut dl.make_schedule",
     "def my_betas(T):\n    return dl.make_schedule('cosine', T).beta[1:]", 0),
    ("mistakes", "04_posterior", "posterior", "beta_t for beta_tilde_t",
     "def my_q_posterior(sched, x0, xt, t):\n    b, a, ab, abp = sched.beta[t], sched.alpha[t], sched.alpha_bar[t], "
     "sched.alpha_bar[t - 1]\n    return (abp.sqrt() * b * x0 + a.sqrt() * (1 - abp) * xt) / (1 - ab), b", 0),
    ("mistakes", "04_posterior", "x0_from_eps", "a missing square root",
     "def my_x0_from_eps(sched, xt, t, eps):\n    ab = sched.alpha_bar[t]\n    return (xt - (1 - ab).sqrt() * eps) / ab", 0),
    ("mistakes", "04_posterior", "mu_from_eps", "the sqrt(1 - alpha_t) misprint of [Ho20, Eq. 11]",
     "def my_mu_from_eps(sched, xt, t, eps):\n    a = sched.alpha[t]\n    return (xt - (1 - a).sqrt() * eps) / a.sqrt()", 0),
    ("mistakes-2", "04_posterior", "posterior", "reads the answer from sched.beta_tilde",
     "def my_q_posterior(sched, x0, xt, t):\n    b, a, ab, abp = sched.beta[t], sched.alpha[t], sched.alpha_bar[t], "
     "sched.alpha_bar[t - 1]\n    return (abp.sqrt() * b * x0 + a.sqrt() * (1 - abp) * xt) / (1 - ab), sched.beta_tilde[t]", 0),
    ("mistakes-2", "04_posterior", "x0_from_eps", "the library shortcut dl.x0_from_eps",
     "def my_x0_from_eps(sched, xt, t, eps):\n    return dl.x0_from_eps(sched, xt, t, eps)", 0),
    ("mistakes-2", "04_posterior", "mu_from_eps", "a correct other route: x_0 first, then the posterior coefficients",
     "def my_mu_from_eps(sched, xt, t, eps):\n    ab = sched.alpha_bar[t]\n    x0 = (xt - (1 - ab).sqrt() * eps) / ab.sqrt()\n"
     "    return sched.posterior_coef_x0[t] * x0 + sched.posterior_coef_xt[t] * xt", 3),
    ("mistakes", "05_vlb_and_simple_loss", "normal_kl", "the KL without its factor 1/2",
     "def my_normal_kl(m1, lv1, m2, lv2):\n"
     "    return lv2 - lv1 + torch.exp(lv1 - lv2) + (m1 - m2) ** 2 * torch.exp(-lv2) - 1", 0),
    ("mistakes", "05_vlb_and_simple_loss", "vlb_term", "the KL at t = 1 too (no decoder term): right for t >= 2 only",
     "def my_vlb_term(sched, x0, xt, t, mean, log_var):\n"
     "    mu = sched.posterior_coef_x0[t] * x0 + sched.posterior_coef_xt[t] * xt\n"
     "    lv = sched.log_beta_tilde_clipped[t]\n"
     "    return (0.5 * (log_var - lv + torch.exp(lv - log_var) + (mu - mean) ** 2 * torch.exp(-log_var) - 1)).sum(dim=1)", 1),
    ("mistakes", "05_vlb_and_simple_loss", "ancestral_step", "noise added at t = 1 too: right for t >= 2 only",
     "def my_ancestral_step(sched, xt, t, eps, z):\n    b, ab = sched.beta[t], sched.alpha_bar[t]\n"
     "    return (xt - b / (1 - ab).sqrt() * eps) / (1 - b).sqrt() + sched.log_beta_tilde_clipped[t].exp().sqrt() * z", 1),
    ("mistakes-2", "05_vlb_and_simple_loss", "vlb_term", "the library shortcut dl.q_posterior and dl.normal_kl",
     "def my_vlb_term(sched, x0, xt, t, mean, log_var):\n    if t == 1:\n"
     "        return (0.5 * (math.log(2 * math.pi) + log_var + (x0 - mean) ** 2 * torch.exp(-log_var))).sum(dim=1)\n"
     "    m, v = dl.q_posterior(sched, x0, xt, t)\n    return dl.normal_kl(m, v.log(), mean, log_var).sum(dim=1)", 0),
    ("mistakes-2", "05_vlb_and_simple_loss", "ancestral_step", "sigma_t^2 = beta_t for beta_tilde_t",
     "def my_ancestral_step(sched, xt, t, eps, z):\n    b, ab = sched.beta[t], sched.alpha_bar[t]\n"
     "    mean = (xt - b / (1 - ab).sqrt() * eps) / (1 - b).sqrt()\n    return mean if t == 1 else mean + b.sqrt() * z", 0),
    ("mistakes", "06_training_the_reverse_process", "sample_t", "torch.randint(0, T): the 0-based off-by-one",
     "def my_sample_t(batch_size, T, generator):\n    return torch.randint(0, T, (batch_size,), generator=generator)", 0),
    ("mistakes", "06_training_the_reverse_process", "simple_loss", "the sum for the mean",
     "def my_simple_loss(model, sched, x0, t, eps):\n    ab = sched.alpha_bar[t][:, None].float()\n"
     "    return (eps - model(ab.sqrt() * x0 + (1 - ab).sqrt() * eps, t)).pow(2).sum()", 0),
    ("mistakes", "06_training_the_reverse_process", "training_step", "no optimizer.zero_grad(): the gradients accumulate",
     "def my_training_step(model, optimizer, sched, x0, t, eps):\n    ab = sched.alpha_bar[t][:, None].float()\n"
     "    loss = (eps - model(ab.sqrt() * x0 + (1 - ab).sqrt() * eps, t)).pow(2).mean()\n"
     "    loss.backward()\n    optimizer.step()\n    return loss.item()", 0),
    ("mistakes-2", "06_training_the_reverse_process", "sample_t", "the generator ignored: not reproducible",
     "def my_sample_t(batch_size, T, generator):\n    return torch.randint(1, T + 1, (batch_size,))", 0),
    ("mistakes-2", "06_training_the_reverse_process", "simple_loss", "the library shortcut dl.training_losses",
     "def my_simple_loss(model, sched, x0, t, eps):\n    return dl.training_losses(sched, model, x0, t, eps)[0].mean()", 0),
    ("mistakes-2", "06_training_the_reverse_process", "training_step", "a correct step with its own inline loss",
     "def my_training_step(model, optimizer, sched, x0, t, eps):\n    optimizer.zero_grad()\n"
     "    ab = sched.alpha_bar[t][:, None].float()\n"
     "    loss = (eps - model(ab.sqrt() * x0 + (1 - ab).sqrt() * eps, t)).pow(2).mean()\n"
     "    loss.backward()\n    optimizer.step()\n    return loss.item()", 3),
    ("mistakes", "08_optimal_denoiser", "memorising_x0", "the weights without sqrt(alpha_bar_t)",
     "def my_memorising_x0(sched, xt, t, train_x0):\n    ab = sched.alpha_bar[t]\n"
     "    d2 = (xt[:, None, :] - train_x0[None]).pow(2).sum(dim=2)\n"
     "    return torch.softmax(-d2 / (2 * (1 - ab)), dim=1) @ train_x0", 0),
    ("mistakes", "08_optimal_denoiser", "mixture_x0", "the mean of the centres only (the gain within a component missing)",
     "def my_mixture_x0(sched, xt, t, centres, s2):\n    ab = sched.alpha_bar[t]\n    v = ab * s2 + 1 - ab\n"
     "    d2 = (xt[:, None, :] - ab.sqrt() * centres[None]).pow(2).sum(dim=2)\n"
     "    return torch.softmax(-d2 / (2 * v), dim=1) @ centres", 0),
    ("mistakes-2", "08_optimal_denoiser", "memorising_x0", "the library shortcut dl.memorising_x0",
     "def my_memorising_x0(sched, xt, t, train_x0):\n    return dl.memorising_x0(xt, t, sched, train_x0)", 0),
    ("mistakes", "07_vlb_vs_simple_loss", "hybrid_loss", "no detach: the bound's term moves the mean too",
     "def my_hybrid_loss(model, sched, x0, t, eps):\n    xt = dl.q_sample(sched, x0, t, eps)\n    eps_pred, r = model(xt, t)\n"
     "    step = dl.p_mean_variance(sched, xt, t, eps_pred, prediction='eps', var='learned', var_interp=r)\n"
     "    term = dl.vlb_term(sched, x0, xt, t, step.mean, step.log_var)\n"
     "    return ((eps - eps_pred).pow(2).mean(dim=1) + 0.001 * sched.T * term / x0.shape[1]).mean()", 0),
    ("mistakes", "07_vlb_vs_simple_loss", "importance_weights", "weights p_t where 1 / (T p_t) belongs",
     "def my_importance_weights(loss_history, uniform_prob):\n    T = loss_history.shape[0]\n"
     "    p = loss_history.pow(2).mean(dim=1).sqrt()\n    p = (1 - uniform_prob) * p / p.sum() + uniform_prob / T\n"
     "    return p, p", 0),
    ("mistakes", "07_vlb_vs_simple_loss", "bound_weight", "the factor D missing",
     "def my_bound_from_simple(sched, t, mse, D):\n    b, a, ab, abp = sched.beta[t], sched.alpha[t], sched.alpha_bar[t], "
     "sched.alpha_bar[t - 1]\n    return b ** 2 / (2 * (1 - abp) / (1 - ab) * b * a * (1 - ab)) * mse", 0),
    ("mistakes-2", "07_vlb_vs_simple_loss", "hybrid_loss", "the library shortcut dl.training_losses",
     "def my_hybrid_loss(model, sched, x0, t, eps):\n"
     "    return dl.training_losses(sched, model, x0, t, eps, loss='hybrid', var='learned')[0].mean()", 0),
    ("mistakes-2", "07_vlb_vs_simple_loss", "importance_weights", "no uniform mixing: right when uniform_prob is 0 only",
     "def my_importance_weights(loss_history, uniform_prob):\n    p = loss_history.pow(2).mean(dim=1).sqrt()\n"
     "    p = p / p.sum()\n    return p, 1 / (p.numel() * p)", 0),
    ("mistakes-2", "07_vlb_vs_simple_loss", "bound_weight", "the library shortcut dl.simple_loss_weight",
     "def my_bound_from_simple(sched, t, mse, D):\n    return dl.simple_loss_weight(sched, t) * D * mse", 0),
    ("mistakes-3", "07_vlb_vs_simple_loss", "bound_weight", "a correct other route: the ratio of the SNRs",
     "def my_bound_from_simple(sched, t, mse, D):\n    snr = sched.alpha_bar / (1 - sched.alpha_bar)\n"
     "    return 0.5 * (snr[t - 1] / snr[t] - 1) * D * mse", 3),
    ("mistakes", "09_faster_sampling", "ddim_step", "s_t without eta: the ancestral noise at every eta",
     "def my_ddim_step(sched, x_t, t, s, eps_pred, eta, z):\n    ab_t, ab_s = sched.alpha_bar[t], sched.alpha_bar[s]\n"
     "    x0 = (x_t - (1 - ab_t).sqrt() * eps_pred) / ab_t.sqrt()\n"
     "    sigma = ((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)).sqrt()\n"
     "    return ab_s.sqrt() * x0 + (1 - ab_s - sigma ** 2).clamp(min=0).sqrt() * eps_pred + sigma * z", 0),
    ("mistakes", "09_faster_sampling", "log_snr_steps", "steps uniform in t",
     "def my_log_snr_steps(sched, K, t_max):\n"
     "    return torch.linspace(1, t_max, K, dtype=torch.float64).round().long().tolist()", 0),
    ("mistakes", "09_faster_sampling", "dpm_solver_2m_update", "x0_prev ignored: first order, right on the first and last step",
     "def my_dpm_solver_2m_update(sched, x_t, t, s, x0_t, x0_prev, h_prev):\n    if s == 0:\n        return x0_t\n"
     "    ab_t, ab_s = sched.alpha_bar[t], sched.alpha_bar[s]\n"
     "    e = ((1 - ab_s) / (1 - ab_t) * ab_t / ab_s).sqrt()\n"
     "    return ((1 - ab_s) / (1 - ab_t)).sqrt() * x_t + ab_s.sqrt() * (1 - e) * x0_t", 1),
    ("mistakes-2", "09_faster_sampling", "ddim_step", "sqrt(1 - alpha_bar_s) for sqrt(1 - alpha_bar_s - s_t^2)",
     "def my_ddim_step(sched, x_t, t, s, eps_pred, eta, z):\n    ab_t, ab_s = sched.alpha_bar[t], sched.alpha_bar[s]\n"
     "    x0 = (x_t - (1 - ab_t).sqrt() * eps_pred) / ab_t.sqrt()\n"
     "    sigma = eta * ((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)).sqrt()\n"
     "    return ab_s.sqrt() * x0 + (1 - ab_s).sqrt() * eps_pred + sigma * z", 0),
    ("mistakes-2", "09_faster_sampling", "log_snr_steps", "the library shortcut dl.select_timesteps",
     "def my_log_snr_steps(sched, K, t_max):\n"
     "    return dl.select_timesteps(sched, K, 'log_snr', float(dl.half_log_snr(sched)[t_max]))", 0),
    ("mistakes-2", "09_faster_sampling", "dpm_solver_2m_update", "r = h / h_prev, the ratio inverted",
     "def my_dpm_solver_2m_update(sched, x_t, t, s, x0_t, x0_prev, h_prev):\n    if s == 0:\n        return x0_t\n"
     "    lam = dl.half_log_snr(sched)\n    ab_t, ab_s = sched.alpha_bar[t], sched.alpha_bar[s]\n    h = lam[s] - lam[t]\n"
     "    D = x0_t if x0_prev is None else (1 + h_prev / (2 * h)) * x0_t - h_prev / (2 * h) * x0_prev\n"
     "    return ((1 - ab_s) / (1 - ab_t)).sqrt() * x_t - ab_s.sqrt() * torch.expm1(-h) * D", 1),
    ("mistakes-3", "09_faster_sampling", "ddim_step", "the library shortcut: the sampler's own DDIM coefficients",
     "def my_ddim_step(sched, x_t, t, s, eps_pred, eta, z):\n"
     "    a, b, c = dl.sampling._DDIM(sched, None, 'eps', 'fixed_small', None, eta).coefficients(t, s)\n"
     "    ab_t = sched.alpha_bar[t]\n"
     "    return a * (x_t - (1 - ab_t).sqrt() * eps_pred) / ab_t.sqrt() + b * eps_pred + c * z", 0),
    ("mistakes-3", "09_faster_sampling", "dpm_solver_2m_update", "the library shortcut: the sampler's own step",
     "def my_dpm_solver_2m_update(sched, x_t, t, s, x0_t, x0_prev, h_prev):\n"
     "    solver = dl.sampling._DPMSolver(sched, None, 'eps', 'fixed_small', None, None)\n"
     "    solver.previous = None if x0_prev is None else (x0_prev, h_prev)\n"
     "    net = type('Net', (), {'x0_eps': lambda self, x, t: (x0_t, None)})()\n"
     "    return solver.step(net, x_t, t, s, None)", 0),
    ("mistakes-4", "09_faster_sampling", "ddim_step", "a correct other route: the coefficients of x_t and eps_pred",
     "def my_ddim_step(sched, x_t, t, s, eps_pred, eta, z):\n    ab_t, ab_s = sched.alpha_bar[t], sched.alpha_bar[s]\n"
     "    sigma = eta * ((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)).sqrt()\n"
     "    c_eps = (1 - ab_s - sigma ** 2).clamp(min=0).sqrt() - (ab_s * (1 - ab_t) / ab_t).sqrt()\n"
     "    return (ab_s / ab_t).sqrt() * x_t + c_eps * eps_pred + sigma * z", 3),
    ("mistakes", "10_digits", "timestep_embedding", "sin and cos swapped",
     "def my_timestep_embedding(t, dim):\n    half = dim // 2\n"
     "    args = t.double()[:, None] * 10000.0 ** (-torch.arange(half, dtype=torch.float64) / half)\n"
     "    return torch.cat([args.sin(), args.cos()], dim=1)", 0),
    ("mistakes", "10_digits", "discretized_decoder", "the edge bins forgotten: right inside (-1, 1) only",
     "def my_discretized_log_likelihood(x, mean, log_var, levels):\n    d, s = 1.0 / (levels - 1), (0.5 * log_var).exp()\n"
     "    return torch.log(torch.special.ndtr((x + d - mean) / s) - torch.special.ndtr((x - d - mean) / s))", 1),
    ("mistakes", "10_digits", "bound_bits_per_dim", "nats per dimension (ln 2 missing)",
     "def my_bound_bits_per_dim(prior, steps, num_dims):\n    return (prior + steps.sum(dim=0)) / num_dims", 0),
    ("mistakes-2", "10_digits", "timestep_embedding", "the library shortcut dl.timestep_embedding",
     "def my_timestep_embedding(t, dim):\n    return dl.timestep_embedding(t, dim)", 0),
    ("mistakes-2", "10_digits", "discretized_decoder", "an off-by-one in the bin width, 1 / levels",
     "def my_discretized_log_likelihood(x, mean, log_var, levels):\n    d, s = 1.0 / levels, (0.5 * log_var).exp()\n"
     "    up = torch.where(x > 1 - d / 2, torch.ones_like(x), torch.special.ndtr((x + d - mean) / s))\n"
     "    lo = torch.where(x < -1 + d / 2, torch.zeros_like(x), torch.special.ndtr((x - d - mean) / s))\n"
     "    return torch.log(up - lo)", 0),
    ("mistakes-2", "10_digits", "bound_bits_per_dim", "the library shortcut dl.bits_per_dim",
     "def my_bound_bits_per_dim(prior, steps, num_dims):\n    return dl.bits_per_dim(prior + steps.sum(dim=0), num_dims)", 0),
    ("mistakes", "11_exact_likelihood", "score_from_eps", "a missing square root",
     "def my_score_from_eps(sched, eps, t):\n    return -eps / (1 - sched.alpha_bar[t])", 0),
    ("mistakes", "11_exact_likelihood", "hutchinson_divergence", "the exact trace for the estimate",
     "def my_hutchinson_divergence(f, x, probes):\n    x = x.detach().requires_grad_(True)\n    fx = f(x)\n"
     "    rows = [torch.autograd.grad(fx[:, i].sum(), x, retain_graph=True)[0][:, i] for i in range(x.shape[1])]\n"
     "    return torch.stack(rows).sum(dim=0)", 0),
    ("mistakes", "11_exact_likelihood", "hutchinson_variance", "the Gaussian probes' variance",
     "def my_hutchinson_variance(J):\n    return 2 * ((J + J.transpose(1, 2)) / 2).pow(2).sum(dim=(1, 2))", 0),
    ("mistakes", "11_exact_likelihood", "flow_log_density", "the sign of the integral",
     "def my_flow_log_density(field, x0, s_grid):\n    x, acc = x0, torch.zeros(x0.shape[0], dtype=x0.dtype)\n"
     "    for k in range(len(s_grid) - 1):\n        h = s_grid[k + 1] - s_grid[k]\n        f, div = field(x, float(s_grid[k]))\n"
     "        x, acc = x + h * f, acc + h * div\n"
     "    return -0.5 * (x.pow(2).sum(dim=1) + x.shape[1] * math.log(2 * math.pi)) - acc", 0),
    ("mistakes-2", "11_exact_likelihood", "score_from_eps", "the library shortcut dl.score_from_eps",
     "def my_score_from_eps(sched, eps, t):\n    return dl.score_from_eps(sched, eps, t)", 0),
    ("mistakes-2", "11_exact_likelihood", "flow_log_density", "the library shortcut dl.ode_nll's integrator",
     "def my_flow_log_density(field, x0, s_grid):\n    s = [float(v) for v in s_grid]\n"
     "    x, acc = dl.exact_likelihood._rk4(lambda y, u: field(y, u), x0, torch.zeros(x0.shape[0], dtype=x0.dtype), "
     "s[0], s[-1], 1)\n"
     "    return -0.5 * (x.pow(2).sum(dim=1) + x.shape[1] * math.log(2 * math.pi)) + acc", 0),
]
MISTAKES_IDS = [f"{a[:2]}-{ex}-{student}" for student, a, ex, *_ in MISTAKES]


def test_mistakes_table_names_real_exercises():
    for _, assignment, exercise, _, code, points in MISTAKES:
        nb = nbformat.read(ROOT / "classroom" / "source" / assignment / f"{assignment}.ipynb", as_version=4)
        assert f"{exercise}_solution" in _solution_code(nb)
        assert 0 <= points <= sum(_nbgrader_meta(c)["points"] for c in _grade_cells(nb)
                                  if _nbgrader_meta(c)["grade_id"].startswith(exercise + "_"))
        compile(code, f"{assignment}/{exercise}", "exec")
    assert len({(s, a, e) for s, a, e, *_ in MISTAKES}) == len(MISTAKES), "one mistake per exercise and student"


# ---------------------------------------------------------------------------------------------------
# nbgrader itself: release, hand in, autograde (slow)


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A course folder with every assignment released by nbgrader, and its gradebook."""
    where = tmp_path_factory.mktemp("classroom")
    db = where / "gradebook.db"
    started = time.perf_counter()
    released = make_assignments.generate(make_assignments.new_course(where / "course"), db)
    return {"root": where / "course", "db": db, "released": released, "seconds": time.perf_counter() - started}


def _hand_in(course, student, assignment, code):
    """Submit the release of `assignment` with the solution cells in `code` ({grade_id: source}) filled in."""
    nb = nbformat.read(course["released"][assignment], as_version=4)
    for cell in nb.cells:
        grade_id = _nbgrader_meta(cell).get("grade_id")
        if grade_id in code:
            cell.source = code[grade_id]
    folder = course["root"] / "submitted" / student / assignment
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / f"{assignment}.ipynb")


@pytest.fixture(scope="module")
def grades(course):
    """{(student, assignment): {grade_id: (score, max_score)}} after one `nbgrader autograde` of every submission."""
    from nbgrader.api import Gradebook

    for assignment in ASSIGNMENTS:
        solution = _solution_code(nbformat.read(ROOT / "classroom" / "source" / assignment / f"{assignment}.ipynb",
                                                as_version=4))
        _hand_in(course, "solutions", assignment, solution)
        _hand_in(course, "untouched", assignment, {})
        for student in sorted({s for s, a, *_ in MISTAKES if a == assignment}):
            wrong = {f"{e}_solution": code for s, a, e, _, code, _ in MISTAKES if (s, a) == (student, assignment)}
            _hand_in(course, student, assignment, {**solution, **wrong})
    started = time.perf_counter()
    out = {}
    for db in _autograde_on_two_cores(course):
        with Gradebook(f"sqlite:///{db}") as gb:
            for submission in (s for a in gb.assignments for s in a.submissions):
                for notebook in submission.notebooks:
                    out[submission.student.id, submission.assignment.name] = {
                        g.name: (g.score, g.max_score) for g in notebook.grades}
    course["grading_seconds"] = time.perf_counter() - started
    print(f"\nnbgrader: released {len(ASSIGNMENTS)} assignments in {course['seconds']:.0f} s, "
          f"autograded {len(out)} submissions in {course['grading_seconds']:.0f} s")
    return out


def _autograde_on_two_cores(course):
    """`nbgrader autograde` of every submission, as two processes (odd and even assignments) on copies of the
    course folder and its gradebook; returns the two gradebooks. Each grades many notebooks in one call."""
    procs = []
    for k in range(2):
        root = course["root"].parent / f"grading-{k}"
        root.mkdir()
        shutil.copy(course["root"] / "nbgrader_config.py", root)
        shutil.copy(course["db"], root / "gradebook.db")
        for folder in ("source", "release"):
            shutil.copytree(course["root"] / folder, root / folder)
        for student in (course["root"] / "submitted").iterdir():
            for assignment in ASSIGNMENTS[k::2]:
                if (student / assignment).exists():
                    shutil.copytree(student / assignment, root / "submitted" / student.name / assignment)
        cmd, env = make_assignments.nbgrader_command("autograde", "*", "--create", db=root / "gradebook.db")
        procs.append((cmd, root, subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL,
                                                  stderr=subprocess.PIPE, text=True)))
    for cmd, root, proc in procs:
        _, stderr = proc.communicate()
        make_assignments.check_nbgrader_output(cmd, root, proc.returncode, stderr)
    return [root / "gradebook.db" for _, root, _ in procs]


@pytest.mark.slow
def test_student_copies_are_current(course):
    stale = make_assignments.stale(course["released"])
    assert not stale, f"regenerate with `make exercises`: {[p.name for p in stale]}"


@pytest.mark.slow
def test_student_copies_contain_no_solution_no_hidden_test_and_no_output():
    for path in sorted((ROOT / "notebooks" / "exercises").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            assert "SOLUTION" not in cell.source and "HIDDEN TESTS" not in cell.source, path.name
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, path.name


@pytest.mark.slow
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_solutions_score_full_marks(grades, assignment):
    scores = grades["solutions", assignment]
    assert scores and all(score == top for score, top in scores.values()), scores


@pytest.mark.slow
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_untouched_release_scores_zero_without_crashing(grades, course, assignment):
    scores = grades["untouched", assignment]
    assert scores and all(score == 0 for score, _ in scores.values()), scores
    k = ASSIGNMENTS.index(assignment) % 2
    assert (course["root"].parent / f"grading-{k}" / "autograded" / "untouched" / assignment / f"{assignment}.ipynb").exists()


@pytest.mark.slow
@pytest.mark.parametrize("row", MISTAKES, ids=MISTAKES_IDS)
def test_typical_mistake_scores_the_table_s_points(grades, row):
    student, assignment, exercise, mistake, _, points = row
    scores = grades[student, assignment]
    got = sum(score for grade_id, (score, _) in scores.items() if grade_id.startswith(exercise + "_"))
    assert got == points, f"{mistake}: {got} points, the table says {points} ({scores})"
    # the other exercises of the same submission keep the solution and their full marks
    listed = {e for s, a, e, *_ in MISTAKES if (s, a) == (student, assignment)}
    others = {g: s for g, s in scores.items() if not any(g.startswith(e + "_") for e in listed)}
    assert all(score == top for score, top in others.values()), others
