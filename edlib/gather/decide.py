"""Deciding, in draw order, which checked images join the set, and the progress bars.

Checks (decoding, sizes, signatures) run in a thread pool a window at a time; decisions
are made one by one in the draw order, so the same source, seed and options keep the
same images whatever the number of threads.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from edlib.gather import report as R
from edlib.gather.checks import Checked
from edlib.gather.signature import DuplicateIndex, Signature

WINDOW = 64  # images checked at once
T = TypeVar("T")
U = TypeVar("U")


class Decider:
    """Refuses images that failed a check or are near-duplicates of a kept image or of
    one of the user's training images."""

    def __init__(self, kept: DuplicateIndex, training: DuplicateIndex, *, dedupe: bool = True):
        self.kept = kept
        self.training = training
        self.dedupe = dedupe

    def reason(self, checked: Checked) -> str | None:
        if checked.reason:
            return checked.reason
        if self.dedupe and checked.signature is not None:
            if self.training.find(checked.signature):
                return R.DUPLICATE_OF_TRAINING
            if self.kept.find(checked.signature):
                return R.DUPLICATE
        return None

    def accept(self, sig: Signature, name: str) -> None:
        self.kept.add(sig, name)


def checked_windows(items: Iterable[T], check: Callable[[T], U], workers: int) -> Iterator[list[tuple[T, U]]]:
    """`items` with `check(item)` run in a thread pool, a window at a time, in order.
    Stop iterating to stop checking: at most one window is checked in vain."""
    batch: list[T] = []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for item in items:
            batch.append(item)
            if len(batch) == WINDOW:
                yield list(zip(batch, pool.map(check, batch)))
                batch = []
        if batch:
            yield list(zip(batch, pool.map(check, batch)))


def workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def progress_bar(enabled: bool, **kwargs):
    """A tqdm bar that draws as a widget in notebooks and as text in a terminal."""
    from tqdm.auto import tqdm

    return tqdm(disable=not enabled, **kwargs)


def progress_iter(enabled: bool) -> Callable[[Iterable, int, str], Iterable]:
    def wrap(iterable: Iterable, total: int, desc: str) -> Iterable:
        return progress_bar(enabled, iterable=iterable, total=total, desc=desc, unit="img", leave=False)

    return wrap
