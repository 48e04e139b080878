"""The in-process API a notebook uses: start a run in a background thread, watch its events,
steer it (save, sample, stop) and wait for it, with errors arriving with their traceback."""

import threading
import traceback

import pytest

from edlib.data.types import DataRootError
from edlib.model.checkpoint import list_checkpoints
from edlib.train import start
from edlib.train.loss_tracker import LossTracker, LossTrackerPlugin
from tests.train.loop_support import make_data_root, metrics, one_torch_thread, tiny_config  # noqa: F401


def test_start_watch_steer_and_wait(tiny_sd1, tmp_path):
    data = make_data_root(tmp_path / "data")
    run = tmp_path / "run"
    threads, kinds = set(), []
    box = {}

    def steer(event):
        threads.add(threading.current_thread().name)
        kinds.append(event.kind)
        if event.kind == "step" and event.data["step"] == 1:
            box["handle"].save_now()
            box["handle"].sample_now()
        if event.kind == "step" and event.data["step"] == 3:
            box["handle"].stop()

    tracker = LossTrackerPlugin(LossTracker(buckets=1, warmup=1))  # records from the 2nd sample on
    handle = start(tiny_config(tiny_sd1, data, run, batch_size=1, epochs=5), callbacks=[steer], plugins=[tracker])
    box["handle"] = handle
    summary = handle.wait(timeout=120)

    assert not handle.running
    assert threads == {f"edlib-train:{run}"}  # callbacks run in the training thread
    assert summary.stopped_by == "stop request" and summary.step == 3
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step-000001", "step-000003"]
    assert kinds[:2] == ["start", "epoch"] and kinds[-1] == "done"
    assert {"checkpoint", "sample_request"} <= set(kinds)
    assert [m["step"] for m in handle.metrics()] == [r["step"] for r in metrics(run)] == [1, 2, 3]
    assert handle.latest["step"] == 3 and handle.latest["eta_s"] >= 0
    assert {"loss", "lr", "images_per_s", "epoch"} <= handle.latest.keys()
    # per-image losses, live from the run's own tracker
    assert handle.loss_tracker is tracker
    stats = handle.image_losses()
    assert 1 <= sum(s.observations for s in stats) <= 2 and all(2 <= s.last_step <= 3 for s in stats)


def test_wait_reraises_the_run_error_with_its_traceback(tiny_sd1, tmp_path):
    config = tiny_config(tiny_sd1, tmp_path / "missing", tmp_path / "run")
    events = []
    handle = start(config, callbacks=[events.append])
    with pytest.raises(DataRootError, match="does not exist") as error:
        handle.wait(timeout=120)
    frames = [frame.name for frame in traceback.extract_tb(error.value.__traceback__)]
    assert "train" in frames and "scan" in frames  # where it happened, not just where wait() is
    assert events[-1].kind == "error" and "does not exist" in events[-1].data["message"]


def test_one_run_at_a_time(tiny_sd1, tmp_path):
    data = make_data_root(tmp_path / "data")
    first = start(tiny_config(tiny_sd1, data, tmp_path / "a", epochs=50))
    try:
        with pytest.raises(RuntimeError, match="already training in this process"):
            start(tiny_config(tiny_sd1, data, tmp_path / "b"))
    finally:
        first.stop()
        assert first.wait(timeout=120).stopped_by == "stop request"
    assert start(tiny_config(tiny_sd1, data, tmp_path / "b", epochs=1)).wait(timeout=120).step == 2
