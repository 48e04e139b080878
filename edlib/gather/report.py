"""What a gather did: counts per reason, written to `gather.json` and printed a line each.

The reasons are fixed words so that reports from different runs and sources add up and a
user can search for them. Counts are cumulative over every run into the same folder.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edlib.files import write_text_atomic

REPORT_NAME = "gather.json"

# Before downloading, from the list's own columns.
NO_URL = "no URL"
NO_CAPTION = "no caption"
LISTED_TWICE = "URL listed twice"
LIST_TOO_SMALL = "too small (size in the list)"
LIST_ASPECT = "aspect ratio (size in the list)"
# Downloading.
HTTP_ERROR = "HTTP error"  # followed by the status, e.g. "HTTP error 404"
TIMEOUT = "timeout"
UNREACHABLE = "unreachable host"
OPTED_OUT = "opted out (X-Robots-Tag)"
DOWNLOAD_ERROR = "other download error"
# Checking what came in (downloaded or drawn from a folder).
NOT_AN_IMAGE = "not an image"
UNREADABLE = "unreadable image"
TOO_SMALL = "too small"
ASPECT = "aspect ratio"
DUPLICATE = "duplicate"
DUPLICATE_OF_TRAINING = "duplicate of a training image"
BAD_CAPTION = "caption file unreadable"


def filter_reason(condition: str) -> str:
    """The reason for rows a `--where` condition removed, e.g. "filtered: aesthetic>=5"."""
    return f"filtered: {condition}"


@dataclass
class GatherReport:
    """The state of a gathered folder after a run."""

    data_root: str
    folder: str  # relative to the data root
    source: str
    kind: str  # "urls" or "folder"
    requested: int
    kept: int
    added: int  # kept by this run
    candidates: int  # rows of the list / images in the folder that passed the list filters
    looked_at: int  # candidates downloaded or drawn so far
    downloaded: int  # URL lists: files that arrived (before the checks)
    reasons: dict[str, int] = field(default_factory=dict)  # cumulative, reason -> count
    exhausted: bool = False  # every candidate was looked at before `requested` was reached
    multiply: str | None = None  # the folder's multiply.txt after the run
    per_epoch: float | None = None  # expected images per epoch from it
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def format_report(report: GatherReport) -> str:
    """The report as lines a user reads: what was kept, then one line per reason."""
    where = f"{report.folder}/ in {report.data_root}"
    lines = [f"{where}: {report.kept} of {report.requested} images (+{report.added} this run)"]
    if report.kind == "urls":
        lines.append(f"  downloaded {report.downloaded} of {report.looked_at} URLs tried ({report.candidates} in the list after its filters)")
    else:
        lines.append(f"  looked at {report.looked_at} of {report.candidates} images in the source folder")
    for reason, n in sorted(report.reasons.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  {reason}: {n}")
    if report.kept > report.requested:
        lines.append(f"  the folder already holds more than {report.requested} images; nothing is removed")
    if report.exhausted and report.kept < report.requested:
        lines.append(f"  the source has no more candidates: {report.kept} kept, {report.requested} asked for")
    if report.multiply is not None:
        per = f" (about {report.per_epoch:.4g} images per epoch)" if report.per_epoch is not None else ""
        lines.append(f"  multiply.txt = {report.multiply}{per}")
    lines += [f"  note: {n}" for n in report.notes]
    return "\n".join(lines)


def write_report(folder: Path, report: GatherReport, runs: list[dict]) -> Path:
    """Write `gather.json` into the gathered folder (atomically)."""
    doc = {**report.to_json(), "runs": runs}
    return write_text_atomic(folder / REPORT_NAME, json.dumps(doc, indent=2) + "\n")


def add_counts(total: dict[str, int], new: Counter | dict[str, int]) -> dict[str, int]:
    out = Counter(total)
    out.update(new)
    return {k: v for k, v in out.items() if v}
