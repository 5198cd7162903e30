"""The two file mechanisms the run directory is built on, each written once: atomic replacement and flock.

- `write_atomic`: readers see the old content or the new, never a torn file (temp file in the same folder, then
  `os.replace`); `durable=True` also fsyncs the data and the folder so the new content survives a machine crash.
- `flocked`: an advisory lock on a file, shared or exclusive, blocking or not. The kernel releases it when the
  holding process dies, even by SIGKILL, so a crashed launch never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO


def write_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace `path` with `data` atomically (see the module docstring)."""
    write_atomic_with(path, lambda handle: handle.write(data), durable=durable)


def write_atomic_with(path: Path, write: Callable[[BinaryIO], object], *, durable: bool = True) -> None:
    """As `write_atomic`, for writers that stream into a file object (torch.save, DataFrame.to_parquet)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in `directory` itself durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def flocked(path: Path, *, shared: bool = False, blocking: bool = True) -> Iterator[bool]:
    """Hold an flock on `path` (created if missing) for the block; yields whether it was acquired.

    With `blocking=False` the block runs at once and yields False when another process holds a conflicting lock
    (exclusive vs anything, or shared vs exclusive), so callers decide what "taken" means for them.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        flags = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if blocking else fcntl.LOCK_NB)
        try:
            fcntl.flock(handle, flags)
        except BlockingIOError:
            yield False
            return
        yield True


def is_flocked(path: Path) -> bool:
    """Whether some process holds an exclusive lock on `path` right now (a shared probe fails only then)."""
    if not Path(path).exists():
        return False
    with flocked(path, shared=True, blocking=False) as acquired:
        return not acquired
