"""Stage the README and the notebooks into build/site-src/ and build the HTML book into build/site/.

    python .ci/build_site.py            # (make site)

The README becomes the landing page with a table of contents appended; notebooks are rendered with
their stored outputs (myst-nb, nb_execution_mode = "off"), so the build needs no kernel and no network.
"""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "build" / "site-src"
OUT = ROOT / "build" / "site"


def toctree(caption, docs):
    lines = ["", "```{toctree}", f":caption: {caption}", ":maxdepth: 1", ""] + docs + ["```", ""]
    return "\n".join(lines)


def stage():
    shutil.rmtree(SRC, ignore_errors=True)
    (SRC / "notebooks" / "exercises").mkdir(parents=True)
    (SRC / "data").mkdir()
    shutil.copy(ROOT / ".ci" / "site" / "conf.py", SRC / "conf.py")
    for image in sorted((ROOT / "data").glob("*.png")) + sorted((ROOT / "data").glob("*.gif")):
        shutil.copy(image, SRC / "data" / image.name)  # the README's figures
    chapters, exercises = [], []
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        shutil.copy(path, SRC / "notebooks" / path.name)
        chapters.append(f"notebooks/{path.stem}")
    for path in sorted((ROOT / "notebooks" / "exercises").glob("*.ipynb")):
        shutil.copy(path, SRC / "notebooks" / "exercises" / path.name)
        exercises.append(f"notebooks/exercises/{path.stem}")
    readme = (ROOT / "README.md").read_text()
    (SRC / "index.md").write_text(readme + toctree("Chapters", chapters) + toctree("Exercises", exercises))


def main():
    stage()
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-q", str(SRC), str(OUT)]
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
