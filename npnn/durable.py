"""Durable writes: a file is either its old content or its complete new content.

``atomic_write(path, write)`` is the one way npnn writes a file that matters (a
checkpoint, a saved module, a plot): the bytes go to a temporary file of a unique
name in the same folder, ``.NAME.tmp-XXXXXXXXXXXXXXXX``, which is flushed and
fsynced, then renamed over ``path``, and the folder is fsynced so that the rename
survives a power cut. An error or a crash mid-write leaves the previous file
untouched (a crash also leaves the temporary file; ``npnn.training.rundir``
removes those of a run's folder, matching ``TEMPORARY_PREFIX``).

The temporary file is created with ``O_CREAT | O_EXCL`` (never an existing file)
and, where the system has it, ``O_NOFOLLOW`` (never through a symbolic link), with
mode 0o666: the kernel applies the process's umask, so the new file gets the
permissions ``open()`` would give it, and nothing reads or changes the umask (a
process-wide setting that another thread may be using).
"""

import contextlib
import os
import secrets
from typing import IO, Any, Callable, Mapping, Union

import numpy as np

#: The temporary files of ``atomic_write`` are named ``.<name><TEMPORARY_PREFIX><hex>``.
TEMPORARY_PREFIX = ".tmp-"

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | \
    getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def atomic_write(path: Union[str, "os.PathLike[str]"], write: Callable[[IO[bytes]], Any]) -> None:
    """Write ``path`` through ``write(file)`` (a binary file object) atomically and
    durably (see the module docstring). Returns None; any error of ``write`` is raised
    after the temporary file is removed."""
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    while True:
        tmp = os.path.join(folder, f".{name}{TEMPORARY_PREFIX}{secrets.token_hex(8)}")
        try:
            fd = os.open(tmp, _FLAGS, 0o666)
            break
        except FileExistsError:         # 2^-64 a try; draw another name
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    fsync_folder(folder)


def fsync_folder(folder: str) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_savez(path: Union[str, "os.PathLike[str]"], arrays: Mapping[str, Any]) -> None:
    """``numpy.savez(path, **arrays)``, atomically and durably (``atomic_write``)."""
    atomic_write(path, lambda f: np.savez(f, **arrays))
