"""The training panel in Python: the form builds the right TrainConfig and estimates, Start
runs it with the live view filled from real events, Stop / Save now / Sample now reach the
run, Resume continues it, Quarantine moves an image out of the data root, and multipliers
saved in the panel mid-run shape the run's next epoch."""

import json
import threading
from pathlib import Path

import pytest

from edlib.data.preview import preview
from edlib.data.scan import scan
from edlib.model.checkpoint import list_checkpoints
from edlib.model.estimate import GPUS, REFERENCE_GPU
from edlib.model.estimate_rows import local_device
from edlib.model.lr import with_lr_curve
from edlib.model.tiny import build_tiny_pipeline
from edlib.train.hooks import Plugin
from edlib.train.loss_tracker import LossTracker, LossTrackerPlugin
from edlib.train.review import quarantined
from edlib.widgets.training_panel import (
    TrainingPanel,
    config_from_form,
    loss_figure,
)
from tests.notebooks.panel_support import QUICK, plotly_as_json, wait_for  # noqa: F401 - autouse fixture

PLOTLY_JSON = "application/vnd.plotly.v1+json"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "model")


def tracker() -> LossTrackerPlugin:
    # statistics from the second sample on; images ranked after 2 observations (a short run)
    return LossTrackerPlugin(LossTracker(buckets=1, warmup=1, min_observations=2))


def chart_data(output) -> list[dict]:
    return output.outputs[0]["data"][PLOTLY_JSON]["data"]


def test_form_builds_the_config_and_the_estimates(data_root, tmp_path):
    panel = TrainingPanel(data_root, "some/model", tmp_path / "run", values={"resolution": 64, "epochs": 3})
    panel.set("batch_size", 2)
    panel.set("max_steps", 0)
    panel.set("save_every_n_minutes", 0)
    panel.set("sample_prompts", "a star\n\n  a red circle  \n")
    panel.set("lr_scheduler", "cosine")
    config = panel.config()
    assert config.data_root == data_root and config.run_dir == tmp_path / "run" and config.model == "some/model"
    assert (config.resolution, config.batch_size, config.epochs) == (64, 2, 3)
    assert config.max_steps is None and config.save_every_n_minutes is None  # 0 in the form means off
    assert config.sample_prompts == ["a star", "a red circle"]
    assert config.lr_scheduler == "cosine" and config.method == "full" and config.unet_lr == 1e-6

    # The plan: the preview's steps, its LR curve, and the estimate for the chosen GPU.
    expected = with_lr_curve(preview(scan(data_root), epochs=3, batch_size=2, resolution=64, seed=config.seed), "cosine", 1e-6)
    assert panel.estimate.steps == expected.total_steps and f"<b>{expected.total_steps}</b> optimizer steps" in panel.plan.value
    curve = chart_data(panel.lr_chart)[0]
    assert curve["y"] == pytest.approx(expected.lr) and curve["y"][0] > curve["y"][-1]  # cosine decays
    # The estimate is for the device a run started here trains on (this machine: the CPU).
    assert panel.gpu.value == local_device() and "GiB" in panel.memory.value
    panel.gpu.value = REFERENCE_GPU
    assert "on a H100 80GB" in panel.plan.value and "GiB" in panel.memory.value
    panel.gpu.value = "RTX 4090 24GB"
    assert panel.price.value == GPUS["RTX 4090 24GB"].price_per_hour
    panel.price.value = 1.5
    assert panel.estimate.price_per_hour == 1.5 and f"${panel.estimate.cost:.2f}" in panel.plan.value

    # Switching method offers its learning rates; LoRA keeps its rank, TI gets its token.
    panel.set("method", "lora")
    assert panel.config().method == "lora" and panel.config().unet_lr == 1e-4
    panel.set("method", "textual_inversion")
    ti = panel.config()
    assert ti.text_encoder_lr == 5e-3 and ti.placeholder_tokens[0]["token"] == "<ohwx>"

    # A bad value is named, and Start is off until it is fixed.
    panel.set("method", "full")
    panel.set("resolution", 100)
    assert "resolution" in panel.plan.value and "multiple of 64" in panel.plan.value
    assert panel.start_button.disabled
    panel.set("resolution", 64)
    assert not panel.start_button.disabled
    with pytest.raises(KeyError, match="no field"):
        panel.set("unet_learning_rate", 1.0)


def test_a_model_or_method_change_re_plans_once(data_root, tmp_path, monkeypatch):
    panel = TrainingPanel(data_root, "some/model", tmp_path / "run")
    plans, errors = [], []
    monkeypatch.setattr(panel.estimate_view, "update", lambda scan, config: plans.append(config))
    monkeypatch.setattr(panel.estimate_view, "show_error", errors.append)
    panel.set("model", "edlib:world")  # offers a new resolution and both learning rates
    assert [(c.model, c.resolution, c.unet_lr, c.text_encoder_lr) for c in plans] == [("edlib:world", 64, 3e-4, 3e-4)]
    panel.set("method", "lora")  # offers both learning rates
    assert len(plans) == 2 and (plans[-1].method, plans[-1].unet_lr) == ("lora", 1e-4) and not errors


