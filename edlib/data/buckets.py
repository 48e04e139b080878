"""Aspect-ratio buckets: train each image at a size close to its own shape.

Stable Diffusion trains on batches of equal-sized tensors. Rather than crop every image
square, images go to the bucket whose aspect ratio is nearest theirs; every bucket has
about the same pixel count (resolution**2), so memory use and the model's notion of
scale stay the same whatever the shape. Sides are multiples of 64 so the VAE (8x) and
the UNet's down-sampling (another 8x) divide them evenly.
"""

from __future__ import annotations

import numpy as np

BUCKET_STEP = 64  # bucket sides are multiples of this (the VAE's 8x times the UNet's 8x)


def resolution_problem(resolution: int) -> str | None:
    """What is wrong with a training resolution (None: nothing): it must be a positive multiple
    of 64, as the buckets need. One rule for the preview, the config and the notebook form."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < BUCKET_STEP or resolution % BUCKET_STEP:
        return (
            f"must be a multiple of {BUCKET_STEP} (aspect buckets have sides that are multiples of {BUCKET_STEP}), "
            "e.g. 512, 768 or 1024"
        )
    return None


def make_buckets(resolution: int, *, step: int = 64, max_aspect: float = 4.0) -> list[tuple[int, int]]:
    """(width, height) bucket sizes for a base resolution, sorted from tallest to widest.

    For every width on the `step` grid, the tallest height on the grid whose area stays
    within resolution**2, and the same with the sides swapped (so the set is symmetric);
    aspect ratios run from 1/max_aspect to max_aspect. Near square the areas are within a
    few percent of resolution**2; at the extreme aspects the grid is coarse and the area
    drops (to 81% at 832x256 for 512, 75% for the tiny resolutions used in tests).
    """
    if resolution < step:
        raise ValueError(f"resolution {resolution} is smaller than the bucket step {step}")
    if max_aspect < 1:
        raise ValueError(f"max_aspect must be >= 1, got {max_aspect}")
    area = resolution * resolution
    buckets = set()
    for width in range(step, area // step + 1, step):
        height = area // width // step * step
        if height >= step and max(width / height, height / width) <= max_aspect:
            buckets.update({(width, height), (height, width)})
    return sorted(buckets, key=lambda wh: wh[0] / wh[1])


def assign_buckets(widths, heights, buckets) -> np.ndarray:
    """Index into `buckets` of the bucket nearest each image's aspect ratio.

    Nearness is measured in log aspect ratio, so 2:1 and 1:2 are equally far from
    square. Vectorised: a sorted search over the bucket aspects, then the closer of
    the two neighbours.
    """
    widths = np.asarray(widths, dtype=np.float64)
    heights = np.asarray(heights, dtype=np.float64)
    if widths.shape != heights.shape:
        raise ValueError(f"widths and heights differ in shape: {widths.shape} vs {heights.shape}")
    if not len(buckets):
        raise ValueError("no buckets to assign images to")
    if widths.size and (widths.min() <= 0 or heights.min() <= 0):
        raise ValueError("image sizes must be positive")
    bucket_log_aspect = np.log([w / h for w, h in buckets])
    order = np.argsort(bucket_log_aspect, kind="stable")
    sorted_aspect = bucket_log_aspect[order]

    if len(buckets) == 1:
        return np.zeros(widths.shape, dtype=np.int64)
    log_aspect = np.log(widths) - np.log(heights)
    right = np.clip(np.searchsorted(sorted_aspect, log_aspect), 1, len(buckets) - 1)
    left = right - 1
    take_left = (log_aspect - sorted_aspect[left]) <= (sorted_aspect[right] - log_aspect)
    return order[np.where(take_left, left, right)].astype(np.int64)
