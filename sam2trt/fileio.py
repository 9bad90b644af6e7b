"""Safe file output: exclusive temporaries, atomic publication, staged folders, markers, sha256.

Every output sam2trt writes goes through here:

- :func:`create_temp` makes a hidden temporary file next to the target with an
  unpredictable name, created exclusively (``mkstemp``: ``O_CREAT | O_EXCL``,
  which never follows a symlink planted at that name) and mode 0600 while it
  is being written.
- :func:`publish` gives it the permissions an ordinary file would get (0666
  minus the umask) and ``os.replace``-s it onto the target. ``os.replace``
  replaces a symlink at the target itself, never the file it points to.
- :func:`stage_dir` / :func:`swap_dir` do the same for a folder of files: the
  new folder is filled privately and swapped in whole, so the target never
  holds files from two runs.
- :func:`atomic_output` is the one atomic-write helper built on those two
  (:func:`atomic_write` for bytes or text in memory).
- :func:`write_marker` creates the ``.NAME.incomplete`` marker files the same
  way (``O_NOFOLLOW``: a planted symlink is removed, never written through).

The temporary names keep the target's extension (``.o.partial-k2x9a1.mp4``),
so libraries that pick a format from it (PyAV, PIL) still do.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Iterator

from sam2trt.errors import RuntimeFailure

PARTIAL = ".partial-"
"""Part of every temporary name (``.<stem>.partial-<random><suffix>``)."""

_umask: int | None = None


def umask() -> int:
    """The process umask (read once; reading it means setting it, so it is cached)."""
    global _umask
    if _umask is None:
        _umask = os.umask(0o022)
        os.umask(_umask)
    return _umask


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn an ``OSError`` raised while writing ``path`` into a one-line :class:`RuntimeFailure`.

    ``ENOSPC``/``EDQUOT`` become "disk full while writing PATH"; any other
    ``OSError`` "cannot write PATH (...)".
    """
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            raise RuntimeFailure(f"disk full while writing {path}: free space or choose another output location") from exc
        raise RuntimeFailure(f"cannot write {path} ({exc}): check the output location") from exc


def create_temp(target: str | os.PathLike) -> tuple[int, Path]:
    """Create ``<dir>/.<stem>.partial-<random><suffix>`` exclusively, next to ``target``.

    The parent folder is created if needed. Returns ``(fd, path)``: an open
    file descriptor (the caller owns it) and the temporary's path. Raises
    ``OSError`` when the folder cannot be created or written.
    """
    t = Path(target)
    t.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{t.stem}{PARTIAL}", suffix=t.suffix, dir=t.parent)
    return fd, Path(name)


def publish(tmp: str | os.PathLike, target: str | os.PathLike, *, folder: bool = False) -> None:
    """Give ``tmp`` ordinary permissions (0666, 0777 for a folder, minus the umask) and rename it onto ``target``.

    A file replaces ``target`` atomically (``os.replace``). For a folder use
    :func:`swap_dir`. Raises ``OSError``.
    """
    os.chmod(tmp, (0o777 if folder else 0o666) & ~umask())
    os.replace(tmp, target)


def remove(path: str | os.PathLike | None) -> None:
    """Delete a file or folder tree (never following a symlink); a missing path is fine."""
    if path is None:
        return
    p = Path(path)
    with contextlib.suppress(FileNotFoundError):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink()


@contextlib.contextmanager
def atomic_output(target: str | os.PathLike) -> Iterator[Path]:
    """The one atomic-write helper: yields an exclusive temporary path next to ``target``.

    Write the file there (by path: ``onnx.save``, ``open(tmp, "wb")``, ...); when the
    block ends without an exception it is :func:`publish`-ed onto ``target``,
    otherwise deleted. ``target`` never holds a partial file. ``OSError`` from
    creating or publishing becomes :class:`RuntimeFailure` (disk full, not writable).
    """
    tmp = None
    try:
        with writing(target):
            fd, tmp = create_temp(target)
            os.close(fd)
        yield tmp
        with writing(target):
            publish(tmp, target)
    finally:
        if tmp is not None and os.path.lexists(tmp):
            remove(tmp)


def atomic_write(target: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` (bytes, or text as UTF-8) to ``target`` through :func:`atomic_output`.

    Raises :class:`RuntimeFailure` (disk full, not writable).
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_output(target) as tmp, writing(target):
        with open(tmp, "wb") as f:
            f.write(raw)


def stage_dir(target: str | os.PathLike) -> Path:
    """Create a private (0700) empty folder ``<dir>/.<name>.partial-<random>`` next to ``target``.

    Fill it, then :func:`swap_dir` it onto ``target``. Raises ``OSError``.
    """
    t = Path(str(target).rstrip("/\\") or target)
    t.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{t.name}{PARTIAL}", dir=t.parent))


def swap_dir(staged: str | os.PathLike, target: str | os.PathLike) -> None:
    """Put the folder ``staged`` at ``target``; an existing ``target`` is moved aside, then deleted.

    Two renames: ``target`` -> a hidden sibling, ``staged`` -> ``target``. If
    the second fails, the first is undone. Raises ``OSError``.
    """
    t = Path(str(target).rstrip("/\\") or target)
    os.chmod(staged, 0o777 & ~umask())
    old = None
    if os.path.lexists(t):
        old = Path(tempfile.mkdtemp(prefix=f".{t.name}.old-", dir=t.parent))
        os.rmdir(old)  # only the unpredictable name is wanted
        os.rename(t, old)
    try:
        os.rename(staged, t)
    except BaseException:
        if old is not None:
            os.rename(old, t)
        raise
    remove(old)


def write_marker(path: str | os.PathLike) -> None:
    """Create the empty marker file ``path`` without following a symlink there.

    An existing regular file is kept; a symlink (or anything else) at ``path``
    is removed first. Errors are ignored: a marker is advisory.
    """
    p = Path(path)
    with contextlib.suppress(OSError):
        st = os.lstat(p)
        if stat.S_ISREG(st.st_mode):
            return
        remove(p)
    with contextlib.suppress(OSError):
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666 & ~umask())
        os.close(fd)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB chunks). Raises ``OSError``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
