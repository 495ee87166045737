"""Exclusive process locks on files (``flock``): a run directory's ``run.lock``, a
sweep folder's ``sweep.lock``, a dataset folder's ``.collect.lock``. The OS releases a lock when its process dies, however
it dies, so a killed process never leaves a stale lock behind."""

from __future__ import annotations

import fcntl
import os
import platform
from pathlib import Path
from typing import IO

__all__ = ["LockHeld", "hold"]


class LockHeld(Exception):
    """Another process holds the lock; ``holder`` says which (as it wrote itself)."""

    def __init__(self, holder: str):
        super().__init__(holder)
        self.holder = holder


def hold(path: Path, wait: bool = False, on_wait=None) -> IO:
    """Takes the lock at ``path`` for this process and writes who holds it into the
    file; returns the open handle (closing it releases the lock). Raises ``LockHeld``
    when another process holds it, or with ``wait`` blocks until that one lets go,
    first calling ``on_wait(holder)``."""
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        if not wait:
            handle.close()
            raise LockHeld(holder) from None
        if on_wait is not None:
            on_wait(holder)
        fcntl.flock(handle, fcntl.LOCK_EX)
    handle.seek(0)
    handle.truncate()
    handle.write(f"process {os.getpid()} on {platform.node()}\n")
    handle.flush()
    return handle
