"""Paths the toolkit writes: refusing what it cannot write correctly, temporary siblings, atomic replacement.

Everything written here goes to a hidden temporary sibling named after the writing host and process
(``.NAME.<tag>-<host>-<pid>-<uuid>``) and is renamed into place whole, so a killed writer leaves either the
previous result or the new one, never a partial one that reads as valid. Temporaries of dead processes on this
host are removed by the next writer of the same name.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

from .. import schema
from ..errors import EnsembleStatsError, MissingDependencyError, StoreWriteError, ValidationError, install_hint, shorten

_HOST = socket.gethostname().replace("-", "_")


def is_url(path: str | os.PathLike) -> bool:
    return "://" in os.fspath(path)


def is_remote(path) -> bool:
    """Return a URL of object storage or another fsspec file system (not a local path, not ``file://``)."""
    return is_url(path) and not os.fspath(path).startswith("file://")


def remote_fs(url: str, storage_options: dict | None = None):
    """``(filesystem, path within it)`` of a URL, or a clear error if no fsspec file system can write it."""
    scheme = url.split("://", 1)[0]
    need = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}.get(scheme)
    try:
        import fsspec

        fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    except ImportError as e:
        raise MissingDependencyError(
            f"{url!r}: {scheme}:// URLs need the package {need or 'that provides them'}, which is not installed "
            f"({str(e).splitlines()[0][:200]}). Install it: {install_hint(need) if need else 'see fsspec.'}"
        ) from None
    except ValueError as e:
        raise ValidationError(
            f"{url!r}: no file system for {scheme}:// URLs is available ({type(e).__name__}: {e}). Use a local "
            "path, or an fsspec URL such as s3://bucket/runs.zarr."
        ) from None
    return fs, root.rstrip("/")


def _text(path, what: str) -> str:
    """``path`` as text, or a clear error for what is not a path (a dict, None, a NUL byte)."""
    try:
        raw = os.fspath(path)
    except TypeError:
        raise ValidationError(
            f"{what} {shorten(path)} is a {type(path).__name__}, not a path; pass a str or os.PathLike "
            "(a local directory or an fsspec URL such as s3://bucket/runs.zarr)."
        ) from None
    if isinstance(raw, bytes):
        raw = os.fsdecode(raw)
    if "\x00" in raw:
        raise ValidationError(f"{what} {raw!r} contains a NUL byte, which no file system accepts; fix the path.")
    if not raw.strip():
        raise ValidationError(f"{what} is an empty path; name a directory (e.g. runs.zarr) or a URL.")
    return raw


def _canonical_url(raw: str, what: str) -> str:
    """Return a URL with its trailing slashes removed.

    One with ``.`` / ``..`` / empty segments is refused, because object stores take such keys literally while every
    check here would read them as a file system does.
    """
    scheme, rest = raw.split("://", 1)
    rest = rest.rstrip("/")
    segments = rest.split("/")
    if not rest or any(s in (".", "..") for s in segments) or "" in segments[1:]:
        raise ValidationError(
            f"{what} {raw!r}: a URL with '.', '..' or empty ('//') segments names a different object than the "
            f"path it looks like; write it without them (e.g. {scheme}://bucket/runs.zarr)."
        )
    return f"{scheme}://{rest}"


def canonical_local(raw: str | os.PathLike) -> Path:
    """Return the absolute path with every symbolic link and ``..`` resolved.

    As the kernel will resolve it once the missing folders exist: checks and writes then act on one and the same file
    (``nosuchdir/../runs.zarr`` is ``runs.zarr``).
    """
    return Path(os.path.realpath(raw))


def location(path: str | os.PathLike, what: str = "store") -> str | Path:
    """Where a store or result lives, in one canonical form.

    An absolute local ``Path`` with links and ``..`` resolved (also for ``file://``), or a URL string for fsspec.

    Every check and every write acts on this form, never on the path as typed. ``Path("s3://bucket/x")`` is
    the local directory ``s3:/bucket/x``: a URL is therefore never turned into a path, and a URL whose file
    system is not installed is refused rather than written somewhere else.
    """
    raw = _text(path, what)
    if raw.startswith("file://"):
        return canonical_local(raw[len("file://") :])
    if "://" in raw:
        url = _canonical_url(raw, what)
        remote_fs(url)  # refuses what no installed file system can write
        return url
    if raw.startswith(("s3:/", "gs:/", "gcs:/", "az:/", "abfs:/", "http:/", "https:/", "memory:/")):
        raise ValidationError(
            f"{what} {raw!r} looks like a URL with a missing slash; write 'scheme://...' for a URL, or "
            "'./name' for a local directory."
        )
    return canonical_local(raw)


