"""DreamBooth-style class images: pictures the base model draws for a class prompt, written
as an ordinary preservation folder of a data root.

EveryDream prefers real ground-truth images for preservation (docs/methods.md says why);
this is for users who want the DreamBooth recipe anyway. The folder is a normal data-root
folder: each image has a caption file holding the class prompt, and an optional
`multiply.txt` sets how much of it each epoch uses, like any other folder.

Image i is drawn with seed ``seed + i``, so the set is reproducible, and generation resumes:
files already there are kept as they are and only the missing ones are made.
"""

from __future__ import annotations

import logging
import os
from decimal import Decimal
from pathlib import Path

import torch
from diffusers import DiffusionPipeline

from edlib.sample.generate import generate_image, parameters_text, resolve_spec
from edlib.sample.pipeline import load_pipeline
from edlib.sample.pngmeta import save_png
from edlib.sample.prompts import PromptSpec

log = logging.getLogger(__name__)

MULTIPLY_FILE = "multiply.txt"


def class_image_path(out_dir: Path, index: int) -> Path:
    return out_dir / f"class-{index:05d}.png"


def _write_multiplier(out_dir: Path, multiplier: float) -> None:
    """Write `multiply.txt`, or leave one that already says the same; never overwrite a
    different value the user wrote."""
    if multiplier <= 0:
        raise ValueError(f"multiplier: must be > 0, got {multiplier}")
    path = out_dir / MULTIPLY_FILE
    text = f"{multiplier:g}\n"
    if path.exists():
        existing = path.read_text(encoding="utf-8-sig").strip()
        if Decimal(existing or "0") != Decimal(text.strip()):
            raise ValueError(f"{path} already holds {existing!r}; edit it yourself or pass multiplier={existing}")
        return
    path.write_text(text, encoding="utf-8")


def generate_class_images(
    model: str | Path | DiffusionPipeline,
    class_prompt: str,
    n: int,
    out_dir: str | Path,
    *,
    negative_prompt: str = "",
    seed: int = 555,
    steps: int = 30,
    cfg_scale: float = 7.0,
    sampler: str = "DPM++ 2M Karras",
    size: int | None = None,
    multiplier: float | None = None,
    device: str | torch.device | None = None,
) -> list[Path]:
    """Make ``n`` class images of ``class_prompt`` with ``model`` (a model path, hub id, run
    folder or a loaded pipeline) in ``out_dir``: ``class-00000.png`` with ``class-00000.txt``
    (the prompt, as its caption), ... Images already there are kept; only missing ones are
    made. ``size`` None is the model's native size. ``multiplier`` writes the folder's
    `multiply.txt`. Returns the paths of all ``n`` images.
    """
    if n < 1:
        raise ValueError(f"n: the number of class images must be at least 1, got {n}")
    if not class_prompt.strip():
        raise ValueError("class_prompt: must not be empty (e.g. 'a photo of a person')")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if multiplier is not None:
        _write_multiplier(out_dir, multiplier)

    paths = [class_image_path(out_dir, i) for i in range(n)]
    missing = [i for i, path in enumerate(paths) if not path.exists()]
    if not missing:
        return paths
    pipeline = model if isinstance(model, DiffusionPipeline) else load_pipeline(model)
    if device is not None:
        pipeline.to(device)
    model_name = "" if isinstance(model, DiffusionPipeline) else str(model)
    log.info("generating %d class images of %r into %s", len(missing), class_prompt, out_dir)
    with torch.no_grad():
        for i in missing:
            spec = PromptSpec(
                prompt=class_prompt,
                negative_prompt=negative_prompt,
                seed=seed + i,
                steps=steps,
                cfg_scale=cfg_scale,
                width=size,
                height=size,
                sampler=sampler,
            )
            spec = resolve_spec(spec, pipeline)
            image = generate_image(pipeline, spec)
            # Caption first: an image without its caption would train on its file name. The
            # image is written under a temporary name and renamed, so an interrupted run never
            # leaves a half-written PNG that a resumed one would take as done.
            paths[i].with_suffix(".txt").write_text(class_prompt, encoding="utf-8")
            partial = paths[i].with_name(f".{paths[i].name}.partial")
            save_png(image, partial, parameters_text(spec, model_name))
            os.replace(partial, paths[i])
    return paths
