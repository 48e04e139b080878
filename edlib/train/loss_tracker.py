"""Per-image loss tracking: find the training images the model does not learn.

A diffusion loss says more about the timestep it was drawn at than about the image: the
same image's loss varies several-fold between t = 50 and t = 950. So raw per-image means
are not comparable, and an image that happened to draw many hard timesteps would look bad.
The tracker therefore

1. keeps, per timestep bucket (default 20 buckets over the scheduler's timesteps), an
   exponential moving mean and variance of the loss of *all* samples, so the expected loss
   follows training as it falls;
2. turns each sample's loss into a z-score against its bucket, computed *before* the sample
   updates the bucket (an image is never compared with itself), once the bucket has seen
   `warmup` samples;
3. keeps per image: observations, mean and spread of its z-scores, the slope of its last
   `trend_window` z-scores (negative: being learned), and the last step it was seen;
4. flags an image whose mean z-score is above the population's centre (the median of the
   image means) by at least `min_excess` AND by `threshold` standard errors, with at least
   `min_observations` observations. The standard error uses the larger of the image's own
   spread and the pooled within-image spread, so an image with a few lucky, similar
   observations cannot be flagged on a tiny spread. docs/loss_tracking.md states this for
   users.

`LossTrackerPlugin` feeds a tracker from the training loop and writes `image_loss.csv`.
`boost_weights` turns flags into bounded per-image sampling weights (`hard_example_boost`).
"""

from __future__ import annotations

import csv
import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edlib.data.types import ScanResult
from edlib.model.transfer import host_tensor
from edlib.train.hooks import Context, Plugin

CSV_COLUMNS = ("path", "folder", "caption", "observations", "mean", "std", "trend", "last_step", "flagged", "score")
MIN_OBSERVATIONS = 5  # before this many, an image is neither flagged nor ranked (docs/loss_tracking.md)


@dataclass
class _Bucket:
    """Exponential moving mean/variance of the loss at one timestep range. The first
    1/decay samples are a plain running mean (weight 1/n), so early estimates are not
    biased towards the zero they start from."""

    count: int = 0
    mean: float = 0.0
    var: float = 0.0

    def update(self, loss: float, decay: float) -> None:
        self.count += 1
        weight = max(decay, 1.0 / self.count)
        delta = loss - self.mean
        self.mean += weight * delta
        self.var = (1.0 - weight) * (self.var + weight * delta * delta)


@dataclass
class _Image:
    """Running statistics of one image's z-scores (Welford's mean and sum of squares)."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    last_step: int = -1
    recent: deque = field(default_factory=deque)

    def update(self, z: float, step: int, window: int) -> None:
        self.count += 1
        delta = z - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (z - self.mean)
        self.last_step = step
        self.recent.append(z)
        while len(self.recent) > window:
            self.recent.popleft()

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else float("nan")

    @property
    def trend(self) -> float:
        """Least-squares slope of the recent z-scores per observation (nan below 3)."""
        if len(self.recent) < 3:
            return float("nan")
        return float(np.polyfit(np.arange(len(self.recent)), np.asarray(self.recent), 1)[0])


@dataclass(frozen=True)
class ImageStats:
    """One image's statistics as shown in reviews and image_loss.csv."""

    path: str
    observations: int
    mean: float  # mean z-score of its losses against the timestep-bucket expectation
    std: float
    trend: float
    last_step: int
    score: float  # (mean - population centre) / standard error; nan below min_observations
    flagged: bool


@dataclass(frozen=True)
class FolderSummary:
    folder: str
    seen: int  # images of the folder observed at least once (warm-up samples do not count)
    observations: int
    mean: float  # mean of the seen images' mean z-scores (nan when none is seen yet)
    flagged: int
    in_folder: int | None = None  # images the folder holds (the scan's count); None when unknown


