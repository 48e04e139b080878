"""Sampling after training: X/Y grids over models, and models named by folder, single file,
run folder or checkpoint (the layout `edlib.model.checkpoint` writes)."""

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from edlib.model.checkpoint import save_checkpoint
from edlib.model.config import TrainConfig
from edlib.sample import (
    PromptSpec,
    load_pipeline,
    make_grid,
    parse_parameters,
    read_parameters,
    sample_grid,
    sample_images,
    sample_model,
)

PROMPTS = [PromptSpec("a photo of a cat", steps=2, seed=1), PromptSpec("a blue car", steps=2, seed=2, sampler="Euler a")]


def _pixels(image_or_path):
    image = Image.open(image_or_path) if not isinstance(image_or_path, Image.Image) else image_or_path
    return np.asarray(image.convert("RGB"))


def test_xy_grid_over_models_and_prompts_has_the_individual_images_in_its_cells(
    tiny_model, other_tiny_model, tmp_path
):
    models = [("epoch 1", tiny_model), ("epoch 2", load_pipeline(other_tiny_model))]

    out = sample_grid(models, PROMPTS, tmp_path / "grid.png")

    rows = [sample_images(load_pipeline(path), PROMPTS, tmp_path / label) for label, path in
            [("a", tiny_model), ("b", other_tiny_model)]]
    cells = [Image.open(path) for row in rows for path in row]
    expected, layout = make_grid(cells, cols=2, row_labels=["epoch 1", "epoch 2"], col_labels=[p.prompt for p in PROMPTS])
    grid = Image.open(out)
    k = layout.scale  # 64 px samples, enlarged in the grid so their prompts fit above them
    assert grid.size == layout.size == (layout.left + 2 * 64 * k, layout.top + 2 * 64 * k)
    assert np.array_equal(_pixels(grid), _pixels(expected))  # labels included
    for row in range(2):
        for col in range(2):
            enlarged = np.repeat(np.repeat(_pixels(rows[row][col]), k, axis=0), k, axis=1)
            assert np.array_equal(_pixels(grid.crop(layout.box(row, col))), enlarged)
    # Different models, same seeds: the rows differ.
    assert not np.array_equal(_pixels(rows[0][0]), _pixels(rows[1][0]))
    assert parse_parameters(read_parameters(out))["seed"] == 1


def test_random_seeds_are_shared_by_every_cell_of_a_column(tiny_model, tmp_path):
    pipeline = load_pipeline(tiny_model)
    random_seed = [PromptSpec("a cat", steps=1, seed=-1)]

    out = sample_grid([("same", pipeline), ("model", pipeline)], random_seed, tmp_path / "g.png")

    grid = _pixels(out)
    cell = 3 * 64  # 64 px samples, enlarged 3x in a labelled grid
    top = grid.shape[0] - 2 * cell
    assert np.array_equal(grid[top : top + cell, -cell:], grid[top + cell :, -cell:])


def _fake_run(tmp_path, base_model, steps):
    """A run folder as the trainer leaves it: config.yaml naming the base model and complete
    checkpoints holding the trained UNet's weights (here: perturbed copies of the base)."""
    run = tmp_path / "runs" / "myrun"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"model": str(base_model), "seed": 5}), encoding="utf-8")
    # every checkpoint carries the run's config (the trainer writes it; resume checks it)
    config = TrainConfig.from_dict({"model": str(base_model), "data_root": str(tmp_path), "run_dir": str(run)})
    unet = load_pipeline(base_model).unet
    saved = {}
    for step in steps:
        generator = torch.Generator().manual_seed(step)
        weights = {k: v + 0.05 * torch.randn(v.shape, generator=generator) for k, v in unet.state_dict().items()}
        save_checkpoint(run / "checkpoints", step, weights={"unet": weights}, state={"step": step, "config": config.model_dump(mode="json")})
        saved[step] = weights
    return run, saved


