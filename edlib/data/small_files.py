"""Reading the small files users put in a data root (captions, setting files, YAML) without
trusting them, and quoting their content in messages.

A data root is whatever the user copied together, so a "caption" may be a 20 MB log, a
`multiply.txt` may be a named pipe (opening it for reading would wait forever for a writer)
or a symlink to /dev/urandom (reading it would never end). `read_small` opens without
blocking, refuses anything that is not a regular file, and refuses files over a size limit
before reading them. `quote` shows at most a short prefix of a bad value, so an error about
a huge value is one line, not the value twice.
"""

from __future__ import annotations

import os
import reprlib
import stat

from edlib.data.types import DataRootError

# One number or word (multiply.txt, trigger.txt, ...): anything bigger is not a setting.
SETTING_FILE_LIMIT = 64 * 1024
# Captions and YAML files: EveryDream2 sidecars with many tags stay far below this.
TEXT_FILE_LIMIT = 1024 * 1024

_QUOTE = reprlib.Repr()
_QUOTE.maxstring = 60
_QUOTE.maxother = 60
_QUOTE.maxlist = _QUOTE.maxtuple = _QUOTE.maxdict = _QUOTE.maxset = 6
_QUOTE.maxlevel = 3


class FileRefused(DataRootError):
    """A user file that is not read at all (not a regular file, or too big)."""


def quote(value: object) -> str:
    """repr() of `value`, cut to about 60 characters and 3 levels of nesting, computed
    without building the full repr (a YAML alias bomb's repr would take gigabytes)."""
    return _QUOTE.repr(value)


def file_kind(mode: int) -> str | None:
    """What a non-regular file is, in plain words ("a named pipe (FIFO)"), or None for a
    regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a regular file"


def read_small(path: str | os.PathLike, source: str, limit: int = TEXT_FILE_LIMIT) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; `source` names it in errors.

    Raises `FileRefused` (a folder, pipe, device or socket; or too big) or `OSError` (cannot
    open or read). O_NONBLOCK makes opening a named pipe return at once instead of waiting
    for a writer; the checks then use the opened file, so a swap after them is harmless."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        kind = file_kind(st.st_mode)
        if kind is not None:
            raise FileRefused(f"{source}: is {kind}, not a file; skipped without reading it")
        if st.st_size > limit:
            raise FileRefused(
                f"{source}: is {_size(st.st_size)}, more than the {_size(limit)} such a file can hold; not read"
            )
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, limit + 1 - total)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:  # it grew after the fstat
                raise FileRefused(f"{source}: is more than the {_size(limit)} such a file can hold; not read")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    if n < 1024 * 1024:
        return f"{n / 1024:.0f} KB"
    return f"{n / 1024 / 1024:.1f} MB"
