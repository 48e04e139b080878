"""Measure what a text-to-image model of the toy world draws: generate, then check.

`evaluate` samples one image per caption (batched, fixed seeds) and scores the images with
`edlib.world.check.score`, so the model card, the demo's before/after report and the
preservation lab all measure the same thing the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from PIL import Image

from edlib.sample.samplers import make_scheduler
from edlib.world.check import score
from edlib.world.render import ALL_SHAPES


def generate(
    pipeline,
    captions: Sequence[str],
    *,
    steps: int = 20,
    guidance_scale: float = 4.0,
    sampler: str = "DPM++ 2M",
    seed: int = 0,
    batch_size: int = 16,
) -> list[Image.Image]:
    """One image per caption, image i seeded with ``seed + i`` (so a caption's image does not
    depend on the batch it lands in). The pipeline's own scheduler is left as it was."""
    if not captions:
        raise ValueError("generate needs at least one caption")
    scheduler = make_scheduler(sampler, pipeline.scheduler.config)
    images: list[Image.Image] = []
    original = pipeline.scheduler
    pipeline.scheduler = scheduler
    try:
        for start in range(0, len(captions), batch_size):
            chunk = list(captions[start : start + batch_size])
            generators = [torch.Generator("cpu").manual_seed(seed + start + i) for i in range(len(chunk))]
            with torch.no_grad():
                result = pipeline(
                    chunk,
                    num_inference_steps=steps,
                    guidance_scale=guidance_scale,
                    generator=generators,
                    output_type="pil",
                )
            images.extend(result.images)
    finally:
        pipeline.scheduler = original
    return images


def evaluate(
    pipeline,
    captions: Sequence[str],
    *,
    steps: int = 20,
    guidance_scale: float = 4.0,
    sampler: str = "DPM++ 2M",
    seed: int = 0,
    batch_size: int = 16,
    shapes: Iterable[str] = ALL_SHAPES,
    save_dir: str | Path | None = None,
) -> dict[str, float | int | None]:
    """Generate one image per caption and score it: accuracies of "colour", "shape", "both"
    and "background" (see `score`), and "n". ``shapes`` are the candidates the check picks
    from. With ``save_dir`` the images are also written there as ``NNN.png`` with the
    caption in ``NNN.txt``, so a person can look at what was scored."""
    images = generate(
        pipeline, captions, steps=steps, guidance_scale=guidance_scale, sampler=sampler, seed=seed, batch_size=batch_size
    )
    if save_dir is not None:
        save_dir = Path(save_dir)
        save_dir.mkdir(parents=True, exist_ok=True)
        for index, (image, text) in enumerate(zip(images, captions)):
            image.save(save_dir / f"{index:03d}.png")
            (save_dir / f"{index:03d}.txt").write_text(text + "\n", encoding="utf-8")
    return score(images, captions, shapes=shapes)
