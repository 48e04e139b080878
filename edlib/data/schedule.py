"""Per-epoch schedules: which images an epoch trains on, in which batches, in which order.

An epoch is realised from a `ScanResult` in three steps, all in numpy so a million-sample
epoch takes a fraction of a second:

1. Multipliers. Each folder with multiplier m and n images contributes every image
   floor(m) times, plus k = (m - floor(m)) * n extra images drawn without replacement:
   floor(k) for sure and one more with probability k - floor(k). k is computed exactly
   (m is a Fraction), so 0.1 x 10 images is exactly one image. The draw uses a generator
   seeded by a hash of (seed, epoch, folder path) only, so the preview shows exactly what
   training does, a resumed run repeats it, and editing one folder's multiplier leaves
   every other folder's draw alone.
   Images whose own .yaml sidecar sets `multiply` (EveryDream2's per-image setting) are
   drawn with the images of their folder that have the same multiplier: a folder splits
   into one unit per distinct multiplier among its images, and each unit (m, n images) is
   drawn by the rule above, so each image's expected count is exactly its own m and a
   unit's count is exactly m x n when that is whole. The unit of the folder's own
   multiplier keeps the (seed, epoch, folder path) generator, so a folder without
   per-image multipliers draws exactly as before; another unit's generator is seeded by
   (seed, epoch, folder path, its multiplier), a key no folder path can produce.
2. Batches. Samples are grouped by (aspect bucket, batch_id); each group is shuffled and
   cut into batches. A group whose count is not a multiple of the batch size is filled up
   with random repeats from the same group (marked `fill`); nothing is dropped.
3. Order and flips. The batches are shuffled, and each sample is flipped with its
   image's flip_p (its folder's, unless its sidecar sets one). batch_id is per image too. Steps 2-3 use a generator seeded by a hash of (seed, epoch).

Optional per-image weights (`item_weights`, path -> w >= 0; the hard-example boost) act
between steps 1 and 2: an image that step 1 gave c samples this epoch gets w x c instead,
floor(w x c) for sure and one more with probability w x c - floor(w x c). So its expected
count is w times what its folder's multiplier gives it, exactly w x c when w x c is a
whole number, and w < 1 removes samples. The extra draws come from their own generator,
seeded by (seed, epoch) and a key no folder path can produce, so they are reproducible
(preview, resume) and leave every folder's draw alone. Without weights (or with only
w = 1) an epoch is bit for bit what it is without this step.

The count-only part (samples per folder and per bucket, fill, batches) comes from the
same folder draws as the realisation (`EpochPlanner.counts`), so the preview's step
counts cannot disagree with what training does. Training on several GPUs realises with
batch_size = per-device batch * world size and gives each process its slice of each batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from edlib.data.buckets import assign_buckets, make_buckets
from edlib.data.types import ScanResult
from edlib.files import write_text_atomic

# The seed a run, a preview and the notebooks' panels use unless told otherwise: one default,
# so `edlib preview` shows the batches `edlib train` trains.
DEFAULT_SEED = 555


def stable_rng(*parts) -> np.random.Generator:
    """A generator seeded from a hash of `parts` joined with "/".

    Python's `hash()` is salted per process; sha256 gives the same stream on every run and
    machine, which resuming and previewing rely on.
    """
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


@dataclass(frozen=True)
class Batch:
    """One batch of an epoch schedule; `items` index `ScanResult.items`."""

    index: int  # position in the epoch (0-based)
    bucket: tuple[int, int]  # (width, height)
    items: tuple[int, ...]
    flips: tuple[bool, ...]
    fill: tuple[bool, ...]  # True where the sample is a repeat added to fill a short group


@dataclass
class EpochSchedule:
    """The batches of one epoch in training order, as flat arrays (batch i is the slice
    [i * batch_size, (i + 1) * batch_size)); `Batch` objects are made only on request."""

    epoch: int
    batch_size: int
    items: np.ndarray  # int64 index into scan.items, length n_batches * batch_size
    flips: np.ndarray  # bool, same length
    fill: np.ndarray  # bool, same length
    batch_buckets: np.ndarray  # int64 index into `buckets`, one per batch
    buckets: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.batch_buckets)

    def batch(self, i: int) -> Batch:
        if not 0 <= i < len(self):
            raise IndexError(f"batch {i} out of range: epoch {self.epoch} has {len(self)} batches")
        s = slice(i * self.batch_size, (i + 1) * self.batch_size)
        return Batch(
            index=i,
            bucket=self.buckets[self.batch_buckets[i]],
            items=tuple(self.items[s].tolist()),
            flips=tuple(self.flips[s].tolist()),
            fill=tuple(self.fill[s].tolist()),
        )

    def __iter__(self):
        return (self.batch(i) for i in range(len(self)))

    @property
    def n_samples(self) -> int:
        """Samples in the epoch, fill repeats included."""
        return len(self.items)

    @property
    def n_fill(self) -> int:
        return int(self.fill.sum())


@dataclass
class EpochCounts:
    """What an epoch holds, without its order: the count-only part of a realisation."""

    epoch: int
    batch_size: int
    folder_samples: np.ndarray  # samples drawn per folder of scan.folders (fill not included)
    group_samples: np.ndarray  # samples drawn per (bucket, batch_id) group
    group_fill: np.ndarray  # repeats added per group to make whole batches
    group_bucket: np.ndarray  # bucket index of each group
    buckets: list[tuple[int, int]]

    @property
    def batches(self) -> int:
        return int((self.group_samples + self.group_fill).sum()) // self.batch_size

    @property
    def samples(self) -> int:
        """Samples drawn (fill not included)."""
        return int(self.group_samples.sum())

    @property
    def bucket_samples(self) -> np.ndarray:
        return np.bincount(self.group_bucket, weights=self.group_samples, minlength=len(self.buckets)).astype(np.int64)

    @property
    def bucket_fill(self) -> np.ndarray:
        return np.bincount(self.group_bucket, weights=self.group_fill, minlength=len(self.buckets)).astype(np.int64)


@dataclass
class _FolderDraw:
    """The extra (fractional-part) images one folder contributes to one epoch."""

    count: int
    chosen: np.ndarray | None  # item indices; None when only the count was needed


@dataclass
class _DrawUnit:
    """Images of one folder that share a multiplier m, drawn together: k = (m - floor(m)) * n."""

    folder: int  # index in scan.folders
    items: np.ndarray  # item indices
    sure: int  # floor(k)
    p_one_more: Fraction  # k - floor(k)
    key: tuple  # the generator's seed parts after (seed, epoch)
    group: int  # the (bucket, batch_id) group of all its images, or -1 when they span several


@dataclass
class _Reweighting:
    """What `item_weights` do to one epoch: the weighted images' samples before and after."""

    items: np.ndarray  # item indices of the weighted images, ascending
    before: np.ndarray  # their samples from the multipliers alone
    after: np.ndarray  # their samples with the weights applied


