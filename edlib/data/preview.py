"""The preview: what a training run will do with a data root, before any model is loaded.

Per folder: images, multiplier, expected samples per epoch and share of the epoch. Per
epoch: the exact number of batches and optimizer steps (fractional multipliers make them
vary between epochs; the counts come from the same draws as the realised schedules). For
the run: total steps, bucket usage and fill, and warnings. The learning-rate curve over
those steps comes from the model layer (`edlib.model.lr.with_lr_curve`), which the CLI and
the notebook panels call: this layer builds no optimizer. Any
epoch can be realised exactly with `Preview.realise(epoch)`. With a validation fraction,
the images held out for the validation loss are listed and everything else is counted
from the images that remain for training, as the trainer does.

Nothing here decodes an image or loads a model: the scan already holds the sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from edlib.data.buckets import resolution_problem
from edlib.data.folder_files import format_multiplier, format_value
from edlib.data.holdout import describe_split, split_validation
from edlib.data.numbers import format_count, format_share
from edlib.data.schedule import DEFAULT_SEED, EpochCounts, EpochPlanner, EpochSchedule
from edlib.data.types import ScanResult


def optimizer_steps(batches: int, gradient_accumulation_steps: int) -> int:
    """Optimizer steps an epoch of `batches` batches takes.

    Gradients of `gradient_accumulation_steps` batches are summed per step; a remainder at
    the end of an epoch still makes a step (over fewer batches) rather than spilling into
    the next epoch, so every epoch ends on a step: ceil(batches / accumulation). The
    trainer counts its steps with this function.
    """
    if gradient_accumulation_steps < 1:
        raise ValueError(f"gradient_accumulation_steps must be >= 1, got {gradient_accumulation_steps}")
    return -(-batches // gradient_accumulation_steps)


@dataclass
class FolderPreview:
    path: str
    images: int
    multiply: Fraction
    loss_scale: float
    expected_per_epoch: Fraction  # multiply * images exactly (images with their own multiply at theirs)
    share: float  # expected_per_epoch / epoch_size
    excluded: bool = False  # by its exclude.txt: 0 samples whatever its multiply.txt says


@dataclass
class BucketPreview:
    size: tuple[int, int]  # (width, height)
    images: int  # images whose aspect ratio is nearest this bucket
    samples: int  # samples drawn into it over all previewed epochs (fill not included)
    fill: int  # repeats added over all previewed epochs to make whole batches


@dataclass
class Preview:
    """The numbers of a planned run; `realise(epoch)` gives any epoch's exact schedule."""

    folders: list[FolderPreview]
    epoch_size: Fraction  # expected samples per epoch
    epochs: int
    batch_size: int
    gradient_accumulation_steps: int
    epoch_counts: list[EpochCounts]  # exact counts of each epoch
    steps_per_epoch_all: list[int]
    total_steps: int  # over all epochs, capped by max_steps
    max_steps: int | None
    buckets: list[BucketPreview]
    planner: EpochPlanner = field(repr=False)  # realises epochs with the previewed settings
    warnings: list[str] = field(default_factory=list)
    lr_scheduler: str | None = None  # with `lr`: filled in by `edlib.model.lr.with_lr_curve`
    lr: list[float] = field(default_factory=list, repr=False)  # learning rate at each optimizer step
    validation_fraction: float = 0.0
    validation: ScanResult | None = field(default=None, repr=False)  # the held-out images, if any
    validation_text: str = ""  # describe_split's per-folder account of the hold-out

    @property
    def steps_per_epoch(self) -> int:
        """Epoch 0's optimizer steps (see `steps_per_epoch_all` for every epoch)."""
        return self.steps_per_epoch_all[0]

    @property
    def batches_per_epoch_all(self) -> list[int]:
        return [c.batches for c in self.epoch_counts]

    @property
    def fill_per_epoch(self) -> list[int]:
        return [int(c.group_fill.sum()) for c in self.epoch_counts]

    def realise(self, epoch: int) -> EpochSchedule:
        return self.planner.realise(epoch, batch_size=self.batch_size)

    def to_json(self) -> dict:
        lr = self.lr
        return {
            "folders": [
                {
                    "path": f.path,
                    "images": f.images,
                    "multiply": float(f.multiply),
                    "loss_scale": f.loss_scale,
                    "expected_per_epoch": float(f.expected_per_epoch),
                    "share": f.share,
                    "excluded": f.excluded,
                }
                for f in self.folders
            ],
            "epoch_size": float(self.epoch_size),
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "steps_per_epoch": self.steps_per_epoch,
            "steps_per_epoch_all": self.steps_per_epoch_all,
            "batches_per_epoch_all": self.batches_per_epoch_all,
            "samples_per_epoch_all": [c.samples for c in self.epoch_counts],
            "fill_per_epoch": self.fill_per_epoch,
            "total_steps": self.total_steps,
            "max_steps": self.max_steps,
            "lr": None
            if not lr
            else {"scheduler": self.lr_scheduler, "start": lr[0], "peak": max(lr), "end": lr[-1]},
            "buckets": [
                {"size": f"{b.size[0]}x{b.size[1]}", "images": b.images, "samples": b.samples, "fill": b.fill}
                for b in self.buckets
            ],
            "warnings": list(self.warnings),
            "validation": None
            if self.validation is None
            else {
                "fraction": self.validation_fraction,
                "images": [item.path for item in self.validation.items],
                "folders": {f.path: f.images for f in self.validation.folders},
                "description": self.validation_text,
            },
        }


