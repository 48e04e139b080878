"""Validation: a deterministic per-folder hold-out, and a loss at fixed timesteps and noise
that repeats exactly, leaves the global RNGs alone and moves when the weights move."""

import random

import numpy as np
import pytest
import torch

from edlib.data.scan import scan
from edlib.model.models import load_models
from edlib.train.hooks import Plugin
from edlib.train.validation import (
    describe_split,
    fixed_timesteps,
    split_validation,
    validation_batches,
    validation_loss,
)
from edlib.world.dataset import write_data_root
from tests.train.loop_support import one_torch_thread  # noqa: F401 - autouse fixture


def test_split_is_per_folder_deterministic_and_stable_under_other_folders(tmp_path):
    write_data_root(tmp_path / "one", {"a": {"count": 10}, "b": {"count": 4}, "c": {"count": 1}}, seed=1)
    data = scan(tmp_path / "one")
    train, val = split_validation(data, 0.2, seed=5)
    held = sorted(item.path for item in val.items)
    # round(0.2 * 10) = 2 from a, round(0.8) = 1 from b, none from c (a folder keeps one image).
    assert [p.split("/")[0] for p in held] == ["a", "a", "b"]
    assert len(train.items) + len(val.items) == 15 and not {i.path for i in train.items} & set(held)
    assert {f.path: f.images for f in val.folders} == {"a": 2, "b": 1}
    assert {f.path: f.images for f in train.folders} == {"a": 8, "b": 3, "c": 1}
    assert sorted(i.path for i in split_validation(data, 0.2, seed=5)[1].items) == held
    assert sorted(i.path for i in split_validation(data, 0.2, seed=6)[1].items) != held

    # Same folders a and b plus another folder: a's and b's held-out images do not change.
    write_data_root(tmp_path / "two", {"a": {"count": 10}, "b": {"count": 4}, "extra": {"count": 7}}, seed=1)
    bigger = split_validation(scan(tmp_path / "two"), 0.2, seed=5)[1]
    assert sorted(i.path for i in bigger.items if not i.path.startswith("extra/")) == held
    assert "a: 2 of 10 held out" in describe_split(train, val)
    with pytest.raises(ValueError, match="validation_fraction"):
        split_validation(data, 1.0, seed=5)


def test_fixed_timesteps_are_bucket_midpoints():
    assert fixed_timesteps(1000) == [100, 300, 500, 700, 900]
    assert fixed_timesteps(1000, 2) == [250, 750]


def _rng_states():
    return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


def test_validation_loss_repeats_exactly_and_follows_the_weights(tiny_sd1, tmp_path):
    write_data_root(tmp_path / "data", {"a": {"count": 3}, "b": {"count": 2}}, seed=2)
    val = scan(tmp_path / "data")
    batches = validation_batches(val, batch_size=2, resolution=64)
    assert sorted(i for b in batches for i in b.items) == list(range(5))
    models = load_models(str(tiny_sd1))
    models.unet.train()

    torch.manual_seed(123)
    before = _rng_states()
    first = validation_loss(models, val, batches, seed=7, timesteps=[100, 500, 900])
    after = _rng_states()
    assert torch.equal(before[0], after[0]) and (before[1] == after[1]).all() and before[2] == after[2]
    assert models.unet.training  # put back as it was

    second = validation_loss(models, val, batches, seed=7, timesteps=[100, 500, 900])
    assert first == second and first.images == 5
    assert set(first.per_timestep) == {100, 500, 900} and all(v > 0 for v in first.per_timestep.values())
    assert first.loss == pytest.approx(sum(first.per_timestep.values()) / 3)
    assert first.metrics()["val_loss"] == first.loss and "val_loss_t500" in first.metrics()
    # Batching does not matter: noise is per image, not per batch.
    single = validation_loss(models, val, validation_batches(val, batch_size=1, resolution=64), seed=7, timesteps=[100, 500, 900])
    assert single.loss == pytest.approx(first.loss, rel=1e-5)

    with torch.no_grad():
        for p in models.unet.parameters():
            p.mul_(1.05)
    assert validation_loss(models, val, batches, seed=7, timesteps=[100, 500, 900]).loss != first.loss
    with pytest.raises(ValueError, match="no validation images"):
        validation_loss(models, val, [], seed=7)


def test_validation_loss_reaches_metrics_through_the_config(tmp_path):
    """validation_fraction in the config: held-out images never train, and every epoch's
    last step carries the same-noise validation loss in metrics.jsonl."""
    from edlib.model.tiny import build_tiny_pipeline
    from edlib.train.loop import train
    from tests.train.loop_support import make_data_root, metrics, tiny_config

    data = make_data_root(tmp_path / "data", folders={"a": ["red", "white", "blue"], "b": ["green", "blue", "red"]})
    seen = []

    class Recorder(Plugin):
        name = "recorder"

        def on_sample_losses(self, ctx, batch, timesteps, losses):
            seen.extend(ctx.data.items[i].path for i in batch.items)

    config = tiny_config(
        build_tiny_pipeline(tmp_path / "model"), data, tmp_path / "run", epochs=2, validation_fraction=0.34
    )
    train(config, plugins=[Recorder()], progress_bar=False)
    train_scan, val = split_validation(scan(data), 0.34, config.seed)
    assert len(val.items) == 2 and not {i.path for i in val.items} & set(seen)
    lines = metrics(tmp_path / "run")
    with_val = [line for line in lines if "val_loss" in line]
    assert [line["step"] for line in with_val] == [lines[len(lines) // 2 - 1]["step"], lines[-1]["step"]]
    assert all(line["val_images"] == 2 and line["val_loss"] > 0 for line in with_val)
