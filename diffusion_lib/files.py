"""Two small helpers every writer and every long loop share: atomic files and lazy progress bars.

Contents: `write_atomic`, `progress_bar`.
"""

import os
import tempfile


def write_atomic(path, write, sync=False):
    """Call write(f) on a binary temporary file beside `path`, then move it into place with os.replace.

    A reader sees the old file or the new one, never half of one; an error (or Ctrl-C) leaves no temporary file.
    sync: flush the data to disk before the move (checkpoints), so a power cut cannot leave an empty file.
    Returns path.
    """
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def progress_bar(iterable=None, enabled=True, desc=None, total=None):
    """A tqdm bar (`tqdm.auto`: a widget in notebooks, text in a terminal) that disappears when done, or the
    iterable itself when not enabled. tqdm is imported only when a bar is shown."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False)