def preview(
    scan: ScanResult,
    *,
    epochs: int = 1,
    batch_size: int = 1,
    resolution: int = 512,
    seed: int = DEFAULT_SEED,
    gradient_accumulation_steps: int = 1,
    max_steps: int | None = None,
    validation_fraction: float = 0.0,
) -> Preview:
    """Plan a run over `scan` (see the module docstring); cheap enough for every keystroke
    of a notebook panel on ordinary data roots. `validation_fraction` holds out images as
    the trainer's config key of that name does (`edlib.data.holdout.split_validation`)."""
    validation, validation_text = None, ""
    if validation_fraction:
        scan, validation = split_validation(scan, validation_fraction, seed)
        validation_text = describe_split(scan, validation)
    if resolution_problem(resolution):
        raise ValueError(f"resolution {resolution}: {resolution_problem(resolution)}")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be >= 1 or None, got {max_steps}")
    planner = EpochPlanner(scan, resolution=resolution, seed=seed)
    counts = [planner.counts(e, batch_size=batch_size) for e in range(epochs)]
    steps = [optimizer_steps(c.batches, gradient_accumulation_steps) for c in counts]
    total = sum(steps) if max_steps is None else min(sum(steps), max_steps)

    folders = _folder_previews(scan)
    epoch_size = sum((f.expected_per_epoch for f in folders), Fraction(0))
    for f in folders:
        f.share = float(f.expected_per_epoch / epoch_size) if epoch_size else 0.0

    item_bucket = planner.group_bucket[planner.item_group]
    images_per_bucket = np.bincount(item_bucket, minlength=len(planner.buckets))
    samples = sum(c.bucket_samples for c in counts)
    fill = sum(c.bucket_fill for c in counts)
    buckets = [
        BucketPreview(size, int(images_per_bucket[i]), int(samples[i]), int(fill[i]))
        for i, size in enumerate(planner.buckets)
        if images_per_bucket[i]
    ]
    p = Preview(
        folders=folders,
        epoch_size=epoch_size,
        epochs=epochs,
        batch_size=batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        epoch_counts=counts,
        steps_per_epoch_all=steps,
        total_steps=total,
        max_steps=max_steps,
        buckets=buckets,
        planner=planner,
        validation_fraction=validation_fraction,
        validation=validation,
        validation_text=validation_text,
    )
    p.warnings = _warnings(p)
    return p


