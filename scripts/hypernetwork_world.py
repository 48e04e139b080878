"""A hypernetwork on the toy world: does it teach the bundled model the new shape "zorblat"?

    python scripts/hypernetwork_world.py --out /tmp/hn-world    # about an hour on a shared 2-core CPU
    python scripts/hypernetwork_world.py --out /tmp/hn-world --quick         # the flow, not the numbers

Trains `method: hypernetwork` on `edlib demo`'s data root (zorblat 40 images, stars 10, 200
ordinary world images at x0.1) with the bundled world model frozen, for each --lrs value, and
scores with the world's automatic check, on the same prompts and seeds, before and after:

- learning: how often prompts naming zorblat draw it (the check picks among all shapes), and how
  much better the drawn shapes overlap the zorblat template (a crescent) than the best other
  shape's template (the "crescent margin", below 0 when another shape fits better);
- forgetting: colour, shape and background accuracy on ordinary world prompts;
- the samples of the exported `.pt`, applied to the base model with `apply_hypernetwork`, are
  compared pixel for pixel with the run's own (they must be equal).

Writes hypernetwork.md (the table) and hypernetwork.json into --out; docs/methods.md quotes it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from edlib.demo.run import BATCH_SIZE, RESOLUTION, sample_and_score, scene_prompts
from edlib.model.config import TrainConfig
from edlib.model.world import bundled_model_path
from edlib.sample import apply_hypernetwork, load_pipeline
from edlib.train import train
from edlib.world.check import classify
from edlib.world.dataset import write_data_root
from edlib.world.demo_data import DEMO_SPEC, NEW_CONCEPT
from edlib.world.render import SHAPES


def fine_tune(data_root: Path, run_dir: Path, *, lr: float, epochs: int, seed: int):
    config = TrainConfig.from_dict(
        {
            "model": str(bundled_model_path()),
            "data_root": str(data_root),
            "run_dir": str(run_dir),
            "method": "hypernetwork",
            "resolution": RESOLUTION,
            "batch_size": BATCH_SIZE,
            "epochs": epochs,
            "seed": seed,
            "unet_lr": lr,
            "lr_scheduler": "constant",
            "caption_dropout": 0.1,  # as the demo: the empty prompt, which guidance samples, trains too
            "cache_latents": "memory",
            "cache_text_embeddings": True,  # the text encoder is frozen
            "save_every_n_epochs": None,
            "save_every_n_minutes": None,
            "keep_last_n_checkpoints": 1,
            "log_every_n_steps": 50,
            "export_dtype": "fp32",
        }
    )
    checkpoints = run_dir / "checkpoints"
    resume = "latest" if checkpoints.is_dir() and any(checkpoints.iterdir()) else None
    return train(config, resume=resume, progress_bar=False)


def crescent_margin(folder: Path) -> float:
    """Mean over the folder's samples of the zorblat template's overlap minus the best other's."""
    margins = []
    for path in sorted(folder.glob("0*.png")):
        scores = classify(Image.open(path).convert("RGB")).shape_scores
        margins.append(scores[NEW_CONCEPT] - max(v for k, v in scores.items() if k != NEW_CONCEPT))
    return float(np.mean(margins))


def _pixels(paths: list[Path]) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.int16) for p in sorted(paths)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--lrs", type=float, nargs="+", default=[3e-4, 1e-3, 3e-3])
    parser.add_argument("--epochs", type=int, default=40, help="the demo's 40")
    parser.add_argument("--prompts", type=int, default=16, help="prompts per measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="2 epochs, 4 prompts, one rate")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.epochs, args.prompts, args.lrs = 2, 4, args.lrs[:1]
    out, seed = args.out, args.seed
    data_root = out / "data"
    if not (data_root.exists() and any(data_root.iterdir())):
        write_data_root(data_root, DEMO_SPEC, seed=seed, size=RESOLUTION)
    new_prompts = scene_prompts([NEW_CONCEPT], args.prompts, seed)
    old_prompts = scene_prompts(list(SHAPES), args.prompts, seed + 1)

    base = load_pipeline(bundled_model_path(), dtype=torch.float32)
    rows = [("base model (before)", 0, sample_and_score(base, new_prompts, out / "samples" / "before", "base", seed),
             crescent_margin(out / "samples" / "before"),
             sample_and_score(base, old_prompts, out / "samples" / "before-world", "base", seed), None)]  # fmt: skip
    del base
    for lr in args.lrs:
        name = f"lr{lr:g}"
        summary = fine_tune(data_root, out / "runs" / name, lr=lr, epochs=args.epochs, seed=seed)
        tuned = load_pipeline(out / "runs" / name, dtype=torch.float32)
        new = sample_and_score(tuned, new_prompts, out / "samples" / name, name, seed)
        old = sample_and_score(tuned, old_prompts, out / "samples" / f"{name}-world", name, seed)
        del tuned
        exported = load_pipeline(bundled_model_path(), dtype=torch.float32)
        apply_hypernetwork(exported, summary.exports[0])
        sample_and_score(exported, new_prompts, out / "samples" / f"{name}-export", name, seed)
        run_images = _pixels(list((out / "samples" / name).glob("0*.png")))
        export_images = _pixels(list((out / "samples" / f"{name}-export").glob("0*.png")))
        difference = int(np.abs(run_images - export_images).max())
        margin = crescent_margin(out / "samples" / name)
        rows.append((f"hypernetwork, unet_lr {lr:g}", summary.step, new, margin, old, difference))

    def pct(value):
        return "n/a" if value is None else f"{100 * value:.0f}%"

    lines = [
        f"| run | steps | {NEW_CONCEPT} drawn | crescent margin | {NEW_CONCEPT} prompts: colour | "
        "background | base world: colour | shape | background | export vs run (max px diff) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, steps, new, margin, old, difference in rows:
        lines.append(
            f"| {label} | {steps} | {pct(new['shape'])} | {margin:+.3f} | {pct(new['colour'])} | "
            f"{pct(new['background'])} | {pct(old['colour'])} | {pct(old['shape'])} | {pct(old['background'])} | "
            f"{'-' if difference is None else difference} |"
        )
    table = "\n".join(lines)
    (out / "hypernetwork.md").write_text(table + "\n", encoding="utf-8")
    (out / "hypernetwork.json").write_text(json.dumps([list(r) for r in rows], indent=2, default=str) + "\n", encoding="utf-8")
    print(f"\n{table}\n\n{args.prompts} prompts each, seeds {seed}..; table: {out / 'hypernetwork.md'}")


if __name__ == "__main__":
    main()
