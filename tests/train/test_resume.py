"""Exact resume (issue 3): a run stopped and resumed (once or twice) trains the same batches
with the same losses to the same weights as a run that never stopped; a process killed while
saving leaves the previous checkpoint as `latest`; config changes on resume are checked."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from edlib.model.checkpoint import list_checkpoints, load_checkpoint, resolve_checkpoint
from edlib.model.config import ConfigError
from edlib.train.hooks import Plugin
from edlib.train.loop import train
from tests.train.loop_support import (
    checkpoint_weights,
    make_data_root,
    max_weight_difference,
    metrics,
    one_torch_thread,  # noqa: F401 - autouse fixture
    tiny_config,
)

# Everything that draws random numbers or carries state across steps is switched on, so a
# resume that forgot any of it would show: LR warm-up and cosine decay, EMA, gradient
# accumulation over an epoch boundary, tag shuffling, caption dropout, noise offset, pyramid
# noise, min-SNR weighting, latents cached on disk, a training text encoder.
EXACT = dict(
    batch_size=1,
    gradient_accumulation_steps=2,
    epochs=3,
    unet_lr=1e-3,
    lr_scheduler="cosine",
    lr_warmup_steps=2,
    ema_decay=0.9,
    shuffle_caption=True,
    caption_dropout=0.3,
    noise_offset=0.05,
    multires_noise_iterations=2,
    min_snr_gamma=5.0,
    cache_latents="disk",
    text_encoder_lr=1e-4,
)


def _data(tmp_path: Path) -> Path:
    data = make_data_root(tmp_path / "data")
    for image in data.rglob("*.png"):
        colour = image.stem.split("_")[0]
        image.with_suffix(".txt").write_text(f"{colour}, photo, simple background, sharp", encoding="utf-8")
    return data


def _stop_at(run: Path, *steps):
    """A callback asking the run to stop after each of `steps`, as a user would: by
    creating `control/stop` in the run folder."""

    def callback(event):
        if event.kind == "step" and event.data["step"] in steps:
            (run / "control" / "stop").touch()

    return callback


def _final(run: Path):
    ckpt = load_checkpoint(resolve_checkpoint("latest", run))
    return {**ckpt.weights["unet"], **ckpt.weights["text_encoder"]}, ckpt.state["ema"]["shadow_params"]


# kohya's --full_bf16: trained weights, gradients and optimizer state in bf16 (the EMA in fp32).
FULL_BF16 = dict(mixed_precision="bf16", full_bf16=True)


@pytest.mark.parametrize("precision", [{}, FULL_BF16], ids=["fp32", "full_bf16"])
def test_stop_and_resume_equals_an_uninterrupted_run(tiny_sd1, tmp_path, precision):
    data = _data(tmp_path)
    straight, once, twice = tmp_path / "straight", tmp_path / "once", tmp_path / "twice"
    settings = {**EXACT, **precision}

    assert train(tiny_config(tiny_sd1, data, straight, **settings)).step == 6

    # (a) stop mid-epoch (step 3 = epoch 1, batch 2), resume for the rest.
    config = tiny_config(tiny_sd1, data, once, **settings)
    assert train(config, callbacks=[_stop_at(once, 3)]).stopped_by == "stop request"
    assert train(config, resume="latest").step == 6
    # (b) resuming a resumed run: stop at 2 and at 5 (both mid-step-group positions).
    config = tiny_config(tiny_sd1, data, twice, **settings)
    train(config, callbacks=[_stop_at(twice, 2)])
    assert train(config, resume="latest", callbacks=[_stop_at(twice, 5)]).step == 5
    assert train(config, resume="latest").step == 6

    reference = metrics(straight)
    weights, ema = _final(straight)
    trained_dtype = torch.bfloat16 if precision else torch.float32
    assert {w.dtype for w in weights.values()} == {trained_dtype}  # UNet and text encoder
    assert {e.dtype for e in ema} == {torch.float32}
    for run in (once, twice):
        records = metrics(run)
        assert [r["step"] for r in records] == list(range(1, 7))  # each step once, in order
        for a, b in zip(records, reference):
            assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
            assert a["lr"] == pytest.approx(b["lr"], rel=1e-9)
        for e in range(3):
            name = f"ep{e}_batch_schedule.txt"
            assert (run / "schedules" / name).read_text() == (straight / "schedules" / name).read_text()
        run_weights, run_ema = _final(run)
        assert max_weight_difference(weights, run_weights) <= 1e-6
        assert max((a - b).abs().max().item() for a, b in zip(ema, run_ema)) <= 1e-6
    assert "resumed from" in (twice / "log.txt").read_text()


def test_resume_checks_config_changes(tiny_sd1, tmp_path):
    data = _data(tmp_path)
    run = tmp_path / "run"
    config = tiny_config(tiny_sd1, data, run, batch_size=1, epochs=2)
    train(config, callbacks=[_stop_at(run, 2)])

    # (d) a key that cannot change: a different base model. Refused, naming key and reason.
    other_model = shutil.copytree(tiny_sd1, tmp_path / "other-model")
    changed = config.model_copy(update={"model": str(other_model)})
    with pytest.raises(ConfigError, match=r"fixed on resume:\n  model: .*other-model.*fine-tune of this base model"):
        train(changed, resume="latest")

    # Keys that may change (save cadence, max_steps) are accepted and logged.
    changed = config.model_copy(update={"save_every_n_steps": 1, "max_steps": 5})
    summary = train(changed, resume="latest")
    assert summary.stopped_by == "max_steps" and summary.step == 5
    log = (run / "log.txt").read_text()
    assert "config change on resume: save_every_n_steps: None -> 1" in log
    assert "config change on resume: max_steps: None -> 5" in log
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == [f"step-{s:06d}" for s in (2, 3, 4, 5)]


_KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path

    import edlib.model.checkpoint as checkpoint
    from edlib.model.config import TrainConfig
    from edlib.train.loop import train

    real_save_file = checkpoint.save_file

    def save_file_then_hang(tensors, filename):
        # Write the weights of checkpoint 4 for real, then tell the test and wait to be
        # killed: the process dies with the checkpoint half written.
        real_save_file(tensors, filename)
        if "step-000004" in filename:
            Path(sys.argv[2]).write_text("saving")
            time.sleep(600)

    checkpoint.save_file = save_file_then_hang
    train(TrainConfig.model_validate_json(Path(sys.argv[1]).read_text()))
    """
)


