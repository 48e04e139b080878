"""Decoding training images ahead of the step that needs them, in DataLoader workers.

Decoding a 1024x768 JPEG and fitting it to its bucket takes 18-34 ms on one core, about
0.4 s for a batch of 16: done in the training thread, the GPU would wait that long every
uncached step. So at the start of each epoch `plan_decoding` lists, for each batch this
process trains, the images it must decode (all of them when latents are not cached; with a
cache, the ones not cached yet and not decoded earlier in the epoch), and a `PixelPrefetcher`
decodes them in worker processes, in training order, a few batches ahead; the step stacks a
batch straight into pinned memory and copies it to the GPU without blocking
(`edlib.model.transfer.upload_stack`). An epoch whose latents are all cached
decodes nothing and starts no worker.

Workers send 8-bit pixels (a quarter of the bytes); `to_unit_range` makes them the [-1, 1]
floats `edlib.train.batches.load_pixels` gives, with the same float32 arithmetic.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from edlib.data.images import ImageReadError, load_rgb
from edlib.data.schedule import EpochSchedule

# Worker processes on a GPU machine: enough to decode a batch of 16 large images in the time
# of a step, and a core left for the training process.
MAX_DECODE_WORKERS = 4


def load_pixels_uint8(path: str | Path, size: tuple[int, int], flip: bool) -> torch.Tensor:
    """The image at `path` as (3, height, width) uint8, fitted to `size` = (width, height)
    by scale-to-cover and center crop, then mirrored if `flip`."""
    image = ImageOps.fit(load_rgb(path), size, method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))
    if flip:
        image = ImageOps.mirror(image)
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def decode(path: str, size: tuple[int, int], flip: bool) -> tuple[torch.Tensor | None, str | None]:
    """`load_pixels_uint8`, or (None, the reason) for an image that cannot be read: a worker
    reports it instead of raising, so training can put another image in its place."""
    try:
        return load_pixels_uint8(path, size, flip), None
    except ImageReadError as error:
        return None, error.reason


def to_unit_range(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels as float32 in [-1, 1] (x / 127.5 - 1, as `load_pixels` computes it)."""
    return pixels.to(torch.float32) / 127.5 - 1.0


def decode_workers(device: torch.device, configured: int | None) -> int:
    """Worker processes for decoding: `configured` (the config's `decode_workers`), else up to
    MAX_DECODE_WORKERS on a GPU machine (a core left for training) and none on a CPU, where
    training itself uses every core and decoding in the training process costs the same."""
    if configured is not None:
        return configured
    if torch.device(device).type != "cuda":
        return 0
    return max(1, min(MAX_DECODE_WORKERS, (os.cpu_count() or 2) - 1))


@dataclass(frozen=True)
class DecodeJob:
    """The images one batch needs decoded: (absolute path, flip) each, with their cache keys
    (None without a latent cache), fitted to `bucket` = (width, height)."""

    batch_index: int
    bucket: tuple[int, int]
    images: tuple[tuple[str, bool], ...]
    keys: tuple[str | None, ...]


def plan_decoding(
    scan, schedule: EpochSchedule, first_batch: int, local: Callable, cached: Callable[[str], bool] | None, key: Callable
) -> list[DecodeJob]:
    """The decoding an epoch needs from `first_batch` on. `local(batch)` is this process's
    part of a scheduled batch; `cached(key)` says whether a latent cache holds a key (None: no
    cache, decode everything); `key(path, bucket, flip)` is the cache's key."""
    jobs, planned = [], set()
    root = Path(scan.root)
    for b in range(first_batch, len(schedule)):
        batch = local(schedule.batch(b))
        images, keys = [], []
        for item, flip in zip(batch.items, batch.flips):
            path = root / scan.items[item].path
            try:
                k = None if cached is None else key(path, batch.bucket, flip)
            except OSError:  # gone since the scan: the step reports it (edlib.train.unreadable)
                continue
            if k is not None and (k in planned or cached(k)):
                continue
            planned.add(k)
            images.append((str(path), flip))
            keys.append(k)
        if images:
            jobs.append(DecodeJob(b, batch.bucket, tuple(images), tuple(keys)))
    return jobs


class _Decode(torch.utils.data.Dataset):
    def __init__(self, jobs: list[DecodeJob]):
        self.jobs = jobs

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, k: int):
        job = self.jobs[k]
        return k, [decode(path, job.bucket, flip) for path, flip in job.images]


class PixelPrefetcher:
    """Decodes `jobs` in order in `workers` processes (0: lazily, in this one).
    `take(batch_index)` returns the job and, per image, its uint8 pixels
    (3, H, W) or None and the reason it cannot be read; None when that batch had nothing to
    decode or was taken already."""

    def __init__(self, jobs: list[DecodeJob], workers: int):
        self.jobs = {job.batch_index: job for job in jobs}
        self._order = [job.batch_index for job in jobs]
        self._position = {index: k for k, index in enumerate(self._order)}
        self._taken = 0
        loader = torch.utils.data.DataLoader(
            _Decode(jobs),
            batch_size=None,  # each item is already a batch
            num_workers=workers,
            # Not pinned here: the step stacks a batch into one pinned buffer anyway, and
            # pinning each image first would only add a copy.
            pin_memory=False,
            prefetch_factor=2 if workers else None,
            # Its own generator: an iterator draws its workers' base seed from the global RNG
            # otherwise, and a resumed run (which starts its iterator after the RNG state is
            # restored) would then draw other dropout masks than the unbroken run.
            generator=torch.Generator().manual_seed(0),
        )
        self._iterator = iter(loader) if jobs else None

    def take(self, batch_index: int) -> tuple[DecodeJob, list] | None:
        if self._position.get(batch_index, -1) < self._taken:  # nothing planned, or taken (or passed) already
            return None
        while self._taken < len(self._order):
            k, pixels = next(self._iterator)
            self._taken += 1
            if self._order[k] == batch_index:
                return self.jobs[batch_index], pixels
        return None

    def close(self) -> None:
        """Stop the workers (an epoch ended, or the run stopped in the middle of one)."""
        self._iterator = None
