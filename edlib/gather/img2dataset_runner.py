"""Downloading a batch ("round") of URLs with img2dataset, in a subprocess.

img2dataset is the maintained downloader for exactly this job (threads and processes,
timeouts, X-Robots-Tag opt-outs, per-shard resume, Spark and Ray for lists that outgrow a
machine). It runs in a child process because its `download()` replaces the process's
Ctrl-C handler with one that exits (which would break a notebook kernel's interrupt) and
starts `spawn` worker processes; a child also keeps its imports (torch via webdataset,
wandb, OpenCV) out of the caller. The child gets its own session, so a Ctrl-C reaches
only edlib, which then stops the whole child group and leaves the finished shards.

Its defaults are wrong for training images (256 px, padded to a white square), and its
decoder ignores EXIF orientation, so edlib turns its re-encoding off and gets the files
exactly as served; `edlib.gather.checks` decodes, filters and resizes them.

Resume is img2dataset's: a shard whose `NNNNN_stats.json` exists is not downloaded again
when the same list (same rows, same shard size) is run into the same folder.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edlib.gather import report as R
from edlib.gather.errors import INSTALL_HINT, GatherError, missing_extra

INDEX_COLUMN = "edlib_index"
_SHARD_DIGITS = 5  # img2dataset's oom_shard_count default
_CHILD = "import json, sys\nfrom img2dataset import download\ndownload(**json.load(open(sys.argv[1])))\n"
_HIDDEN = "torch is hidden from img2dataset by edlib (it starts faster without it)"
_CHILD_ENV = {
    "NO_ALBUMENTATIONS_UPDATE": "1",  # albumentations otherwise asks PyPI for a newer version at import
    "WANDB_MODE": "disabled",
    "WANDB_SILENT": "true",
    "PYTHONUNBUFFERED": "1",
}


@dataclass(frozen=True)
class DownloadSettings:
    """How img2dataset downloads: `processes` x `threads` connections at once."""

    processes: int = max(1, min(4, os.cpu_count() or 1))
    threads: int = 32
    timeout: float = 10.0  # seconds per request
    retries: int = 0
    shard_size: int | None = None  # URLs per shard (the unit of resume); None: chosen per round

    def shard_for(self, urls: int) -> int:
        if self.shard_size:
            return self.shard_size
        # One shard per process, within 50..1000: img2dataset restarts a worker process
        # (and its imports, seconds) every 5 shards, so tiny shards cost more than they save.
        return int(min(1000, max(50, math.ceil(urls / self.processes))))


def available() -> bool:
    return importlib.util.find_spec("img2dataset") is not None


def require() -> None:
    if not available():
        raise GatherError(missing_extra("downloading a URL list needs img2dataset"))


def shard_count(urls: int, shard_size: int) -> int:
    return math.ceil(urls / shard_size)


def _shard(shard: int) -> str:
    return f"{shard:0{_SHARD_DIGITS}d}"


def write_round_list(path: Path, urls: list[str], indexes: list[int]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.table({"url": urls, INDEX_COLUMN: pa.array(indexes, pa.int64())}), tmp)
    os.replace(tmp, path)


def complete(out_dir: Path, shards: int) -> bool:
    """Whether img2dataset finished every shard of the round (its stats files exist)."""
    return all((out_dir / f"{_shard(s)}_stats.json").is_file() for s in range(shards))


def _progress_count(out_dir: Path, shards: int) -> int:
    """URLs done so far: all of a finished shard, the successes of one in progress."""
    done = 0
    for s in range(shards):
        stats = out_dir / f"{_shard(s)}_stats.json"
        try:
            done += int(json.loads(stats.read_text())["count"])
            continue
        except (OSError, ValueError, KeyError):
            pass
        try:
            with os.scandir(out_dir / _shard(s)) as it:
                done += sum(1 for e in it if e.name.endswith(".json"))
        except OSError:
            pass
    return done


def run_round(
    list_path: Path,
    out_dir: Path,
    *,
    urls: int,
    shard_size: int,
    settings: DownloadSettings,
    on_progress: Callable[[int], None] | None = None,
) -> None:
    """Download the URLs of `list_path` into `out_dir` (resuming finished shards); raises
    GatherError if img2dataset stops before every shard is done. On Ctrl-C (or any
    exception) the child and its workers are stopped before the exception goes on."""
    require()
    shards = shard_count(urls, shard_size)
    args_path = out_dir.with_name(out_dir.name + ".args.json")
    args_path.write_text(json.dumps(_download_args(list_path, out_dir, shards, shard_size, settings), indent=1))
    log_path = out_dir.with_name(out_dir.name + ".log")
    hide = _torch_hider(out_dir.parent)
    returncode = _run_child(args_path, log_path, out_dir, shards, on_progress, hide_torch=hide)
    if not complete(out_dir, shards) and _HIDDEN in _log_tail(log_path):
        # This img2dataset (or a library it imports) needs torch after all: run it as it is.
        returncode = _run_child(args_path, log_path, out_dir, shards, on_progress, hide_torch=None)
    if on_progress is not None:
        on_progress(_progress_count(out_dir, shards))
    if not complete(out_dir, shards):
        raise GatherError(_failure_message(returncode, log_path))


def _download_args(list_path: Path, out_dir: Path, shards: int, shard_size: int, settings: DownloadSettings) -> dict:
    return {
        "url_list": str(list_path),
        "output_folder": str(out_dir),
        "input_format": "parquet",
        "url_col": "url",
        "caption_col": None,
        "save_additional_columns": [INDEX_COLUMN],
        "output_format": "files",
        "disable_all_reencoding": True,
        "extract_exif": False,
        "compute_hash": None,
        "processes_count": max(1, min(settings.processes, shards)),
        "thread_count": settings.threads,
        "number_sample_per_shard": shard_size,
        "timeout": settings.timeout,
        "retries": settings.retries,
        "incremental_mode": "incremental",
        "user_agent_token": "edlib",
        "enable_wandb": False,
    }


def _torch_hider(staging: Path) -> Path:
    """A folder holding a `torch` package that refuses to import. img2dataset imports
    webdataset, which imports torch if it can (half of the seconds each of img2dataset's
    three processes spends starting) and works without it; put first on the child's path,
    this makes every process start about twice as fast. If a version needs torch, the
    message names this and the download runs again without it."""
    folder = staging / "no_torch"
    init = folder / "torch" / "__init__.py"
    if not init.is_file():
        init.parent.mkdir(parents=True, exist_ok=True)
        init.write_text(f"raise ModuleNotFoundError({_HIDDEN!r}, name='torch')\n")
    return folder


def _run_child(
    args_path: Path, log_path: Path, out_dir: Path, shards: int, on_progress, *, hide_torch: Path | None
) -> int | None:
    env = {**os.environ, **_CHILD_ENV}
    if hide_torch is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(hide_torch), os.environ.get("PYTHONPATH", "")) if p)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(args_path)],
            cwd=out_dir.parent,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            while proc.poll() is None:
                if on_progress is not None:
                    on_progress(_progress_count(out_dir, shards))
                time.sleep(0.5)
        except BaseException:
            stop(proc)
            raise
    return proc.returncode


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop the child and every process it started (its session's process group): a
    polite SIGTERM, then SIGKILL for whatever is left (pool workers may outlive it)."""
    _signal_group(proc, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    _signal_group(proc, signal.SIGKILL)
    proc.wait()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _log_tail(log_path: Path, lines: int = 15) -> str:
    try:
        return "\n    ".join(log_path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def _failure_message(returncode: int | None, log_path: Path) -> str:
    text = _log_tail(log_path)
    hint = ""
    if "imghdr" in text:
        hint = " On Python 3.13 or newer img2dataset needs `pip install standard-imghdr`."
    elif "No module named" in text:
        hint = f" Is img2dataset installed in this Python ({sys.executable})? {INSTALL_HINT}"
    return (
        f"img2dataset stopped (exit code {returncode}) before finishing its download.{hint} "
        f"The end of its log ({log_path}):\n    {text}"
    )


@dataclass(frozen=True)
class Fetched:
    """One URL of a round after img2dataset: the file, or why there is none."""

    index: int  # candidate position
    path: Path | None
    reason: str | None


def read_round(out_dir: Path, shards: int) -> list[Fetched]:
    """Every URL of a finished round, ordered by candidate position."""
    import pyarrow.parquet as pq

    out = []
    for s in range(shards):
        table = pq.read_table(out_dir / f"{_shard(s)}.parquet", columns=[INDEX_COLUMN, "key", "status", "error_message"])
        for index, key, status, error in zip(*(table.column(c).to_pylist() for c in table.column_names)):
            if status == "success":
                out.append(Fetched(int(index), out_dir / _shard(s) / f"{key}.jpg", None))
            else:
                out.append(Fetched(int(index), None, download_reason(error)))
    out.sort(key=lambda f: f.index)
    return out


def download_reason(error: str | None) -> str:
    """A download error of urllib (as img2dataset records it) as a report reason."""
    text = (error or "").strip()
    if text.startswith("HTTP Error "):
        code = text[len("HTTP Error ") :].split(":", 1)[0].strip()
        return f"{R.HTTP_ERROR} {code}"
    low = text.lower()
    if "timed out" in low or "timeout" in low:
        return R.TIMEOUT
    if "x-robots-tag" in low:
        return R.OPTED_OUT
    if "urlopen error" in low or "connection" in low or "name or service" in low or "errno" in low:
        return R.UNREACHABLE
    return R.DOWNLOAD_ERROR
