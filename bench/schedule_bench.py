"""Benchmark: realise one epoch of ~1,000,000 samples, and preview 10 epochs.

40,000 images in 400 folders, mixed aspect ratios, fractional multipliers scaled so an
epoch holds ~1,000,000 samples. Target (issue 2): one epoch in under 2 s on the 2-core
CI machine. Prints seconds, samples/s and the time as a ratio of the target (< 1 is good);
also the time to write that epoch's schedule file and to preview 10 epochs.

    python bench/schedule_bench.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from edlib.data.preview import preview  # noqa: E402
from edlib.data.schedule import realise_epoch, write_schedule  # noqa: E402
from tests.data.fake_scan import FakeFolder, fake_scan  # noqa: E402

TARGET_S = 2.0
SIZES = [(512, 512), (768, 512), (512, 768), (1024, 576), (600, 900), (1500, 400), (400, 1300)]


def build_scan():
    rng = np.random.default_rng(0)
    raw = rng.uniform(0.05, 50.0, 400)
    raw *= 1_000_000 / (raw.sum() * 100)  # 100 images per folder -> ~1e6 samples
    folders = []
    for i, m in enumerate(raw):
        multiply = Fraction(f"{m:.3f}")
        sizes = [SIZES[j % len(SIZES)] for j in range(i, i + 3)]  # each folder mixes 3 shapes
        folders.append(FakeFolder(f"set{i // 20:02d}/folder{i:03d}", 100, multiply, sizes, flip_p=0.5))
    return fake_scan(*folders)


def best_of(fn, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def main() -> None:
    scan = build_scan()
    seconds, schedule = best_of(lambda: realise_epoch(scan, 0, seed=1, batch_size=4, resolution=512), 3)
    print(f"realise_epoch: {len(scan.items):,} images, {schedule.n_samples:,} samples "
          f"({schedule.n_fill} fill), {len(schedule):,} batches")
    print(f"  best of 3: {seconds:.3f} s, {schedule.n_samples / seconds:,.0f} samples/s")
    print(f"  ratio to the {TARGET_S:.0f} s target: {seconds / TARGET_S:.3f} (< 1 meets it)")

    with tempfile.TemporaryDirectory() as tmp:
        seconds, _ = best_of(lambda: write_schedule(schedule, scan, tmp), 3)
    print(f"write_schedule of that epoch: best of 3: {seconds:.3f} s")

    seconds, p = best_of(lambda: preview(scan, epochs=10, batch_size=4, resolution=512, seed=1), 3)
    print(f"preview of 10 epochs: {p.total_steps:,} steps, best of 3: {seconds:.3f} s")


if __name__ == "__main__":
    main()
