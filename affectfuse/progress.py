"""Messages and progress bars: the `affectfuse` logger (stdlib `logging`) and tqdm bars that share the terminal.

Library code logs through ``logging.getLogger(__name__)``; the command line sets the level once (`setup_logging`:
``-q`` warnings only, default info, ``-v`` debug) and routes records through ``tqdm.write`` so a message never tears
a bar. A multi-run job (sweep, run, tune) draws one overall bar, runs done / total with its ETA (`job_bar`), and each
run's epoch bar sits on the line below it (`run_position`).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

LOGGER = "affectfuse"
_job_bars = 0  # overall bars open now: a run's bar goes below them


class _TqdmHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes each record above the open bars (tqdm.write), else like a plain stream handler."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001  (logging must never raise; the stdlib handler reports it)
            self.handleError(record)


def setup_logging(verbosity: int = 0) -> logging.Logger:
    """Configure the `affectfuse` logger for the command line: verbosity -1 (``-q``) warnings and errors only, 0 info,
    1 (``-v``) debug with the emitting module's name. Python warnings are logged too. Idempotent."""
    logger = logging.getLogger(LOGGER)
    level = logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    logger.setLevel(level)
    for handler in [h for h in logger.handlers if isinstance(h, _TqdmHandler)]:
        logger.removeHandler(handler)
    handler = _TqdmHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s" if verbosity > 0 else "%(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    logging.captureWarnings(True)
    warnings_logger = logging.getLogger("py.warnings")
    warnings_logger.handlers = [handler]
    warnings_logger.propagate = False
    return logger


def progress_wanted() -> bool:
    """False under ``-q``: bars are info-level output."""
    return logging.getLogger(LOGGER).getEffectiveLevel() <= logging.INFO


@contextlib.contextmanager
def job_bar(total: int, *, done: int = 0, desc: str, enabled: bool = True, unit: str = "run") -> Iterator[Any]:
    """The overall bar of a job of `total` runs (`done` of them finished before): runs done / total and the ETA from
    the runs timed now (smoothing=0: the mean over this job, not the last run's speed)."""
    global _job_bars
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=done, desc=desc, unit=unit, disable=not enabled, position=0, leave=True,
               dynamic_ncols=True, smoothing=0)
    _job_bars += 1
    try:
        yield bar
    finally:
        _job_bars -= 1
        bar.close()


def run_position() -> int:
    """The line of a run's own bar: below the job bars open now (0 when there is none)."""
    return _job_bars
