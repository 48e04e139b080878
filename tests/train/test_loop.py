"""The training loop on the tiny SD1 model: it learns, it honours loss_scale, it leaves frozen
modules alone, it survives NaN losses, re-reads folder settings between epochs, and writes
the run folder DESIGN.md describes."""

import importlib.util
import math

import pytest
import torch
from transformers import CLIPTextModel

from edlib.model.checkpoint import list_checkpoints, resolve_checkpoint
from edlib.train.hooks import Plugin
from edlib.train.loop import train
from edlib.train.progress import TrainingError
from tests.train.loop_support import (
    checkpoint_weights,
    make_data_root,
    max_weight_difference,
    metrics,
    one_torch_thread,  # noqa: F401 - autouse fixture
    tiny_config,
)


def test_loss_goes_down_on_a_learnable_toy_task(tiny_sd1, tmp_path):
    """Four solid-colour images, one batch of four per epoch: 20 steps at lr 1e-3 must cut
    the loss clearly (mean of the last quarter under half of the first quarter)."""
    data = make_data_root(tmp_path / "data")
    config = tiny_config(
        tiny_sd1, data, tmp_path / "run", epochs=20, batch_size=4, unet_lr=1e-3,
        cache_latents="memory", cache_text_embeddings=True,
    )
    summary = train(config)
    losses = [m["loss"] for m in metrics(tmp_path / "run")]
    assert summary.step == 20 and len(losses) == 20
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.5 * first, losses


def test_run_folder_contents(tiny_sd1, tmp_path):
    data = make_data_root(tmp_path / "data")
    run = tmp_path / "run"
    summary = train(tiny_config(tiny_sd1, data, run, epochs=2, save_every_n_epochs=1))
    assert summary.stopped_by == "epochs" and summary.step == 4 and summary.epoch == 2
    assert (run / "config.yaml").read_text().startswith("model: ")
    assert '"init_from": null' in (run / "phase.json").read_text()
    assert sorted(p.name for p in (run / "schedules").iterdir()) == ["ep0_batch_schedule.txt", "ep1_batch_schedule.txt"]
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step-000002", "step-000004"]
    records = metrics(run)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert [r["epoch"] for r in records] == [0.5, 1.0, 1.5, 2.0]
    for r in records:
        assert {"loss", "lr", "images_per_s", "eta_s", "samples"} <= r.keys()
        assert math.isfinite(r["loss"]) and r["images_per_s"] > 0 and r["lr"] == pytest.approx(1e-4)
    log = (run / "log.txt").read_text()
    assert "step 4 epoch 2.00" in log and "saved checkpoint" in log and "training ended at step 4" in log
    # Starting a fresh run in a folder with checkpoints would mix two runs: refused.
    with pytest.raises(ValueError, match="already holds checkpoints"):
        train(tiny_config(tiny_sd1, data, run))


def _write(path, text):
    path.write_text(text, encoding="utf-8")


def test_loss_scale_zero_leaves_the_weights_untouched(tiny_sd1, tmp_path):
    """A folder whose loss_scale is 0 contributes no gradient: training only on it leaves the
    UNet bit-identical (no weight decay), while loss_scale 1 changes it."""
    data = make_data_root(tmp_path / "data", folders={"muted": ["red", "blue"]})
    _write(data / "muted" / "loss_scale.txt", "0\n")
    common = dict(epochs=1, optimizer_args={"weight_decay": 0.0}, unet_lr=1e-3)
    train(tiny_config(tiny_sd1, data, tmp_path / "zero", **common))
    base = checkpoint_weights(tiny_sd1 / "unet", "diffusion_pytorch_model")
    zero = checkpoint_weights(resolve_checkpoint("latest", tmp_path / "zero"))
    assert max_weight_difference(base, zero) == 0.0
    assert all(r["loss"] == 0.0 for r in metrics(tmp_path / "zero"))

    _write(data / "muted" / "loss_scale.txt", "1\n")
    train(tiny_config(tiny_sd1, data, tmp_path / "one", **common))
    one = checkpoint_weights(resolve_checkpoint("latest", tmp_path / "one"))
    assert max_weight_difference(base, one) > 1e-5


class _Keep(Plugin):
    """Keeps the loop's context so a test can look at the models after training."""

    name = "keep"

    def on_start(self, ctx):
        self.ctx = ctx


def test_frozen_text_encoder_stays_bit_identical(tiny_sd1, tmp_path):
    data = make_data_root(tmp_path / "data")
    keep = _Keep()
    train(tiny_config(tiny_sd1, data, tmp_path / "run", epochs=2, unet_lr=1e-3), plugins=[keep])
    original = CLIPTextModel.from_pretrained(tiny_sd1 / "text_encoder").state_dict()
    trained = keep.ctx.models.text_encoder.state_dict()
    assert original.keys() == trained.keys()
    assert all(torch.equal(original[k], trained[k]) for k in original)
    assert not (resolve_checkpoint("latest", tmp_path / "run") / "text_encoder.safetensors").exists()

    # With text_encoder_lr > 0 it trains and is checkpointed.
    train(tiny_config(tiny_sd1, data, tmp_path / "te", epochs=1, text_encoder_lr=1e-3))
    saved = checkpoint_weights(resolve_checkpoint("latest", tmp_path / "te"), "text_encoder")
    assert max(((saved[k] - original[k]).abs().max().item() for k in original)) > 1e-5


class _PoisonAtStep(Plugin):
    """Sets a UNet weight to NaN after optimizer step `step`: every later loss is NaN."""

    name = "poison"

    def __init__(self, step):
        self.step = step

    def on_step(self, ctx, metrics):
        if metrics["step"] == self.step:
            with torch.no_grad():
                next(ctx.models.unet.parameters()).fill_(float("nan"))


