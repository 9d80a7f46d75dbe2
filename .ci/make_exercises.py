"""Write the student versions of the exercise notebooks: notebooks/solutions/ -> notebooks/exercises/.

    python .ci/make_exercises.py           # (re)write notebooks/exercises/*.ipynb   (make exercises)
    python .ci/make_exercises.py --check   # exit 1 if a committed copy is missing or differs (CI)

The solution notebooks are the source of truth. In their code cells every region

    # BEGIN SOLUTION
    ...
    # END SOLUTION

(markers included) becomes one `raise NotImplementedError` at the indentation of `# BEGIN SOLUTION`;
a cell tagged `solution` (a written answer) is left out. The student copies keep cell ids and tags
only: no outputs, no execution counts, no widget state, so they are stored fully stripped.
"""

import argparse
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "notebooks" / "solutions"
EXERCISES = ROOT / "notebooks" / "exercises"
BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
STUB = "raise NotImplementedError"
SOLUTION_TAG = "solution"


class RegionError(ValueError):
    """A solution region that is not closed, is nested, or has an END without a BEGIN."""


def strip_solutions(source, where="cell"):
    """The source with every solution region replaced by `raise NotImplementedError`."""
    out, inside = [], False
    for number, line in enumerate(source.splitlines(), 1):
        marker = line.strip()
        if marker == BEGIN:
            if inside:
                raise RegionError(f"{where}, line {number}: nested {BEGIN}")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out.append(indent + STUB)
        elif marker == END:
            if not inside:
                raise RegionError(f"{where}, line {number}: {END} without {BEGIN}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise RegionError(f"{where}: {BEGIN} is never closed by {END}")
    return "\n".join(out)


def has_solution(source):
    return any(line.strip() == BEGIN for line in source.splitlines())


def student_version(solution):
    """A new, fully stripped notebook with the solution regions replaced by stubs."""
    cells = []
    for i, cell in enumerate(solution.cells):
        tags = list(cell.get("metadata", {}).get("tags", []))
        if SOLUTION_TAG in tags:
            continue
        metadata = {"tags": tags} if tags else {}
        if cell.cell_type == "code":
            new = nbformat.v4.new_code_cell(strip_solutions(cell.source, f"code cell {i}"), metadata=metadata)
        elif cell.cell_type == "markdown":
            new = nbformat.v4.new_markdown_cell(cell.source, metadata=metadata)
        else:
            new = nbformat.v4.new_raw_cell(cell.source, metadata=metadata)
        new["id"] = cell.get("id", str(i))  # stable ids: regenerating gives the same file
        cells.append(new)
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata = {key: solution.metadata[key] for key in ("kernelspec", "language_info") if key in solution.metadata}
    nb.nbformat, nb.nbformat_minor = solution.nbformat, solution.nbformat_minor
    return nb


def render(solution_path):
    """The student copy of one solution notebook, as the text written to disk."""
    return nbformat.writes(student_version(nbformat.read(solution_path, as_version=4))) + "\n"


def expected_files():
    """{exercise path: its text} for every solution notebook."""
    return {EXERCISES / path.name: render(path) for path in sorted(SOLUTIONS.glob("*.ipynb"))}


def stale_files():
    """Exercise notebooks that are missing, differ from their solution's student copy, or have no solution."""
    expected = expected_files()
    stale = [path for path, text in expected.items() if not path.exists() or path.read_text() != text]
    stale += [path for path in sorted(EXERCISES.glob("*.ipynb")) if path not in expected]
    return stale


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the committed copies are current")
    args = parser.parse_args()
    if args.check:
        stale = stale_files()
        for path in stale:
            print(f"stale: {path.relative_to(ROOT)} (run `make exercises` and commit the result)")
        return 1 if stale else 0
    EXERCISES.mkdir(parents=True, exist_ok=True)
    for path, text in expected_files().items():
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
