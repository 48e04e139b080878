"""The first code cell of every notebook: install edlib where it is missing, then check it.

A notebook cannot import edlib before installing it, so the cell carries its own text:
`setup_cell_source()` builds it from SETUP_CELL and the source of `edlib_requirement`, and
scripts/sync_notebook_setup.py writes it into every notebook (tests/notebooks/test_sources.py
checks that they agree). `edlib_requirement` runs before edlib is installed: it may use
only the standard library, and imports what it needs itself.

Where edlib comes from is one variable at the top of the cell, EDLIB_SOURCE (or the
environment variable of that name): a git URL the user controls, a wheel file (on Drive for
Colab), or a folder holding a clone. Left empty, the cell takes the clone the notebook
belongs to, else the newest wheel in the usual work folders. The install runs pip in a
subprocess and shows its output only when it fails; the check after it prints one line
naming the version and where it came from (`edlib.environment.check_install`).
"""

from __future__ import annotations

import inspect
from pathlib import Path

DISTRIBUTION = "edlib-sd-trainer"  # the same as edlib.environment.DISTRIBUTION (a test keeps them equal)
WHEEL_GLOB = "edlib_sd_trainer-*.whl"
# Where the cell looks for a wheel when EDLIB_SOURCE is empty: the work folder on Drive
# (Colab), the RunPod volume, the notebook's own folder.
WHEEL_FOLDERS = ("/content/drive/MyDrive/edlib", "/workspace/edlib")


def edlib_requirement(source: str, cwd: Path, wheel_folders: list[Path]) -> str:
    """What pip installs: edlib with its notebook extras from `source`, a git URL, a wheel
    file or a folder holding a clone. Empty `source`: the clone `cwd` is in (or one just
    below it, as `git clone` in Colab's /content leaves it), else the newest edlib wheel in
    `wheel_folders`. Raises FileNotFoundError saying what to set when there is none."""
    from pathlib import Path

    dist, wheel_glob = "edlib-sd-trainer", "edlib_sd_trainer-*.whl"

    def is_clone(folder):
        project = folder / "pyproject.toml"
        return project.is_file() and f'name = "{dist}"' in project.read_text(encoding="utf-8")

    if not source:
        below = sorted(f for f in cwd.iterdir() if f.is_dir()) if cwd.is_dir() else []
        clones = [f for f in [cwd, *cwd.parents, *below] if is_clone(f)]
        wheels = [w for folder in wheel_folders if folder.is_dir() for w in folder.glob(wheel_glob)]
        if not clones and not wheels:
            raise FileNotFoundError(
                "Where should edlib come from? Set EDLIB_SOURCE at the top of this cell to a git URL "
                "(git+https://github.com/YOU/edlib@main), a wheel file (e.g. on your Drive) or a folder "
                f"holding a clone; no clone around {cwd} and no {wheel_glob} in "
                + ", ".join(str(f) for f in wheel_folders)
            )
        source = str(clones[0]) if clones else str(max(wheels, key=lambda w: w.stat().st_mtime))
    if "://" in source or source.startswith("git+"):
        return f"{dist}[notebook] @ {source}"
    path = Path(source).expanduser().resolve()
    if (path.is_dir() and is_clone(path)) or (path.is_file() and path.suffix == ".whl"):
        return f"{dist}[notebook] @ {path.as_uri()}"
    raise FileNotFoundError(
        f"EDLIB_SOURCE: {source} is not a git URL, a wheel file or a folder holding an edlib clone"
    )


SETUP_CELL = '''\
# Setup: installs edlib where it is missing (a fresh Colab or RunPod runtime), then checks the
# libraries it needs; where edlib is installed already it installs nothing. Safe to re-run.
# EDLIB_SOURCE says where pip gets edlib (README, "Install"), for example:
#   "git+https://github.com/YOU/edlib@main"   a git repository you control
#   "/content/drive/MyDrive/edlib/{wheel}"   a wheel (here on Drive)
#   "/path/to/edlib"   a folder holding a clone
# Left empty: the clone this notebook belongs to, else the newest {glob} in
# MyDrive/edlib (Colab: Drive is mounted to look), /workspace/edlib (RunPod) or this folder.
import os

EDLIB_SOURCE = os.environ.get("EDLIB_SOURCE", "")

import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

ON_COLAB = "google.colab" in sys.modules


{function}

def pip_install(*requirements):
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", *requirements], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"pip install {{' '.join(requirements)}} failed:\\n{{done.stdout}}{{done.stderr}}")
    importlib.invalidate_caches()


INSTALLED_NOW = importlib.util.find_spec("edlib") is None
if INSTALLED_NOW:
    if ON_COLAB and not EDLIB_SOURCE and not Path("/content/drive/MyDrive").is_dir():
        from google.colab import drive

        drive.mount("/content/drive")  # to look for the wheel in MyDrive/edlib (your work folder)
    folders = [Path(folder) for folder in {folders!r}] + [Path.cwd()]
    pip_install(edlib_requirement(EDLIB_SOURCE, Path.cwd(), folders))
if ON_COLAB:
    from edlib.environment import pinned_requirements

    pip_install(*pinned_requirements())  # the tested versions; torch and ipywidgets stay Colab's own

from edlib.environment import check_install

check_install(pinned=ON_COLAB, installed_now=INSTALLED_NOW)  # stops here, saying what differs, if it did not take'''


def setup_cell_source(version: str | None = None) -> str:
    """The first code cell of every notebook (scripts/sync_notebook_setup.py writes it)."""
    if version is None:
        from edlib import __version__ as version
    return SETUP_CELL.format(
        wheel=f"edlib_sd_trainer-{version}-py3-none-any.whl",
        glob=WHEEL_GLOB,
        function=inspect.getsource(edlib_requirement),
        folders=list(WHEEL_FOLDERS),
    )
