"""One work folder for all the notebooks: chosen once in 00_quickstart, found again by 01-04.

Everything a notebook writes goes under it: `data/` (the demo data root), `models/` (the
offline model when it has to be written), `runs/NAME/` (each run with its checkpoints,
samples and exports). The default is where files survive on each platform
(`edlib.environment.work_dir`: Google Drive on Colab, /workspace on RunPod, the working
folder locally). The choice is remembered in a small file in the user's config folder
(`$XDG_CONFIG_HOME/edlib/work-folder`, default `~/.config/edlib/`) and, on Colab, also in
the default folder on Drive, because a new Colab runtime starts with an empty home folder.
`EDLIB_WORK` in the environment overrides both (CI, a RunPod template).

Functions take the environment, the platform and the folders they read as arguments with
the real ones as defaults, so tests describe any machine without patching.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path

from edlib.environment import COLAB_DRIVE, detect_platform, work_dir

ENV_VAR = "EDLIB_WORK"
POINTER_NAME = "work-folder"
DEMO_DATA = Path("data") / "demo"
MODELS = Path("models")
RUNS = Path("runs")


def config_dir(environ: Mapping[str, str] | None = None) -> Path:
    """edlib's config folder: `$XDG_CONFIG_HOME/edlib`, else `~/.config/edlib`."""
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "edlib"


def pointer_files(platform: str, environ: Mapping[str, str] | None = None, drive: Path = COLAB_DRIVE) -> list[Path]:
    """Where the chosen folder is remembered, the first found wins when reading."""
    files = [config_dir(environ) / POINTER_NAME]
    if platform == "colab" and (drive / "MyDrive").is_dir():
        files.insert(0, work_dir("colab", drive=drive) / f".{POINTER_NAME}")
    return files


def mount_drive(drive: Path = COLAB_DRIVE) -> None:
    """Mount Google Drive at `drive` on Colab unless it is mounted (Colab asks the user to
    allow access the first time in a session)."""
    if not (drive / "MyDrive").is_dir():
        from google.colab import drive as colab_drive

        colab_drive.mount(str(drive))


def choose_work_folder(
    folder: str | Path | None = None,
    *,
    platform: str | None = None,
    mount: bool = True,
    environ: MutableMapping[str, str] | None = None,
    drive: Path = COLAB_DRIVE,
) -> Path:
    """00_quickstart's choice: `folder`, or the platform's default (on Colab with `mount`,
    Drive is mounted first so the default is on Drive). Creates it, remembers it for the
    other notebooks and sets EDLIB_WORK for this process. Returns the absolute path."""
    environ = os.environ if environ is None else environ
    platform = detect_platform() if platform is None else platform
    if platform == "colab" and mount:
        mount_drive(drive)
    path = Path(folder).expanduser().resolve() if folder else work_dir(platform, drive=drive).resolve()
    path.mkdir(parents=True, exist_ok=True)
    for pointer in pointer_files(platform, environ, drive):
        pointer.parent.mkdir(parents=True, exist_ok=True)
        temporary = pointer.with_name(pointer.name + ".tmp")
        temporary.write_text(str(path) + "\n", encoding="utf-8")
        temporary.replace(pointer)  # never a half-written pointer
    environ[ENV_VAR] = str(path)
    return path


def find_work_folder(
    *,
    platform: str | None = None,
    mount: bool = True,
    environ: MutableMapping[str, str] | None = None,
    drive: Path = COLAB_DRIVE,
) -> tuple[Path, str]:
    """The work folder for notebooks 01-04 and how it was found, in words: EDLIB_WORK, the
    folder 00_quickstart remembered, or (when there is none, or it is gone) the platform's
    default, created. On Colab with `mount`, Drive is mounted first: the folder is there."""
    environ = os.environ if environ is None else environ
    platform = detect_platform() if platform is None else platform
    if environ.get(ENV_VAR):
        return Path(environ[ENV_VAR]).expanduser().resolve(), f"from {ENV_VAR}"
    if platform == "colab" and mount:
        mount_drive(drive)
    for pointer in pointer_files(platform, environ, drive):
        if pointer.is_file():
            path = Path(pointer.read_text(encoding="utf-8").strip())
            if path.is_dir():
                environ[ENV_VAR] = str(path)
                return path, "the folder chosen in 00_quickstart"
    path = work_dir(platform, drive=drive).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path, "the default for this machine (00_quickstart chooses another)"


def latest_run(work: str | Path) -> Path | None:
    """The run under `work/runs/` whose newest checkpoint was written last, or None: what a
    notebook opened after a disconnect offers to resume or sample."""
    runs = Path(work) / RUNS
    found = []
    for checkpoints in runs.glob("*/checkpoints"):
        steps = [c for c in checkpoints.iterdir() if c.is_dir() and c.name.startswith("step-")]
        if steps:
            found.append((max(c.stat().st_mtime for c in steps), checkpoints.parent))
    return max(found)[1] if found else None
