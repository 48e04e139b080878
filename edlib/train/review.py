"""Review the images a run could not learn.

`review` reads a run's image_loss.csv (written by the loss tracker, see
docs/loss_tracking.md) and its config (for the data root); `format_review` prints the worst
images with their statistics and captions, and per-folder summaries. `quarantine` moves
chosen images out of the data root (`edlib.data.quarantine`), recording this run's
statistics of each in the quarantine manifest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from edlib.data import quarantine as data_quarantine
from edlib.data.quarantine import QUARANTINE, quarantined, restore  # noqa: F401 - one import for review tools
from edlib.data.scan import scan
from edlib.data.types import DataRootError
from edlib.train.loss_tracker import (
    MIN_OBSERVATIONS,
    CsvRow,
    FolderSummary,
    hardest_images,
    read_csv,
    summarise_folders,
)


@dataclass(frozen=True)
class ImageReport(CsvRow):
    """One image of a review: its image_loss.csv row and where it is now."""

    present: bool  # still in the data root (False once quarantined or removed)


def run_data_root(run_dir: str | Path) -> Path:
    """The data root a run trained on, from its config.yaml."""
    config_file = Path(run_dir) / "config.yaml"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file}: not found; is {run_dir} a run folder?")
    config = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
    if not config.get("data_root"):
        raise ValueError(f"{config_file}: has no data_root")
    return Path(config["data_root"])


def _csv_rows(run_dir: str | Path) -> list[CsvRow]:
    csv_file = Path(run_dir) / "image_loss.csv"
    if not csv_file.is_file():
        raise FileNotFoundError(
            f"{csv_file}: not found; it is written at each epoch end and checkpoint of a run with loss tracking"
        )
    return read_csv(csv_file)


def review(run_dir: str | Path, *, top: int = 20) -> list[ImageReport]:
    """The `top` hardest images of a run (`loss_tracker.hardest_images`: enough observations,
    loss above expectation; flagged first). Empty before any image has enough observations;
    `review_status` says why."""
    root = run_data_root(run_dir)
    ranked = hardest_images(_csv_rows(run_dir), top=top)
    return [ImageReport(**asdict(r), present=(root / r.path).is_file()) for r in ranked.images]


def review_status(run_dir: str | Path) -> str:
    """Why `review` lists nothing ("" when it lists something)."""
    return hardest_images(_csv_rows(run_dir)).message()


def review_folders(run_dir: str | Path) -> list[FolderSummary]:
    """Per-folder summaries of a run's image_loss.csv, worst folder first, each with the
    number of images its folder holds now (a scan of the run's data root; None when the root
    cannot be scanned), so "seen" is never mistaken for the folder's size."""
    rows = _csv_rows(run_dir)
    try:
        in_folder = {f.path: f.images for f in scan(run_data_root(run_dir)).folders}
    except DataRootError:  # moved or emptied since the run: the statistics still stand
        in_folder = None
    return summarise_folders(rows, {r.path: r.folder for r in rows}, in_folder)


def format_review(reports: list[ImageReport], folders: list[FolderSummary] = (), status: str = "") -> str:
    """A plain-text table of the reviewed images (and folder summaries, if given)."""
    lines = [
        "mean = average timestep-normalised loss (z-score: 0 is typical, higher is worse); trend < 0: being learned",
        f"only images with at least {MIN_OBSERVATIONS} observations whose loss is above expectation are listed",
        f"{'flag':4}  {'mean':>6}  {'std':>5}  {'trend':>6}  {'obs':>5}  {'last':>6}  path  |  caption",
    ]
    for r in reports:
        note = "" if r.present else "  (not in the data root: quarantined or moved)"
        lines.append(
            f"{'!!' if r.flagged else '':4}  {r.mean:6.2f}  {r.std:5.2f}  {r.trend:6.3f}  {r.observations:5d}  "
            f"{r.last_step:6d}  {r.path}  |  {r.caption}{note}"
        )
    if not reports:
        lines.append(f"({status or 'no image has been observed yet'})")
    if folders:
        lines.append("")
        lines.append(
            "per folder (seen: images with an observation so far, of the images the folder holds now; "
            "the run's first samples only set the expected loss and count for no image):"
        )
        lines.append(f"{'folder':30}  {'seen':>11}  {'obs':>6}  {'mean':>6}  flagged")
        for f in folders:
            seen = f"{f.seen} of {'?' if f.in_folder is None else f.in_folder}"
            lines.append(f"{(f.folder or '.'):30}  {seen:>11}  {f.observations:6d}  {f.mean:6.2f}  {f.flagged}")
    flagged = sum(r.flagged for r in reports)
    lines.append("")
    lines.append(
        f"{flagged} flagged image(s) shown. Look at them: `edlib review RUN --quarantine PATH ...` moves an image "
        f"and its captions to DATA_ROOT/{QUARANTINE}/ (a running training drops it from its next epoch); "
        f"`--restore` puts them back."
    )
    return "\n".join(lines)


def quarantine(
    data_root: str | Path, rel_paths: list[str], *, run_dir: str | Path | None = None, reason: str | None = None
) -> Path:
    """`edlib.data.quarantine.quarantine`, with each image's statistics from `run_dir`'s
    image_loss.csv recorded in the manifest."""
    stats = {}
    # Before the run's first epoch ends there are no statistics yet: the move is recorded without them.
    if run_dir is not None and (Path(run_dir) / "image_loss.csv").is_file():
        for row in _csv_rows(run_dir):
            stats[row.path] = {
                "observations": row.observations, "mean": row.mean, "std": row.std, "trend": row.trend,
                "last_step": row.last_step, "flagged": row.flagged,
            }
    return data_quarantine.quarantine(data_root, rel_paths, run_dir=run_dir, reason=reason, stats=stats)