def _folder_previews(scan: ScanResult) -> list[FolderPreview]:
    images = {f.path: 0 for f in scan.folders}
    for it in scan.items:
        images[it.folder] += 1
    expected = scan.expected_samples()  # images with their own multiply count at theirs
    return [
        FolderPreview(
            path=f.path,
            images=images[f.path],
            multiply=f.settings.multiply,
            loss_scale=f.settings.loss_scale,
            expected_per_epoch=expected[f.path],
            share=0.0,
            excluded=f.settings.exclude,
        )
        for f in scan.folders
    ]


def _warnings(p: Preview) -> list[str]:
    out = []
    for f in p.folders:
        name = f.path or "(data root)"
        if 0 < f.expected_per_epoch < 1:
            how = f"multiply {format_value(f.multiply)} x {f.images} images"
            if f.expected_per_epoch != f.multiply * f.images:
                how = f"{f.images} images (some with their own multiply in .yaml sidecars)"
            out.append(
                f"folder {name}: {how} = {float(f.expected_per_epoch):.3g} expected samples per epoch (< 1): "
                "most epochs skip it"
            )
        if f.loss_scale < 0:
            out.append(f"folder {name}: loss_scale {f.loss_scale} is negative: training pushes away from these images")
    for b in p.buckets:
        if b.fill:
            out.append(
                f"bucket {b.size[0]}x{b.size[1]}: {b.fill} repeat(s) added over {p.epochs} epoch(s) to fill "
                f"batches of {p.batch_size} (of {b.samples + b.fill} samples)"
            )
    uneven = [c.batches for c in p.epoch_counts if c.batches % p.gradient_accumulation_steps]
    if uneven:
        out.append(
            f"{len(uneven)} epoch(s) have a batch count that is not a multiple of gradient_accumulation_steps="
            f"{p.gradient_accumulation_steps}: their last optimizer step averages fewer batches"
        )
    if p.max_steps is not None and p.max_steps < sum(p.steps_per_epoch_all):
        done, epoch = 0, 0
        while done + p.steps_per_epoch_all[epoch] < p.max_steps:
            done += p.steps_per_epoch_all[epoch]
            epoch += 1
        out.append(f"max_steps={p.max_steps} ends training in epoch {epoch} of {p.epochs} (0-based)")
    return out


def format_preview(p: Preview) -> str:
    """The preview as text for a terminal: folder table, steps, LR curve summary, buckets."""
    rows = [("folder", "images", "multiply", "loss_scale", "per epoch", "share")]
    for f in p.folders:
        rows.append(
            (
                f.path or ".",
                str(f.images),
                format_multiplier(f.multiply, f.excluded),
                f"{f.loss_scale:g}",
                format_count(f.expected_per_epoch),
                format_share(f.share),
            )
        )
    lines = _table(rows)
    steps = p.steps_per_epoch_all
    step_text = str(steps[0])
    if min(steps) != max(steps):
        step_text = f"{min(steps)}-{max(steps)} (varies: fractional multipliers)"
    lines += [
        "",
        f"epoch size: {format_count(p.epoch_size)} expected samples; batch size {p.batch_size}, "
        f"gradient accumulation {p.gradient_accumulation_steps}",
        f"steps per epoch: {step_text}; epochs: {p.epochs}; total steps: {p.total_steps}"
        + (f" (max_steps {p.max_steps})" if p.max_steps is not None else ""),
    ]
    if p.lr:
        lines.append(
            f"learning rate ({p.lr_scheduler}): start {p.lr[0]:.3g}, peak {max(p.lr):.3g} "
            f"at step {int(np.argmax(p.lr))}, end {p.lr[-1]:.3g}"
        )
    lines += ["", "buckets (all previewed epochs):"]
    bucket_rows = [("size", "images", "samples", "fill")]
    bucket_rows += [(f"{b.size[0]}x{b.size[1]}", str(b.images), str(b.samples), str(b.fill)) for b in p.buckets]
    lines += ["  " + line for line in _table(bucket_rows)]
    if p.validation is not None:
        lines += ["", f"validation hold-out (validation_fraction {p.validation_fraction:g}):"]
        lines += ["  " + line for line in p.validation_text.splitlines()]
    if p.warnings:
        lines += ["", "warnings:"] + [f"  - {w}" for w in p.warnings]
    return "\n".join(lines)


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in rows
    ]
