"""Atomic file writes: a crash mid-write leaves the previous file (or nothing), never a half-written one."""

from __future__ import annotations

import glob
import json
import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

_UMASK = os.umask(0)
os.umask(_UMASK)


_HOST = socket.gethostname().replace(os.sep, "_")


def atomic_write(path: Path | str, write: Callable[[IO[Any]], object], *, mode: str = "wb") -> Path:
    """Write through `write(file_object)` into a temporary file beside `path`, then rename it over `path`.

    The temporary file is named after this host and process, `.<name>.<host>-<pid>.<random>.tmp`, so that a later
    write of the same path can remove what a killed writer (SIGKILL, a lost machine: no clean-up ran) left behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphaned_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_HOST}-{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; results should be as readable as any other file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _remove_orphaned_temporaries(path: Path) -> None:
    """Temporary files of `path` whose writer, a process of this host, no longer exists (a live writer's are kept)."""
    prefix = f".{path.name}.{_HOST}-"
    for tmp in path.parent.glob(glob.escape(prefix) + "*.tmp"):
        pid = tmp.name[len(prefix) :].split(".", 1)[0]
        if pid.isdigit() and not _process_exists(int(pid)):
            tmp.unlink(missing_ok=True)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def write_json(path: Path | str, data: Any) -> Path:
    return atomic_write(path, lambda f: f.write(json.dumps(data, indent=2, default=float) + "\n"), mode="w")
