"""What the training panel says while a run ends or samples (issue 19): Stop says what it does
until the run is over and skips the end samples, a finished run says it is finishing (end
samples n/N, saving, exporting), Sample now has a "sampling" state, the live line has one time
left; and the form's defaults follow the model."""

import pytest

from edlib.model.estimate import CPU, estimate_time
from edlib.widgets.training_panel import TrainingPanel
from tests.notebooks.panel_support import QUICK, plotly_as_json, wait_for  # noqa: F401 - autouse fixture


def statuses(panel) -> list[str]:
    """Every value the status line takes from now on (set from the training thread too)."""
    seen = []
    panel.status.observe(lambda change: seen.append(change["new"]), names="value")
    return seen


def _index(seen, text):
    return next(i for i, value in enumerate(seen) if text in value)


@pytest.mark.slow
def test_a_finished_run_says_what_its_end_is_doing(tiny_sd1, data_root, tmp_path):
    panel = TrainingPanel(data_root, tiny_sd1, tmp_path / "run", values={**QUICK, "epochs": 1, "sample_prompts": "a star\na circle"})
    seen = statuses(panel)
    panel.start_button.click()
    summary = panel.wait(timeout=120)

    assert summary.stopped_by == "epochs"
    order = [
        "finishing: drawing end samples 0/2 (step 3)",
        "finishing: drawing end samples 2/2 (step 3)",
        "finishing: saving a checkpoint at step 3",
        "finishing: saved checkpoint step-000003",
        "finishing: exporting single-file...",
        "finishing: exported single-file: run-step000003",
        "finished at step 3 (epochs)",
    ]
    assert [_index(seen, text) for text in order] == sorted(_index(seen, text) for text in order)
    assert panel.sample_path == tmp_path / "run" / "samples" / "step-000003" / "grid.png"


@pytest.mark.slow
def test_stop_says_what_it_does_and_skips_the_end_samples(tiny_sd1, data_root, tmp_path):
    run = tmp_path / "run"
    panel = TrainingPanel(data_root, tiny_sd1, run, values={**QUICK, "epochs": 500, "sample_prompts": "a star"})
    seen = statuses(panel)
    panel.start_button.click()
    wait_for(lambda: panel.progress.value >= 2)

    panel.stop_button.click()
    # At once: the buttons that steer a run are off, and the line says what comes.
    assert panel.stop_button.disabled and panel.save_button.disabled and panel.sample_button.disabled
    assert any("stopping: finishing the current step, then saving a checkpoint" in value for value in seen)
    summary = panel.wait(timeout=120)

    step = summary.step
    assert summary.stopped_by == "stop request"
    order = [
        "stopping: finishing the current step",
        f"stopping: saving a checkpoint at step {step}",
        f"stopping: saved checkpoint step-{step:06d}",
        "stopping: exporting single-file...",
        f"finished at step {step} (stop request)",
    ]
    assert [_index(seen, text) for text in order] == sorted(_index(seen, text) for text in order)
    assert not any("end samples" in value for value in seen) and not (run / "samples").exists()
    assert "end samples skipped (stopped by request)" in (run / "log.txt").read_text(encoding="utf-8")
    assert not panel.resume_button.disabled  # stopped early: Resume continues it


@pytest.mark.slow
def test_sample_now_has_a_sampling_state(tiny_sd1, data_root, tmp_path):
    panel = TrainingPanel(data_root, tiny_sd1, tmp_path / "run", values={**QUICK, "epochs": 500, "sample_prompts": "a star"})
    seen = statuses(panel)
    panel.start_button.click()
    wait_for(lambda: panel.progress.value >= 1)

    panel.sample_button.click()
    assert any("Sample now: sampling after the current step" in value for value in seen)
    wait_for(lambda: panel.sample_path is not None)
    wait_for(lambda: not panel.sample_button.disabled)  # served: it may be asked again
    step = int(panel.sample_path.parent.name.split("-")[1])
    assert _index(seen, f"Sample now: sampling 0/1 (step {step})") < _index(seen, f"Sample now: sampling 1/1 (step {step})")
    panel.stop_button.click()
    panel.wait(timeout=120)


def test_the_live_line_has_one_rate_and_one_time_left(data_root, tmp_path):
    panel = TrainingPanel(data_root, "some/model", tmp_path / "run", values={**QUICK, "epochs": 100})
    view, estimate = panel.live_view, estimate_time(panel.config(), 300, CPU)
    # Before two steps only the loop's ETA is known; after, the measured rate's time left.
    first = {"step": 1, "loss": 0.5, "lr": 1e-4, "images_per_s": 2.0, "eta_s": 1234.0}
    view.recent.append(first)
    view.show_metrics(first, estimate)
    assert view.live.value.count(" left") == 1 and "20 min 34 s left" in view.live.value and "ETA" not in view.live.value
    for step in (2, 3):
        view.recent.append({**first, "step": step, "images_per_s": 4.0, "eta_s": 9999.0})
    view.show_metrics(view.recent[-1], estimate)
    # 297 steps x 2 images at the measured 4 images/s; the loop's 9999 s is not shown beside it.
    assert view.live.value.count(" left") == 1 and "2 min 28 s left" in view.live.value and "2 h 47" not in view.live.value
    assert "4 images/s" in view.live.value and "at that rate the whole run takes 2 min 30 s" in view.live.value
    assert view.live.value.count("images/s") == 1  # one rate: the measured median, not the last step's beside it


def test_the_form_starts_from_what_fits_the_model(data_root, tmp_path):
    panel = TrainingPanel(data_root, "edlib:world", tmp_path / "run")
    config = panel.config()
    assert (config.resolution, config.unet_lr, config.text_encoder_lr) == (64, 3e-4, 3e-4)
    assert "edlib:world (5.03M UNet parameters)" in panel.memory.value and "23 GiB" not in panel.plan.value
    assert "23.3 GiB" not in panel.plan.value  # SD1.5's total as format_gib writes it: not this model's
    if panel.gpu.value == CPU:  # this machine: the CPU row, no fp32 penalty
        assert "fp32 instead of bf16" not in panel.plan.value and "CPU" in panel.plan.value

    # Another model: its values, in the fields still holding the ones offered before.
    panel.set("resolution", 128)  # typed by the user: kept
    panel.set("model", "some/hub-model")
    config = panel.config()
    assert (config.resolution, config.unet_lr, config.text_encoder_lr) == (128, 1e-6, 0.0)
    panel.set("method", "lora")
    assert panel.config().unet_lr == 1e-4
    panel.set("model", "edlib:world")
    assert panel.config().unet_lr == 1e-4  # LoRA's rate at every size
    panel.set("method", "full")
    assert (panel.config().unet_lr, panel.config().resolution) == (3e-4, 128)
