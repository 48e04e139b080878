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

from edlib.data.folder_files import FOLDER_FILES


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


def usable_subfolder(
    entry: os.DirEntry, parent: str, rel: str, real_root: str, follow_outside_links: bool, warnings: list[str]
) -> bool:
    """Whether the scan walks into a subfolder; warns about odd names and links that leave the data root."""
    bad = control_character(entry.name)
    if bad:
        warnings.append(f"{printable(rel)}: skipped, the folder name contains {bad}; rename it to use its images")
        return False
    target = outside_link(entry, parent, real_root)
    if target is not None:
        if not follow_outside_links:
            warnings.append(
                f"{rel}: skipped, a symbolic link to {target}, outside the data root (follow_outside_links is off)"
            )
            return False
        warnings.append(
            f"{rel}: a symbolic link to {target}, outside the data root; its images are used "
            "(set follow_outside_links: false to skip links that leave the data root)"
        )
    if entry.name in FOLDER_FILES:
        warnings.append(
            f"{rel}: is a folder, so it is not read as a setting; {entry.name} must be a file "
            "(the folder's images are scanned as a subfolder)"
        )
    return True


def refused_files(folder, real_root: str, follow_outside_links: bool, warnings: list[str]) -> dict[str, str]:
    """The images of a listed folder (`scan._Dir`) the scan must skip, with why: names with a
    control character, and links to files outside the data root unless those are followed
    (then one warning per folder says so)."""
    refused, outside = {}, []
    for name, _ in folder.images:
        bad = control_character(name)
        if bad:
            refused[name] = f"its name contains {bad}; rename the file to use it"
        elif outside_link(folder.files[name], folder.path, real_root) is not None:
            outside.append(name)
            if not follow_outside_links:
                refused[name] = "a symbolic link to a file outside the data root; skipped (follow_outside_links is off)"
    if outside and follow_outside_links:
        first = f"{folder.rel}/{outside[0]}" if folder.rel else outside[0]
        warnings.append(
            f"{folder.rel or '.'}: {len(outside)} image(s) are symbolic links to files outside the data root "
            f"(e.g. {first} -> {os.path.realpath(os.path.join(folder.path, outside[0]))}); used "
            "(set follow_outside_links: false to skip them)"
        )
    return refused
