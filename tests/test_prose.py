"""The text a reader sees: no talk about how the project is run, no control characters, no undefined citations.

- Lecture notebooks speak to the reader about the subject. Their Markdown never mentions our issue
  tracker, budgets, CI machines, "the committed run", anecdotes of our own runs, or unnamed targets
  ("some posts say"): a common mistake is named plainly instead.
- No notebook cell and no docstring of the package holds a control character: a "\\bar\\alpha" written
  through a non-raw Python string becomes a backspace and a bell, and renders as "ar lpha".
- Every citation key ([Ho20, Eq. 4], [ND21]...) used in a docstring or a notebook is defined in the README.
"""

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "diffusion_lib"
LECTURES = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
ALL_NOTEBOOKS = sorted((ROOT / "notebooks").rglob("*.ipynb"))

# words that speak of our process, not the subject; case-insensitive, matched in Markdown cells only
PROCESS_TALK = [
    r"\bissue'?s?\b", r"\bissue tracker\b", r"\bcommitted (run|notebook|checkpoint)\b", r"\bstored run\b",
    r"\bbudget", r"\bvirtual machine\b", r"\bshared machine\b", r"\bCI\b", r"\bmake bench\b",
    r"\bof ours\b", r"\bour (own )?runs?\b", r"\bwrite-ups?\b", r"\bsome (blog )?posts\b", r"\bblog posts?\b",
    r"\bcirculates\b", r"\breviewers?\b", r"\bcontinuous integration\b",
]
# notebooks still being rewritten elsewhere: their text is fixed by those rewrites (remove a mark when it passes)
PENDING_PROSE = {}
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
CITATION = re.compile(r"\[([A-Z][A-Za-z]{1,4}\d{2}[a-z]?)[],]")


def _cells(nb):
    return json.loads(nb.read_text(encoding="utf-8"))["cells"]


def _marked(nb, pending):
    reason = pending.get(nb.name[:2])
    marks = [pytest.mark.xfail(reason=reason, strict=False)] if reason else []
    return pytest.param(nb, marks=marks, id=nb.stem)


@pytest.mark.parametrize("nb", [_marked(nb, PENDING_PROSE) for nb in LECTURES])
def test_lecture_markdown_speaks_about_the_subject(nb):
    hits = []
    for i, cell in enumerate(_cells(nb)):
        if cell["cell_type"] != "markdown":
            continue
        text = "".join(cell["source"])
        for pattern in PROCESS_TALK:
            for m in re.finditer(pattern, text, flags=re.IGNORECASE):
                hits.append(f"cell {i}: ...{text[max(0, m.start() - 40):m.end() + 40]!r}...")
    assert not hits, f"{nb.name} speaks of our process, not the subject:\n" + "\n".join(hits)


@pytest.mark.parametrize("nb", ALL_NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT / "notebooks")))
def test_notebook_cells_hold_no_control_characters(nb):
    bad = [(i, m.group(), "".join(c["source"])[max(0, m.start() - 30):m.end() + 30])
           for i, c in enumerate(_cells(nb)) for m in CONTROL.finditer("".join(c["source"]))]
    assert not bad, f"{nb.name}: control characters (a LaTeX command in a non-raw string?): {bad[:5]}"


def _docstrings(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    for node in nodes:
        doc = ast.get_docstring(node, clean=False)
        if doc:
            yield getattr(node, "name", path.stem), doc


@pytest.mark.parametrize("module", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_docstrings_hold_no_control_characters(module):
    bad = [(name, CONTROL.search(doc).group()) for name, doc in _docstrings(module) if CONTROL.search(doc)]
    assert not bad, f"{module.name}: control characters in docstrings (use a raw string r\"\"\"...\"\"\"): {bad}"


def test_control_character_check_sees_a_non_raw_latex_string():
    # the mistake it guards against: "\bar\alpha" without r"" holds a backspace and a bell
    assert CONTROL.search("\bar\alpha") and not CONTROL.search(r"\bar\alpha")


def test_every_citation_key_is_defined_in_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    defined = set(re.findall(r"^- \*\*\[([^\]]+)\]\*\*", readme, flags=re.MULTILINE))
    used = {}
    for module in sorted(PACKAGE.glob("*.py")):
        for key in CITATION.findall(module.read_text(encoding="utf-8")):
            used.setdefault(key, module.name)
    for nb in ALL_NOTEBOOKS:
        for cell in _cells(nb):
            for key in CITATION.findall("".join(cell["source"])):
                used.setdefault(key, nb.name)
    missing = {key: where for key, where in used.items() if key not in defined}
    assert not missing, f"citation keys used but not defined in the README's References: {missing}"


@pytest.mark.parametrize("phrase", ["the issue's target", "from the committed run", "in the stored run",
                                    "this notebook's time budget", "a network of ours", "on a shared virtual machine",
                                    "as some write-ups say", "some posts misdate it", "a formula that circulates online",
                                    "Some blog posts write"])
def test_process_talk_patterns_catch_the_phrases_they_are_for(phrase):
    assert any(re.search(pattern, phrase, flags=re.IGNORECASE) for pattern in PROCESS_TALK), phrase
