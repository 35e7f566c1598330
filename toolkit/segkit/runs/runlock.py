"""One writer per run directory: an advisory lock held while a run or resume trains.

The lock is ``RUN_DIR/.segkit.lock``, locked with ``flock`` by the training process
(rank 0 under torchrun). The operating system releases it when that process ends,
however it ends (Ctrl-C, SIGKILL, a crash), so a lock left by a dead process is never
in the way: the next run simply takes it. The file records the holder's pid, host and
start time, which a refused second writer quotes. ``flock`` is not available on
Windows; there runs are not locked.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
from pathlib import Path
from typing import Any

from segkit.errors import ConfigError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_NAME", "RunLock"]

LOCK_NAME = ".segkit.lock"


class RunLock:
    """The lock of the run directory ``root``; :meth:`acquire` takes it or raises :class:`ConfigError`."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.path = self.root / LOCK_NAME
        self._fd: int | None = None
        self._created = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, action: str = "train") -> None:
        """Lock the directory (creating it) for this process; a live holder elsewhere is a ConfigError."""
        if fcntl is None or self._fd is not None:
            return
        self._created = not self.root.exists()
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError:
            if os.path.islink(self.path):
                raise ConfigError(f"{self.path} is a symbolic link (to {os.readlink(self.path)}); segkit never writes "
                                  "through a link out of a run directory. Delete the link (a run lock is a plain "
                                  "file segkit makes itself) and run again.") from None
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _describe(_read(fd))
            os.close(fd)
            raise ConfigError(f"run directory {str(self.root)!r} is in use: {holder} is writing to it. One run "
                              f"directory has one writer; wait for that process to finish (or stop it) before you "
                              f"{action} here, or choose another --out.") from None
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Unlock. The file stays (an unlocked file means nothing), unless :meth:`acquire` created the
        directory and nothing else was written to it: then both go, so a run that failed before
        writing anything leaves no trace."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        if self._created:
            try:
                if os.listdir(self.root) == [LOCK_NAME]:
                    self.path.unlink()
                    self.root.rmdir()
            except OSError:
                pass  # another process wrote there meanwhile, or it is gone: leave it

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.release()


def _read(fd: int) -> dict[str, Any]:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}


def _describe(record: dict[str, Any]) -> str:
    if not record.get("pid"):
        return "another process"
    since = f" since {record['started']}" if record.get("started") else ""
    return f"process {record['pid']} on {record.get('host', 'an unknown host')}{since}"
