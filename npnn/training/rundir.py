"""A run's folder: checked before training, held by one process at a time.

``RunDir.open(path)`` checks that the folder can be used (not a file, not under a
file, writable: it creates it if needed), takes its lock and removes the
temporary files that writes killed midway left behind (only npnn's own, only
while it holds the lock). ``release()`` gives the folder back.

The lock is ``.lock`` in the folder, holding the owner's pid. On POSIX it is an
``flock``, which the system drops when its process ends in any way (kill -9
too): a lock file left by a dead run is simply taken over. Without ``fcntl``
the file is created exclusively; one left by a crash must then be deleted by
hand, and the message says so.
"""

import os
import re

from .config import ConfigError

try:
    import fcntl
except ImportError:          # Windows
    fcntl = None

LOCK = ".lock"
#: Temporary files of interrupted atomic writes: npnn.durable.atomic_write's
#: ``.NAME.tmp-`` and 16 hex digits (8 characters before it wrote them itself) of the
#: checkpoint and the plot, and npnn 0.1.0's ``.tmp-XXXXXXXX.npz`` and ``.history.png.tmp``.
STALE = re.compile(r"\.(checkpoint\.npz|history\.png)\.tmp-([0-9a-f]{16}|[a-z0-9_]{8})"
                   r"|\.tmp-[a-z0-9_]{8}\.npz"
                   r"|\.history\.png\.tmp")


class RunBusyError(RuntimeError):
    """Another process holds the run folder."""


def check_folder(path, flag="out"):
    """An absolute path where a folder exists or can be created; ConfigError naming
    ``flag`` if ``path`` is a file or lies under one. Creates nothing."""
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(flag, f"{path} is a file, not a folder")
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ConfigError(flag, f"cannot create {path}: {parent} is a file")
    return path


class RunDir:
    """The folder of a run, locked by this process (see the module docstring)."""

    def __init__(self, path):
        self._fd = None
        self.path = check_folder(path)

    @classmethod
    def elsewhere(cls, path):
        """The folder as named, neither checked nor locked: what the other processes of a
        data-parallel run hold (rank 0 alone uses the folder; it may not even be shared)."""
        run = cls.__new__(cls)
        run._fd, run.path = None, os.path.abspath(os.fspath(path))
        return run

    @classmethod
    def open(cls, path):
        run = cls(path)
        try:
            os.makedirs(run.path, exist_ok=True)
        except OSError as e:
            raise ConfigError("out", f"cannot create {run.path}: {e.strerror or e}") from None
        run.acquire()
        return run

    def file(self, name):
        return os.path.join(self.path, name)

    @property
    def held(self):
        return self._fd is not None

    def acquire(self):
        """Take the lock (RunBusyError if another process holds it) and remove stale
        temporary files."""
        if self._fd is not None:
            return
        path = self.file(LOCK)
        try:
            self._fd = _lock(path)
        except OSError as e:          # read-only folder, permissions, no space
            raise ConfigError("out", f"cannot write in {self.path}: {e.strerror or e}") from None
        for name in os.listdir(self.path):
            if STALE.fullmatch(name) and os.path.isfile(self.file(name)):
                try:
                    os.remove(self.file(name))
                except OSError:
                    pass

    def release(self):
        """Give the folder back (removes the lock file); safe to call twice."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if fcntl is None:                    # Windows removes no open file
            os.close(fd)
        try:
            os.remove(self.file(LOCK))       # flock: while still locked, so that nobody
        except OSError:                      # locks the inode we remove
            pass
        if fcntl is not None:
            os.close(fd)

    def __del__(self):
        self.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def _owner(fd):
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
    except OSError:
        return "unknown"


def _lock(path):
    """Open and lock ``path``; returns the file descriptor, holding this pid."""
    if fcntl is None:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            fd = os.open(path, os.O_RDONLY)
            owner = _owner(fd)
            os.close(fd)
            raise RunBusyError(
                f"{os.path.dirname(path)} is in use by another npnn run (pid {owner}); if no "
                f"such run is alive, delete {path}") from None
    else:
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _owner(fd)
                os.close(fd)
                raise RunBusyError(f"{os.path.dirname(path)} is in use by another npnn run "
                                   f"(pid {owner}); wait for it to end, or use another "
                                   "folder") from None
            try:   # its holder may have removed the file between our open and our lock
                if os.path.samestat(os.fstat(fd), os.stat(path)):
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, f"{os.getpid()}\n".encode("ascii"))
    return fd
