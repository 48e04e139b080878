"""Faults while training (issue 21, items 1, 2 and 4, and the config messages): an image
that vanishes or cannot be decoded mid-run is skipped, the batch filled and the resume
still exact; a run folder holds one training at a time; bad config values are named."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from edlib.data.scan import scan
from edlib.data.types import DataRootError
from edlib.model.checkpoint import load_checkpoint, resolve_checkpoint
from edlib.train.loop import train
from edlib.train.review import quarantine
from edlib.train.run_lock import LOCK_FILE, RunLockedError, run_lock
from tests.faults.support import REPO, edlib
from tests.train.loop_support import (
    checkpoint_weights,
    make_data_root,
    max_weight_difference,
    metrics,
    one_torch_thread,  # noqa: F401 - autouse fixture
    tiny_config,
)


def _schedule(run: Path, epoch: int) -> list[str]:
    return [line.split("\t")[2] for line in (run / "schedules" / f"ep{epoch}_batch_schedule.txt").read_text().splitlines()]


def _quarantine_at(step: int, root: Path, run: Path, pick):
    """A callback that, after optimizer step `step`, quarantines the images `pick` chooses
    from the current epoch's schedule, as a user reviewing a running training would."""

    def callback(event):
        if event.kind == "step" and event.data["step"] == step:
            quarantine(root, pick(_schedule(run, 0)))

    return callback


def _stop_at(run: Path, step: int):
    def callback(event):
        if event.kind == "step" and event.data["step"] == step:
            (run / "control" / "stop").touch()

    return callback


# -- item 1: quarantine during training ------------------------------------------------------


def test_an_image_quarantined_mid_epoch_is_skipped_and_resume_stays_exact(tiny_sd1, tmp_path):
    """batch_size 1: the image scheduled third in epoch 0 is quarantined after step 1. The
    run skips it (before: "cannot decode image: [Errno 2]" and the run was lost), fills its
    batch from the same bucket, lists it in schedules/ep0_skipped.txt, drops it from epoch 1,
    and a run stopped after step 2 and resumed trains exactly the same."""
    settings = dict(batch_size=1, epochs=2, unet_lr=1e-3, cache_latents="disk")
    pick = lambda paths: [paths[2]]  # noqa: E731
    straight_root, resumed_root = make_data_root(tmp_path / "d1"), make_data_root(tmp_path / "d2")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"

    summary = train(tiny_config(tiny_sd1, straight_root, straight, **settings),
                    callbacks=[_quarantine_at(1, straight_root, straight, pick)])
    gone = _schedule(straight, 0)[2]
    assert summary.step == 4 + 3  # epoch 1 plans the 3 images left
    assert gone not in _schedule(straight, 1)
    skipped = (straight / "schedules" / "ep0_skipped.txt").read_text().splitlines()
    assert len(skipped) == 1
    batch, slot, path, replaced_by, reason = skipped[0].split("\t")
    assert (batch, slot, path) == ("2", "0", gone) and replaced_by != gone and "no such file" in reason
    log = (straight / "log.txt").read_text()
    assert f"WARNING: epoch 0, batch 2: skipped {gone} (no such file" in log

    config = tiny_config(tiny_sd1, resumed_root, resumed, **settings)
    train(config, callbacks=[_quarantine_at(1, resumed_root, resumed, pick), _stop_at(resumed, 2)])
    assert train(config, resume="latest").step == 7
    assert [r["step"] for r in metrics(resumed)] == list(range(1, 8))
    for a, b in zip(metrics(resumed), metrics(straight)):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
    assert (resumed / "schedules" / "ep0_skipped.txt").read_text() == "\n".join(skipped) + "\n"
    final = lambda run: checkpoint_weights(resolve_checkpoint("latest", run))  # noqa: E731
    assert max_weight_difference(final(straight), final(resumed)) <= 1e-6


def test_a_batch_fills_from_its_own_images_first(tiny_sd1, tmp_path):
    root = make_data_root(tmp_path / "data")
    run = tmp_path / "run"
    train(tiny_config(tiny_sd1, root, run, batch_size=2, epochs=1),
          callbacks=[_quarantine_at(1, root, run, lambda paths: [paths[3]])])
    schedule = _schedule(run, 0)
    (line,) = (run / "schedules" / "ep0_skipped.txt").read_text().splitlines()
    assert line.split("\t")[:4] == ["1", "1", schedule[3], schedule[2]]  # its batch mate takes its place


def test_training_stops_clearly_when_no_image_of_a_bucket_can_be_read(tiny_sd1, tmp_path):
    root = make_data_root(tmp_path / "data")
    run = tmp_path / "run"
    with pytest.raises(DataRootError, match=r"epoch 0, batch 1: none of its images, nor any other image of its "
                                            r"64x64 bucket, can be read .*resume with --resume latest"):
        train(tiny_config(tiny_sd1, root, run, batch_size=2, epochs=1),
              callbacks=[_quarantine_at(1, root, run, lambda paths: sorted(set(paths)))])


# -- item 4: a file the scan accepts but cannot be decoded ----------------------------------


def _damage_mid_file(path: Path) -> None:
    """Noise pixels (so the PNG's data is long), then 16 bytes flipped in the middle: the
    header and the end marker are intact, so a header-only scan accepts the file."""
    pixels = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
    path.write_bytes(bytes(data))


