"""Re-execute committed notebooks in place, top to bottom, to refresh their stored outputs.

    OMP_NUM_THREADS=2 python .ci/refresh_notebooks.py notebooks/01_forward_process.ipynb ...

The outputs are what nbval compares in CI, so refresh after changing a notebook or the library.
Cells run in the notebook's folder; volatile metadata (per-cell timestamps, widget state) is not recorded.
"""

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from ipc_kernel import IPCKernelManager


def refresh(path):
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=1200, kernel_name="python3", record_timing=False,
                            kernel_manager_class=IPCKernelManager,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    # widget state carries random model ids and a copy of every widget's output; nbstripout drops it too
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, path)


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        start = time.perf_counter()
        refresh(Path(arg))
        print(f"{Path(arg).name:<40} {time.perf_counter() - start:7.1f} s  refreshed", flush=True)
