"""The preservation lab in its quick form: every run trains, is scored by the check, and
lands in the table, the JSON and the chart."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edlib.demo.lab import LabResult, LabRun, format_table, write_chart

REPO = Path(__file__).resolve().parents[2]


def _score(shape, colour=None, background=None, fidelity=None):
    return {"n": 4, "shape": shape, "colour": colour, "both": shape, "background": background, "fidelity": fidelity}


def test_table_and_chart_show_every_run(tmp_path):
    result = LabResult(
        before_new_concept=_score(0.0),
        before_base_world=_score(0.5, 0.75, 1.0, 0.93),
        runs=(
            LabRun("no preservation", None, 0, 280, _score(0.5), _score(0.25, 0.5, 0.75, 0.61)),
            LabRun("preservation x0.1", 0.1, 20, 360, _score(0.5), _score(0.5, 0.75, 1.0)),
        ),
    )
    lines = format_table(result).splitlines()
    assert len(lines) == 2 + 3
    assert lines[2].startswith("| base model (before) | - | 0 | 0% | 75% | 50% | 0.93 | 100% |")
    assert lines[3] == "| no preservation | 0 | 280 | 50% | 50% | 25% | 0.61 | 75% |"
    html = write_chart(result, tmp_path / "chart" / "lab.html").read_text()
    assert "preservation x0.1" in html and "plotly" in html.lower()


def test_fractions_must_be_positive(tmp_path):
    from edlib.demo.lab import run_lab

    with pytest.raises(ValueError, match="fractions must be > 0"):
        run_lab(tmp_path, fractions=[0.1, 0])


@pytest.mark.slow
def test_quick_lab_script_writes_table_json_and_chart(tmp_path):
    out = tmp_path / "lab"
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "preservation_lab.py"), "--out", str(out), "--quick", "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    saved = json.loads((out / "lab.json").read_text())
    assert [run["label"] for run in saved["runs"]] == ["no preservation", "preservation x0.05"]
    assert [run["preservation_per_epoch"] for run in saved["runs"]] == [0, 10]
    # Without preservation the epoch is shorter: fewer steps for the same epochs.
    assert saved["runs"][0]["steps"] < saved["runs"][1]["steps"]
    for run in saved["runs"]:
        assert run["new_concept"]["n"] == 4 and 0 <= run["new_concept"]["shape"] <= 1
    assert (out / "lab.md").read_text().count("\n") == 2 + 3
    assert (out / "lab.html").stat().st_size > 0
    # The preservation folder is only in the runs that asked for it.
    assert not (out / "data" / "none" / "preservation").exists()
    assert (out / "data" / "p0.05" / "preservation" / "multiply.txt").read_text().strip() == "0.05"
