"""`gather`: fill a folder of the data root with ground-truth preservation images from a
URL list or a big local folder, and set its multiply.txt.

    from edlib.gather import gather, format_report
    report = gather("data", "laion_part.parquet", "ground_truth", count=1000, per_epoch=50)
    print(format_report(report))

Running it again continues an interrupted gather, and with a larger `count` adds to the
set; the source and the options that decide which images are drawn (seed, filters,
sizes) must stay the same for that (an error says which differ).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from edlib.data.scan import scan
from edlib.data.types import DataRootError, ScanResult
from edlib.gather import report as R
from edlib.gather.decide import Decider, progress_bar, progress_iter
from edlib.gather.errors import GatherError
from edlib.gather.folder_pool import Pool, list_pool
from edlib.gather.from_folder import draw_from_folder
from edlib.gather.from_list import download_from_list
from edlib.gather.img2dataset_runner import DownloadSettings, require
from edlib.gather.journal import Journal
from edlib.gather.multiply import requested_amount, update_multiply
from edlib.gather.signature import DuplicateIndex, from_json
from edlib.gather.target import Target, remove_leftovers, resolve_target
from edlib.gather.training import training_images, training_index
from edlib.gather.url_list import UrlList, list_format, parse_condition, read_url_list


@dataclass(frozen=True)
class GatherOptions:
    """How images are chosen and kept. `min_side` and `image_size` default to
    `resolution` (the training resolution): smaller images are refused, larger downloads
    are shrunk to that shorter side (`image_size=0` keeps them as they are)."""

    resolution: int = 512
    min_side: int | None = None
    max_aspect: float = 2.0
    image_size: int | None = None
    seed: int = 0
    link: bool = False  # folders: symlink instead of copying
    dedupe: bool = True
    url_column: str | None = None
    caption_column: str | None = None
    width_column: str | None = None
    height_column: str | None = None
    where: tuple[str, ...] = ()
    download: DownloadSettings = field(default_factory=DownloadSettings)
    progress: bool = True

    @property
    def min_side_px(self) -> int:
        return self.resolution if self.min_side is None else self.min_side

    @property
    def image_size_px(self) -> int:
        return self.resolution if self.image_size is None else self.image_size


def _source(source: str | Path) -> tuple[str, Path]:
    text = str(source)
    if text.startswith(("http://", "https://")):
        raise GatherError(f"{text}: download the list file first and give its path (a .parquet, .csv, .tsv or .jsonl)")
    path = Path(text).expanduser()
    if path.is_dir():
        return "folder", path.resolve()
    if list_format(path):
        if not path.is_file():
            raise GatherError(f"{path}: no such file")
        return "urls", path.resolve()
    if not path.exists():
        raise GatherError(f"{path}: no such file or folder")
    raise GatherError(f"{path}: neither a folder of images nor a URL list (.parquet, .csv, .tsv, .jsonl)")


def _check_numbers(count: int, opts: GatherOptions) -> None:
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise GatherError(f"count must be a whole number >= 1, got {count!r}")
    if opts.resolution < 8 or opts.min_side_px < 0 or opts.image_size_px < 0:
        raise GatherError("resolution must be >= 8; min_side and image_size >= 0 (0: no limit / full size)")
    if not opts.max_aspect >= 1:
        raise GatherError(f"max_aspect must be >= 1 (2 allows 2:1 and 1:2), got {opts.max_aspect}")


def _identity(kind: str, src: Path, opts: GatherOptions, urls: UrlList | None) -> dict:
    ident = {"kind": kind, "min_side": opts.min_side_px, "max_aspect": opts.max_aspect, "seed": opts.seed, "dedupe": opts.dedupe}
    if urls is not None:
        ident.update(list_sha256=urls.fingerprint, columns=urls.columns, where=list(opts.where), image_size=opts.image_size_px)
    else:
        ident.update(folder=str(src), link=opts.link)
    return json.loads(json.dumps(ident))


def _open_journal(target: Target, kind: str, src: Path, identity: dict) -> Journal:
    journal = Journal(target.journal)
    if not journal.exists:
        journal.append({"t": "start", "kind": kind, "source": str(src), "identity": identity})
        return journal
    old = journal.state.identity
    if old != identity:
        diff = [f"{k}: {old.get(k)!r} then, {identity.get(k)!r} now" for k in sorted(set(old) | set(identity)) if old.get(k) != identity.get(k)]
        raise GatherError(
            f"{target.path} was gathered from {journal.state.source} with other settings ({'; '.join(diff)}). "
            "Use the same source and options to continue or add to it, or gather into a new folder"
        )
    if journal.state.source != str(src):
        journal.append({"t": "source", "source": str(src)})
    return journal


def _read_source(kind: str, src: Path, target: Target, opts: GatherOptions) -> tuple[UrlList | None, Pool | None]:
    """The URL list or the folder's listing, checked before anything is written."""
    if kind == "folder":
        if src == target.root or target.root in src.parents or src in target.root.parents:
            raise GatherError(f"the source folder {src} and the data root {target.root} overlap; gather from a folder outside the data root")
        return None, list_pool(src, seed=opts.seed)
    require()
    urls = read_url_list(
        src,
        url_column=opts.url_column,
        caption_column=opts.caption_column,
        width_column=opts.width_column,
        height_column=opts.height_column,
        where=tuple(parse_condition(w) for w in opts.where),
        min_side=opts.min_side_px,
        max_aspect=opts.max_aspect,
        seed=opts.seed,
    )
    return urls, None