def same_or_nested(a: str | Path, b: str | Path) -> bool:
    """Whether two canonical locations are the same, or one lies inside the other."""
    if isinstance(a, str) != isinstance(b, str):
        return False
    if isinstance(a, str):
        return a == b or a.startswith(b + "/") or b.startswith(a + "/")
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def local_store_path(path: str | os.PathLike, what: str = "store") -> Path:
    """Return a local path for writing, from a path or a ``file://`` URL; any other URL is refused with the reason."""
    where = location(path, what)
    if isinstance(where, Path):
        return where
    raise ValidationError(
        f"{what} {os.fspath(path)!r}: this output cannot be written to object storage as one piece (a folder of "
        "many objects has no atomic rename there). Write it to a local or shared-filesystem path; for fit and "
        "decompose, a .nc result can go to object storage directly."
    )


def remote_exists(url: str, key: str = "zarr.json") -> bool:
    fs, root = remote_fs(url)
    target = f"{root}/{key}" if key else root
    fs.invalidate_cache()  # listings are cached per process: another process may have written since
    return bool(fs.exists(target))


def has_group(path: str | os.PathLike) -> bool:
    """Whether a Zarr group's ``zarr.json`` is at ``path`` (a local directory, or a URL on object storage).

    The one test of "is something there" used before opening or creating a store; :func:`is_store` also
    checks that the group is an ensemble store.
    """
    loc = location(path)
    return remote_exists(loc) if isinstance(loc, str) else (loc / "zarr.json").is_file()


def is_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` (local or URL) is an ensemble store (a Zarr v3 group with the schema version attribute)."""
    try:
        if is_remote(path):
            fs, root = remote_fs(os.fspath(path))
            fs.invalidate_cache()
            doc = json.loads(fs.cat_file(f"{root}/zarr.json"))
        else:
            doc = json.loads((location(path) / "zarr.json").read_text())
    except (OSError, ValueError, ValidationError):
        return False
    return isinstance(doc, dict) and schema.ATTR_SCHEMA_VERSION in (doc.get("attributes") or {})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temp_sibling(path: Path, tag: str) -> Path:
    """Return a fresh hidden sibling of ``path`` owned by this process."""
    return path.parent / f".{path.name}.{tag}-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def remove_stale_siblings(path: Path, tag: str) -> int:
    """Remove temporaries ``.NAME.<tag>-*`` of ``path`` left by dead processes of this host; returns how many."""
    prefix = f".{path.name}.{tag}-"
    n = 0
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return 0
    for p in entries:
        if not p.name.startswith(prefix):
            continue
        parts = p.name[len(prefix) :].split("-")
        if len(parts) != 3 or parts[0] != _HOST or not parts[1].isdigit() or _alive(int(parts[1])):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        n += 1
    return n


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError, TypeError):
        return False
    at_fdcwd = -100
    rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_path(new: Path, target: Path) -> None:
    """Put ``new`` at ``target`` in one step, removing what was there (file or directory)."""
    if not target.exists() and not target.is_symlink():
        os.rename(new, target)
        return
    if target.is_dir() and not target.is_symlink():
        if new.is_dir() and _exchange(new, target):
            shutil.rmtree(new, ignore_errors=True)  # `new` now holds the old result
            return
        old = temp_sibling(target, "old")
        os.rename(target, old)  # no exchange on this file system: the old result stays in `old` until the rename
        os.rename(new, target)
        shutil.rmtree(old, ignore_errors=True)
        return
    os.replace(new, target)


@contextlib.contextmanager
def atomic_output(target: str | os.PathLike, what: str = "--out", *, single_file: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``target`` whole, on failure it is removed.

    A ``single_file`` output may be a URL: it is written locally, then uploaded as one object (an object store
    replaces an object atomically).
    """
    if single_file and is_remote(target):
        import tempfile

        fs, key = remote_fs(location(target, what))
        with tempfile.TemporaryDirectory(prefix="ensemble-stats-") as d:
            tmp = Path(d) / Path(key).name
            yield tmp
            try:
                fs.put_file(str(tmp), key)
            except OSError as e:
                raise StoreWriteError(f"{what} {target}: upload failed ({type(e).__name__}: {e}).") from e
        return
    target = local_store_path(target, what)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreWriteError(f"{what} {target}: cannot create its folder ({type(e).__name__}: {e}).") from None
    remove_stale_siblings(target, "writing")
    tmp = temp_sibling(target, "writing")
    try:
        yield tmp
        replace_path(tmp, target)
    except OSError as e:
        if isinstance(e, EnsembleStatsError):
            raise
        raise StoreWriteError(
            f"{what} {target}: writing failed ({type(e).__name__}: {e}); any previous result there is unchanged. "
            "Fix the cause (disk space, permissions) and rerun."
        ) from e
    finally:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink(missing_ok=True)
