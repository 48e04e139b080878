"""`edlib gather` as a user runs it: a subprocess of the command, its output, report and
exit codes."""

import json
import os
import subprocess
import sys

from edlib.gather import report as R
from edlib.world import write_data_root
from tests.gather.conftest import TRAINING_SPEC


def edlib(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edlib", *map(str, args)], capture_output=True, text=True, timeout=120, check=False, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )


def test_gather_from_a_folder_prints_the_report_and_writes_multiply(tmp_path):
    root, pool = tmp_path / "data", tmp_path / "pool"
    write_data_root(root, TRAINING_SPEC, seed=3, size=64)
    write_data_root(pool, {"photos": {"count": 30}}, seed=8, size=64)
    r = edlib("gather", root, "--from", pool, "--to", "ground_truth", "--count", "12", "--per-epoch", "3", "--resolution", "64")
    assert r.returncode == 0, r.stderr
    assert "ground_truth/ in" in r.stdout and "12 of 12 images" in r.stdout and "multiply.txt = 0.25" in r.stdout
    assert "kept in ground_truth" in r.stderr  # the progress bar
    assert (root / "ground_truth/multiply.txt").read_text().strip() == "0.25"
    r = edlib("gather", root, "--from", pool, "--to", "ground_truth", "--count", "20", "--resolution", "64", "--json", "--no-progress")
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and r.stderr == ""
    assert (doc["kept"], doc["added"], doc["multiply"]) == (20, 8, "0.15")  # still 3 images per epoch
    assert json.loads((root / "ground_truth" / R.REPORT_NAME).read_text())["kept"] == 20


def test_gather_bad_input_exits_1_with_the_reason(tmp_path):
    root = tmp_path / "data"
    write_data_root(root, TRAINING_SPEC, seed=3, size=64)
    lst = tmp_path / "list.csv"
    lst.write_text("link,text\nhttps://example.com/a.jpg,a cat\n")
    r = edlib("gather", root, "--from", lst, "--count", "5")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"{lst}: no URL column" in r.stderr and "link, text" in r.stderr
    r = edlib("gather", root, "--from", lst, "--count", "5", "--url-column", "link", "--caption-column", "text", "--where", "aesthetic>=5")
    assert r.returncode == 1 and "'aesthetic' the list does not have" in r.stderr
    r = edlib("gather", root, "--from", lst, "--count", "5", "--per-epoch", "5", "--share", "0.1")
    assert r.returncode == 2  # argparse: one amount only
    assert not (root / "ground_truth").exists()
