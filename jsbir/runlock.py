"""One writer per folder: an exclusive ``fcntl`` lock on a file that names its holder (host and PID).

A training takes the lock of its workdir for its whole life; ``evaluate`` takes it while it writes its report, and
``index --add`` takes the lock of the index it rewrites. A second writer is refused in one line naming the holder.
The kernel releases the lock when its holder dies (even by SIGKILL), so a lock left by a dead process is simply
taken over. On several hosts only process 0 locks: the others write nothing of their own to the folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Iterator

LOCK_FILE = ".jsbir.lock"


class FolderLockedError(RuntimeError):
    """Another process holds the folder's lock; the message names it."""


def _holder(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            who = json.load(f)
        return f"process {who['pid']} on host {who['host']} ({who['what']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


class FolderLock:
    """The lock of one folder, held from :meth:`acquire` until :meth:`release` (or the process's end).

    Args:
      path: the lock file (see :func:`lock_path`).
      what: what the holder does, recorded for the refusal message (e.g. "training").
    """

    def __init__(self, path: str, what: str):
        self.path = path
        self.what = what
        self._handle = None

    def acquire(self) -> FolderLock:
        """Takes the lock without waiting.

        Raises:
          FolderLockedError: another process holds it.
          FileNotFoundError: the folder of the lock file does not exist.
        """
        folder = os.path.dirname(self.path)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"folder {folder} does not exist")
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - closed in release()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise FolderLockedError(
                f"{locked_folder(self.path)} is in use by {_holder(self.path)}; wait for it to finish or stop it, "
                "or choose another folder"
            ) from None
        handle.seek(0)
        handle.truncate()
        json.dump({"host": socket.gethostname(), "pid": os.getpid(), "what": self.what}, handle)
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        """Gives the lock back (the file stays: removing it would race with a process about to lock it)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def lock_path(folder: str) -> str:
    """The lock file of ``folder``: inside it for a run folder."""
    return os.path.join(os.path.abspath(folder), LOCK_FILE)


def sibling_lock_path(folder: str) -> str:
    """The lock file of a folder that is replaced as a whole by a rename (an index): beside it."""
    folder = os.path.abspath(folder)
    return os.path.join(os.path.dirname(folder), f".{os.path.basename(folder)}.lock")


def locked_folder(path: str) -> str:
    """The folder a lock file (:func:`lock_path` or :func:`sibling_lock_path`) guards."""
    folder, name = os.path.split(path)
    if name != LOCK_FILE and name.startswith(".") and name.endswith(".lock"):
        return os.path.join(folder, name[1 : -len(".lock")])
    return folder


@contextlib.contextmanager
def locked(path: str, what: str, take: bool = True) -> Iterator[None]:
    """Holds the lock at ``path`` for the block; ``take=False`` (a process other than 0, a reader) takes none."""
    lock = FolderLock(path, what).acquire() if take else None
    try:
        yield
    finally:
        if lock is not None:
            lock.release()
