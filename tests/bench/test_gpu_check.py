"""bench/gpu_check.sh in its CPU dry-run form (GPU_CHECK_TINY=1), reduced to a few rows:
the script runs end to end, installs nothing it cannot use, and writes results.jsonl rows of
the shape a GPU run writes, one per measured row, as they are measured."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # about a minute on the 2-core CI machine
def test_the_tiny_dry_run_writes_a_row_per_measurement(tmp_path):
    env = {
        **os.environ,
        "OUT": str(tmp_path),
        "GPU_CHECK_TINY": "1",
        "GPU_CHECK_SD15": "reference:8 lean:8",
        "GPU_CHECK_SDXL": "lean:4",
        "GPU_CHECK_SKIP": "pytest",
        "GPU_CHECK_FLOW": "",
        "PYTHON": sys.executable,
        "PYTHONPATH": str(ROOT),
        "GPU_CHECK_SITE": str(tmp_path / "site"),
    }
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--budget", "600"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    train = [(r["model"], r["case"], r["case_batch"]) for r in rows if r["bench"] == "train"]
    assert train == [("sd15", "reference", 8), ("sd15", "lean", 8), ("sdxl", "lean", 4)]
    for row in rows:
        if row["bench"] == "train":
            assert row["tiny"] and row["device"] == "cpu" and row["images_per_s"] > 0 and row["mfu"] > 0
            assert row["window_steps"] == 2 and row["window_s"] > 0 and row["first_step_s"] > 0
        if row["bench"] == "train" and row["case"] != "reference":
            assert row["host_syncs_per_step"] <= 1  # issue 16: at most one per step
    lean = next(r for r in rows if r["bench"] == "train" and r["case"] == "lean" and r["model"] == "sd15")
    assert lean["x_ref"] == pytest.approx(lean["images_per_s"] / rows[0]["images_per_s"])
    assert [r["bench"] for r in rows].count("sample_memory") == 1
    assert [r["bench"] for r in rows].count("optim") == 3
    summary = (tmp_path / "summary.txt").read_text()
    assert "results.jsonl: 7 row(s)" in summary and "not measured" not in summary
    assert "installed for" in summary or "using the installed packages" in summary