def test_run_folder_and_checkpoint_load_the_trained_weights(tiny_model, tmp_path):
    run, saved = _fake_run(tmp_path, tiny_model, [10, 20])
    (run / "checkpoints" / ".tmp-step-000030").mkdir()  # an interrupted save is never used

    newest = load_pipeline(run)
    older = load_pipeline(run / "checkpoints" / "step-000010")

    for pipeline, step in ((newest, 20), (older, 10)):
        state = pipeline.unet.state_dict()
        assert all(torch.equal(state[k], v) for k, v in saved[step].items()), step
    base = load_pipeline(tiny_model)
    assert all(torch.equal(a, b) for a, b in zip(newest.vae.parameters(), base.vae.parameters()))


def test_sample_model_cli_entry_for_a_run(tiny_model, tmp_path):
    run, _ = _fake_run(tmp_path, tiny_model, [10])
    prompts = tmp_path / "prompts.yaml"
    prompts.write_text("defaults: {steps: 2}\nprompts: [a photo of a dog, a red house]\n", encoding="utf-8")

    paths = sample_model(run, prompts)

    folder = run / "samples" / "manual" / "step-000010"
    assert [p.parent for p in paths] == [folder, folder] and (folder / "grid.png").is_file()
    parameters = parse_parameters(read_parameters(paths[1]))
    assert (parameters["prompt"], parameters["model"], parameters["steps"]) == ("a red house", "myrun step-000010", 2)


def test_sample_model_grid_over_every_checkpoint_of_a_run(tiny_model, tmp_path):
    run, _ = _fake_run(tmp_path, tiny_model, [10, 20, 30])

    (out,) = sample_model(run, PROMPTS[:1], tmp_path / "out", grid=True)

    assert out == tmp_path / "out" / "checkpoints-grid.png"
    grid = Image.open(out)
    assert grid.height > 3 * 64 and grid.width > 64  # three rows under a label band
    cells = _pixels(grid)[-3 * 64 :, -64:].reshape(3, 64, 64, 3)
    assert not np.array_equal(cells[0], cells[1]) and not np.array_equal(cells[1], cells[2])


def test_single_file_model(tiny_model, tmp_path):
    from edlib.export.single_file import export_single_file

    base = load_pipeline(tiny_model)
    path = export_single_file(base.unet, base.vae, base.text_encoder, tmp_path / "model.safetensors", dtype="fp32")

    loaded = load_pipeline(path, config=tiny_model)

    spec = [PromptSpec("a cat", steps=2, seed=4)]
    from_file = sample_images(loaded, spec, tmp_path / "file")
    from_folder = sample_images(base, spec, tmp_path / "folder")
    assert np.abs(_pixels(from_file[0]).astype(int) - _pixels(from_folder[0]).astype(int)).max() <= 1


def test_what_is_not_a_model_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a model: expected a diffusers folder"):
        load_pipeline(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no such model file or folder"):
        load_pipeline(tmp_path / "typo")  # looks like owner/name, but its parent is a local folder
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    with pytest.raises(ValueError, match="no complete checkpoint"):
        load_pipeline(run)


def test_an_fp16_export_samples_on_the_cpu_by_default(tiny_model, tmp_path):
    # transformers 5 keeps a stored fp16 text encoder in fp16 unless told otherwise, while
    # diffusers loads the UNet in fp32: the pipeline must come out in one dtype.
    from edlib.export.diffusers_folder import export_diffusers
    from edlib.model.models import load_models

    models = load_models(tiny_model)
    export_diffusers(
        models.unet, models.vae, models.text_encoder, models.tokenizer, models.noise_scheduler.config,
        tmp_path / "fp16", dtype="fp16",
    )
    pipeline = load_pipeline(tmp_path / "fp16")
    assert {pipeline.unet.dtype, pipeline.vae.dtype, pipeline.text_encoder.dtype} == {torch.float32}
    (path,) = sample_images(pipeline, [PromptSpec("a cat", steps=2)], tmp_path / "out")
    assert _pixels(path).std() > 0
