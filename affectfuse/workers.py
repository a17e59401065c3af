"""Worker processes that never outlive their parent: each watches it and exits when it is gone (SIGKILL, a crash),
and a parent stopped by Ctrl-C or an error terminates its pool's workers instead of leaving them running."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

POLL_SECONDS = 0.5


def watch_parent(parent_pid: int) -> None:
    """Pool initializer: a daemon thread ends this process as soon as `parent_pid` is no longer its parent.

    Polling the parent id works for every start method and platform; Linux's PR_SET_PDEATHSIG would fire when the
    parent's *thread* that started the worker exits, which for a pool is not the parent's death.
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(POLL_SECONDS)
        os._exit(1)  # the parent is gone: nobody will collect what this worker computes

    threading.Thread(target=watch, name="affectfuse-parent-watch", daemon=True).start()


def terminate(pool: ProcessPoolExecutor) -> None:
    """Stop `pool` now: pending work cancelled and running workers terminated (shutdown alone waits for them)."""
    pool.shutdown(wait=False, cancel_futures=True)
    if hasattr(pool, "terminate_workers"):  # Python >= 3.14
        pool.terminate_workers()
        return
    for process in list(getattr(pool, "_processes", {}).values()):  # the executor keeps no other handle on them
        with contextlib.suppress(OSError, AttributeError):
            process.terminate()


@contextlib.contextmanager
def stopped_on_exit(pool: ProcessPoolExecutor) -> Iterator[ProcessPoolExecutor]:
    """Terminate `pool`'s workers when the block ends by an exception (KeyboardInterrupt included)."""
    try:
        yield pool
    except BaseException:
        terminate(pool)
        raise
