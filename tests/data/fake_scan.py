"""Build `ScanResult`s in memory, for tests of schedules, the preview and balancing that
need many images or many epochs and would be slow (and beside the point) on real files.

The objects are the real data model; only the scanning step is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from edlib.data.types import Caption, FolderInfo, FolderSettings, ImageItem, ScanResult


@dataclass
class FakeFolder:
    """A folder of `n` images. `sizes` cycles over the images (width, height)."""

    path: str
    n: int
    multiply: str | Fraction | int = 1
    sizes: list[tuple[int, int]] = field(default_factory=lambda: [(512, 512)])
    flip_p: float = 0.0
    batch_id: str | None = None
    loss_scale: float = 1.0


def fake_scan(*folders: FakeFolder, root: Path | str = "/fake-data-root") -> ScanResult:
    """A ScanResult with the given folders; image i of folder `a/b` is `a/b/img_00000i.png`."""
    infos, items = [], []
    for f in sorted(folders, key=lambda f: f.path):
        settings = FolderSettings(
            multiply=Fraction(f.multiply), loss_scale=f.loss_scale, flip_p=f.flip_p, batch_id=f.batch_id
        )
        infos.append(FolderInfo(path=f.path, images=f.n, settings=settings))
        prefix = f"{f.path}/" if f.path else ""
        for i in range(f.n):
            w, h = f.sizes[i % len(f.sizes)]
            name = f"img_{i:06d}"
            items.append(ImageItem(f"{prefix}{name}.png", f.path, w, h, Caption(main_prompt=name)))
    items.sort(key=lambda it: it.path)
    return ScanResult(root=Path(root), folders=infos, items=items)