class LossTracker:
    """Timestep-normalised per-image loss statistics; see the module docstring."""

    def __init__(
        self,
        *,
        num_train_timesteps: int = 1000,
        buckets: int = 20,
        decay: float = 0.02,
        warmup: int = 10,
        min_observations: int = MIN_OBSERVATIONS,
        threshold: float = 3.0,
        min_excess: float = 1.0,
        trend_window: int = 10,
    ):
        if buckets < 1 or num_train_timesteps < buckets:
            raise ValueError(f"loss tracker: need 1 <= buckets <= num_train_timesteps, got {buckets}, {num_train_timesteps}")
        if not 0 < decay <= 1:
            raise ValueError(f"loss tracker: decay must be in (0, 1], got {decay}")
        self.num_train_timesteps = num_train_timesteps
        self.decay = decay
        self.warmup = warmup
        self.min_observations = min_observations
        self.threshold = threshold
        self.min_excess = min_excess
        self.trend_window = trend_window
        self._buckets = [_Bucket() for _ in range(buckets)]
        self._images: dict[str, _Image] = {}

    def bucket_of(self, timestep: int) -> int:
        return min(int(timestep) * len(self._buckets) // self.num_train_timesteps, len(self._buckets) - 1)

    def observe(self, paths: list[str], timesteps, losses, step: int) -> None:
        """Record one batch: image paths, their timesteps and raw per-sample losses (B,), as
        tensors or lists of numbers.

        Non-finite losses (a skipped fp16 step) are ignored: they say nothing about the image."""
        if isinstance(timesteps, torch.Tensor):
            timesteps = timesteps.tolist()
        if isinstance(losses, torch.Tensor):
            losses = losses.detach().float().cpu().tolist()
        for path, t, loss in zip(paths, timesteps, losses):
            if not math.isfinite(loss):
                continue
            bucket = self._buckets[self.bucket_of(t)]
            if bucket.count >= self.warmup and bucket.var > 0:
                z = (loss - bucket.mean) / math.sqrt(bucket.var)
                self._images.setdefault(path, _Image()).update(z, step, self.trend_window)
            bucket.update(loss, self.decay)

    def expected_loss(self) -> list[tuple[float, float, int]]:
        """(mean, std, samples) of the loss per timestep bucket, for charts and checks."""
        return [(b.mean, math.sqrt(b.var), b.count) for b in self._buckets]

    def stats(self) -> list[ImageStats]:
        """Every image seen, worst first (flagged first, then by score, then by mean)."""
        images = self._images
        means = [s.mean for s in images.values()]
        centre = float(np.median(means)) if means else 0.0
        spread = self._pooled_std()
        out = []
        for path, s in images.items():
            score = float("nan")
            if s.count >= self.min_observations:
                own = s.std if math.isfinite(s.std) else 0.0
                score = (s.mean - centre) / (max(own, spread) / math.sqrt(s.count))
            flagged = (
                s.count >= self.min_observations and s.mean - centre >= self.min_excess and score >= self.threshold
            )
            out.append(ImageStats(path, s.count, s.mean, s.std, s.trend, s.last_step, score, flagged))
        return sorted(out, key=lambda r: (not r.flagged, -_or(r.score, -math.inf), -r.mean, r.path))

    def _pooled_std(self) -> float:
        """Within-image spread of z-scores pooled over images (1 before there is data: the
        z-scores are standardised, so 1 is their spread by construction)."""
        m2 = sum(s.m2 for s in self._images.values() if s.count > 1)
        dof = sum(s.count - 1 for s in self._images.values() if s.count > 1)
        return math.sqrt(m2 / dof) if dof else 1.0

    def flagged(self) -> list[str]:
        return [r.path for r in self.stats() if r.flagged]

    def folder_summaries(self, data: ScanResult) -> list[FolderSummary]:
        folder_of = {item.path: item.folder for item in data.items}
        return summarise_folders(self.stats(), folder_of, {f.path: f.images for f in data.folders})

    # -- persistence ----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain containers only: checkpoints load with weights_only=True."""
        images = self._images
        recent = torch.full((len(images), self.trend_window), float("nan"), dtype=torch.float64)
        for row, s in enumerate(images.values()):
            if s.recent:
                recent[row, : len(s.recent)] = torch.tensor(list(s.recent), dtype=torch.float64)
        return {
            "version": 1,
            "num_train_timesteps": self.num_train_timesteps,
            "bucket_count": torch.tensor([b.count for b in self._buckets], dtype=torch.int64),
            "bucket_mean": torch.tensor([b.mean for b in self._buckets], dtype=torch.float64),
            "bucket_var": torch.tensor([b.var for b in self._buckets], dtype=torch.float64),
            "paths": list(images),
            "count": torch.tensor([s.count for s in images.values()], dtype=torch.int64),
            "mean": torch.tensor([s.mean for s in images.values()], dtype=torch.float64),
            "m2": torch.tensor([s.m2 for s in images.values()], dtype=torch.float64),
            "last_step": torch.tensor([s.last_step for s in images.values()], dtype=torch.int64),
            "recent": recent,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:  # a checkpoint from a run without tracking: start empty
            return
        if len(state["bucket_count"]) != len(self._buckets) or state["num_train_timesteps"] != self.num_train_timesteps:
            raise ValueError(
                f"loss tracker state has {len(state['bucket_count'])} buckets over {state['num_train_timesteps']} "
                f"timesteps; this tracker has {len(self._buckets)} over {self.num_train_timesteps}"
            )
        self._buckets = [
            _Bucket(int(c), float(m), float(v))
            for c, m, v in zip(state["bucket_count"], state["bucket_mean"], state["bucket_var"])
        ]
        self._images = {}
        for row, path in enumerate(state["paths"]):
            recent = [float(z) for z in state["recent"][row] if not math.isnan(z)][-self.trend_window :]
            self._images[path] = _Image(
                int(state["count"][row]), float(state["mean"][row]), float(state["m2"][row]),
                int(state["last_step"][row]), deque(recent),
            )

    def write_csv(self, path: str | Path, data: ScanResult) -> Path:
        """Write image_loss.csv (columns `CSV_COLUMNS`), worst first; folder and caption come
        from `data`. Written to a temp file and renamed, so a reader never sees half a file."""
        path = Path(path)
        items = {item.path: item for item in data.items}
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(CSV_COLUMNS)
            for r in self.stats():
                item = items.get(r.path)
                folder = item.folder if item else r.path.rpartition("/")[0]
                caption = item.caption.text() if item else ""
                writer.writerow(
                    [
                        r.path, folder, caption, r.observations, _fmt(r.mean), _fmt(r.std), _fmt(r.trend), r.last_step,
                        int(r.flagged), _fmt(r.score),
                    ]
                )
        tmp.replace(path)
        return path


@dataclass(frozen=True)
class CsvRow:
    """One row of image_loss.csv."""

    path: str
    folder: str
    caption: str
    observations: int
    mean: float
    std: float
    trend: float
    last_step: int
    flagged: bool
    score: float  # nan in files written by edlib 0.1.0 (no such column)


def read_csv(path: str | Path) -> list[CsvRow]:
    """Rows of an image_loss.csv, in file order (worst first)."""
    path = Path(path)
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = set(CSV_COLUMNS) - {"score"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: not an image_loss.csv, missing columns {sorted(missing)}")
        rows = []
        for line, row in enumerate(reader, start=2):
            try:
                rows.append(
                    CsvRow(
                        row["path"], row["folder"], row["caption"], int(row["observations"]), float(row["mean"]),
                        float(row["std"]), float(row["trend"]), int(row["last_step"]), row["flagged"] == "1",
                        float(row.get("score") or "nan"),
                    )
                )
            except ValueError as error:
                raise ValueError(f"{path} line {line}: {error}") from None
    return rows


@dataclass(frozen=True)
class Hardest:
    """The images to look at first: those whose loss stays above what their timesteps lead
    to expect, worst first. Empty with `ready` False until some image has been observed
    `min_observations` times."""

    images: list  # ImageStats or CsvRow rows
    ready: bool
    most_observed: int
    min_observations: int

    def message(self) -> str:
        """What to say instead of a list, or "" when there is a list."""
        if not self.ready:
            return (
                f"not enough observations yet: an image is ranked after {self.min_observations} observations "
                f"(the most observed has {self.most_observed}); train longer"
            )
        if not self.images:
            return "no image's loss is above what its timesteps lead to expect"
        return ""


def hardest_images(rows, *, min_observations: int = MIN_OBSERVATIONS, top: int | None = None) -> Hardest:
    """Rank `rows` (`LossTracker.stats()` or image_loss.csv rows): only images with at least
    `min_observations` observations whose mean z-score is above 0 (their loss above the
    expectation at their timesteps) and above the population's centre (score > 0); flagged
    first, then by score (how many standard errors above the centre), then by mean."""
    rows = list(rows)
    most = max((r.observations for r in rows), default=0)
    above = [r for r in rows if r.observations >= min_observations and r.mean > 0 and _or(r.score, 0.0) > 0]
    above.sort(key=lambda r: (not r.flagged, -r.score, -r.mean, r.path))
    return Hardest(above[:top] if top is not None else above, most >= min_observations, most, min_observations)


def summarise_folders(rows, folder_of: dict[str, str], in_folder: dict[str, int] | None = None) -> list[FolderSummary]:
    """Per-folder summaries of `ImageStats` or `CsvRow` rows, worst folder first (folders
    with nothing seen yet last). `in_folder` (folder -> its images, from a scan) adds each
    folder's size, so "seen" reads against it (the first samples of a run warm the timestep
    buckets and count for no image), and lists folders none of whose images is seen yet."""
    groups: dict[str, list] = {folder: [] for folder in in_folder or {}}
    for r in rows:
        groups.setdefault(folder_of.get(r.path, r.path.rpartition("/")[0]), []).append(r)
    out = [
        FolderSummary(
            folder, len(rs), sum(r.observations for r in rs), float(np.mean([r.mean for r in rs])) if rs else math.nan,
            sum(r.flagged for r in rs), (in_folder or {}).get(folder),
        )
        for folder, rs in groups.items()
    ]
    return sorted(out, key=lambda s: (-s.flagged, not s.seen, -_or(s.mean, 0.0), s.folder))


def boost_weights(flagged: list[str], boost: float, *, max_boost: float = 1.0) -> dict[str, float]:
    """Per-image sampling multipliers for `hard_example_boost`: flagged images get
    1 + boost (boost capped at `max_boost`, so a flagged image is at most seen twice as
    often by default), every other image keeps 1 and is left out of the mapping. A
    negative boost (down to -1) lowers flagged images instead: the opposite choice, for a
    user who decides they should count less."""
    if boost < -1.0:
        raise ValueError(f"hard_example_boost: must be >= -1, got {boost}")
    factor = 1.0 + min(boost, max_boost)
    return {path: factor for path in flagged} if factor != 1.0 else {}


class LossTrackerPlugin(Plugin):
    """Feeds a `LossTracker` from the training loop and writes `image_loss.csv` into the
    run folder at every epoch end and whenever a checkpoint is saved (via state_dict).

    Item indices stay on the host (the scheduled batch lists them for every process); the
    per-sample losses and timesteps stay on the device, gathered over processes there, until
    a logging step reads the window back in one transfer, so a step never waits for them.
    Every process then holds the same tracker and the saved state is complete. Paths come
    from the loop's current scan (`ctx.data`, replaced only at an epoch start, when nothing
    is pending)."""

    name = "loss_tracker"

    def __init__(self, tracker: LossTracker | None = None):
        self.tracker = tracker or LossTracker()
        self._ctx: Context | None = None
        self._pending: list[tuple[tuple[int, ...] | None, torch.Tensor, int]] = []  # (items, [timesteps; losses], step)

    def on_start(self, ctx: Context) -> None:
        self._ctx = ctx
        steps = ctx.models.noise_scheduler.config.num_train_timesteps
        if steps != self.tracker.num_train_timesteps:
            raise ValueError(
                f"loss tracker: the model's scheduler has {steps} training timesteps, the tracker "
                f"{self.tracker.num_train_timesteps}; build it with num_train_timesteps={steps}"
            )

    def on_sample_losses(self, ctx: Context, batch, timesteps: torch.Tensor, losses: torch.Tensor) -> None:
        rows = [timesteps.to(torch.float64), losses.detach().to(torch.float64)]  # timesteps < 2**53: exact
        items = batch.items  # the images trained (an unreadable one's substitute included)
        if ctx.accelerator.num_processes > 1:  # the other processes' items travel with their losses
            rows.append(host_tensor(batch.items, losses.device, torch.float64))
            items = None
        rows = torch.stack(rows)
        if items is None:
            rows = ctx.accelerator.gather(rows.T.contiguous()).T  # processes' samples in slot order
        self._pending.append((items, rows, ctx.position.step + 1))

    def on_step(self, ctx: Context, metrics: dict[str, Any]) -> None:
        if ctx.config.is_logging_step(ctx.position.step):
            self.flush()

    def flush(self) -> None:
        """Read the pending losses back (one transfer) and record them."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        values = torch.cat([pair for _, pair, _ in pending], dim=1).tolist()  # rows: timesteps, losses (, items)
        items = self._ctx.data.items
        start = 0
        for batch_items, pair, step in pending:
            end = start + pair.shape[1]
            batch_items = batch_items or [int(i) for i in values[2][start:end]]
            paths = [items[i].path for i in batch_items]
            self.tracker.observe(paths, values[0][start:end], values[1][start:end], step)
            start = end

    def item_weights(self, ctx: Context) -> dict[str, float] | None:
        """The hard-example boost: flagged images weighted by 1 + `hard_example_boost`."""
        boost = ctx.config.hard_example_boost
        self.flush()
        return boost_weights(self.tracker.flagged(), boost) if boost else None

    def on_epoch_end(self, ctx: Context) -> None:
        self.flush()
        self.write_csv()

    def on_end(self, ctx: Context) -> None:
        self.flush()

    def write_csv(self) -> Path | None:
        ctx = self._ctx
        if ctx is None or not ctx.accelerator.is_main_process:
            return None
        return self.tracker.write_csv(ctx.run.path / "image_loss.csv", ctx.data)

    def state_dict(self) -> dict[str, Any]:
        self.flush()
        self.write_csv()  # a checkpoint and the csv next to it tell the same story
        return self.tracker.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tracker.load_state_dict(state)


def _fmt(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.4f}"


def _or(value: float, default: float) -> float:
    return default if math.isnan(value) else value
