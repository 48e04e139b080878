"""The run folder's small mechanics: control requests, stale requests, metrics on resume."""

import os
import time

import pytest

from edlib.train.run_dir import RunDir


def test_control_requests_are_files(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.pending_requests() == set()
    run.request("save")
    run.request("stop")
    assert (tmp_path / "run" / "control" / "save").is_file()
    assert run.pending_requests() == {"save", "stop"}
    run.clear_request("save")
    assert run.pending_requests() == {"stop"}
    with pytest.raises(ValueError, match="unknown control request 'pause'; allowed: stop, save, sample"):
        run.request("pause")


def test_stale_requests_are_dropped_fresh_ones_kept(tmp_path):
    """A `stop` left by a killed run must not stop the next start; one made just now must."""
    run = RunDir(tmp_path / "run")
    run.request("stop")
    an_hour_ago = time.time() - 3600
    os.utime(run.control / "stop", (an_hour_ago, an_hour_ago))
    run.request("save")
    run.clear_stale_requests(before=time.time() - 60)
    assert run.pending_requests() == {"save"}


def test_metrics_past_the_resumed_step_are_dropped(tmp_path):
    run = RunDir(tmp_path / "run")
    for step in range(1, 6):
        run.append_metrics({"step": step, "loss": 1.0 / step})
    run.truncate_metrics(after_step=3)
    assert [r["step"] for r in run.read_metrics()] == [1, 2, 3]


def test_other_processes_write_nothing(tmp_path):
    run = RunDir(tmp_path / "run", writer=False)
    run.log("hello")
    run.append_metrics({"step": 1})
    run.write_config({"a": 1})
    assert not (tmp_path / "run").exists()
