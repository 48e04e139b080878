"""The img2dataset runner's pieces that need no server: its error words as report reasons,
shard sizes, and the torch-free start of its processes."""

import os
import subprocess
import sys

import pytest

from edlib.gather import report as R
from edlib.gather.img2dataset_runner import _HIDDEN, DownloadSettings, _torch_hider, download_reason


def test_download_errors_become_report_reasons():
    assert download_reason("HTTP Error 404: Not Found") == f"{R.HTTP_ERROR} 404"
    assert download_reason("HTTP Error 503: Service Unavailable") == f"{R.HTTP_ERROR} 503"
    assert download_reason("The read operation timed out") == R.TIMEOUT
    assert download_reason("<urlopen error timed out>") == R.TIMEOUT
    assert download_reason("<urlopen error [Errno 111] Connection refused>") == R.UNREACHABLE
    assert download_reason("<urlopen error [Errno -2] Name or service not known>") == R.UNREACHABLE
    assert download_reason("Use of image disallowed by X-Robots-Tag directive") == R.OPTED_OUT
    assert download_reason("something else entirely") == R.DOWNLOAD_ERROR


def test_shards_are_one_per_process_within_bounds():
    settings = DownloadSettings(processes=4)
    assert settings.shard_for(100) == 50 and settings.shard_for(2000) == 500 and settings.shard_for(100_000) == 1000
    assert DownloadSettings(shard_size=7).shard_for(100) == 7


@pytest.mark.slow
def test_img2dataset_imports_with_torch_hidden(tmp_path):
    """webdataset (imported by img2dataset) falls back to stand-ins when torch cannot be
    imported; the runner relies on that to start img2dataset's processes faster."""
    hider = _torch_hider(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hider), os.environ.get("PYTHONPATH", "")]), "NO_ALBUMENTATIONS_UPDATE": "1"}
    code = "import sys, img2dataset\nassert 'torch' not in sys.modules\ntry:\n    import torch\nexcept ModuleNotFoundError as e:\n    print(e)\n"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert _HIDDEN in r.stdout
