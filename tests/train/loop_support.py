"""Helpers shared by the training-loop tests: a small generated data root and a config for
the tiny model that trains in a second or two on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from edlib.model.config import TrainConfig

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "white": (245, 245, 245)}


def make_data_root(root: Path, *, folders: dict[str, list[str]] | None = None, size: int = 64) -> Path:
    """Solid-colour PNGs named after their colour (the file name is the caption), with a
    light diagonal stripe so images are not constant. Default: two folders of two."""
    folders = folders or {"warm": ["red", "white"], "cool": ["green", "blue"]}
    for folder, colours in folders.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i, colour in enumerate(colours):
            image = Image.new("RGB", (size, size), COLOURS[colour])
            for k in range(size):
                image.putpixel((k, k), (0, 0, 0))
            image.save(root / folder / f"{colour}_{i}.png")
    return root


def tiny_config(model: Path, data_root: Path, run_dir: Path, **overrides) -> TrainConfig:
    values = dict(
        model=str(model),
        data_root=str(data_root),
        run_dir=str(run_dir),
        resolution=64,
        batch_size=2,
        epochs=2,
        seed=7,
        unet_lr=1e-4,
        save_every_n_epochs=None,
        save_every_n_minutes=None,
        keep_last_n_checkpoints=None,
        log_every_n_steps=1,
    )
    values.update(overrides)
    return TrainConfig.from_dict(values)


def metrics(run_dir: Path) -> list[dict]:
    lines = (Path(run_dir) / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def checkpoint_weights(checkpoint: Path, name: str = "unet") -> dict[str, torch.Tensor]:
    return load_file(str(Path(checkpoint) / f"{name}.safetensors"))


def max_weight_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread; two threads on a shared 2-core machine thrash
    (10x slower steps). Import this fixture into a test module to apply it there."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
