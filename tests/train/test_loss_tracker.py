"""Per-image loss tracking: timestep normalisation, flagging, persistence, image_loss.csv,
and (slow) that it finds deliberately bad images in real training of the tiny model."""

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edlib.data.scan import scan
from edlib.model.checkpoint import load_checkpoint, resolve_checkpoint
from edlib.model.models import encode_images, load_models
from edlib.model.tiny import build_tiny_pipeline
from edlib.train.batches import load_pixels
from edlib.train.loop import train
from edlib.train.loss_tracker import (
    MIN_OBSERVATIONS,
    LossTracker,
    LossTrackerPlugin,
    boost_weights,
    hardest_images,
    read_csv,
)
from edlib.world.dataset import write_data_root
from tests.train.loop_support import one_torch_thread, tiny_config  # noqa: F401 - autouse fixture


def _synthetic_stream(tracker, paths, hard, *, rounds, seed=0, start_step=0):
    """Losses whose scale depends strongly on the timestep (10x from t=0 to t=999), with
    per-sample noise; images in `hard` have 1.6x the expected loss."""
    rng = np.random.default_rng(seed)
    step = start_step
    for _ in range(rounds):
        for i in range(0, len(paths), 4):
            batch = paths[i : i + 4]
            t = torch.from_numpy(rng.integers(0, 1000, len(batch)))
            expected = 1.0 - 0.9 * t.double() / 1000
            factor = torch.tensor([1.6 if p in hard else 1.0 for p in batch], dtype=torch.float64)
            noise = torch.from_numpy(rng.lognormal(0.0, 0.15, len(batch)))
            step += 1
            tracker.observe(batch, t, (expected * factor * noise).float(), step)
    return step


def test_normalisation_finds_the_hard_image_and_flags_nothing_else():
    paths = [f"f/{i:02d}.png" for i in range(20)]
    tracker = LossTracker(buckets=10)
    _synthetic_stream(tracker, paths, {"f/07.png"}, rounds=40)
    stats = tracker.stats()
    assert stats[0].path == "f/07.png" and stats[0].flagged
    assert tracker.flagged() == ["f/07.png"]
    assert all(s.observations > 30 for s in stats)
    # The bucket means follow the timestep dependence: the expected loss falls with t.
    means = [m for m, _, _ in tracker.expected_loss()]
    assert means[0] > 3 * means[-1]


def test_too_few_observations_are_never_flagged():
    paths = [f"f/{i:02d}.png" for i in range(20)]
    tracker = LossTracker(buckets=10, min_observations=500)
    _synthetic_stream(tracker, paths, {"f/07.png"}, rounds=40)
    assert tracker.flagged() == []
    assert math.isnan(tracker.stats()[0].score)


def test_non_finite_losses_are_ignored():
    tracker = LossTracker(buckets=1, warmup=0)
    tracker.observe(["a.png", "b.png"], torch.tensor([1, 2]), torch.tensor([1.0, 2.0]), 1)
    tracker.observe(["a.png", "b.png"], torch.tensor([1, 2]), torch.tensor([float("nan"), float("inf")]), 2)
    assert [b[2] for b in tracker.expected_loss()] == [2]


def test_state_dict_round_trip_continues_exactly(tmp_path):
    """Saving mid-way (through torch.save / weights_only load, as checkpoints do) and going on
    gives the same statistics as never stopping."""
    paths = [f"f/{i:02d}.png" for i in range(12)]
    straight = LossTracker(buckets=5)
    step = _synthetic_stream(straight, paths, {"f/03.png"}, rounds=10, seed=1)
    _synthetic_stream(straight, paths, {"f/03.png"}, rounds=10, seed=2, start_step=step)

    first = LossTracker(buckets=5)
    step = _synthetic_stream(first, paths, {"f/03.png"}, rounds=10, seed=1)
    torch.save(first.state_dict(), tmp_path / "state.pt")
    resumed = LossTracker(buckets=5)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    _synthetic_stream(resumed, paths, {"f/03.png"}, rounds=10, seed=2, start_step=step)
    assert resumed.stats() == straight.stats()

    with pytest.raises(ValueError, match="buckets"):
        LossTracker(buckets=7).load_state_dict(first.state_dict())


