"""Send a rule's stdout and stderr to its Snakemake log file."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator

__all__ = ["to_file"]


@contextlib.contextmanager
def to_file(path: str | os.PathLike) -> Iterator[None]:
    """Redirect both streams into ``path`` (appending) for the duration of a rule's script."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", buffering=1) as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        try:
            yield
        except BaseException:
            import traceback

            traceback.print_exc(file=fh)
            raise
        finally:
            sys.stdout.flush()
