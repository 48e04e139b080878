"""Images that cannot be read in the middle of a run: skipped, never a crash.

A run plans each epoch from the scan made when it started (and re-read between epochs),
so an image can vanish or turn out undecodable while its epoch runs: the user quarantined
it (`edlib review --quarantine`), deleted or renamed it, or the file is damaged in a way the
scan's header check cannot see (a PNG damaged mid-file). Losing the run for that would
lose the work since the last checkpoint.

Instead, each sample whose image cannot be read takes the image (and flip) of the next
readable sample of the same scheduled batch, counting on from its slot and wrapping
around; if none of the batch's images can be read (always so at batch size 1), the next
readable image of the scan in the same aspect bucket and batch_id group, counting on from
the unreadable one, unflipped. The batch keeps its size and bucket, and the sample keeps
its slot, so its caption, noise and timestep draws are the ones planned. The choice depends
only on the schedule and on which files can be read, so a resumed run makes the same
substitutions and stays exact. Only when no image of the bucket can be read does the run
stop, with a message saying so.

Each image skipped is warned about once per run, and every skip is listed in the run's
`schedules/ep{E}_skipped.txt` (`batch<TAB>slot<TAB>path<TAB>replaced by<TAB>reason`, paths
escaped as in the schedule files). An image that exists but cannot be decoded is also
remembered in the scan cache, so the next `edlib scan` reports it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from edlib.data.buckets import assign_buckets
from edlib.data.images import ImageReadError
from edlib.data.scan_cache import remember_unreadable
from edlib.data.scan_guards import printable
from edlib.data.types import DataRootError, ScanResult
from edlib.files import write_text_atomic
from edlib.train.batches import BatchEncoder, LocalBatch
from edlib.train.run_dir import Reporter, RunDir


@dataclass(frozen=True)
class Skip:
    """One sample whose image could not be read, and the image that took its place."""

    epoch: int
    batch: int
    slot: int
    path: str
    replaced_by: str
    reason: str

    def line(self) -> str:
        return f"{self.batch}\t{self.slot}\t{self.path}\t{self.replaced_by}\t{self.reason}\n"


class UnreadableImages:
    """Fills batches around images that cannot be read, and reports what it skipped."""

    def __init__(self, run: RunDir, report: Reporter):
        self.run, self.report = run, report
        self._warned: set[str] = set()
        self._groups: tuple[ScanResult, list, np.ndarray] | None = None  # (scan, buckets, item group keys)

    def fill(self, encoder: BatchEncoder, data: ScanResult, batch: LocalBatch, schedule) -> LocalBatch:
        """`batch` (this process's part of batch `batch.index` of the epoch `schedule`) with
        every image that cannot be read replaced as the module docstring says; what was read
        is handed to `encoder` for the batch's `encode`. Raises `DataRootError` if no image of
        the batch's bucket can be read."""
        full = schedule.batch(batch.index)
        samples = list(zip(batch.items, batch.flips))
        inputs, errors = encoder.read_inputs(data, batch, samples)
        if not any(errors):
            encoder.use_inputs(batch, inputs)
            return batch
        bad = {item: error for (item, _), error in zip(samples, errors) if error is not None}
        read = {sample: x for sample, x in zip(samples, inputs) if x is not None}
        skips = []
        for k, error in enumerate(errors):
            if error is None:
                continue
            candidates = self._candidates(data, schedule, full, batch.slots[k])
            sample, substitute = self._substitute(encoder, data, batch, candidates, bad, read)
            samples[k], inputs[k] = sample, substitute
            path, replaced_by = data.items[batch.items[k]].path, data.items[sample[0]].path
            skips.append(Skip(batch.epoch, batch.index, batch.slots[k], path, replaced_by, error.reason))
        filled = replace(batch, items=tuple(i for i, _ in samples), flips=tuple(f for _, f in samples))
        encoder.use_inputs(filled, inputs)
        self._record(data, skips, bad)
        return filled

    def _candidates(self, data: ScanResult, schedule, full, slot: int):
        """(item, flip) pairs that may take the place of slot `slot` of batch `full`, in the
        order of the module docstring."""
        size = len(full.items)
        for offset in range(1, size):
            j = (slot + offset) % size
            yield full.items[j], bool(full.flips[j])
        if self._groups is None or self._groups[0] is not data or self._groups[1] != schedule.buckets:
            self._groups = (data, schedule.buckets, _group_keys(data, schedule.buckets))
        keys = self._groups[2]
        start = full.items[slot]
        same = np.flatnonzero(keys == keys[start])
        for item in np.roll(same, -int(np.searchsorted(same, start)) - 1).tolist():
            yield item, False

    def _substitute(self, encoder, data, batch, candidates, bad, read) -> tuple[tuple[int, bool], torch.Tensor]:
        """The first readable candidate (item, flip), and its input."""
        for sample in candidates:
            if sample[0] in bad:
                continue
            if sample not in read:
                (found,), (error,) = encoder.read_inputs(data, batch, [sample])
                if error is not None:
                    bad[sample[0]] = error
                    continue
                read[sample] = found
            return sample, read[sample]
        example = next(iter(bad.values()))
        raise DataRootError(
            f"epoch {batch.epoch}, batch {batch.index}: none of its images, nor any other image of its "
            f"{batch.bucket[0]}x{batch.bucket[1]} bucket, can be read (e.g. {printable(str(example.path))}: "
            f"{example.reason}), so training cannot go on. Put the images back (edlib review RUN --restore "
            "puts quarantined ones back) and resume with --resume latest"
        )

    def _record(self, data: ScanResult, skips: list[Skip], bad: dict[int, ImageReadError]) -> None:
        for skip in skips:
            if skip.path not in self._warned:
                self._warned.add(skip.path)
                self.report.warning(
                    f"epoch {skip.epoch}, batch {skip.batch}: skipped {printable(skip.path)} ({skip.reason}); "
                    f"{printable(skip.replaced_by)} of the same batch takes its place. Skips are listed in "
                    f"schedules/ep{skip.epoch}_skipped.txt"
                )
        if self.run.writer:
            file = self.run.schedules / f"ep{skips[0].epoch}_skipped.txt"
            known = file.read_text(encoding="utf-8").splitlines(keepends=True) if file.exists() else []
            lines = known + [s.line() for s in skips if s.line() not in known]  # a resumed run skips again
            write_text_atomic(file, "".join(lines))
            for item, error in bad.items():
                path = Path(data.root) / data.items[item].path
                if os.path.exists(path):  # damaged, not gone: the next scan should say so
                    remember_unreadable(data.root, data.items[item].path, error.reason)


def _group_keys(data: ScanResult, buckets: list[tuple[int, int]]) -> np.ndarray:
    """Per item of the scan, a key equal for items the schedule may batch together: the
    same aspect bucket and the same folder batch_id."""
    widths = np.fromiter((it.width for it in data.items), np.int64, len(data.items))
    heights = np.fromiter((it.height for it in data.items), np.int64, len(data.items))
    bucket = assign_buckets(widths, heights, buckets)
    ids = {None: 0}
    batch_id = np.fromiter(
        (ids.setdefault(data.folder(it.folder).settings.batch_id, len(ids)) for it in data.items), np.int64, len(data.items)
    )
    return bucket * (len(data.items) + 1) + batch_id
