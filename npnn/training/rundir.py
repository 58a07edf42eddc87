"""A run's folder: checked before training, held by one process at a time.

``RunDir.open(path)`` checks that the folder can be used (not a file, not under a
file, writable: it creates it if needed), takes its lock and removes the
temporary files that writes killed midway left behind (only npnn's own, only
while it holds the lock). ``release()`` gives the folder back.

On POSIX the lock is an ``flock`` on the folder itself, held on an open
descriptor of it for the whole run, which the system drops when its process ends
in any way (kill -9 too); ``.lock`` in the folder holds the owner's pid, for the
message a second run gets. Deleting ``.lock`` therefore frees nothing, and a run
removes ``.lock`` only if it is still the file it wrote (same inode). Without
``fcntl`` the file is created exclusively; one left by a crash must then be
deleted by hand, and the message says so.

Symbolic links are never followed: ``.lock`` is opened with ``O_NOFOLLOW``, and a
folder whose ``.lock``, ``checkpoint.npz`` or ``history.png`` is a symbolic link
(or anything but a regular file) is refused, as npnn replaces those files
atomically (the link would be replaced by a file, its target left stale).
"""

import errno
import os
import re
import stat

from .config import ConfigError

try:
    import fcntl
except ImportError:          # Windows
    fcntl = None

LOCK = ".lock"
#: The files a run writes in its folder: each must be a regular file if it exists.
OWN_FILES = (LOCK, "checkpoint.npz", "history.png")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
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

    def __init__(self, path, flag="out"):
        self._fd = self._folder_fd = None
        self.flag = flag
        self.path = check_folder(path, flag)

    @classmethod
    def elsewhere(cls, path):
        """The folder as named, neither checked nor locked: what the other processes of a
        data-parallel run hold (rank 0 alone uses the folder; it may not even be shared)."""
        run = cls.__new__(cls)
        run._fd = run._folder_fd = None
        run.flag, run.path = "out", os.path.abspath(os.fspath(path))
        return run

    @classmethod
    def open(cls, path, flag="out"):
        """Check, create and lock the folder; ConfigError naming ``flag`` (the option that
        gave the folder: 'out', or 'resume') if it cannot be used."""
        run = cls(path, flag)
        try:
            os.makedirs(run.path, exist_ok=True)
        except OSError as e:
            raise ConfigError(flag, f"cannot create {run.path}: {e.strerror or e}") from None
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
            self._fd, self._folder_fd = _lock(path)
        except OSError as e:          # read-only folder, permissions, no space, a link
            if e.errno == errno.ELOOP:
                raise ConfigError(self.flag, f"{path} is a symbolic link; npnn never writes "
                                             "through one: remove it") from None
            raise ConfigError(self.flag, f"cannot write in {self.path}: "
                                         f"{e.strerror or e}") from None
        try:
            for name in OWN_FILES:
                _check_regular(self.file(name), self.flag)
        except BaseException:
            self.release()
            raise
        for name in os.listdir(self.path):
            if STALE.fullmatch(name) and os.path.isfile(self.file(name)):
                try:
                    os.remove(self.file(name))
                except OSError:
                    pass

    def release(self):
        """Give the folder back (removes the lock file); safe to call twice."""
        fd, self._fd = self._fd, None
        folder_fd, self._folder_fd = getattr(self, "_folder_fd", None), None
        if fd is None:
            return
        if fcntl is None:                    # Windows removes no open file
            os.close(fd)
            _remove(self.file(LOCK))
            return
        try:                                 # only the file this run wrote, while the
            if os.path.samestat(os.fstat(fd), os.lstat(self.file(LOCK))):   # folder is locked
                _remove(self.file(LOCK))
        except OSError:
            pass
        os.close(fd)
        if folder_fd is not None:
            os.close(folder_fd)

    def __del__(self):
        self.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _check_regular(path, flag):
    """ConfigError if ``path`` exists and is a symbolic link or no regular file."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise ConfigError(flag, f"{path} is a symbolic link; npnn replaces this file "
                                "atomically and never writes through a link: put the file "
                                "itself there")
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(flag, f"{path} is not a regular file")


def _owner(fd):
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
    except OSError:
        return "unknown"


def _lock(path):
    """Lock the folder of ``path`` and write this pid into ``path``; returns (the file's
    descriptor, the folder's descriptor or None)."""
    if fcntl is None:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644)
        except FileExistsError:
            fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
            owner = _owner(fd)
            os.close(fd)
            raise RunBusyError(
                f"{os.path.dirname(path)} is in use by another npnn run (pid {owner}); if no "
                f"such run is alive, delete {path}") from None
        folder_fd = None
    else:
        folder_fd = os.open(os.path.dirname(path), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
                            | getattr(os, "O_CLOEXEC", 0))
        try:
            fcntl.flock(folder_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(folder_fd)
            owner = "unknown"
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | _NOFOLLOW)
                owner = _owner(fd)
                os.close(fd)
            except OSError:
                pass
            raise RunBusyError(f"{os.path.dirname(path)} is in use by another npnn run "
                               f"(pid {owner}); wait for it to end, or use another "
                               "folder") from None
        except BaseException:
            os.close(folder_fd)
            raise
        try:        # the folder is ours: a .lock of a dead run is replaced, never followed
            if os.path.islink(path):
                raise OSError(errno.ELOOP, "a symbolic link", path)
            _remove(path)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644)
        except BaseException:
            os.close(folder_fd)
            raise
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, f"{os.getpid()}\n".encode("ascii"))
    return fd, folder_fd
