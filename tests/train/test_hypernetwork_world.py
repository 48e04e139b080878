"""A hypernetwork trained on the toy world moves the bundled model's samples of the new concept
towards it: the world's automatic check sees the drawn shapes overlap its template (a crescent)
better against the best other shape than before. The full measurement (the demo's data, 360
steps, 32 prompts) is scripts/hypernetwork_world.py, quoted in docs/methods.md."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edlib.model.config import TrainConfig
from edlib.model.world import SAMPLE_STEPS, bundled_model_path
from edlib.sample import PromptSpec, load_pipeline, sample_images
from edlib.train import train
from edlib.world.check import classify
from edlib.world.dataset import write_data_root
from edlib.world.demo_data import NEW_CONCEPT
from tests.train.loop_support import one_torch_thread  # noqa: F401 - autouse fixture


def _crescent_margin(paths) -> float:
    """Mean over images of: overlap with the new shape's template minus the best other shape's."""
    margins = []
    for path in paths:
        scores = classify(Image.open(path).convert("RGB")).shape_scores
        margins.append(scores[NEW_CONCEPT] - max(v for k, v in scores.items() if k != NEW_CONCEPT))
    return float(np.mean(margins))


@pytest.mark.slow
def test_a_hypernetwork_moves_the_new_concepts_samples_towards_it(tmp_path):
    data = tmp_path / "data"
    write_data_root(data, {NEW_CONCEPT: {"count": 16, "shapes": [NEW_CONCEPT]}}, seed=1, size=64)
    captions = [p.read_text(encoding="utf-8").strip() for p in sorted((data / NEW_CONCEPT).glob("*.txt"))][:8]
    specs = [PromptSpec(c, seed=i, steps=SAMPLE_STEPS, cfg_scale=4.0, sampler="DPM++ 2M") for i, c in enumerate(captions)]
    before = sample_images(load_pipeline(bundled_model_path()), specs, tmp_path / "before")

    config = TrainConfig.from_dict(
        {
            "model": str(bundled_model_path()), "data_root": str(data), "run_dir": str(tmp_path / "run"),
            "method": "hypernetwork", "resolution": 64, "batch_size": 4, "epochs": 16, "seed": 0, "unet_lr": 3e-3,
            "caption_dropout": 0.1, "cache_latents": "memory", "cache_text_embeddings": True,
            "save_every_n_epochs": None, "save_every_n_minutes": None, "export_formats": [],
        }
    )  # fmt: skip
    assert train(config, progress_bar=False).step == 64
    after = sample_images(load_pipeline(tmp_path / "run"), specs, tmp_path / "after")

    moved = np.mean([np.abs(np.asarray(Image.open(a), float) - np.asarray(Image.open(b), float)).mean() for a, b in zip(before, after)])
    margin_before, margin_after = _crescent_margin(before), _crescent_margin(after)
    print(f"crescent margin {margin_before:.3f} -> {margin_after:.3f}; mean pixel change {moved:.1f}")
    assert moved > 2.0  # the samples changed (0-255 scale)
    assert margin_after > margin_before + 0.05  # measured here: -0.395 -> -0.253