def test_csv_round_trip_with_folders_and_captions(tmp_path):
    root = tmp_path / "data"
    write_data_root(root, {"people": {"count": 4}, "things": {"count": 4}}, seed=3)
    data = scan(root)
    tracker = LossTracker(buckets=4, warmup=2, min_observations=3)
    paths = [item.path for item in data.items]
    _synthetic_stream(tracker, paths, {paths[5]}, rounds=30)
    rows = read_csv(tracker.write_csv(tmp_path / "image_loss.csv", data))
    assert [r.path for r in rows] == [s.path for s in tracker.stats()]
    assert rows[0].path == paths[5] and rows[0].flagged
    item = data.items[5]
    assert rows[0].folder == item.folder == "things" and rows[0].caption == item.caption.text()
    assert rows[0].observations == tracker.stats()[0].observations and rows[0].last_step > 0
    summaries = tracker.folder_summaries(data)
    assert [s.folder for s in summaries] == ["things", "people"] and summaries[0].flagged == 1
    (tmp_path / "bad.csv").write_text("path,mean\nx.png,1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.csv: not an image_loss.csv"):
        read_csv(tmp_path / "bad.csv")


def test_boost_weights_are_bounded():
    assert boost_weights(["a.png"], 0.5) == {"a.png": 1.5}
    assert boost_weights(["a.png"], 5.0) == {"a.png": 2.0}  # capped at max_boost=1
    assert boost_weights(["a.png"], 0.0) == {}
    assert boost_weights(["a.png"], -0.5) == {"a.png": 0.5}
    with pytest.raises(ValueError, match="hard_example_boost"):
        boost_weights(["a.png"], -2.0)


# -- real training -------------------------------------------------------------------------


def _calibrated_tiny_model(tmp_path, data_root: Path) -> Path:
    """The tiny SD1 pipeline with its VAE scaling factor set so that the latents of the data
    have unit standard deviation, which is what SD's scaling factor (0.18215) does for SD's
    VAE. The tiny VAE's random weights give latents of std ~0.05 at 0.18215, so small that the
    loss barely depends on the image and no image could stand out."""
    model = build_tiny_pipeline(tmp_path / "model", variant="sd1")
    models = load_models(str(model))
    pixels = torch.stack([load_pixels(data_root / item.path, (64, 64), False) for item in scan(data_root).items])
    std = encode_images(models, pixels).std().item()
    config_file = model / "vae" / "config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["scaling_factor"] = models.vae_scaling_factor / std
    config_file.write_text(json.dumps(config), encoding="utf-8")
    return model


def _add_noise_images(root: Path, placements: list[str]) -> list[str]:
    """Pure-noise images with a plausible caption, among the clean ones."""
    rng = np.random.default_rng(0)
    bad = []
    for i, folder in enumerate(placements):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / folder / f"noise{i}.png")
        (root / folder / f"noise{i}.txt").write_text("a red circle on a white background\n", encoding="utf-8")
        bad.append(f"{folder}/noise{i}.png")
    return bad


def _train_tracked(model, data_root, run_dir, epochs=20):
    plugin = LossTrackerPlugin(LossTracker(buckets=10, warmup=5))
    config = tiny_config(
        model, data_root, run_dir, epochs=epochs, batch_size=4, unet_lr=3e-3,
        cache_latents="memory", cache_text_embeddings=True, write_schedule=False,
    )
    train(config, plugins=[plugin])
    return plugin