def test_nan_losses_are_skipped_then_stop_the_run(tiny_sd1, tmp_path):
    data = make_data_root(tmp_path / "data")
    run = tmp_path / "run"
    warnings = []
    config = tiny_config(tiny_sd1, data, run, batch_size=1, epochs=4, save_every_n_steps=2)
    with pytest.raises(TrainingError, match="NaN/inf for 5 steps in a row.*fp16") as error:
        train(config, plugins=[_PoisonAtStep(3)], callbacks=[lambda e: e.kind == "warning" and warnings.append(e)])
    assert "step-000002" in str(error.value)  # names the last good checkpoint
    assert len(warnings) == 5 and "step skipped" in warnings[0].data["message"]
    records = metrics(run)
    assert [r["skipped"] for r in records] == [False] * 3 + [True] * 4
    # No checkpoint is written during the NaN streak: latest is the last good one.
    latest = resolve_checkpoint("latest", run)
    assert latest.name == "step-000002"
    assert all(torch.isfinite(t).all() for t in checkpoint_weights(latest).values())


def test_settings_are_reread_at_each_epoch(tiny_sd1, tmp_path):
    """multiply.txt changed during epoch 0 shapes epoch 1's schedule, and the change is logged."""
    data = make_data_root(tmp_path / "data")
    run = tmp_path / "run"

    def edit(event):
        if event.kind == "step" and event.data["step"] == 1:
            _write(data / "warm" / "multiply.txt", "2\n")

    train(tiny_config(tiny_sd1, data, run, epochs=2), callbacks=[edit])
    lines = {e: (run / "schedules" / f"ep{e}_batch_schedule.txt").read_text().splitlines() for e in (0, 1)}
    warm = {e: sum("\twarm/" in line for line in lines[e]) for e in (0, 1)}
    assert warm == {0: 2, 1: 4}
    assert len(lines[1]) == 6
    assert "epoch 1: warm/multiply.txt" in (run / "log.txt").read_text()


def test_a_multiplier_raised_mid_run_recounts_the_steps_and_the_lr_holds_its_end(tiny_sd1, tmp_path):
    """Epochs of 2 steps, 3 epochs planned (6 steps); warm x3 from epoch 1 makes later epochs
    4 steps: each epoch event carries the re-counted total (what the progress bar and ETA
    use) and the run ends there. The cosine LR was laid out for 6 steps and holds its end
    value after them instead of rising again."""
    data = make_data_root(tmp_path / "data")
    run = tmp_path / "run"
    totals = {}

    def watch(event):
        if event.kind == "epoch":
            totals[event.data["epoch"]] = event.data["total_steps"]
        if event.kind == "step" and event.data["step"] == 1:
            _write(data / "warm" / "multiply.txt", "3\n")

    config = tiny_config(tiny_sd1, data, run, epochs=3, lr_scheduler="cosine")
    assert train(config, callbacks=[watch]).step == 10
    assert totals == {0: 6, 1: 10, 2: 10}
    assert "epoch 1: the run now takes 10 steps (planned: 6)" in (run / "log.txt").read_text()
    lrs = [m["lr"] for m in metrics(run)]
    assert lrs[5] == pytest.approx(0.0, abs=1e-12) and lrs[6:] == [lrs[5]] * 4


def test_control_files_save_sample_and_stop(tiny_sd1, tmp_path):
    """Requests are files in control/, as a user or notebook writes them for a CLI run."""
    data = make_data_root(tmp_path / "data")
    run = tmp_path / "run"
    seen = []

    def requests(event):
        seen.append(event.kind)
        if event.kind == "step" and event.data["step"] == 2:
            (run / "control" / "save").touch()
            (run / "control" / "sample").touch()
        if event.kind == "step" and event.data["step"] == 3:
            (run / "control" / "stop").touch()

    summary = train(tiny_config(tiny_sd1, data, run, batch_size=1, epochs=3), callbacks=[requests])
    assert summary.stopped_by == "stop request" and summary.step == 3
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step-000002", "step-000003"]
    assert list((run / "control").iterdir()) == []
    assert "sample_request" in seen
    assert "no sampler is configured" in (run / "log.txt").read_text()


def test_time_based_saves_and_retention(tiny_sd1, tmp_path):
    """save_every_n_minutes (tiny here, so every step is due) with keep_last_n_checkpoints=2."""
    data = make_data_root(tmp_path / "data")
    run = tmp_path / "run"
    config = tiny_config(tiny_sd1, data, run, batch_size=1, epochs=1, save_every_n_minutes=1e-5, keep_last_n_checkpoints=2)
    train(config)
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step-000003", "step-000004"]
    log = (run / "log.txt").read_text()
    assert log.count("saved checkpoint") == 4 and "removed old checkpoint step-000001" in log


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is not None, reason="tensorboard is installed here")
def test_tensorboard_without_the_package_is_a_clear_error(tiny_sd1, tmp_path):
    data = make_data_root(tmp_path / "data")
    with pytest.raises(ValueError, match="tensorboard: true needs the tensorboard package"):
        train(tiny_config(tiny_sd1, data, tmp_path / "run", tensorboard=True))


def test_fp16_on_a_cpu_says_so_and_the_summary_reads_as_a_sentence(tiny_sd1, tmp_path):
    data = make_data_root(tmp_path / "data")
    run = tmp_path / "run"
    summary = train(tiny_config(tiny_sd1, data, run, mixed_precision="fp16", max_steps=1, export_formats=[]))
    assert "mixed_precision: fp16 on the CPU" in (run / "log.txt").read_text()
    text = str(summary)
    assert text.startswith(f"run {run}: stopped by max_steps at step 1 (epoch 0), last loss ")
    assert "RunSummary(" not in text and "last checkpoint:" in text