class EpochPlanner:
    """Everything about a scan that does not change between epochs (buckets, groups,
    multipliers), so realising or counting many epochs does the per-image work once."""

    def __init__(self, scan: ScanResult, *, resolution: int, seed: int):
        self.scan = scan
        self.seed = seed
        self.buckets = make_buckets(resolution)
        folders = scan.folders
        folder_index = {f.path: i for i, f in enumerate(folders)}
        try:
            self.item_folder = item_folder = np.fromiter(
                (folder_index[it.folder] for it in scan.items), np.int64, len(scan.items)
            )
        except KeyError as e:
            raise ValueError(f"an image is in folder {e.args[0]!r}, which the scan does not list") from None
        for f in folders:
            if f.settings.multiply < 0:
                raise ValueError(f"folder {f.path!r}: multiply must not be negative, got {f.settings.multiply}")
        # Images whose own .yaml sidecar sets a schedule setting, and their settings.
        own = {i: scan.item_settings(i) for i, it in enumerate(scan.items) if it.own is not None and it.own.settings}

        widths = np.fromiter((it.width for it in scan.items), np.int64, len(scan.items))
        heights = np.fromiter((it.height for it in scan.items), np.int64, len(scan.items))
        item_bucket = assign_buckets(widths, heights, self.buckets)

        # Group key (bucket, batch_id): images without a batch_id share the key None.
        batch_ids = [None] + sorted(({f.settings.batch_id for f in folders} | {s.batch_id for s in own.values()}) - {None})
        item_batch = np.array([batch_ids.index(f.settings.batch_id) for f in folders], np.int64)[item_folder]
        for i, settings in own.items():
            item_batch[i] = batch_ids.index(settings.batch_id)
        key = item_bucket * len(batch_ids) + item_batch
        group_keys, self.item_group = np.unique(key, return_inverse=True)
        self.group_bucket = group_keys // len(batch_ids)
        n_groups = len(group_keys)

        by_folder = np.argsort(item_folder, kind="stable")
        sizes = np.bincount(item_folder, minlength=len(folders))
        self.folder_items = np.split(by_folder, np.cumsum(sizes)[:-1])
        self._units = self._draw_units({i: s.multiply for i, s in own.items()})

        whole_per_item = np.asarray([int(f.settings.multiply) for f in folders], np.int64)[item_folder]  # floor(m)
        for i, settings in own.items():
            whole_per_item[i] = int(settings.multiply)
        self._whole_per_item = whole_per_item
        self._item_index = {it.path: i for i, it in enumerate(scan.items)}
        self._base_samples = np.repeat(np.arange(len(scan.items)), whole_per_item)
        self._base_group_samples = np.bincount(self.item_group, whole_per_item, n_groups).astype(np.int64)
        self._base_folder_samples = np.bincount(item_folder, whole_per_item, len(folders)).astype(np.int64)
        self.item_flip_p = np.array([f.settings.flip_p for f in folders], np.float64)[item_folder]
        for i, settings in own.items():
            self.item_flip_p[i] = settings.flip_p

    def _draw_units(self, item_multiply: dict[int, Fraction]) -> list[_DrawUnit]:
        """The fractional-part draws: one per folder, or, in a folder where images set their
        own multiply, one per distinct multiplier among its images (rule in the module
        docstring). Each unit knows its folder, (floor(k), k - floor(k)) with k exact, and
        the part of the generator's seed after (seed, epoch)."""
        units = []
        overridden = {int(self.item_folder[i]) for i in item_multiply}
        for index, (f, items) in enumerate(zip(self.scan.folders, self.folder_items)):
            folder_m = Fraction(f.settings.multiply)
            by_m: dict[Fraction, list[int] | np.ndarray] = {folder_m: items}
            if index in overridden:
                by_m = {}
                for i in items.tolist():
                    by_m.setdefault(Fraction(item_multiply.get(i, folder_m)), []).append(i)
            for m in sorted(by_m, key=lambda m: (m != folder_m, m)):
                members = np.asarray(by_m[m], np.int64)
                k = (m - int(m)) * len(members)
                key = (f.path,) if m == folder_m else (f.path, "", "multiply", f"{m.numerator}/{m.denominator}")
                units.append(_DrawUnit(index, members, int(k), k - int(k), key, self._single_group(members)))
        return units

    def _single_group(self, items: np.ndarray) -> int:
        """The group of a folder whose images all fall in one group, else -1: counting
        such a folder's epoch needs only how many images it draws, not which."""
        groups = self.item_group[items]
        return int(groups[0]) if len(groups) and (groups == groups[0]).all() else -1

    def _draw(self, epoch: int, *, choose_all: bool) -> list[_FolderDraw | None]:
        """Each unit's fractional-part draw; rng seeded by (seed, epoch, unit key) only.

        The Bernoulli for the last image comes first from the unit's generator, then the
        choice of images, so counting (which may skip the choice) sees the same count."""
        draws: list[_FolderDraw | None] = []
        for unit in self._units:
            if unit.sure == 0 and unit.p_one_more == 0:
                draws.append(None)
                continue
            rng = stable_rng(self.seed, epoch, *unit.key)
            count = unit.sure + int(unit.p_one_more > 0 and rng.random() < unit.p_one_more)
            chosen = None
            if count and (choose_all or unit.group < 0):
                chosen = unit.items[rng.choice(len(unit.items), size=count, replace=False)]
            draws.append(_FolderDraw(count, chosen))
        return draws

    def _reweigh(
        self, epoch: int, draws: list[_FolderDraw | None], item_weights: Mapping[str, float] | None
    ) -> _Reweighting | None:
        """Apply per-image weights to the folder draws (rule in the module docstring).
        Paths the scan does not hold are ignored: a quarantined image may still be listed."""
        pairs = []
        for path, weight in (item_weights or {}).items():
            if not (weight >= 0 and np.isfinite(weight)):
                raise ValueError(f"item_weights: weight of {path!r} must be a finite number >= 0, got {weight}")
            if path in self._item_index and weight != 1:
                pairs.append((self._item_index[path], float(weight)))
        if not pairs:
            return None
        pairs.sort()
        items = np.array([i for i, _ in pairs], np.int64)
        weights = np.array([w for _, w in pairs], np.float64)
        chosen = [d.chosen for d in draws if d is not None and d.count]
        before = self._whole_per_item[items]
        if chosen:
            before = before + np.bincount(np.concatenate(chosen), minlength=len(self.scan.items))[items]
        target = weights * before
        whole = np.floor(target)
        # "seed/epoch//boost": the empty part gives a key no folder path can (see stable_rng).
        rng = stable_rng(self.seed, epoch, "", "boost")
        after = whole.astype(np.int64) + (rng.random(len(items)) < target - whole)
        return _Reweighting(items, before, after)

    def _count(
        self, epoch: int, batch_size: int, draws: list[_FolderDraw | None], reweighting: _Reweighting | None
    ) -> EpochCounts:
        folder_samples = self._base_folder_samples.copy()
        group_samples = self._base_group_samples.copy()
        for unit, draw in zip(self._units, draws):
            if draw is None or not draw.count:
                continue
            folder_samples[unit.folder] += draw.count
            if unit.group >= 0:
                group_samples[unit.group] += draw.count
            else:
                group_samples += np.bincount(self.item_group[draw.chosen], minlength=len(group_samples))
        if reweighting is not None:
            change = reweighting.after - reweighting.before
            np.add.at(folder_samples, self.item_folder[reweighting.items], change)
            np.add.at(group_samples, self.item_group[reweighting.items], change)
        return EpochCounts(
            epoch=epoch,
            batch_size=batch_size,
            folder_samples=folder_samples,
            group_samples=group_samples,
            group_fill=-group_samples % batch_size,
            group_bucket=self.group_bucket,
            buckets=self.buckets,
        )

    def counts(
        self, epoch: int, *, batch_size: int, item_weights: Mapping[str, float] | None = None
    ) -> EpochCounts:
        """Samples per folder and group, fill and batches of an epoch, without ordering it.
        Weighted images need to know which images their folders drew, so with weights
        every folder's choice is made (the same choice `realise` makes)."""
        _check_args(epoch, batch_size)
        draws = self._draw(epoch, choose_all=bool(item_weights))
        return self._count(epoch, batch_size, draws, self._reweigh(epoch, draws, item_weights))

    def realise(
        self, epoch: int, *, batch_size: int, item_weights: Mapping[str, float] | None = None
    ) -> EpochSchedule:
        """The exact schedule of an epoch."""
        _check_args(epoch, batch_size)
        draws = self._draw(epoch, choose_all=True)
        reweighting = self._reweigh(epoch, draws, item_weights)
        counts = self._count(epoch, batch_size, draws, reweighting)
        rng = stable_rng(self.seed, epoch)

        extras = [d.chosen for d in draws if d is not None and d.count]
        samples = np.concatenate([self._base_samples, *extras])
        if reweighting is not None:  # the weighted images' samples, replaced by their new count
            samples = samples[~np.isin(samples, reweighting.items)]
            samples = np.concatenate([samples, np.repeat(reweighting.items, reweighting.after)])
        samples = samples[rng.permutation(len(samples))]  # shuffles within each group below
        samples = samples[np.argsort(self.item_group[samples], kind="stable")]

        pieces, fill_flags = [], []
        starts = np.concatenate([[0], np.cumsum(counts.group_samples)])
        for g, n_fill in enumerate(counts.group_fill.tolist()):
            group = samples[starts[g] : starts[g + 1]]
            if not len(group):
                continue
            pieces.append(group)
            fill_flags.append(np.zeros(len(group), bool))
            if n_fill:
                pieces.append(group[rng.choice(len(group), size=n_fill, replace=n_fill > len(group))])
                fill_flags.append(np.ones(n_fill, bool))
        items = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
        fill = np.concatenate(fill_flags) if fill_flags else np.zeros(0, bool)

        order = rng.permutation(len(items) // batch_size)
        items = items.reshape(-1, batch_size)[order].reshape(-1)
        fill = fill.reshape(-1, batch_size)[order].reshape(-1)
        flips = rng.random(len(items)) < self.item_flip_p[items]
        return EpochSchedule(
            epoch=epoch,
            batch_size=batch_size,
            items=items.astype(np.int64),
            flips=flips,
            fill=fill,
            batch_buckets=self.group_bucket[self.item_group[items[::batch_size]]].astype(np.int64),
            buckets=self.buckets,
        )


def _check_args(epoch: int, batch_size: int) -> None:
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def realise_epoch(
    scan: ScanResult,
    epoch: int,
    *,
    seed: int,
    batch_size: int,
    resolution: int,
    item_weights: Mapping[str, float] | None = None,
) -> EpochSchedule:
    """The exact schedule of one epoch (see the module docstring for the rules)."""
    planner = EpochPlanner(scan, resolution=resolution, seed=seed)
    return planner.realise(epoch, batch_size=batch_size, item_weights=item_weights)


def count_epoch(
    scan: ScanResult,
    epoch: int,
    *,
    seed: int,
    batch_size: int,
    resolution: int,
    item_weights: Mapping[str, float] | None = None,
) -> EpochCounts:
    """The counts of one epoch (per folder, per bucket, fill, batches) without ordering it."""
    planner = EpochPlanner(scan, resolution=resolution, seed=seed)
    return planner.counts(epoch, batch_size=batch_size, item_weights=item_weights)


def write_schedule(schedule: EpochSchedule, scan: ScanResult, directory) -> Path:
    """Write `directory/ep{E}_batch_schedule.txt`: one line per sample,
    `batch_index<TAB>WIDTHxHEIGHT<TAB>relative/path`, batches in training order.

    Written to a temporary file and renamed, so a reader never sees half a schedule."""
    if len(schedule.items) and schedule.items.max() >= len(scan.items):
        raise ValueError(f"schedule of epoch {schedule.epoch} indexes images the scan of {scan.root} does not have")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = np.array([it.path for it in scan.items], dtype=object)[schedule.items]
    sizes = [f"{w}x{h}" for w, h in schedule.buckets]
    per_batch = [f"{b}\t{sizes[k]}\t" for b, k in enumerate(schedule.batch_buckets.tolist())]
    prefixes = np.repeat(np.array(per_batch, dtype=object), schedule.batch_size)
    text = "".join(p + path + "\n" for p, path in zip(prefixes, paths))

    target = directory / f"ep{schedule.epoch}_batch_schedule.txt"
    write_text_atomic(target, text)
    return target
