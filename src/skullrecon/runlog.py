"""Send a rule's stdout and stderr to its Snakemake log file."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator

__all__ = ["JobStopped", "to_file"]


class JobStopped(RuntimeError):
    """A job that stops on purpose and says why in one line (what happened, what was kept, what
    to try): :func:`to_file` writes that line to the log and exits non-zero with it, no traceback."""


@contextlib.contextmanager
def to_file(path: str | os.PathLike) -> Iterator[None]:
    """Redirect both streams into ``path`` (appending) for the duration of a rule's script.

    A :class:`JobStopped` ends the job with its one line, in the log and on the job's own stderr
    (which Snakemake and SLURM show), and exit status 1; anything else leaves its traceback in the log."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    stopped = None
    with open(path, "a", buffering=1) as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        try:
            yield
        except JobStopped as err:
            stopped = " ".join(str(err).split())
            print(f"stopped: {stopped}", file=fh)
        except BaseException:
            import traceback

            traceback.print_exc(file=fh)
            raise
        finally:
            sys.stdout.flush()
    if stopped is not None:
        raise SystemExit(stopped)
