"""Writing files so that a crash never leaves half of one: write beside the target, then
rename over it (a rename within a folder is atomic on POSIX and Windows).

Two things a plain "temp file + rename" gets wrong for a user's files, done right here:

- A target that is a symlink (a shared `multiply.txt` linked into several folders) would be
  replaced by a regular file. The write goes through the link instead: the temp file is
  made beside the file the link points to, and renamed over that, so the link stays.
- `mkstemp` makes files readable by their owner only (0600). A replaced file keeps its
  mode; a new one gets the mode an editor would give it (0666 less the umask).
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path


def write_text_atomic(target: str | Path, text: str) -> Path:
    """Write `text` (UTF-8, "\\n" line ends) to `target`, creating its folder; readers see
    the old file or the new one, never a partial one."""
    target = Path(target)
    real = _through_link(target)
    fd, tmp = tempfile.mkstemp(dir=real.parent, prefix=f".{real.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _mode_for(real))
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.replace(tmp, real)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def copy_atomic(source: str | Path, target: str | Path) -> Path:
    """Copy the file `source` over `target` as `write_text_atomic` writes (through a link,
    all or nothing); the copy gets `target`'s mode if it exists, else `source`'s."""
    target = Path(target)
    real = _through_link(target)
    mode = os.stat(real).st_mode & 0o7777 if real.exists() else os.stat(source).st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(dir=real.parent, prefix=f".{real.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            shutil.copyfileobj(src, out)
            os.fchmod(out.fileno(), mode)
        os.replace(tmp, real)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def describe_write_error(error: OSError, path: str | Path) -> str:
    """A failed write in plain words, e.g. "no space left on the device holding /runs/a
    (3 MB free)"."""
    where = Path(path)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        what = "no space left" if error.errno == errno.ENOSPC else "disk quota exceeded"
        return f"{what} on the device holding {where}{_free(where)}"
    if error.errno == errno.EFBIG:
        return f"file too large for the file system or a size limit, writing in {where}{_free(where)}"
    return f"cannot write in {where}: {error.strerror or error}"


def _free(path: Path) -> str:
    for candidate in (path, *path.parents):
        try:
            free = shutil.disk_usage(candidate).free
        except OSError:
            continue
        return f" ({free / 2**20:,.0f} MB free)"
    return ""


def _through_link(target: Path) -> Path:
    """The file a write to `target` should replace: the file a symlink points to, else
    `target` itself (its folder created)."""
    if target.is_symlink():
        return Path(os.path.realpath(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def _mode_for(path: Path) -> int:
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (changing it briefly
    would race with other threads creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