def test_config_from_form_without_a_panel(tmp_path):
    config = config_from_form(
        {"data_root": str(tmp_path), "method": "textual_inversion", "token": "<zx>", "init_word": "cat", "text_encoder_lr": 1e-3, "unet_lr": 0}
    )
    assert config.placeholder_tokens == [{"token": "<zx>", "init_word": "cat"}] and config.sample_prompts is None


def test_every_method_has_starting_rates_and_a_valid_form():
    from edlib.model.config import METHODS
    from edlib.model.suggest import METHOD_LRS

    assert set(METHOD_LRS) == set(METHODS)
    config = config_from_form({"data_root": "d", "method": "hypernetwork", "unet_lr": METHOD_LRS["hypernetwork"][0]})
    assert config.exports_at_end() == ("a1111-hypernetwork",) and config.text_encoder_lr == 0


@pytest.mark.slow
def test_start_fills_the_live_view_and_quarantine_moves_an_image(tiny_model, data_root, tmp_path):
    run = tmp_path / "run"
    values = {**QUICK, "epochs": 3, "sample_prompts": "a star"}
    panel = TrainingPanel(data_root, tiny_model, run, values=values, plugins=[tracker()], review_top=3)
    panel.start_button.click()
    summary = panel.wait(timeout=120)

    metrics = panel.handle.metrics()
    assert summary.step == len(metrics) == panel.estimate.steps == 9  # 6 images, batch 2, 3 epochs
    assert panel.losses == [m["loss"] for m in metrics] and panel.loss_steps == list(range(1, 10))
    scatter = chart_data(panel.loss_chart)[0]
    assert scatter["y"] == pytest.approx(panel.losses)  # the chart shows every step after the run
    assert panel.progress.value == panel.progress.max == 9 and panel.progress.description == "step 9 / 9"
    # The last step's numbers stay; an ETA and time "left" would be stale once it is over.
    assert "last step" in panel.live.value and "images/s" in panel.live.value and "at that rate" in panel.live.value
    assert "ETA" not in panel.live.value and "left" not in panel.live.value
    assert "finished at step 9" in panel.status.value
    # The run's own export at its end (a full fine-tune: one single file), named in the status.
    assert panel.exports == [run / "exports" / "run-step000009.safetensors"] and panel.exports[0].is_file()
    assert "exported to exports/: run-step000009.safetensors" in panel.status.value
    assert panel.sample_image.value == (run / "samples" / "step-000009" / "grid.png").read_bytes()
    assert panel.sample_image.layout.display is None and "samples/step-000009/grid.png" in panel.sample_label.value
    # The run ended with a checkpoint: a fresh Start would clash with it. It reached its epochs,
    # so Resume would only sample and export again: not offered until the form asks for more.
    assert panel.start_button.disabled and panel.resume_button.disabled and panel.stop_button.disabled
    assert "the run is finished (epochs)" in panel.status.value and "raise epochs" in panel.status.value
    panel.set("epochs", 4)
    assert not panel.resume_button.disabled and "Resume</b> continues it" in panel.status.value
    panel.set("epochs", 3)
    assert panel.resume_button.disabled and "finished run (newest checkpoint step-000009)" in panel.status.value

    rows = panel.review_box.children
    assert 1 <= len(rows) <= 3
    worst = panel.handle.image_losses()
    label = rows[0].children[1].value
    path = next(s.path for s in worst if s.path in label)
    rows[0].children[2].click()  # Quarantine
    assert not (data_root / path).exists() and (data_root / "_quarantine" / path).is_file()
    assert quarantined(data_root) == [path]
    entry = json.loads((data_root / "_quarantine" / "manifest.json").read_text())["entries"][0]
    assert "training panel" in entry["reason"] and entry["stats"]["observations"] >= 1  # from image_loss.csv
    # the list (or, once it is empty, the message that replaces it) no longer shows the image
    assert all(path not in getattr(row, "children", [None, row])[1].value for row in panel.review_box.children)


