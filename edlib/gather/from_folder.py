"""Gathering from a local folder: draw images in the pool's seeded order until the set holds
the number asked for, copying or linking each with its caption."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from edlib.gather import report as R
from edlib.gather.checks import check_file
from edlib.gather.decide import Decider, checked_windows, workers
from edlib.gather.folder_pool import CaptionError, Pool, flat_name, source_caption
from edlib.gather.journal import Journal
from edlib.gather.signature import to_json
from edlib.gather.target import Target, place_file


def draw_from_folder(
    pool: Pool,
    target: Target,
    journal: Journal,
    decider: Decider,
    *,
    count: int,
    min_side: int,
    max_aspect: float,
    link: bool,
    bar,
) -> int:
    """Add images from `pool` until `count` are kept or the pool is used up; returns how
    many were added."""
    state = journal.state
    taken = {Path(k["name"]).stem.lower() for k in state.kept}
    todo = (pool.paths[i] for i in pool.order if pool.paths[i] not in state.looked)
    added = 0
    if len(state.kept) >= count:
        return 0

    def check(rel: str):
        return check_file(pool.root / rel, min_side=min_side, max_aspect=max_aspect)

    for window in checked_windows(todo, check, workers()):
        kept, reasons, looked = [], Counter(), []
        for rel, checked in window:
            if len(state.kept) + len(kept) >= count:
                break
            looked.append(rel)
            reason = decider.reason(checked)
            if reason is None:
                try:
                    caption = source_caption(pool.root / rel)
                except CaptionError:
                    reason = R.BAD_CAPTION
            if reason:
                reasons[reason] += 1
                continue
            name = flat_name(rel, taken)
            taken.add(Path(name).stem.lower())
            decider.accept(checked.signature, name)
            kept.append((name, rel, caption, checked))
        journal.append({"t": "pending", "names": [k[0] for k in kept]})
        for name, rel, caption, _ in kept:
            place_file(target.path, name, pool.root / rel, caption, link=link)
        journal.append(
            {
                "t": "window",
                "kept": [
                    {"name": name, "origin": rel, "sig": to_json(c.signature), "width": c.width, "height": c.height}
                    for name, rel, _, c in kept
                ],
                "reasons": dict(reasons),
                "looked_at": len(looked),
                "looked": looked,
            }
        )
        added += len(kept)
        bar.update(len(kept))
        if len(state.kept) >= count:
            break
    return added
