"""Repository hygiene, the checks of .pre-commit-config.yaml run in CI without pre-commit.

- ruff: code and notebooks pass `ruff check` with the rules selected in pyproject.toml [tool.ruff];
- nbstripout: lecture notebooks carry outputs and counts but no volatile metadata
  (`nbstripout --keep-output --keep-count --keep-id --verify`), student exercise notebooks and the
  nbgrader sources in classroom/source/ are fully stripped (`nbstripout --keep-id --verify`);
- the hook versions in .pre-commit-config.yaml are the ones pinned in .ci/constraints.txt.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LECTURES = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# the student copies and the nbgrader sources they are released from (classroom/source/)
EXERCISES = sorted((ROOT / "notebooks" / "exercises").glob("*.ipynb")) + sorted((ROOT / "classroom" / "source").glob("*/*.ipynb"))


def _tool(name):
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: pip install -c .ci/constraints.txt -e '.[test]'")
    return path


def test_ruff_passes_on_code_and_notebooks():
    result = subprocess.run([_tool("ruff"), "check", "--no-cache", "--output-format", "concise", "."],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _would_strip(notebooks, *flags):
    """The notebooks `nbstripout --verify FLAGS` would change (one process for all: it starts slowly)."""
    result = subprocess.run([_tool("nbstripout"), "--verify", *flags, *map(str, notebooks)],
                            capture_output=True, text=True)
    dirty = re.findall(r"would have stripped (.+\.ipynb)", result.stdout + result.stderr)
    assert dirty or result.returncode == 0, result.stdout + result.stderr
    return [str(Path(path).resolve().relative_to(ROOT)) for path in dirty]


def test_lecture_notebooks_have_no_volatile_metadata():
    dirty = _would_strip(LECTURES, "--keep-output", "--keep-count", "--keep-id")
    assert not dirty, f"strip per-cell timestamps and widget state: make refresh-notebooks NB=... (or pre-commit): {dirty}"


def test_exercise_notebooks_are_fully_stripped():
    assert EXERCISES
    assert not _would_strip(EXERCISES, "--keep-id"), "regenerate them: make exercises"


def test_hook_versions_match_the_constraints():
    pins = dict(line.lower().split("==") for line in (ROOT / ".ci" / "constraints.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    hooks = [hook for repo in config["repos"] for hook in repo["hooks"]]
    assert all(repo["repo"] == "local" for repo in config["repos"]), "hooks install from PyPI, offline-friendly"
    for hook in hooks:
        assert hook["language"] == "python"
        for dep in hook.get("additional_dependencies", []):
            name, version = re.match(r"^([\w\-]+)==(\S+)$", dep).groups()
            assert pins[name.lower()] == version, f"{hook['id']}: {dep} but constraints pin {pins[name.lower()]}"
