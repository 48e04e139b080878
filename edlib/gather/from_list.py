"""Gathering from a URL list: download the candidates in rounds with img2dataset and keep
what passes the checks, in draw order, until the set holds the number asked for.

A round is the next slice of candidates, sized from the share of downloads kept so far
(half, until 20 have been tried). Its list, img2dataset's output and log live in
`.gather/round-NNNN*` until every candidate of the round has been decided: a gather
stopped midway resumes the download shard by shard, and one that reached its count with
candidates to spare uses them, without downloading them again, when asked for more.
"""

from __future__ import annotations

import math
import shutil
from collections import Counter

from edlib.gather import report as R
from edlib.gather.checks import Checked, check_download
from edlib.gather.decide import Decider, checked_windows, progress_bar, workers
from edlib.gather.errors import GatherError
from edlib.gather.img2dataset_runner import (
    DownloadSettings,
    Fetched,
    complete,
    read_round,
    run_round,
    shard_count,
    write_round_list,
)
from edlib.gather.journal import Journal
from edlib.gather.signature import to_json
from edlib.gather.target import Target, place_bytes
from edlib.gather.url_list import UrlList

_NETWORK_REASONS = {R.UNREACHABLE, R.TIMEOUT}


def round_size(needed: int, kept: int, tried: int, remaining: int) -> int:
    """Candidates to download for `needed` more images: from the share kept so far (half
    until 20 were tried), with a fifth more as a margin."""
    rate = (kept + 1) / (tried + 2) if tried >= 20 else 0.5
    rate = min(1.0, max(0.05, rate))
    return int(min(remaining, math.ceil(needed / rate * 1.2) + 4))


def download_from_list(
    urls: UrlList,
    target: Target,
    journal: Journal,
    decider: Decider,
    *,
    count: int,
    min_side: int,
    max_aspect: float,
    image_size: int,
    settings: DownloadSettings,
    progress: bool,
    bar,
) -> int:
    """Download and keep images until `count` are kept or the list is used up; returns
    how many were added."""
    state = journal.state
    added = 0
    while len(state.kept) < count:
        if state.round is None and not _start_round(urls, target, journal, settings, count):
            break
        rnd = state.round
        out = target.staging / f"round-{rnd['id']:04d}"
        shards = shard_count(rnd["end"] - rnd["start"], rnd["shard_size"])
        if not complete(out, shards):
            with progress_bar(progress, total=rnd["end"] - rnd["start"], desc=f"downloading (round {rnd['id']})", unit="url", leave=False) as dl:
                run_round(
                    out.with_suffix(".parquet"),
                    out,
                    urls=rnd["end"] - rnd["start"],
                    shard_size=rnd["shard_size"],
                    settings=settings,
                    on_progress=lambda n: dl.update(n - dl.n) if n != dl.n else None,
                )
        fetched = [f for f in read_round(out, shards) if f.index >= rnd["ingested"]]
        _check_reachable(fetched, rnd, journal)
        added += _ingest(fetched, urls, target, journal, decider, count, min_side, max_aspect, image_size, bar)
        if state.round["ingested"] < rnd["end"]:
            break  # count reached; the rest of this round waits for a larger count
        journal.append({"t": "round_done", "id": rnd["id"], "pointer": rnd["end"]})
        _remove_round_files(out)
    return added


def _start_round(urls: UrlList, target: Target, journal: Journal, settings: DownloadSettings, count: int) -> bool:
    state = journal.state
    remaining = len(urls.order) - state.pointer
    if remaining <= 0:
        return False
    size = round_size(count - len(state.kept), len(state.kept), state.looked_at, remaining)
    rid = state.rounds + 1
    start = state.pointer
    positions = list(range(start, start + size))
    target.staging.mkdir(parents=True, exist_ok=True)
    out = target.staging / f"round-{rid:04d}"
    _remove_round_files(out)  # leftovers of a round started but never recorded
    write_round_list(out.with_suffix(".parquet"), urls.urls_at(urls.order[start : start + size]), positions)
    journal.append(
        {"t": "round", "round": {"id": rid, "start": start, "end": start + size, "shard_size": settings.shard_for(size), "ingested": start}}
    )
    return True


def _check_reachable(fetched: list[Fetched], rnd: dict, journal: Journal) -> None:
    """A round where nothing arrived and every failure was a network one means no
    connection (or a list of dead hosts): stop with that, not with an empty set."""
    if rnd["ingested"] != rnd["start"] or not fetched or any(f.path is not None for f in fetched):
        return
    reasons = Counter(f.reason for f in fetched)
    if set(reasons) <= _NETWORK_REASONS:
        journal.append({"t": "round_dropped", "id": rnd["id"]})
        raise GatherError(
            f"none of the {len(fetched)} URLs tried could be reached ({', '.join(f'{k}: {v}' for k, v in reasons.items())}). "
            "Is this machine online, and do the list's hosts exist? Nothing was kept; run again to retry"
        )


def _ingest(fetched, urls, target, journal, decider, count, min_side, max_aspect, image_size, bar) -> int:
    state = journal.state
    added = 0

    def check(f: Fetched) -> Checked:
        if f.path is None:
            return Checked(reason=f.reason)
        return check_download(f.path, min_side=min_side, max_aspect=max_aspect, image_size=image_size)

    for window in checked_windows(fetched, check, workers()):
        kept, reasons, last, arrived = [], Counter(), None, 0
        for f, checked in window:
            if len(state.kept) + len(kept) >= count:
                break
            last = f.index
            arrived += f.path is not None
            reason = decider.reason(checked)
            if reason:
                reasons[reason] += 1
                continue
            row = int(urls.order[f.index])
            name = f"{row:08d}{checked.ext}"
            decider.accept(checked.signature, name)
            kept.append((name, row, checked))
        if last is None:
            break
        journal.append({"t": "pending", "names": [k[0] for k in kept]})
        for name, row, checked in kept:
            place_bytes(target.path, name, checked.data, urls.caption(row))
        journal.append(
            {
                "t": "window",
                "kept": [
                    {"name": name, "origin": urls.url(row), "row": row, "sig": to_json(c.signature), "width": c.width, "height": c.height}
                    for name, row, c in kept
                ],
                "reasons": dict(reasons),
                "looked_at": sum(reasons.values()) + len(kept),
                "downloaded": arrived,
                "ingested": last + 1,
            }
        )
        added += len(kept)
        bar.update(len(kept))
        if len(state.kept) >= count:
            break
    return added


def _remove_round_files(out) -> None:
    shutil.rmtree(out, ignore_errors=True)
    for suffix in (".parquet", ".args.json", ".log"):
        out.with_name(out.name + suffix).unlink(missing_ok=True)
