"""One training at a time per run folder.

Two trainings writing one run folder interleave their metrics, overwrite each other's
config.yaml and checkpoints, and one may crash on the other's temporary checkpoint folder.
So a run holds an OS file lock (`flock`) on `RUN_DIR/run.lock` while it trains; a second
`train` on the folder fails at once, naming the holder's pid and start time (written into
the lock file). The operating system releases the lock when its process ends, however it
ends (a crash, kill -9, a notebook kernel restart), so a stale lock file never blocks: only
a live holder does. flock locks belong to an open file, so a second run in the same process
(a notebook starting a run twice) is refused too.

Under a multi-process launch only the main process (RANK 0) takes the lock. Without
`fcntl` (Windows) runs are not locked.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_FILE = "run.lock"


class RunLockedError(ValueError):
    """The run folder is in use by another training; the message names it."""


class RunDirError(ValueError):
    """The run folder cannot be one (e.g. it is a file)."""


def check_run_dir(path: str | Path) -> Path:
    """`path` as a run folder, created if missing; `RunDirError` if it cannot be one."""
    path = Path(path)
    for candidate in (path, *path.parents):
        if candidate.exists() and not candidate.is_dir():
            raise RunDirError(
                f"run_dir {path}: {candidate} is a file, not a folder; set run_dir to a folder "
                "(it is created if missing)"
            )
        if candidate.exists():
            break
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def run_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold the lock of `run_dir` for the block (see the module docstring)."""
    path = check_run_dir(run_dir)
    if fcntl is None or os.environ.get("RANK", "0") != "0":
        yield
        return
    lock_file = path / LOCK_FILE
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLockedError(
                f"run folder {path} is in use by another training ({_holder(lock_file)}). Wait for it to end, "
                f"stop it (create {path / 'control' / 'stop'}), or choose another run_dir"
            ) from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode("utf-8"), 0)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _holder(lock_file: Path) -> str:
    """"pid 123 on host, started 2024-05-01 10:00:00 UTC", from the lock file's content."""
    try:
        holder = json.loads(lock_file.read_text(encoding="utf-8"))
        return f"pid {holder['pid']} on {holder['host']}, started {holder['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "its pid is not recorded yet"
