"""Writing files so that a crash never leaves half of one: write beside the target, then
rename over it (a rename within a folder is atomic on POSIX and Windows)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_text_atomic(target: str | Path, text: str) -> Path:
    """Write `text` (UTF-8, "\\n" line ends) to `target`, creating its folder; readers see
    the old file or the new one, never a partial one."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
