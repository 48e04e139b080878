"""The error a gather raises for bad input, and the hint for a missing optional install."""

from __future__ import annotations

import sys

from edlib.data.types import DataRootError

# What to install where edlib came from git or a wheel: img2dataset brings pyarrow; on
# Python 3.13+ it needs the stdlib's removed imghdr back (standard-imghdr). The same as
# edlib's `gather` extra.
INSTALL_HINT = 'pip install "img2dataset>=1.46,<2"' + (" standard-imghdr" if sys.version_info >= (3, 13) else "")


class GatherError(DataRootError):
    """Bad input to a gather (a list without the named column, an empty folder, a target
    outside the data root, ...); the message names the file or column and what is wrong."""


def missing_extra(what: str) -> str:
    return f"{what}, an optional install (edlib's gather extra): {INSTALL_HINT}"
