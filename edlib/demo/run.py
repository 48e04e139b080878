"""`edlib demo`: the whole edlib flow on a generated toy-world data root and the bundled model.

It writes a small, deliberately unbalanced data root (a new concept with 40 images, a
second one with 10, and 200 preservation images at a fractional multiplier), then does
what a user does: scan it, plan a balance, preview the epochs, fine-tune the bundled world
model on the CPU, sample before and after, measure with the world's automatic check what
the images show, and export. The new concept is "zorblat", a shape (a crescent) the bundled
model was never shown: the check measures how often it is drawn before and after.

Everything it prints comes from the same library calls the CLI and notebooks use.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from edlib.data.balance import format_plan, plan_balance
from edlib.data.preview import format_preview, preview
from edlib.data.scan import format_report, scan
from edlib.data.schedule import write_schedule
from edlib.model.lr import with_lr_curve
from edlib.model.suggest import SMALL_FULL_LR
from edlib.model.world import SAMPLE_STEPS
from edlib.world import caption, fidelity, sample_scene, score, write_data_root
from edlib.world.demo_data import DEMO_SPEC, DEMO_WEIGHTS, NEW_CONCEPT
from edlib.world.render import ALL_SHAPES, SHAPES

log = logging.getLogger("edlib.demo")

RESOLUTION = 64
BATCH_SIZE = 8
LEARNING_RATE = SMALL_FULL_LR  # a small model's full fine-tune (edlib.model.suggest), UNet and text encoder
# Sampling settings for the before/after images (the model card's evaluation uses the same).
SAMPLE_CFG = 4.0
SAMPLER = "DPM++ 2M"


def _heading(text: str) -> None:
    print(f"\n== {text} ==", flush=True)


def scene_prompts(shapes: list[str], count: int, seed: int) -> list[str]:
    """Full world captions of random scenes with these shapes (colours etc. random)."""
    rng = np.random.default_rng([seed, 7])
    return [caption(sample_scene(rng, shapes=shapes)) for _ in range(count)]


def sample_and_score(pipeline, prompts: list[str], out_dir: Path, label: str, seed: int) -> dict:
    """Sample one image per prompt with edlib's sampler (PNGs with their settings, plus a
    grid) and score what they show with the automatic check."""
    from edlib.sample import PromptSpec, sample_images

    specs = [
        PromptSpec(prompt, seed=seed + i, steps=SAMPLE_STEPS, cfg_scale=SAMPLE_CFG, sampler=SAMPLER)
        for i, prompt in enumerate(prompts)
    ]
    paths = sample_images(pipeline, specs, out_dir, model_name=label)
    images = [Image.open(path).convert("RGB") for path in paths]
    return {**score(images, prompts, shapes=ALL_SHAPES), "fidelity": fidelity(images, prompts, shapes=ALL_SHAPES)}


def _pct(value: float | None) -> str:
    return "  n/a" if value is None else f"{100 * value:4.0f}%"


def _report_line(name: str, before: dict, after: dict) -> str:
    return (
        f"  {name:<28} shape {_pct(before['shape'])} -> {_pct(after['shape'])}   "
        f"colour {_pct(before['colour'])} -> {_pct(after['colour'])}   "
        f"both {_pct(before['both'])} -> {_pct(after['both'])}   "
        f"shape fidelity {before['fidelity']:.2f} -> {after['fidelity']:.2f}"
    )


def fine_tune(model: Path, data_root: Path, run_dir: Path, *, epochs: int, seed: int):
    """Full fine-tune of the bundled model's UNet and text encoder (the text encoder must
    learn what the new word means). Rerunning the demo resumes a finished run, which returns
    at once."""
    from edlib.model.config import TrainConfig
    from edlib.train import train

    config = TrainConfig.from_dict(
        {
            "model": str(model),
            "data_root": str(data_root),
            "run_dir": str(run_dir),
            "resolution": RESOLUTION,
            "batch_size": BATCH_SIZE,
            "epochs": epochs,
            "seed": seed,
            "unet_lr": LEARNING_RATE,
            "text_encoder_lr": LEARNING_RATE,
            "lr_scheduler": "constant",
            "caption_dropout": 0.1,
            "cache_latents": "memory",
            "save_every_n_epochs": None,
            "save_every_n_minutes": None,
            "keep_last_n_checkpoints": 1,
            "log_every_n_steps": 25,
            "export_formats": ["diffusers", "single-file"],  # written when the run ends
        }
    )
    checkpoints = run_dir / "checkpoints"
    resume = "latest" if checkpoints.is_dir() and any(checkpoints.iterdir()) else None
    return train(config, resume=resume, progress_bar=False)


def run_demo(out: Path, *, quick: bool = False, seed: int = 0, model: str | Path | None = None) -> dict:
    """Run the demo into `out` (created if needed); returns where things are and the
    before/after scores. `quick` is a much shorter fine-tune (for CI): it runs the same
    steps but learns little. `model`: a diffusers folder of a world model (default: the
    bundled one)."""
    from edlib.model.world import bundled_model_path
    from edlib.sample import load_pipeline

    model = Path(model) if model is not None else bundled_model_path()
    out = Path(out)
    data_root = out / "data"
    if not (data_root.exists() and any(data_root.iterdir())):
        _heading(f"Writing a toy-world data root to {data_root}")
        written = write_data_root(data_root, DEMO_SPEC, seed=seed, size=RESOLUTION)
        for folder, count in written.items():
            print(f"  {folder}: {count} images")
    else:
        print(f"Using the existing demo data root {data_root}")

    _heading("Scan")
    result = scan(data_root)
    print(format_report(result))

    _heading("Balance plan (not applied): equal shares for the two concepts")
    plan = plan_balance(result, DEMO_WEIGHTS)
    print(format_plan(plan))

    epochs = 2 if quick else 40
    _heading(f"Preview of {epochs} epochs, batch size {BATCH_SIZE}, {RESOLUTION} px")
    p = preview(result, epochs=epochs, batch_size=BATCH_SIZE, resolution=RESOLUTION, seed=seed)
    p = with_lr_curve(p, "constant", LEARNING_RATE)
    print(format_preview(p))
    schedules = out / "schedules"
    for epoch in range(epochs):
        write_schedule(p.realise(epoch), result, schedules)

    new_prompts = scene_prompts([NEW_CONCEPT], 4 if quick else 16, seed)
    old_prompts = scene_prompts(list(SHAPES), 4 if quick else 16, seed)
    samples = out / "samples"

    _heading(f"Before: the base model ({model})")
    # fp32 on the CPU: the bundled weights are stored in fp16 to keep the package small.
    base = load_pipeline(model, dtype=torch.float32)
    before_new = sample_and_score(base, new_prompts, samples / "before" / NEW_CONCEPT, "world-model", seed)
    before_old = sample_and_score(base, old_prompts, samples / "before" / "known-shapes", "world-model", seed)
    del base
    print(f"  e.g. {new_prompts[0]!r}: images in {samples / 'before'}")

    run_dir = out / "runs" / ("demo-quick" if quick else "demo")
    _heading(f"Fine-tuning on the CPU: {p.total_steps} steps, run folder {run_dir}")
    started = time.time()
    summary = fine_tune(model, data_root, run_dir, epochs=epochs, seed=seed)
    print(f"  done in {time.time() - started:.0f} s: {summary.step} steps, last loss {summary.last_loss:.4f}")

    _heading("After: the fine-tuned model")
    tuned = load_pipeline(run_dir, dtype=torch.float32)
    after_new = sample_and_score(tuned, new_prompts, samples / "after" / NEW_CONCEPT, run_dir.name, seed)
    after_old = sample_and_score(tuned, old_prompts, samples / "after" / "known-shapes", run_dir.name, seed)
    del tuned
    print(f"  images in {samples / 'after'}")

    _heading("What the images show (automatic check, before -> after)")
    print(_report_line(f"new concept ({NEW_CONCEPT})", before_new, after_new))
    print(_report_line("known shapes (preservation)", before_old, after_old))
    print(
        "  (shape: the asked shape is the one recognised; shape fidelity: how exactly it is drawn, the overlap "
        "with the sharp shape, about 0.98 for a perfect render: it drops when shapes go soft)"
    )

    _heading("Exports (written by the run when it ended)")
    exports = summary.exports
    for path in exports:
        print(f"  {path}")

    _heading("Where things are")
    print(f"  data root:  {data_root}")
    print(f"  schedules:  {schedules} (ep0_batch_schedule.txt ... ep{epochs - 1}_batch_schedule.txt)")
    print(f"  run folder: {run_dir} (config.yaml, log.txt, metrics.jsonl, checkpoints/)")
    print(f"  samples:    {samples / 'before'} and {samples / 'after'} (grid.png in each folder)")
    print(f"  exports:    {run_dir / 'exports'}")
    return {
        "data_root": data_root,
        "schedules": schedules,
        "preview": p,
        "run_dir": run_dir,
        "samples": samples,
        "exports": exports,
        "scores": {
            "new_concept": {"before": before_new, "after": after_new},
            "known_shapes": {"before": before_old, "after": after_old},
        },
    }
