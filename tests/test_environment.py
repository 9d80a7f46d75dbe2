"""pyproject.toml is the source of truth for dependencies; environment.yml and the CI constraints mirror it."""

import re
import tomllib
from pathlib import Path

import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
# pip name -> conda-forge name, where they differ
CONDA_NAMES = {"torch": "pytorch-cpu"}


def _split(spec):
    """'numpy>=1.26' -> ('numpy', '>=1.26')"""
    name, version = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", spec).groups()
    return name.lower(), version.replace(" ", "")


def _pyproject_requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        specs += extra
    return dict(_split(s) for s in specs)


def _conda_requirements():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    # packages that exist on PyPI only are listed in the pip: section (not options like --no-deps)
    pip_only = [d for section in env["dependencies"] if isinstance(section, dict) for d in section["pip"]
                if not d.startswith("-")]
    return env, dict(_split(d.replace("=", "==", 1) if re.match(r"^[\w\-]+=[^=]", d) else d) for d in conda + pip_only)


def test_environment_yml_mirrors_pyproject():
    env, conda = _conda_requirements()
    assert env["channels"][0] == "conda-forge"
    assert conda.pop("python") == "==3.11"
    conda.pop("pip")
    expected = {CONDA_NAMES.get(name, name): version for name, version in _pyproject_requirements().items()}
    assert conda == expected


def test_environment_yml_installs_the_package():
    env, _ = _conda_requirements()
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert any(line.endswith("-e .") for line in pip_section)


def test_constraints_pin_every_requirement_exactly():
    pins = {}
    for line in (ROOT / ".ci" / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    for name, spec in _pyproject_requirements().items():
        assert name.replace("_", "-") in pins, f"{name} is missing from .ci/constraints.txt"
        assert Version(pins[name.replace("_", "-")]) in SpecifierSet(spec), \
            f"{name}: the pin {pins[name.replace('_', '-')]} in .ci/constraints.txt is outside pyproject's {spec!r}"
    # any torch other than the exact CPU release pulls GBs of CUDA wheels; pyproject keeps a range (Colab keeps its own)
    assert pins["torch"] == "2.13.0"
    assert not _pyproject_requirements()["torch"].startswith("=="), "torch in pyproject is a range, not a pin"
