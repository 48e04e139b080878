"""The sampling and export panel on a real tiny run with two checkpoints: set the controls,
click Generate and Export, and check the grid and the files against the library."""

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from edlib.model.tiny import build_tiny_pipeline
from edlib.sample import SAMPLER_NAMES, generate_image, load_pipeline, resolve_spec
from edlib.train import TrainConfig, train
from edlib.widgets import SamplingPanel
from edlib.widgets.sampling_panel import BASE_LABEL, grid_display_width, next_grid_path
from edlib.world import write_data_root

pytestmark = pytest.mark.slow

PROMPTS = ["a red star", "a blue circle"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A full fine-tune of a tiny model for two epochs, a checkpoint after each."""
    root = tmp_path_factory.mktemp("sampling-panel")
    data = root / "data"
    write_data_root(
        data,
        {"stars": {"count": 4, "shapes": ["star"]}, "other": {"count": 4}},
        seed=0,
        size=64,
    )
    model = build_tiny_pipeline(root / "model")
    config = TrainConfig.from_dict(
        {
            "model": str(model),
            "data_root": str(data),
            "run_dir": str(root / "runs" / "tiny"),
            "resolution": 64,
            "batch_size": 4,
            "epochs": 2,
            "unet_lr": 1e-3,
            "save_every_n_epochs": 1,
            "loss_tracking": False,
        }
    )
    train(config, progress_bar=False)
    return root / "runs" / "tiny"


def test_rows_are_the_base_model_and_every_checkpoint_oldest_first(run_dir, recwarn):
    panel = SamplingPanel(run_dir, PROMPTS)
    # A layout key ipywidgets does not know (e.g. "gap") is dropped with only this warning.
    assert not [w for w in recwarn if "unrecognized arguments" in str(w.message)]
    labels = [label for label, _ in panel.models.options]
    assert labels == [BASE_LABEL, "step-000002", "step-000004"]
    assert len(panel.models.value) == 3  # all selected
    assert panel.export_checkpoint.value.endswith("step-000004")  # the newest is exported
    assert list(panel.sampler.options) == list(SAMPLER_NAMES)
    assert list(panel.export_format.options) == [
        "diffusers",
        "single-file",
    ]  # a full fine-tune


def test_generate_shows_a_checkpoints_by_prompts_grid_of_the_right_images(run_dir):
    panel = SamplingPanel(run_dir, PROMPTS, include_base=False)
    panel.sampler.value = "Euler a"
    panel.seed.value = 7
    panel.steps.value = 3
    panel.cfg_scale.value = 5.0
    panel.generate_button.click()

    assert panel.grid_path is not None, panel.grid_status.value
    assert panel.grid_path == run_dir / "samples" / "compare" / "grid-001.png"
    assert panel.grid.value == panel.grid_path.read_bytes()  # the grid is what is shown
    assert panel.grid.layout.display is None and panel.grid.layout.width == f"{grid_display_width(panel.grid_path)}px"
    assert "2 rows x 2 prompts" in panel.grid_status.value

    grid = np.asarray(Image.open(panel.grid_path).convert("RGB"))
    k = 3  # the tiny model's 64 px samples, enlarged 3x in the grid so their prompts fit
    cell = 64 * k
    top, left = grid.shape[0] - 2 * cell, grid.shape[1] - 2 * cell
    assert top > 0 and left > 0  # label bands for prompts and checkpoints
    cells = [
        [
            grid[
                top + r * cell : top + (r + 1) * cell : k,
                left + c * cell : left + (c + 1) * cell : k,
            ]
            for c in range(2)
        ]
        for r in range(2)
    ]

    # The bottom-right cell is the newest checkpoint sampled with exactly the panel's settings.
    [spec, second] = panel.specs()
    assert (spec.sampler, spec.seed, spec.steps, spec.cfg_scale) == (
        "Euler a",
        7,
        3,
        5.0,
    )
    pipeline = load_pipeline(panel.export_checkpoint.value)
    expected = np.asarray(generate_image(pipeline, resolve_spec(second, pipeline)).convert("RGB"))
    assert np.abs(cells[1][1].astype(int) - expected.astype(int)).max() <= 1
    # Rows differ by the checkpoint, columns by the prompt.
    assert not np.array_equal(cells[0][1], cells[1][1])
    assert not np.array_equal(cells[1][0], cells[1][1])

    panel.generate_button.click()  # a second grid does not overwrite the first
    assert panel.grid_path.name == "grid-002.png" and (panel.grid_path.parent / "grid-001.png").is_file()


def test_bad_settings_are_shown_in_the_panel_and_nothing_is_written(run_dir, tmp_path):
    panel = SamplingPanel(run_dir, PROMPTS)
    panel.prompts.value = "  \n\n"
    panel.generate_button.click()
    assert "no prompts" in panel.grid_status.value and panel.grid_path is None

    panel.prompts.value = "a red star"
    panel.models.value = ()
    panel.generate_button.click()
    assert "no rows" in panel.grid_status.value and panel.grid_path is None


def test_export_writes_the_chosen_checkpoint_in_the_chosen_format(run_dir):
    panel = SamplingPanel(run_dir, PROMPTS)
    first = panel.export_checkpoint.options[0][1]
    panel.export_checkpoint.value = first
    panel.export_format.value = "single-file"
    panel.export_dtype.value = "fp16"
    panel.export_button.click()

    [path] = panel.exported
    assert path == run_dir / "exports" / "tiny-step000002.safetensors" and path.is_file()
    with safe_open(str(path), "pt") as f:
        keys = list(f.keys())
        assert any(k.startswith("model.diffusion_model.") for k in keys)  # the original SD layout
        assert f.get_tensor(keys[0]).dtype == torch.float16
        assert f.metadata()["edlib_step"] == "2"
    assert str(path) in panel.export_status.value and "AUTOMATIC1111" in panel.export_status.value


def test_default_prompts_are_captions_from_the_runs_data_root(run_dir):
    panel = SamplingPanel(run_dir)
    data_root = run_dir.parent.parent / "data"
    # The caption file of the first image of each folder (folders and files sorted by name).
    expected = [(data_root / folder / "00000.txt").read_text(encoding="utf-8").strip() for folder in ("other", "stars")]
    assert [spec.prompt for spec in panel.specs()] == expected


def test_a_folder_that_is_not_a_run_is_named_in_the_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}: not a run folder"):
        SamplingPanel(tmp_path)


def test_grids_are_shown_at_their_own_width_up_to_a_laptop_friendly_largest(tmp_path):
    for width, shown in ((200, 200), (700, 700), (3000, 960)):
        Image.new("RGB", (width, 50)).save(tmp_path / f"{width}.png")
        assert grid_display_width(tmp_path / f"{width}.png") == shown


def test_next_grid_path_skips_existing_grids(tmp_path):
    assert next_grid_path(tmp_path) == tmp_path / "grid-001.png"
    (tmp_path / "grid-001.png").write_bytes(b"")
    assert next_grid_path(tmp_path) == tmp_path / "grid-002.png"