@pytest.mark.slow
def test_save_sample_stop_and_resume_reach_the_run(tiny_model, data_root, tmp_path):
    run = tmp_path / "run"
    values = {**QUICK, "epochs": 200, "sample_prompts": "a star"}
    panel = TrainingPanel(data_root, tiny_model, run, values=values, plugins=[tracker()])
    panel.start_button.click()
    assert panel.start_button.disabled and not panel.stop_button.disabled

    wait_for(lambda: panel.progress.value >= 1)
    panel.save_button.click()
    panel.sample_button.click()
    wait_for(lambda: list_checkpoints(run / "checkpoints"))
    wait_for(lambda: panel.sample_path is not None)
    saved = list_checkpoints(run / "checkpoints")[0].name
    panel.stop_button.click()
    summary = panel.wait(timeout=120)
    assert summary.stopped_by == "stop request" and summary.step < 600
    assert panel.sample_path.parent.name.startswith("step-") and panel.sample_path.is_file()
    names = [p.name for p in list_checkpoints(run / "checkpoints")]
    assert names[0] == saved and names[-1] == f"step-{summary.step:06d}"
    assert "stop request" in panel.status.value and not panel.resume_button.disabled

    # Resume after a disconnect: a new panel on the same run folder, one click.
    stopped = summary.step
    again = TrainingPanel(data_root, tiny_model, run, values={**values, "max_steps": stopped + 2}, plugins=[tracker()])
    assert again.start_button.disabled and not again.resume_button.disabled
    assert "Resume" in again.status.value
    again.resume_button.click()
    resumed = again.wait(timeout=120)
    assert resumed.step == stopped + 2 and resumed.stopped_by == "max_steps"
    # The chart shows the whole run: the steps before the stop come from its metrics.jsonl.
    assert again.loss_steps == list(range(1, stopped + 3))
    assert again.losses[:stopped] == [m["loss"] for m in panel.handle.metrics()][:stopped]
    assert chart_data(again.loss_chart)[0]["x"] == again.loss_steps
    assert again.resume_button.disabled  # it reached max_steps


class PauseAtSteps(Plugin):
    """Holds the training thread after the given optimizer steps until the test releases
    it: a user's edit then lands at a known point of the run instead of racing the epoch."""

    name = "pause_at_steps"

    def __init__(self, steps):
        self.reached = {s: threading.Event() for s in steps}
        self.released = {s: threading.Event() for s in steps}

    def on_step(self, ctx, metrics):
        step = metrics["step"]
        if step in self.reached:
            self.reached[step].set()
            if not self.released[step].wait(120):
                raise TimeoutError(f"the test never released step {step}")

    def at(self, step):
        assert self.reached[step].wait(120), f"the run never reached step {step}"

    def release(self, step):
        self.released[step].set()


def _folder_lines(run, epoch, folder):
    lines = (run / "schedules" / f"ep{epoch}_batch_schedule.txt").read_text().splitlines()
    return sum(f"\t{folder}/" in line for line in lines)


@pytest.mark.slow
def test_multipliers_saved_mid_run_shape_the_next_epoch_and_undo_too(tiny_model, data_root, tmp_path):
    run = tmp_path / "run"
    pause = PauseAtSteps([1, 4])  # 6 images at batch 2: epoch 0 is steps 1-3
    panel = TrainingPanel(data_root, tiny_model, run, values={**QUICK, "epochs": 3}, plugins=[pause])
    table = panel.multipliers
    assert table.batch_size.value == 2 and table.resolution == 64  # the table previews the form's run
    panel.start_button.click()

    pause.at(1)  # epoch 0 is training
    table.rows["other"].multiply.value = "3"
    table.save_button.click()
    assert (data_root / "other" / "multiply.txt").read_text() == "3\n"
    assert "from epoch 1 on" in panel.multipliers_note.value
    assert panel.estimate.steps == 3 * 5  # the form re-plans the whole run with 10 samples per epoch
    pause.release(1)

    pause.at(4)  # the first step of epoch 1, which trains with the saved value
    assert panel.epoch_samples == {0: 6, 1: 10}
    assert "epoch 1 trains with the new multipliers: 10 samples (epoch 0 had 6)" in panel.multipliers_note.value
    table.undo_button.click()
    assert not (data_root / "other" / "multiply.txt").exists()  # there was none before the Save
    assert table.rows["other"].multiply.value == "1"
    assert "written while epoch 1 trains" in panel.multipliers_note.value and "from epoch 2 on" in panel.multipliers_note.value
    pause.release(4)

    summary = panel.wait(timeout=120)
    assert panel.epoch_samples == {0: 6, 1: 10, 2: 6}
    assert "epoch 2 trains with the new multipliers: 6 samples (epoch 1 had 10)" in panel.multipliers_note.value
    assert summary.step == 3 + 5 + 3 and [m["step"] for m in panel.handle.metrics()] == list(range(1, 12))
    # The run's own records agree: the schedules it trained, and its log of the changes.
    assert [_folder_lines(run, e, "other") for e in range(3)] == [2, 6, 2]
    assert [_folder_lines(run, e, "concept") for e in range(3)] == [4, 4, 4]
    log = (run / "log.txt").read_text()
    assert "epoch 1: other/multiply.txt: 1 -> 3" in log and "epoch 2: other/multiply.txt: 3 -> 1" in log
    assert "epoch 0: other" not in log


def test_loss_chart_thins_long_runs_and_keeps_the_running_mean():
    steps = list(range(1, 5001))
    losses = [float(s % 2) for s in steps]  # 1, 0, 1, 0, ...: the mean of 20 is 0.5
    raw, mean = loss_figure(steps, losses, max_points=1000).data
    assert len(raw.x) == len(mean.x) == 1000 and raw.x[1] - raw.x[0] == 5
    assert mean.y[0] == 1.0 and mean.y[-1] == pytest.approx(0.5)
