"""The record of a gathered folder: an append-only journal in its hidden `.gather/` folder.

Every step appends one JSON line (written and flushed in one go) and the state is the fold
of all lines, so a gather killed at any moment leaves a consistent record: a line cut off
by the crash is dropped when the journal is next opened, and the work it described is done
again. Files are placed only after a `pending` line names them and count as kept only
once a `window` line lists them; files named by a `pending` line that no `window` line
confirmed are the leftovers of an interrupted run and are removed (they are edlib's own
output, never a user's file).

Lines (`t` is the type):

    start    the source and the options that define the draw (a rerun must match them)
    round    a batch of candidates handed to img2dataset (URL lists)
    pending  names about to be written
    window   candidates decided: kept items, reasons, counters, progress
    round_done / round_dropped
    multiply the multiply.txt written and what it was computed from
    run      one run's summary (start, end, images added)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from edlib.gather.report import add_counts


@dataclass
class State:
    identity: dict | None = None
    source: str = ""
    kind: str = ""
    kept: list[dict] = field(default_factory=list)  # name, origin, index, sig, caption source
    reasons: dict[str, int] = field(default_factory=dict)
    looked_at: int = 0
    downloaded: int = 0
    pointer: int = 0  # URL lists: next candidate position not yet in a round
    round: dict | None = None  # id, start, end, shard_size, ingested
    rounds: int = 0
    looked: set[str] = field(default_factory=set)  # folders: relative paths already decided
    pending: list[str] = field(default_factory=list)
    multiply: dict | None = None
    runs: list[dict] = field(default_factory=list)


def _apply(state: State, rec: dict) -> None:
    t = rec.get("t")
    if t == "start":
        state.identity = rec["identity"]
        state.source = rec["source"]
        state.kind = rec["kind"]
    elif t == "round":
        state.round = dict(rec["round"])
        state.rounds = max(state.rounds, state.round["id"])
    elif t == "pending":
        state.pending = list(rec["names"])
    elif t == "window":
        state.kept.extend(rec.get("kept", []))
        state.reasons = add_counts(state.reasons, rec.get("reasons", {}))
        state.looked_at += rec.get("looked_at", 0)
        state.downloaded += rec.get("downloaded", 0)
        state.looked.update(rec.get("looked", []))
        if "ingested" in rec and state.round is not None:
            state.round["ingested"] = rec["ingested"]
        state.pending = []
    elif t == "round_done":
        state.pointer = rec["pointer"]
        state.round = None
    elif t == "round_dropped":
        state.round = None
    elif t == "multiply":
        state.multiply = rec["multiply"]
    elif t == "run":
        state.runs.append(rec["run"])
    elif t == "source":
        state.source = rec["source"]


class Journal:
    """Open (and repair) the journal at `path`; `append` records a step and applies it."""

    def __init__(self, path: Path):
        self.path = path
        self.state = State()
        if not path.exists():
            return
        data = path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            # The last line was cut off by a crash: drop it (its work is redone).
            with open(path, "r+b") as fh:
                fh.truncate(end)
        for line in data[:end].splitlines():
            if line.strip():
                _apply(self.state, json.loads(line))

    @property
    def exists(self) -> bool:
        return self.state.identity is not None

    def append(self, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8")
        with open(self.path, "ab") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        _apply(self.state, record)
