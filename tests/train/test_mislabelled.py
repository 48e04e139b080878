"""The seed claim of per-image loss tracking, tested as a user meets it: in a toy-world data
root where a few images carry the caption of another scene (another shape and colour),
training the bundled world model with `loss_tracking: true` puts exactly those images at the
top of the hardest-images list (`edlib.train.loss_tracker.hardest_images`, what `edlib review`
and the training panel show). docs/loss_tracking.md reports the ranks measured."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edlib.model.config import TrainConfig
from edlib.train.loop import train
from edlib.train.loss_tracker import MIN_OBSERVATIONS, hardest_images, read_csv
from edlib.world.dataset import write_data_root
from edlib.world.grammar import caption, parse_caption
from edlib.world.render import COLOURS, SHAPES
from tests.train.loop_support import one_torch_thread  # noqa: F401 - autouse fixture

IMAGES = 72
MISLABELLED = 4
EPOCHS = 10  # ~4 epochs warm the tracker's 20 timestep buckets; then one observation per epoch
TOP = 2 * MISLABELLED  # the mislabelled images must all be within this many of the top


def mislabel(folder: Path, count: int, seed: int) -> list[str]:
    """Give `count` images of `folder` the caption of another scene: the same size, place and
    background, but another shape in another colour (never the background's). Returns their
    paths relative to the data root."""
    rng = np.random.default_rng(seed)
    captions = sorted(folder.glob("*.txt"))
    bad = []
    for index in sorted(rng.choice(len(captions), size=count, replace=False).tolist()):
        scene = parse_caption(captions[index].read_text(encoding="utf-8").strip())
        shape = str(rng.choice([s for s in SHAPES if s != scene.shape]))
        colour = str(rng.choice([c for c in COLOURS if c not in (scene.colour, scene.background)]))
        captions[index].write_text(caption(replace(scene, shape=shape, colour=colour)) + "\n", encoding="utf-8")
        bad.append(f"{folder.name}/{captions[index].stem}.png")
    return bad


def chance_all_in_top(n: int, k: int, top: int) -> float:
    """Probability that k given images all rank within the first `top` of n when the ranking
    is a uniformly random order: C(top, k) / C(n, k)."""
    return math.comb(top, k) / math.comb(n, k)


@pytest.mark.slow
def test_mislabelled_images_rank_at_the_top_of_the_hardest_list(tmp_path):
    root = tmp_path / "data"
    write_data_root(root, {"world": {"count": IMAGES}}, seed=1)
    bad = mislabel(root / "world", MISLABELLED, seed=1)
    config = TrainConfig.from_dict(
        {
            "model": "edlib:world",
            "data_root": str(root),
            "run_dir": str(tmp_path / "run"),
            "resolution": 64,
            "batch_size": 8,
            "epochs": EPOCHS,
            "seed": 1,
            "unet_lr": 3e-4,
            "lr_scheduler": "constant",
            "loss_tracking": True,
            "cache_latents": "memory",
            "cache_text_embeddings": True,
            "save_every_n_epochs": None,
            "export_formats": [],
        }
    )
    train(config, progress_bar=False)

    rows = read_csv(tmp_path / "run" / "image_loss.csv")
    assert len(rows) == IMAGES
    observed = {r.path: r.observations for r in rows}
    assert min(observed[path] for path in bad) >= MIN_OBSERVATIONS  # ranked, not "not enough observations"
    hardest = hardest_images(rows)
    ranking = [r.path for r in hardest.images]
    ranks = sorted(ranking.index(path) + 1 if path in ranking else None for path in bad)
    # Chance that a random order puts all 4 of 72 within the top 8: C(8,4)/C(72,4) = 6.8e-5.
    assert chance_all_in_top(IMAGES, MISLABELLED, TOP) < 1e-4
    assert None not in ranks and ranks[-1] <= TOP, (ranks, ranking[:TOP])
