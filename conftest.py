"""How `make test` shares the suite between two pytest-xdist workers (`pytest -n 2`).

A worker takes a whole file at a time: the cells of a notebook must run in order in one kernel, and a
module-scoped fixture (the nbgrader course and its autograde, a trained model, the built site in build/)
is then built once, by one worker. The exception is SPREAD: modules whose tests share nothing but
tmp_path, sent to whichever worker is free one test at a time (the papermill runs of
tests/test_notebooks.py take up to two minutes each). The long items go first, so that the short ones
even out the end. Without -n (`pytest tests/test_x.py`) none of this applies.

(`--dist loadgroup` with xdist_group marks would say the same, but with pytest 9.2 and pytest-xdist 3.8
the groups are silently ignored: pytest-dev/pytest-xdist#1386.)
"""

import os

import pytest

SPREAD = {"tests/test_notebooks.py"}

# two workers on two cores: each worker's notebook kernels, papermill runs and subprocesses get one
# OpenMP thread, so the two never wait on each other's threads (the unit tests run on one already)
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "load":  # an explicit --dist gets xdist's own scheduler
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByFile(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            path = nodeid.split("::", 1)[0]
            return nodeid if path in SPREAD else path

    config.option.loadscopereorder = False  # keep the order below: long items first
    return ByFile(config, log)


def pytest_collection_modifyitems(config, items):
    if "PYTEST_XDIST_WORKER" in os.environ:
        # notebooks (nbval) and tests marked slow first, in their own order; both workers sort alike
        items.sort(key=lambda item: 0 if item.path.suffix == ".ipynb" else 1 if item.get_closest_marker("slow") else 2)
