"""Safe file writes: atomic (a crash leaves the previous file or nothing), never through a special file, and a full
disk or a read-only folder ends in one line naming the path."""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import socket
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

_UMASK = os.umask(0)
os.umask(_UMASK)


_HOST = socket.gethostname().replace(os.sep, "_")


class WriteError(OSError):
    """A file could not be written (full disk, read-only or forbidden folder, a special file in the way); the message
    names the path and nothing was half-written."""


_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


def write_error(path: Path | str, error: OSError) -> WriteError:
    reason = _REASONS.get(error.errno or 0, error.strerror or type(error).__name__)
    return _write_error(error.errno, f"cannot write {path}: {reason}")


def _write_error(code: int | None, message: str) -> WriteError:
    error = WriteError(message)  # one argument: str() is the message alone, without an "[Errno N]" prefix
    error.errno = code
    return error


def readable_file(path: Path | str, what: str) -> Path:
    """`path` as an existing regular file to read, or one line saying what it is instead: reading a FIFO or a
    device would block or never end, and a folder is a different mistake than a missing file."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder, expected a file")
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    if not path.is_file():
        raise ValueError(f"{what} {path} is a special file (FIFO, device or socket), expected a regular file")
    return path


def ensure_folder(path: Path | str) -> Path:
    """`path` as an existing folder (created with its parents), or a WriteError naming it."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise write_error(path, error) from None
    return Path(path)


def writable_target(path: Path | str) -> Path:
    """The regular file a write of `path` should replace: `path` itself, or what a symlink there points to.

    A FIFO, device, socket or folder at the path (or at the end of the symlink) is refused: replacing it would destroy
    something that is not a result file, and writing into it could block or reach a device.
    """
    path = Path(path)
    target = path.resolve() if path.is_symlink() else path
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        return target
    if stat.S_ISDIR(mode):
        raise _write_error(errno.EISDIR, f"cannot write {path}: it is a folder, expected a file path")
    if not stat.S_ISREG(mode):
        raise _write_error(errno.EINVAL, f"cannot write {path}: it is a special file (FIFO, device or socket), not a "
                                         "regular file; refusing to replace it")
    return target


def atomic_write(path: Path | str, write: Callable[[IO[Any]], object], *, mode: str = "wb") -> Path:
    """Write through `write(file_object)` into a temporary file beside `path`, then rename it over `path`.

    A symlink at `path` is followed (the file it points to is replaced, the link kept); a FIFO, device or folder there
    is refused. The temporary file is named after this host and process, `.<name>.<host>-<pid>.<random>.tmp`, so that
    a later write of the same path can remove what a killed writer (SIGKILL, a lost machine) left behind. A full disk,
    a read-only or forbidden folder raise `WriteError` naming the path, with the previous file untouched.
    """
    path = Path(path)
    target = writable_target(path)
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_orphaned_temporaries(target)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.{_HOST}-{os.getpid()}.", suffix=".tmp")
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; results should be as readable as any other file
        os.replace(tmp, target)
    except OSError as error:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(error, WriteError):
            raise
        raise write_error(path, error) from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    return path


def append_line(path: Path | str, line: str) -> None:
    """Append one line to a log; a failed write (full disk) is cut back so that the log keeps whole lines only."""
    target = writable_target(path)
    data = (line.rstrip("\n") + "\n").encode()
    try:
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as error:
        raise write_error(path, error) from None
    try:
        size = os.fstat(fd).st_size
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, "short write")
        except OSError as error:
            os.ftruncate(fd, size)
            raise write_error(path, error) from None
    finally:
        os.close(fd)


def sha256_file(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
