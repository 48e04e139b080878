"""The end of a run says what it is doing (issue 19): "ending", "sampling" progress, "saving",
"exporting" events in that order; a stop request skips the end samples; and a checkpoint says,
without loading its state, whether resuming it would train any step."""

from edlib.model.checkpoint import finished_by, list_checkpoints, saved_position
from edlib.train.loop import train
from tests.train.loop_support import (
    make_data_root,
    one_torch_thread,  # noqa: F401 - autouse fixture
    tiny_config,
)
from tests.train.method_support import stop_after

PROMPTS = ["red, photo", "blue, photo", "green, photo"]
QUIET = {"step", "epoch", "start", "checkpoint"}  # kinds not about the end (a checkpoint is "saving"'s pair)


def _sample_options():
    return {"sample_prompts": PROMPTS, "export_formats": ["single-file"]}


def _end_events(events):
    """The events from "ending" on, without the kinds every run has anyway."""
    kinds = [e.kind for e in events]
    return [e for e in events[kinds.index("ending") :] if e.kind not in QUIET]


def test_a_finished_run_reports_each_part_of_its_end_in_order(tiny_sd1, tmp_path):
    data = make_data_root(tmp_path / "data")
    run = tmp_path / "run"
    events = []
    summary = train(tiny_config(tiny_sd1, data, run, **_sample_options()), callbacks=[events.append])

    assert summary.stopped_by == "epochs" and summary.step == 4
    tail = [(e.kind, e.data) for e in _end_events(events)]
    assert tail[0] == ("ending", {"step": 4, "stopped_by": "epochs"})
    sampling = [data for kind, data in tail if kind == "sampling"]
    assert [(s["done"], s["total"], s["why"], s["step"]) for s in sampling] == [(n, 3, "end", 4) for n in range(4)]
    kinds = [kind for kind, _ in tail]
    # Samples while the weights are as trained, then the last checkpoint, then the export.
    assert kinds == ["ending", *["sampling"] * 4, "sample", "saving", "exporting", "export", "done"]
    assert tail[kinds.index("exporting")][1] == {"format": "single-file", "step": 4}
    assert (run / "samples" / "step-000004" / "grid.png").is_file()


def test_a_stop_request_skips_the_end_samples_and_still_saves_and_exports(tiny_sd1, tmp_path):
    data = make_data_root(tmp_path / "data")
    run = tmp_path / "run"
    events = []
    summary = train(tiny_config(tiny_sd1, data, run, **_sample_options()), callbacks=[events.append, stop_after(run, 1)])

    assert summary.stopped_by == "stop request" and summary.step == 1
    kinds = [e.kind for e in events]
    assert "sampling" not in kinds and "sample" not in kinds and not (run / "samples").exists()
    # The stop's checkpoint is saved after the step it was asked in, before the end begins.
    assert kinds.index("saving") < kinds.index("ending") < kinds.index("exporting") < kinds.index("done")
    assert [e.kind for e in _end_events(events)] == ["ending", "exporting", "export", "done"]
    assert summary.exports and summary.exports[0].is_file()
    log = (run / "log.txt").read_text(encoding="utf-8")
    assert f"end samples skipped (stopped by request); draw them later with: edlib sample {run}" in log


def test_a_checkpoint_says_whether_resuming_it_would_train(tiny_sd1, tmp_path):
    data = make_data_root(tmp_path / "data")  # 4 images at batch 2: 2 steps an epoch
    finished, stopped = tmp_path / "finished", tmp_path / "stopped"
    train(tiny_config(tiny_sd1, data, finished, epochs=2, export_formats=[]))
    [last] = list_checkpoints(finished / "checkpoints")
    assert saved_position(last) == {"epoch": 2, "batch": 0, "step": 4, "samples": 8}
    assert finished_by(last, epochs=2, max_steps=None) == "epochs"
    assert finished_by(last, epochs=3, max_steps=None) is None  # more epochs: Resume trains on
    assert finished_by(last, epochs=3, max_steps=4) == "max_steps"
    assert finished_by(last, epochs=3, max_steps=0) is None  # 0 is the form's "off"
    train(tiny_config(tiny_sd1, data, stopped, epochs=2, export_formats=[]), callbacks=[stop_after(stopped, 3)])
    [mid] = list_checkpoints(stopped / "checkpoints")
    assert saved_position(mid) == {"epoch": 1, "batch": 1, "step": 3, "samples": 6}
    assert finished_by(mid, epochs=2, max_steps=None) is None

    # A checkpoint from before complete.json held the position: nothing is claimed.
    marker = mid / "complete.json"
    marker.write_text(marker.read_text().replace('"position"', '"not_position"'))
    assert saved_position(mid) is None and finished_by(mid, epochs=1, max_steps=None) is None