@pytest.mark.slow
def test_killed_during_save_resumes_from_the_previous_checkpoint(tiny_sd1, tmp_path):
    """(c) SIGKILL a training process in the middle of writing checkpoint 4: `latest` is
    checkpoint 2, and resuming from it ends where an uninterrupted run ends."""
    data = _data(tmp_path)
    run = tmp_path / "run"
    config = tiny_config(tiny_sd1, data, run, epochs=3, save_every_n_steps=2, unet_lr=1e-3)
    (tmp_path / "config.json").write_text(config.model_dump_json())
    (tmp_path / "kill.py").write_text(_KILL_SCRIPT)
    signal_file = tmp_path / "saving"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    process = subprocess.Popen(
        [sys.executable, str(tmp_path / "kill.py"), str(tmp_path / "config.json"), str(signal_file)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 180
        while not signal_file.exists():
            assert process.poll() is None, process.stderr.read().decode()
            assert time.time() < deadline, "the training process never reached checkpoint 4"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL

    half = run / "checkpoints" / ".tmp-step-000004"
    assert (half / "unet.safetensors").exists() and not (half / "complete.json").exists()
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step-000002"]
    assert resolve_checkpoint("latest", run).name == "step-000002"

    summary = train(config, resume="latest")
    assert summary.step == 6
    assert "resumed from" in (run / "log.txt").read_text() and "step-000002" in (run / "log.txt").read_text()
    assert [r["step"] for r in metrics(run)] == list(range(1, 7))
    assert not half.exists()  # cleared by the next save at that step

    straight = tmp_path / "straight"
    train(config.model_copy(update={"run_dir": straight}))
    assert max_weight_difference(checkpoint_weights(summary.last_checkpoint), checkpoint_weights(resolve_checkpoint(straight))) <= 1e-6


def test_init_from_starts_a_new_phase(tiny_sd1, tmp_path):
    """init_from: the parent's weights, a fresh optimizer and schedule, the chain recorded."""
    data = _data(tmp_path)
    parent = tmp_path / "phase1"
    train(tiny_config(tiny_sd1, data, parent, epochs=1, unet_lr=1e-3))
    parent_ckpt = resolve_checkpoint("latest", parent)

    # lr 0 and no weight decay: the child's weights must be exactly the parent's.
    child = tmp_path / "phase2"
    config = tiny_config(
        tiny_sd1, data, child, epochs=1, unet_lr=0.0, init_from=str(parent), optimizer_args={"weight_decay": 0.0}
    )
    summary = train(config)
    assert summary.step == 2  # its own step count, not continuing the parent's
    assert max_weight_difference(checkpoint_weights(summary.last_checkpoint), checkpoint_weights(parent_ckpt)) == 0.0
    state = load_checkpoint(summary.last_checkpoint).state
    assert all(s["step"].item() == 2 for s in state["optimizer"]["state"].values())  # fresh optimizer
    phase = json.loads((child / "phase.json").read_text())
    assert phase["init_from"] == str(parent_ckpt) and phase["parent_step"] == 2
    assert phase["parent_phase"]["init_from"] is None  # the parent started from the base model
    base = checkpoint_weights(tiny_sd1 / "unet", "diffusion_pytorch_model")
    assert max_weight_difference(base, checkpoint_weights(parent_ckpt)) > 1e-5


def test_resume_mid_epoch_keeps_the_epoch_planned_before_an_edit(tiny_sd1, tmp_path):
    """multiply.txt edited while a run is stopped mid-epoch: the rest of that epoch is the
    one planned (no sample twice, none skipped); the edit applies from the next epoch."""
    data = _data(tmp_path)
    run = tmp_path / "run"
    config = tiny_config(tiny_sd1, data, run, batch_size=1, epochs=2)
    train(config, callbacks=[_stop_at(run, 2)])  # 2 of epoch 0's 4 batches done
    planned = (run / "schedules" / "ep0_batch_schedule.txt").read_text()

    (data / "warm" / "multiply.txt").write_text("2")
    summary = train(config, resume="latest")
    assert (run / "schedules" / "ep0_batch_schedule.txt").read_text() == planned
    epoch1 = (run / "schedules" / "ep1_batch_schedule.txt").read_text().splitlines()
    assert sum("\twarm/" in line for line in epoch1) == 4 and len(epoch1) == 6
    assert summary.step == 4 + 6 and [r["step"] for r in metrics(run)] == list(range(1, 11))


def test_a_new_phase_keeps_the_text_encoder_the_parent_trained(tiny_sd1, tmp_path):
    """Phase 1 trains the text encoder, phase 2 freezes it: phase 2 trains with phase 1's."""
    data = _data(tmp_path)
    parent = tmp_path / "phase1"
    train(tiny_config(tiny_sd1, data, parent, epochs=1, text_encoder_lr=1e-3))
    trained = checkpoint_weights(resolve_checkpoint("latest", parent), "text_encoder")

    class Keep(Plugin):
        name = "keep"

        def on_start(self, ctx):
            self.text_encoder = ctx.models.text_encoder

    keep = Keep()
    train(tiny_config(tiny_sd1, data, tmp_path / "phase2", epochs=1, init_from=str(parent)), plugins=[keep])
    used = keep.text_encoder.state_dict()
    assert all(torch.equal(used[k], trained[k]) for k in trained)


@pytest.mark.parametrize("stop_at", [2, 3, 7], ids=["at-the-epoch-end", "in-the-changed-epoch", "in-a-later-epoch"])
def test_resume_after_a_mid_run_multiplier_change_follows_the_unbroken_run(tiny_sd1, tmp_path, stop_at):
    """warm x3 written during epoch 0 re-plans the run from 6 to 10 steps at epoch 1. A run
    stopped after the change and resumed follows the unbroken run exactly: the same losses,
    the same learning rates (the cosine laid out for 6 steps, held at its end after them) and
    the same re-counted total in every epoch event."""
    data = _data(tmp_path)
    runs = {"straight": tmp_path / "straight", "resumed": tmp_path / "resumed"}
    totals = {name: {} for name in runs}

    def watch(name):
        def callback(event):
            if event.kind == "epoch":
                totals[name][event.data["epoch"]] = event.data["total_steps"]
            if event.kind == "step" and event.data["step"] == 1 and not (data / "warm" / "multiply.txt").exists():
                (data / "warm" / "multiply.txt").write_text("3\n", encoding="utf-8")

        return callback

    settings = dict(epochs=3, lr_scheduler="cosine", lr_warmup_steps=1, unet_lr=1e-3)
    assert train(tiny_config(tiny_sd1, data, runs["straight"], **settings), callbacks=[watch("straight")]).step == 10
    (data / "warm" / "multiply.txt").unlink()

    config = tiny_config(tiny_sd1, data, runs["resumed"], **settings)
    assert train(config, callbacks=[watch("resumed"), _stop_at(runs["resumed"], stop_at)]).step == stop_at
    assert train(config, resume="latest", callbacks=[watch("resumed")]).step == 10

    straight, resumed = metrics(runs["straight"]), metrics(runs["resumed"])
    assert [r["step"] for r in resumed] == list(range(1, 11))
    for a, b in zip(resumed, straight):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-9, abs=1e-15)
    assert totals["straight"] == {0: 6, 1: 10, 2: 10}
    assert totals["resumed"] == totals["straight"]