@pytest.mark.slow
def test_training_ranks_noise_images_at_the_top_and_flags_little_on_clean_data(tmp_path):
    """20 clean rendered images plus 3 pure-noise images, trained 20 short epochs through the
    real loop: the noise images must rank so near the top that a random ranking does as well
    with probability < 1% (exact rank-sum test, computed below), and no clean image may be
    flagged; the same clean images alone flag at most 1. (20 epochs is too little evidence for the noise images to pass the
    flagging test as well: ~18 observations each, excess ~0.5 sd, about 2 standard errors.)"""
    clean = {"a": {"count": 10}, "b": {"count": 10}}
    dirty_root = tmp_path / "dirty"
    write_data_root(dirty_root, clean, seed=1)
    model = _calibrated_tiny_model(tmp_path, dirty_root)
    bad = _add_noise_images(dirty_root, ["a", "b", "a"])

    plugin = _train_tracked(model, dirty_root, tmp_path / "run")
    ranking = [s.path for s in plugin.tracker.stats()]
    n, k = len(ranking), len(bad)
    rank_sum = sum(ranking.index(path) for path in bad)  # 0 is the worst image
    # Exact chance: the fraction of all C(n, k) placements of k images whose ranks sum as low.
    chance = sum(sum(c) <= rank_sum for c in itertools.combinations(range(n), k)) / math.comb(n, k)
    assert n == 23 and chance < 0.01, (ranking, chance)
    assert set(plugin.tracker.flagged()) <= set(bad)

    # The csv and the checkpoint carry the same statistics; a resume loads them.
    rows = read_csv(tmp_path / "run" / "image_loss.csv")
    assert [r.path for r in rows] == ranking and {r.path for r in rows if r.flagged} == set(plugin.tracker.flagged())
    saved = load_checkpoint(resolve_checkpoint("latest", tmp_path / "run"))
    restored = LossTracker(buckets=10, warmup=5)
    restored.load_state_dict(saved.state["plugins"]["loss_tracker"])
    assert restored.stats() == plugin.tracker.stats()

    clean_root = tmp_path / "clean"
    write_data_root(clean_root, clean, seed=1)
    clean_plugin = _train_tracked(model, clean_root, tmp_path / "clean_run")
    assert len(clean_plugin.tracker.stats()) == 20
    assert len(clean_plugin.tracker.flagged()) <= 1


def test_plugin_state_survives_stop_and_resume_through_the_loop(tiny_sd1, tmp_path):
    """A run stopped after step 3 and resumed ends with exactly the tracker (and csv) of a
    run that never stopped: the statistics travel in the checkpoint."""
    data = tmp_path / "data"
    write_data_root(data, {"a": {"count": 3}, "b": {"count": 3}}, seed=4)

    def run(name, **kw):
        return tiny_config(tiny_sd1, data, tmp_path / name, epochs=3, batch_size=2, **kw)

    def tracker():
        return LossTrackerPlugin(LossTracker(buckets=2, warmup=2, min_observations=2))

    straight = tracker()
    train(run("straight"), plugins=[straight])

    def stop_at_3(event):
        if event.kind == "step" and event.data["step"] == 3:
            (tmp_path / "stopped" / "control" / "stop").touch()

    first, second = tracker(), tracker()
    assert train(run("stopped"), callbacks=[stop_at_3], plugins=[first]).step == 3
    assert train(run("stopped"), resume="latest", plugins=[second]).step == 9
    assert repr(second.tracker.stats()) == repr(straight.tracker.stats())  # repr: nan == nan
    assert len(straight.tracker.stats()) == 6 and straight.tracker.stats()[0].last_step > 3
    csv_a = (tmp_path / "straight" / "image_loss.csv").read_text(encoding="utf-8")
    assert (tmp_path / "stopped" / "image_loss.csv").read_text(encoding="utf-8") == csv_a


def test_the_hardest_list_waits_for_observations_and_shows_only_images_above_expectation():
    """Before any image has MIN_OBSERVATIONS observations there is no list, only a message;
    after, only images whose mean z-score is above 0 and above the typical image appear."""
    tracker = LossTracker(warmup=2)
    rng = np.random.default_rng(0)
    paths = [f"a/{i}.png" for i in range(20)]

    def feed(rounds: int):
        for _ in range(rounds):
            timesteps = torch.tensor(rng.integers(0, 1000, len(paths)))
            losses = torch.tensor(rng.normal(1.0, 0.1, len(paths))) + torch.tensor([0.5 if p == "a/3.png" else 0.0 for p in paths])
            tracker.observe(paths, timesteps, losses, step=1)

    feed(2)
    early = hardest_images(tracker.stats())
    assert early.images == [] and not early.ready and "not enough observations yet" in early.message()
    feed(30)
    ranked = hardest_images(tracker.stats())
    assert ranked.ready and ranked.images[0].path == "a/3.png"
    assert all(r.mean > 0 and r.score > 0 and r.observations >= MIN_OBSERVATIONS for r in ranked.images)
    assert len(ranked.images) < len(paths) // 2 + 2  # the below-average half is never listed
