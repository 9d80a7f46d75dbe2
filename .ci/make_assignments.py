"""Build the graded assignments with nbgrader from the course folder classroom/ (the source of truth).

    python .ci/make_assignments.py             # build/classroom/release/<assignment>/<assignment>.ipynb (make assignments)
    python .ci/make_assignments.py --exercises # the same, then copy the release to notebooks/exercises/ (make exercises)
    python .ci/make_assignments.py --check     # exit 1 if notebooks/exercises/ differs from the release (CI)

classroom/source/<assignment>/<assignment>.ipynb are nbgrader source notebooks (solution cells with
### BEGIN SOLUTION / ### END SOLUTION, locked cells, autograded test cells with points and
### BEGIN HIDDEN TESTS / ### END HIDDEN TESTS). nbgrader's own `generate_assignment` writes the student
versions; it runs in a copy of the course folder under build/classroom/ with a temporary sqlite
gradebook, so nothing it writes lands in the repository. notebooks/exercises/ holds the released
notebooks verbatim (the rendered book shows those).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLASSROOM = ROOT / "classroom"
EXERCISES = ROOT / "notebooks" / "exercises"
BUILD = ROOT / "build" / "classroom"


def assignments():
    """The assignment names, one folder each in classroom/source/."""
    return sorted(p.name for p in (CLASSROOM / "source").iterdir() if p.is_dir())


def nbgrader_command(*args, db):
    """(argv, env) of nbgrader's CLI with the gradebook `db` (a path); the venv's bin on PATH (nbgrader calls alembic)."""
    bin_dir = str(Path(sys.executable).parent)
    env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""))
    return [str(Path(bin_dir) / "nbgrader"), *args, "--db", f"sqlite:///{db}"], env


def check_nbgrader_output(cmd, course, returncode, stderr):
    if returncode != 0 or "ERROR" in stderr:
        raise RuntimeError(f"{' '.join(cmd[1:])} failed in {course}:\n{stderr[-4000:]}")


def nbgrader(course, *args, db):
    """Run nbgrader's CLI in `course` with the gradebook `db`; raise with its log if it reports an error."""
    cmd, env = nbgrader_command(*args, db=db)
    result = subprocess.run(cmd, cwd=course, env=env, capture_output=True, text=True)
    check_nbgrader_output(cmd, course, result.returncode, result.stderr)
    return result


def new_course(where):
    """A fresh copy of the course folder (nbgrader_config.py and source/) in `where`."""
    if where.exists():
        shutil.rmtree(where)
    where.mkdir(parents=True)
    shutil.copy(CLASSROOM / "nbgrader_config.py", where)
    shutil.copytree(CLASSROOM / "source", where / "source")
    return where


def generate(course, db):
    """nbgrader generate_assignment for every assignment; returns {assignment: released notebook path}."""
    nbgrader(course, "generate_assignment", "*", "--create", db=db)
    return {name: course / "release" / name / f"{name}.ipynb" for name in assignments()}


def release(where=BUILD):
    """Build the release in `where` (a fresh course copy) with a temporary gradebook; {assignment: path}."""
    course = new_course(where)
    with tempfile.TemporaryDirectory() as tmp:
        return generate(course, Path(tmp) / "gradebook.db")


def stale(released):
    """Exercise notebooks that differ from the release, are missing, or have no assignment."""
    out = [EXERCISES / f"{name}.ipynb" for name, path in released.items()
           if not (EXERCISES / f"{name}.ipynb").exists() or (EXERCISES / f"{name}.ipynb").read_text() != path.read_text()]
    out += [p for p in sorted(EXERCISES.glob("*.ipynb")) if p.stem not in released]
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--exercises", action="store_true", help="copy the release to notebooks/exercises/")
    group.add_argument("--check", action="store_true", help="only check that notebooks/exercises/ is the release")
    args = parser.parse_args()
    released = release()
    for path in released.values():
        print(f"released {path.relative_to(ROOT)}")
    if args.check:
        bad = stale(released)
        for path in bad:
            print(f"stale: {path.relative_to(ROOT)} (run `make exercises` and commit the result)")
        return 1 if bad else 0
    if args.exercises:
        EXERCISES.mkdir(parents=True, exist_ok=True)
        for path in stale(released):
            if path.stem not in released:
                path.unlink()
        for name, path in released.items():
            shutil.copy(path, EXERCISES / f"{name}.ipynb")
            print(f"wrote notebooks/exercises/{name}.ipynb")
    return 0


if __name__ == "__main__":
    sys.exit(main())
