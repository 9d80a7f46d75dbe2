"""Execute notebooks into an output folder (the committed copies are never touched) and time each.

    python .ci/execute_notebooks.py --out build/notebooks notebooks/[0-9]*.ipynb [-p NAME VALUE ...]

Prints one line per notebook with its wall time; exits non-zero if any notebook fails. Parameters
given with -p are injected by papermill after the cell tagged `parameters`.
"""

import argparse
import ast
import sys
import time
from pathlib import Path

import papermill
from ipc_kernel import IPCKernelManager


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("build/notebooks"))
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    args = parser.parse_args()
    params = {}
    for name, value in args.parameter:
        try:
            params[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            params[name] = value
    args.out.mkdir(parents=True, exist_ok=True)
    failed, total = [], 0.0
    for nb in args.notebooks:
        start = time.perf_counter()
        try:
            papermill.execute_notebook(str(nb), str(args.out / nb.name), parameters=params,
                                       cwd=str(args.out), progress_bar=False, kernel_name="python3",
                                       execution_timeout=1200, kernel_manager_class=IPCKernelManager)
            status = "ok"
        except Exception as err:  # report every notebook, then fail
            status = f"FAILED: {type(err).__name__}: {str(err).strip().splitlines()[-1][:200]}"
            failed.append(nb.name)
        elapsed = time.perf_counter() - start
        total += elapsed
        print(f"{nb.name:<40} {elapsed:7.1f} s  {status}", flush=True)
    print(f"{'total':<40} {total:7.1f} s  ({len(args.notebooks) - len(failed)}/{len(args.notebooks)} ok)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
