"""Output folders: one writer each, and a finished run is never overwritten or lost.

`claim(folder)` holds an OS file lock (`filelock`, flock on POSIX: released by the kernel when the holder dies, so a
killed run leaves no stale lock) and records who holds it in `.owner.json`; a second writer is refused with one line
naming the holder. `prepare_run(folder)` refuses a finished run (its `result.json` exists) unless asked to overwrite,
and moves the files of an earlier, unfinished or replaced attempt into `attempt-N/` instead of truncating them.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from .io import WriteError, write_error, write_json

LOCK_FILE = ".lock"
OWNER_FILE = ".owner.json"
RUN_FILES = ("best.pt", "log.jsonl", "test_predictions.csv", "result.json")
"""What one training run writes into its folder; `result.json` comes last and marks the run finished."""


class FolderBusyError(ValueError):
    """Another process is writing into the output folder."""


class FinishedRunError(ValueError):
    """The output folder holds a finished run and overwriting was not asked for."""


def _holder(folder: Path) -> str:
    try:
        owner = json.loads((folder / OWNER_FILE).read_text())
        return (f"pid {owner['pid']} on {owner['host']} ({owner['command']!r}, since "
                f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(owner['started']))})")
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def claim(folder: Path | str) -> Iterator[Path]:
    """Hold `folder` for this process while the block runs; refuse (FolderBusyError) if another process holds it.

    Re-entrant within a process (nested claims of the same folder are free), so library calls may claim the folders
    they write whoever called them.
    """
    folder = Path(folder)
    key = str(folder.resolve())
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield folder
        finally:
            _HELD[key] -= 1
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise write_error(folder, error) from None
    lock = FileLock(folder / LOCK_FILE, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise FolderBusyError(
            f"output folder {folder} is being written by {_holder(folder)}; wait for it to finish or choose another "
            "output folder"
        ) from None
    except OSError as error:
        raise write_error(folder / LOCK_FILE, error) from None
    _HELD[key] = 1
    try:
        write_json(folder / OWNER_FILE, {"pid": os.getpid(), "host": socket.gethostname(),
                                         "command": " ".join(sys.argv) or sys.executable, "started": time.time()})
        yield folder
    finally:
        del _HELD[key]
        with contextlib.suppress(OSError):
            (folder / OWNER_FILE).unlink()
        lock.release()


_HELD: dict[str, int] = {}


def prepare_run(folder: Path | str, *, overwrite: bool = False) -> Path:
    """Make `folder` ready for a new training run without losing an earlier one.

    A finished run (result.json) is refused unless `overwrite`; the files of an earlier attempt (finished and
    overwritten, or killed before it finished) move into the next free `attempt-N/`.
    """
    folder = Path(folder)
    if (folder / "result.json").exists() and not overwrite:
        raise FinishedRunError(
            f"{folder} holds a finished run (result.json); use --overwrite (overwrite=True) to train it again — the "
            "old files are then kept in attempt-N/ — or choose another output folder"
        )
    earlier = [folder / name for name in RUN_FILES if (folder / name).exists()]
    if earlier:
        n = 1
        while (folder / f"attempt-{n}").exists():
            n += 1
        keep = folder / f"attempt-{n}"
        try:
            keep.mkdir()
            for path in earlier:
                path.rename(keep / path.name)
        except OSError as error:
            raise write_error(keep, error) from None
    return folder


__all__ = ["FinishedRunError", "FolderBusyError", "WriteError", "claim", "prepare_run"]
