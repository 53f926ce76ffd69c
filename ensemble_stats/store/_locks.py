"""Per-run write locks: one writer per run (or seed block) of a store, across processes.

A lock is an advisory ``flock`` on ``.<store name>.locks/<chunk key>.lock`` beside the store (inside it, zarr
would warn about a foreign object in the hierarchy). The kernel releases it when the holder exits, however it
exits, so a lock left by a killed process is stale by construction: the next writer acquires it and takes over
(the file still names the dead holder, which is reported). The file is never unlinked, since unlinking a locked
file would let two writers lock two different inodes of the same name.

Safety: the lock directory must be a real directory (not a symbolic link) owned by the current user, and lock
files are opened relative to it with ``O_NOFOLLOW``: a link planted there by someone who can write the store's
parent directory is refused, never followed (it could otherwise make a writer truncate any file it can write).
If the holder record cannot be written (disk full), the lock is released before the error is raised.

Local file systems only (``flock`` over NFS is not reliable; see the README).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import stat
import time
from collections.abc import Sequence
from pathlib import Path

from ..errors import RunLockedError, StoreWriteError

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def lock_dir(store_path: str | os.PathLike) -> Path:
    """Where the run locks of the store at ``store_path`` live."""
    p = Path(store_path)
    return p.parent / f".{p.name}.locks"


def lock_name(run_key: Sequence[int]) -> str:
    """File name of the lock of one writer unit: ``(gamma, width, seed block, *extra)`` indices."""
    return "run-" + "-".join(str(int(k)) for k in run_key) + ".lock"


def _open_dir(path: Path) -> int:
    """Open (creating if needed) the lock directory; refuse a symlink or a directory owned by someone else."""
    try:
        path.mkdir(mode=0o755, exist_ok=True)
    except FileExistsError:
        pass  # a file or a link of that name: refused below
    except OSError as e:
        raise StoreWriteError(f"cannot create the lock directory {path} ({type(e).__name__}: {e}).") from None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW | _CLOEXEC)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise StoreWriteError(
                f"the lock directory {path} is a symbolic link or not a directory; refusing to follow it. Remove it "
                "(the toolkit recreates it) and check who else can write the store's parent directory."
            ) from None
        raise StoreWriteError(f"cannot open the lock directory {path} ({type(e).__name__}: {e}).") from None
    st = os.fstat(fd)
    if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        os.close(fd)
        raise StoreWriteError(
            f"the lock directory {path} belongs to uid {st.st_uid}, not to you (uid {os.geteuid()}); refusing to "
            "use locks someone else controls. Remove it, or write the store from its owner's account."
        )
    return fd


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

    def _open(self) -> int:
        dfd = _open_dir(self.path.parent)
        try:
            fd = os.open(self.path.name, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _CLOEXEC, 0o644, dir_fd=dfd)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise StoreWriteError(
                    f"lock file {self.path} is a symbolic link; refusing to follow it (it could point at any file). "
                    "Remove the link and check who else can write the store's parent directory."
                ) from None
            raise StoreWriteError(f"cannot open lock file {self.path} ({type(e).__name__}: {e}).") from None
        finally:
            os.close(dfd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise StoreWriteError(f"lock file {self.path} is not a regular file; remove it.")
        return fd

    def acquire(self) -> RunLock:
        """Take the lock or raise :class:`RunLockedError` naming the live holder."""
        if self._fd is not None:
            return self
        fd = self._open()
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
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        try:
            _write_record(fd, json.dumps(me).encode())
        except OSError as e:  # never keep a lock whose acquisition failed: it would block every retry
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            err = StoreWriteError(
                f"could not take the write lock of run ({self.describe}): writing {self.path} failed "
                f"({type(e).__name__}: {e}); nothing was written. Free disk space (or fix the file system), then "
                "rerun: the lock is not held."
            )
            err.errno = e.errno
            raise err from None
        self.took_over = previous or None  # a record left behind means its holder died without releasing
        self._fd = fd
        return self

    def release(self) -> None:
        """Clear the holder record and unlock (idempotent)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass  # a stale record names a dead holder: harmless, the next taker reports it
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


class NullLock:
    """The run lock of a store on object storage: takes nothing.

    Object stores have no ``flock``, and none is needed for correctness of the sweep: every chunk belongs to
    one run (or one seed block), each cell is trained by one task at a time, and a task that Dask runs twice
    writes the same bytes (training is deterministic given the seeds), so two executions of one cell leave the
    same store. What a lock adds on a local disk — refusing a *second, different* writer of the same run (e.g.
    two jobs given the same seed by mistake) — is not available there: give each job its own seeds.
    """

    took_over = None

    def __init__(self, describe: str):
        self.describe = describe
        self.path = None

    def acquire(self) -> NullLock:
        return self

    def release(self) -> None:
        pass

    def __enter__(self) -> NullLock:
        return self

    def __exit__(self, *exc) -> None:
        pass


def is_free(path: str | os.PathLike) -> RunLock | None:
    """Take the lock at ``path`` if nobody holds it and return it (the caller releases it); else None."""
    lock = RunLock(path, Path(path).name)
    try:
        return lock.acquire()
    except RunLockedError:
        return None


def _write_record(fd: int, data: bytes) -> None:
    os.ftruncate(fd, 0)
    if os.pwrite(fd, data, 0) != len(data):
        raise OSError(errno.ENOSPC, "short write of the lock record")


def _read(fd: int) -> dict:
    try:
        raw = os.pread(fd, 4096, 0)
        return json.loads(raw) if raw.strip() else {}
    except (OSError, ValueError):
        return {"holder": "unreadable lock record"}