def test_a_png_damaged_mid_file_is_skipped_in_training_and_reported_by_the_next_scan(tiny_sd1, tmp_path):
    root = make_data_root(tmp_path / "data")
    _damage_mid_file(root / "warm" / "white_1.png")
    assert not scan(root).skipped  # the scan reads headers only
    run = tmp_path / "run"
    summary = train(tiny_config(tiny_sd1, root, run, batch_size=2, epochs=2))  # before: the run died
    assert summary.step == 4
    log = (run / "log.txt").read_text()
    assert "skipped warm/white_1.png (cannot decode image" in log
    assert log.count("skipped warm/white_1.png") == 1  # warned once, skipped in both epochs
    assert (run / "schedules" / "ep1_skipped.txt").exists()
    report = scan(root)
    assert [(p, r.split(":")[0]) for p, r in report.skipped] == [("warm/white_1.png", "cannot decode image")]
    r = edlib("scan", root)
    assert "skipped warm/white_1.png: cannot decode image" in r.stdout


# -- item 2: one training per run folder -----------------------------------------------------

_HOLD_LOCK = textwrap.dedent(
    """
    import sys, time
    from edlib.train.run_lock import run_lock
    with run_lock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(600)
    """
)


def test_a_second_training_on_a_locked_run_folder_fails_at_once(tiny_sd1, tmp_path):
    root = make_data_root(tmp_path / "data")
    run = tmp_path / "run"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tiny_sd1, root, run, epochs=200).model_dump(mode="json")))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-m", "edlib", "train", str(config)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 180
        while not (run / "metrics.jsonl").exists():
            assert first.poll() is None, first.stderr.read().decode()[-3000:]
            assert time.time() < deadline
            time.sleep(0.2)
        written = (run / "config.yaml").read_text()
        started = time.time()
        second = edlib("train", config, "max_steps=3")
        assert time.time() - started < 60
        assert second.returncode == 1
        assert f"run folder {run} is in use by another training (pid {first.pid} on " in second.stderr
        assert "Traceback" not in second.stderr
        assert (run / "config.yaml").read_text() == written  # before: overwritten by the second
    finally:
        (run / "control").mkdir(exist_ok=True)
        (run / "control" / "stop").touch()
        try:
            first.wait(timeout=120)
        finally:
            if first.poll() is None:
                first.kill()
    assert first.returncode == 0


def test_a_killed_holder_does_not_block_and_one_process_cannot_lock_twice(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(run)], stdout=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == b"locked"
        with pytest.raises(RunLockedError, match=rf"\(pid {holder.pid} on .*, started "):
            with run_lock(run):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (run / LOCK_FILE).exists()  # stale, but the OS released its lock with the process
    with run_lock(run):
        with pytest.raises(RunLockedError):
            with run_lock(run):
                pass
    with run_lock(run):
        pass


# -- config messages -------------------------------------------------------------------------


def test_a_run_dir_that_is_a_file_is_named(tiny_sd1, tmp_path):
    root = make_data_root(tmp_path / "data")
    blocker = tmp_path / "runs"
    blocker.write_text("not a folder")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tiny_sd1, root, blocker / "run").model_dump(mode="json")))
    r = edlib("train", config)
    assert r.returncode == 1
    assert f"run_dir {blocker / 'run'}: {blocker} is a file, not a folder" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_boolean_where_a_number_belongs_is_refused(tiny_sd1, tmp_path):
    root = make_data_root(tmp_path / "data")
    config = tmp_path / "config.yaml"
    values = tiny_config(tiny_sd1, root, tmp_path / "run").model_dump(mode="json")
    config.write_text(yaml.safe_dump({**values, "batch_size": True}))
    r = edlib("train", config)
    assert r.returncode == 1  # before: trained at batch size 1
    assert "batch_size: expected a number, not true/false (got True)" in r.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_load_checkpoint_reads_what_train_saved(tiny_sd1, tmp_path):
    """The checksums written with every checkpoint match what is loaded."""
    root = make_data_root(tmp_path / "data")
    summary = train(tiny_config(tiny_sd1, root, tmp_path / "run", epochs=1))
    assert load_checkpoint(summary.last_checkpoint).step == 2


def test_a_validation_image_quarantined_mid_run_is_left_out(tiny_sd1, tmp_path):
    from edlib.train.validation import split_validation

    root = make_data_root(tmp_path / "data", folders={"warm": ["red", "white", "blue"], "cool": ["green", "blue", "red"]})
    run = tmp_path / "run"
    _, held_out = split_validation(scan(root), 0.34, 7)
    gone = held_out.items[0].path
    config = tiny_config(tiny_sd1, root, run, batch_size=1, epochs=1, validation_fraction=0.34, validate_every_n_steps=1)

    def quarantine_after_step_1(event):
        if event.kind == "step" and event.data["step"] == 1:
            quarantine(root, [gone])

    summary = train(config, callbacks=[quarantine_after_step_1])  # before: the run died in validation
    assert summary.step == 4
    records = metrics(run)
    assert [r["val_images"] for r in records] == [2, 1, 1, 1]
    assert f"WARNING: validation: left out {gone}: no such file" in (run / "log.txt").read_text()
