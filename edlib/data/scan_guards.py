"""Names and links a scan must not take at face value.

- A file name with a control character (a newline, a tab) would split or shift a line of
  the schedule files (`batch<TAB>size<TAB>path`, one sample a line) and of logs; such
  images are skipped with a warning naming them, escaped as Python writes strings.
- A symlink may lead outside the data root (a link to /etc walked all of /etc): the scan
  says so, and can refuse such links; quarantine never moves a file outside the root.
"""

from __future__ import annotations

import os
import unicodedata


def control_character(name: str) -> str | None:
    """The first control character in `name`, in words ("a newline (\\n)"), or None."""
    for ch in name:
        if unicodedata.category(ch) == "Cc":
            label = {"\n": "a newline", "\t": "a tab", "\r": "a carriage return"}.get(ch, "a control character")
            return f"{label} ({ch!r})"
    return None


def printable(path: str) -> str:
    """`path` for a one-line message: as is, or escaped (`'a\\nb.png'`) if it holds a control
    character."""
    return repr(path) if control_character(path) else path


def is_inside(path: str, real_root: str) -> bool:
    """Whether the real (resolved) `path` is `real_root` or below it."""
    return path == real_root or path.startswith(real_root.rstrip(os.sep) + os.sep)


def outside_link(entry: os.DirEntry, folder: str, real_root: str) -> str | None:
    """Where the symlink `entry` of `folder` leads if that is outside `real_root` (a resolved
    path), else None. Costs system calls only for entries that are symlinks. (`entry.path`
    is only the name when the folder was listed through a file descriptor.)"""
    try:
        if not entry.is_symlink():
            return None
    except OSError:
        return None
    target = os.path.realpath(os.path.join(folder, entry.name))
    return None if is_inside(target, real_root) else target
