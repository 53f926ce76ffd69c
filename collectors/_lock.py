"""Per-run write locks: one writer per run (or seed block) of a store, across processes.

A lock is an advisory ``flock`` on ``.<store name>.locks/<chunk key>.lock`` beside the store (inside it, zarr
would warn about a foreign object in the hierarchy). The kernel releases it when the holder
exits, however it exits, so a lock left by a killed process is stale by construction: the next writer acquires
it and takes over (the file still names the dead holder, which is reported). The file is never unlinked, since
unlinking a locked file would let two writers lock two different inodes of the same name. Local file systems
only (``flock`` over NFS is not reliable).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from ensemble_stats.errors import RunLockedError


def lock_dir(store_path: str | os.PathLike) -> Path:
    """Where the run locks of the store at ``store_path`` live."""
    p = Path(store_path)
    return p.parent / f".{p.name}.locks"


class RunLock:
    """An exclusive lock on one writer's unit of a store; a context manager.

    Parameters
    ----------
    path
        The lock file.
    describe
        How the run is named in messages, e.g. ``"gamma=0.75, width=128, seed=3"``.

    Attributes
    ----------
    took_over
        The previous holder's record (pid, host, since) when a stale lock was taken over, else None.
    """

    def __init__(self, path: str | os.PathLike, describe: str):
        self.path = Path(path)
        self.describe = describe
        self.took_over: dict | None = None
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock or raise :class:`RunLockedError` naming the live holder."""
        if self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            who = (
                f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}" if holder else "a writer"
            )
            raise RunLockedError(
                f"run ({self.describe}) is being written by {who} (lock {self.path}); wait for it to finish, or "
                "if that process is gone the lock is released with it and a retry succeeds."
            ) from None
        previous = _read(fd)
        self.took_over = previous or None  # a record left behind means its holder died without releasing
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Clear the holder record and unlock (idempotent)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):  # a collector dropped without close() must not keep its run locked in this process
        try:
            self.release()
        except Exception:  # noqa: BLE001 - interpreter shutdown: the kernel releases the lock anyway
            pass


def _read(fd: int) -> dict:
    try:
        raw = os.pread(fd, 4096, 0)
        return json.loads(raw) if raw.strip() else {}
    except (OSError, ValueError):
        return {"holder": "unreadable lock record"}