def gather(
    data_root: str | Path,
    source: str | Path,
    folder: str | Path = "ground_truth",
    *,
    count: int,
    per_epoch: float | None = None,
    fraction: float | None = None,
    share: float | None = None,
    options: GatherOptions | None = None,
) -> R.GatherReport:
    """Gather `count` images from `source` (a URL list or a folder) into `folder` of the
    data root, and set its multiply.txt from one of `per_epoch` (images per epoch),
    `fraction` (of the folder per epoch) or `share` (of the whole epoch)."""
    opts = options or GatherOptions()
    _check_numbers(count, opts)
    request = requested_amount(per_epoch, fraction, share)
    target = resolve_target(data_root, folder)
    kind, src = _source(source)
    urls, pool = _read_source(kind, src, target, opts)
    data = _scan(target.root)
    others = training_images(data, target.rel) if data else []
    if request and request[0] == "share" and not others:
        raise GatherError(f"a share of the epoch needs other folders with images in {target.root}; give per_epoch or fraction instead")
    journal = _open_journal(target, kind, src, _identity(kind, src, opts, urls))
    state = journal.state
    remove_leftovers(target.path, state.pending, {k["name"] for k in state.kept})

    training = DuplicateIndex()
    if opts.dedupe:
        training = training_index(target.root, others, target.staging / "training_signatures.json", progress=progress_iter(opts.progress))
    kept = DuplicateIndex()
    for k in state.kept:
        kept.add(from_json(k["sig"]), k["name"])
    decider = Decider(kept, training, dedupe=opts.dedupe)

    started, before = time.time(), len(state.kept)
    try:
        with progress_bar(opts.progress, total=count, initial=min(before, count), desc=f"kept in {target.rel}", unit="img") as bar:
            if pool is not None:
                draw_from_folder(pool, target, journal, decider, count=count, min_side=opts.min_side_px, max_aspect=opts.max_aspect, link=opts.link, bar=bar)
            else:
                download_from_list(
                    urls, target, journal, decider, count=count, min_side=opts.min_side_px, max_aspect=opts.max_aspect,
                    image_size=opts.image_size_px, settings=opts.download, progress=opts.progress, bar=bar,
                )
    except BaseException as exc:
        # Interrupted or failed: record what was done so far; the next run continues.
        _finish(target, journal, started, before, count, kind, src, urls, pool, stopped=type(exc).__name__)
        raise
    report = _finish(target, journal, started, before, count, kind, src, urls, pool, stopped=None)
    data = _scan(target.root)
    if data is not None:
        report.multiply, report.per_epoch, note = update_multiply(data, target.rel, target.path, journal, request)
        report.notes += [note] if note else []
    R.write_report(target.path, report, state.runs)
    return report


def _finish(target, journal, started, before, count, kind, src, urls, pool, *, stopped: str | None) -> R.GatherReport:
    state = journal.state
    added = len(state.kept) - before
    run = {"started": _iso(started), "finished": _iso(time.time()), "requested": count, "added": added}
    if stopped:
        run["stopped_by"] = stopped
    journal.append({"t": "run", "run": run})
    report = _report(target, kind, src, count, added, journal, urls, pool)
    multiply = target.path / "multiply.txt"
    report.multiply = multiply.read_text(encoding="utf-8").strip() if multiply.is_file() else None
    R.write_report(target.path, report, state.runs)
    return report


def _report(target: Target, kind: str, src: Path, count: int, added: int, journal: Journal, urls: UrlList | None, pool: Pool | None) -> R.GatherReport:
    state = journal.state
    if urls is not None:
        candidates = len(urls.order)
        exhausted = state.round is None and state.pointer >= candidates
        reasons = R.add_counts(dict(urls.filtered), state.reasons)
    else:
        candidates = len(pool.paths)
        exhausted = all(p in state.looked for p in pool.paths)
        reasons = dict(state.reasons)
    return R.GatherReport(
        data_root=str(target.root),
        folder=target.rel,
        source=str(src),
        kind=kind,
        requested=count,
        kept=len(state.kept),
        added=added,
        candidates=candidates,
        looked_at=state.looked_at,
        downloaded=state.downloaded,
        reasons=reasons,
        exhausted=exhausted,
    )


def gathered_files(data_root: str | Path, folder: str | Path) -> list[Path]:
    """The images gathered into `folder` of the data root, oldest first ([] if none)."""
    target = resolve_target(data_root, folder)
    if not target.journal.is_file():
        return []
    return [target.path / k["name"] for k in Journal(target.journal).state.kept]


# The scan logs each multiply.txt it applies; a gather is not a scan, so only its warnings show.
_SCAN_LOG = logging.getLogger("edlib.gather.scan")
_SCAN_LOG.setLevel(logging.WARNING)


def _scan(root: Path) -> ScanResult | None:
    """The data root's scan, or None when it holds no image yet (a new data root)."""
    try:
        return scan(root, logger=_SCAN_LOG)
    except DataRootError:
        return None


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t))
