"""The error a gather raises for bad input, and the hint for a missing optional install."""

from __future__ import annotations

from edlib.data.types import DataRootError

INSTALL_HINT = "pip install 'edlib[gather]'"


class GatherError(DataRootError):
    """Bad input to a gather (a list without the named column, an empty folder, a target
    outside the data root, ...); the message names the file or column and what is wrong."""


def missing_extra(what: str) -> str:
    return f"{what}, which edlib installs as an option: {INSTALL_HINT}"
