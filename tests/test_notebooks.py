"""The notebooks as files: small, executed top to bottom, parameterised, and robust to other settings.

nbval (run by `make test` on notebooks/) compares the stored outputs strictly. The sweep here re-runs
every lecture notebook with papermill for each schedule in dl.SCHEDULES at a small and a large T, into
a temporary folder, and fails on any error: a reader who changes the schedule never hits a broken cell.
"""

import json
import os
from pathlib import Path

import pytest

import diffusion_lib as dl

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# notebooks that train networks have their own budgets and are swept at their committed settings only
TRAINING = {"06", "07", "08", "09", "10"}
MATH_NOTEBOOKS = [nb for nb in NOTEBOOKS if nb.name[:2] not in TRAINING]
SWEEP_T = (10, 1000)
MAX_BYTES = 1_000_000


def _cells(nb):
    return json.loads(nb.read_text())["cells"]


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_small(nb):
    assert nb.stat().st_size < MAX_BYTES, f"{nb.name} is {nb.stat().st_size / 1e6:.2f} MB (use dpi 80-100, GIFs)"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_was_run_top_to_bottom(nb):
    code = [c for c in _cells(nb) if c["cell_type"] == "code" and "".join(c["source"]).strip()]
    counts = [c["execution_count"] for c in code]
    # nbval skips cells without an execution count, so every code cell must have one, in order
    assert counts == list(range(1, len(code) + 1)), f"{nb.name}: re-execute it top to bottom after a restart"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_has_one_parameters_cell(nb):
    tagged = [c for c in _cells(nb) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{nb.name}: exactly one cell must be tagged `parameters`"
    names = {line.split("=")[0].strip() for line in "".join(tagged[0]["source"]).splitlines()
             if "=" in line and not line.lstrip().startswith("#")}
    assert {"SCHEDULE", "T", "SEED"} <= names, f"{nb.name}: the parameters cell needs SCHEDULE, T and SEED"
    assert all(name.isupper() for name in names), f"{nb.name}: constants are UPPER_CASE"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_opens_with_a_title_and_closes_with_summary_and_exercises(nb):
    markdown = ["".join(c["source"]) for c in _cells(nb) if c["cell_type"] == "markdown"]
    assert markdown and markdown[0].startswith("# "), f"{nb.name}: the first cell is a title"
    text = "\n".join(markdown)
    assert "## Summary" in text and "## Exercises" in text, f"{nb.name}: end with a Summary and Exercises"


@pytest.mark.slow
@pytest.mark.parametrize("T", SWEEP_T)
@pytest.mark.parametrize("schedule", dl.SCHEDULES)
@pytest.mark.parametrize("nb", MATH_NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_with_other_settings(nb, schedule, T, tmp_path):
    papermill = pytest.importorskip("papermill")
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    papermill.execute_notebook(str(nb), str(tmp_path / nb.name), parameters={"SCHEDULE": schedule, "T": T},
                               cwd=str(tmp_path), progress_bar=False, kernel_name="python3",
                               execution_timeout=600)  # a hung cell fails the test instead of stalling CI
    # papermill raises PapermillExecutionError naming the failing cell and its traceback
