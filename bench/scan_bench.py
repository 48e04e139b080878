"""Scan speed on a large tree: a cold scan (empty scan cache) and a re-scan with the cache.

    python bench/scan_bench.py [--root /tmp/edlib_scan_bench] [--images 100000] [--folders 1000]

Generates (once, then reuses) a tree of small PNG and JPEG images, every fifth with a .txt
caption and every tenth folder with a multiply.txt, then prints images/s for both scans and
their ratio. Targets on a 2-core machine: cold >= 10,000 images/s, cached >= 5x cold.

The OS page cache cannot be dropped without root, so "cold" means the scan cache is empty,
not that the files come from disk: on a real disk a first scan is slower than this.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

from PIL import Image

from edlib.data.scan import scan
from edlib.data.scan_cache import cache_path


def encoded_images() -> list[tuple[str, bytes]]:
    """A few small images, encoded once and written many times (generation stays fast)."""
    out = []
    for i, (size, fmt, suffix) in enumerate(
        [((16, 16), "PNG", ".png"), ((24, 16), "JPEG", ".jpg"), ((16, 32), "PNG", ".png"), ((32, 24), "JPEG", ".jpeg")]
    ):
        buf = io.BytesIO()
        Image.new("RGB", size, (40 * i, 90, 200 - 30 * i)).save(buf, fmt)
        out.append((suffix, buf.getvalue()))
    return out


def generate(root: Path, images: int, folders: int) -> None:
    marker = root / ".complete"
    if marker.exists() and marker.read_text() == f"{images} {folders}":
        return
    print(f"generating {images} images in {folders} folders under {root} ...", flush=True)
    start = time.perf_counter()
    kinds = encoded_images()
    per_folder = images // folders
    for f in range(folders):
        folder = root / f"group{f // 100:02d}" / f"folder{f:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        if f % 10 == 0:
            (folder / "multiply.txt").write_text("1.5\n")
        for i in range(per_folder):
            suffix, data = kinds[(f + i) % len(kinds)]
            (folder / f"img{i:05d}{suffix}").write_bytes(data)
            if i % 5 == 0:
                (folder / f"img{i:05d}.txt").write_text(f"a photo of thing {f}, tag {i % 7}")
    marker.write_text(f"{images} {folders}")
    print(f"generated in {time.perf_counter() - start:.1f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "edlib_scan_bench")
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--folders", type=int, default=1_000)
    args = parser.parse_args()
    generate(args.root, args.images, args.folders)

    with tempfile.TemporaryDirectory() as cache:
        os.environ["EDLIB_CACHE_DIR"] = cache  # an empty cache: the first scan is cold
        cold, cold_s, cold_cpu = timed(args.root)
        warm, warm_s, warm_cpu = timed(args.root)
        cache_mb = cache_path(args.root.resolve()).stat().st_size / 1e6

    n = len(cold.items)
    assert warm.items == cold.items, "cached scan differs from cold scan"
    load = os.getloadavg()[0]
    print(f"images: {n} in {len(cold.folders)} folders (scan cache {cache_mb:.1f} MB), load average {load:.1f}")
    print(f"cold scan:   {cold_s:6.2f} s  {n / cold_s:10,.0f} images/s  (cpu {cold_cpu:.2f} s)  target >= 10,000/s")
    print(f"cached scan: {warm_s:6.2f} s  {n / warm_s:10,.0f} images/s  (cpu {warm_cpu:.2f} s)")
    print(f"ratio cold/cached: {cold_s / warm_s:.1f}x wall, {cold_cpu / warm_cpu:.1f}x cpu  (target >= 5x)")


def timed(root: Path):
    """Scan once; wall-clock and CPU seconds (CPU time is steadier on a shared machine)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = scan(root)
    return result, time.perf_counter() - wall, time.process_time() - cpu


if __name__ == "__main__":
    main()
