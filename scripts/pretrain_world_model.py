"""Pretrain edlib's bundled world model from scratch, end to end, and write its model card.

    python scripts/pretrain_world_model.py --work /tmp/worldmodel

Stages (each skipped when its output already exists, so an interrupted run is rerun with
the same command and continues; the UNet stage resumes from its newest checkpoint):

1. data:     toy-world images with captions (`write_data_root`), the held-out (colour,
             shape) pairs of `caption_split` excluded, so evaluation on them measures
             composition, not memory. Novel shapes (zorblat, ...) are never drawn.
2. base:     the untrained architecture (`edlib.model.world.build_world_pipeline`).
3. vae:      the AutoencoderKL, trained alone by a short plain-PyTorch loop here (edlib's
             engine trains UNets and text encoders, not VAEs) with an L1 reconstruction
             loss and a small KL term; its latent scaling factor is set to 1 / latent std.
4. unet:     UNet and text encoder, trained by edlib's own engine (`edlib.train.train`)
             with the VAE frozen and latents cached.
5. export:   the run's last checkpoint as an fp16 diffusers folder into --out.
6. evaluate: generate images for held-out and training captions, score them with the
             automatic check (`edlib.demo.evaluate`).
7. card:     --out/README.md with architecture, data, steps, losses, timings, accuracy, and
             --out/pretraining.json, the record of every phase that made the weights.

`--continue-from` (e.g. the bundled model) trains that model further instead of starting
from random weights: its VAE is reused, its UNet and text encoder are the first phase's
starting point (a fresh optimizer and LR schedule), and its pretraining.json's phases come
first in the card, so the card tells the whole history of the weights:

    python scripts/pretrain_world_model.py --work /tmp/wm --out /tmp/wm/out \
        --continue-from edlib/model/world/pretrained --steps 3000 --warmup 100 --threads 1

The noise schedule is SD1.5's betas rescaled to zero terminal SNR, with v prediction
(`edlib.model.world.SCHEDULER_CONFIG`): with SD1.5's own schedule the last timestep still
shows a 16x16 latent's colours, and a model trained on it ignores its prompt (see
`edlib.demo.noise_check`; the card reports the numbers).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from edlib.model.world import (
    RESOLUTION,
    SAMPLE_STEPS,
    TEXT_ENCODER_CONFIG,
    UNET_CONFIG,
    VAE_CONFIG,
    build_world_pipeline,
)
from edlib.world import (
    caption,
    caption_split,
    held_out_captions,
    sample_scene,
    score,
    write_data_root,
)
from edlib.world.render import COLOURS, POSITIONS, SHAPES, SIZES

REPO = Path(__file__).resolve().parent.parent
DATA_FOLDER = "world"
# The record of the phases that made a model's weights, beside its card.
HISTORY = "pretraining.json"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="working folder (data, runs, evaluation)")
    parser.add_argument("--out", type=Path, default=REPO / "edlib" / "model" / "world" / "pretrained", help="where the model goes")
    parser.add_argument("--images", type=int, default=12000, help="training images to generate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vae-steps", type=int, default=1500)
    parser.add_argument(
        "--vae-from",
        type=Path,
        default=None,
        help="reuse the trained VAE of this diffusers folder (e.g. the bundled model) instead of training one; "
        "its reconstructions are still measured",
    )
    parser.add_argument("--vae-batch", type=int, default=16)
    parser.add_argument("--vae-lr", type=float, default=2e-3)
    parser.add_argument("--vae-crop", type=int, default=32, help="train the VAE on random crops this size")
    parser.add_argument(
        "--continue-from",
        type=Path,
        default=None,
        help="a world model folder written by this script (e.g. the bundled one): pretraining continues from "
        "its weights (VAE reused, UNet and text encoder trained further with a fresh optimizer and LR "
        "schedule) and the card lists its phases before the new ones",
    )
    parser.add_argument("--steps", type=int, default=9000, help="UNet/text encoder optimizer steps")
    parser.add_argument("--warmup", type=int, default=200, help="LR warm-up steps of the first phase")
    parser.add_argument(
        "--extra-steps", type=int, default=0, help="steps of a second phase (a warm restart of the LR schedule)"
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument(
        "--ema-decay", type=float, default=0.999, help="EMA of the weights, which is what gets exported; 0: none"
    )
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--eval-captions", type=int, default=64, help="captions per evaluation set")
    parser.add_argument("--eval-steps", type=int, default=SAMPLE_STEPS, help="sampler steps in evaluation")
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (default: torch's); 1 on a shared machine"
    )
    return parser.parse_args()


def timed(timings: dict[str, float], name: str, work: Path, *, redone: bool = False):
    """Records the wall seconds of a stage into timings.json. Stages skipped on a rerun
    (``redone`` False) keep the time of the run that did them."""

    class _Timer:
        def __enter__(self):
            self.start = time.time()

        def __exit__(self, *exc):
            if exc[0] is None and (redone or name not in timings):
                timings[name] = round(time.time() - self.start, 1)
                (work / "timings.json").write_text(json.dumps(timings, indent=2))

    return _Timer()


def make_data(work: Path, images: int, seed: int) -> Path:
    root = work / "data"
    if not (root / DATA_FOLDER).is_dir():
        split = caption_split(seed=seed)
        write_data_root(root, {DATA_FOLDER: {"count": images, "exclude": sorted(split.held_out)}}, seed=seed)
    return root


def load_images(folder: Path) -> tuple[torch.Tensor, list[str]]:
    """All PNGs of a folder as uint8 NCHW (kept small: 6000 images are 70 MB) and their captions."""
    paths = sorted(folder.glob("*.png"))
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    captions = [p.with_suffix(".txt").read_text(encoding="utf-8").strip() for p in paths]
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(), captions


def to_model(pixels: torch.Tensor) -> torch.Tensor:
    return pixels.float() / 127.5 - 1.0


def to_images(tensor: torch.Tensor) -> list[Image.Image]:
    array = ((tensor.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a) for a in array]


def train_vae(base: Path, data_root: Path, args, metrics_path: Path) -> dict:
    """Reconstruction training of the VAE alone, then the latent scale; saved into `base`."""
    from diffusers import AutoencoderKL

    if metrics_path.is_file():
        return json.loads(metrics_path.read_text())
    pixels, captions = load_images(data_root / DATA_FOLDER)
    held = min(256, len(pixels) // 8)  # the last images stay out of VAE training to measure reconstruction
    train_pixels, test_pixels, test_captions = pixels[:-held], pixels[-held:], captions[-held:]

    torch.manual_seed(args.seed)
    # The VAE only has to reproduce flat colours and sharp edges; a trained one can be
    # reused across pretraining runs that change only the UNet, text encoder or schedule.
    vae = AutoencoderKL.from_pretrained(base / "vae" if args.vae_from is None else args.vae_from / "vae").float()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(args.vae_steps, 1))
    generator = torch.Generator().manual_seed(args.seed)
    vae.train()
    loss = torch.tensor(float("nan"))
    for step in range(0 if args.vae_from else args.vae_steps):
        # The VAE is convolutional (its one attention layer sees the whole latent, whatever
        # its size), so random crops teach it the same thing at a fraction of the cost.
        index = torch.randint(len(train_pixels), (args.vae_batch,), generator=generator)
        top, left = torch.randint(RESOLUTION - args.vae_crop + 1, (2,), generator=generator).tolist()
        batch = to_model(train_pixels[index, :, top : top + args.vae_crop, left : left + args.vae_crop])
        posterior = vae.encode(batch).latent_dist
        recon = vae.decode(posterior.sample(generator)).sample
        # L1 keeps flat colours and sharp edges; the small KL keeps latents near N(0, I)
        # without costing detail (SD's VAE uses a KL weight of 1e-6 too).
        loss = (recon - batch).abs().mean() + 1e-6 * posterior.kl().mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 50 == 0 or step == args.vae_steps - 1:
            print(f"vae step {step:5d}  loss {loss.item():.4f}", flush=True)

    vae.eval()
    with torch.no_grad():
        test = to_model(test_pixels)
        latents = vae.encode(test).latent_dist.mode()
        recon = vae.decode(latents).sample
        sample = vae.encode(to_model(train_pixels[:512])).latent_dist.sample(generator)
    recon_images = to_images(recon)
    scale = 1.0 / sample.std().item()
    vae.register_to_config(scaling_factor=scale)
    vae.save_pretrained(base / "vae", safe_serialization=True)
    check = score(recon_images, test_captions)
    metrics = {
        "reused_from": None if args.vae_from is None else str(args.vae_from),
        "steps": 0 if args.vae_from else args.vae_steps,
        "batch": args.vae_batch,
        "crop": args.vae_crop,
        "final_train_l1": round(loss.item(), 4),
        "test_images": held,
        "test_mae_0_255": round((recon - test).abs().mean().item() * 127.5, 2),
        "scaling_factor": round(scale, 4),
        "check_on_reconstructions": check,
    }
    metrics_path.write_text(json.dumps(metrics, indent=2))
    return metrics


def train_phase(base: Path, data_root: Path, run_dir: Path, args, *, steps: int, warmup: int, init_from: Path | None) -> None:
    """One phase of UNet + text encoder training through edlib's engine: a cosine LR
    schedule over `steps`. A later phase starts from the previous one's weights with a
    fresh schedule (`init_from`: a warm restart), the way a user extends a run."""
    from edlib.model.config import TrainConfig
    from edlib.train import train

    steps_per_epoch = math.ceil(args.images / args.batch)
    config = TrainConfig.from_dict(
        {
            "model": str(base),
            "init_from": None if init_from is None else str(init_from),
            "data_root": str(data_root),
            "run_dir": str(run_dir),
            "resolution": RESOLUTION,
            "batch_size": args.batch,
            "epochs": math.ceil(steps / steps_per_epoch),
            "max_steps": steps,
            "seed": args.seed + (0 if init_from is None else 1),
            "unet_lr": args.lr,
            "text_encoder_lr": args.lr,
            "lr_scheduler": "cosine",
            "lr_warmup_steps": warmup,
            "caption_dropout": 0.1,  # unconditional training for classifier-free guidance
            "cache_latents": "memory",
            "write_schedule": False,
            "save_every_n_steps": 250,
            "save_every_n_epochs": None,
            "save_every_n_minutes": None,
            "keep_last_n_checkpoints": 2,
            "log_every_n_steps": 50,
            "ema_decay": args.ema_decay or None,
            "export_formats": [],  # export_model writes the fp16 diffusers folder itself
        }
    )
    checkpoints = run_dir / "checkpoints"
    resume = "latest" if checkpoints.is_dir() and any(checkpoints.iterdir()) else None
    train(config, resume=resume, progress_bar=False)


def train_unet(base: Path, data_root: Path, work: Path, args, timings: dict) -> list[Path]:
    """Phase 1 (`--steps`), then phase 2 (`--extra-steps`, if any); returns the run
    folders, last phase last. Each finished phase leaves a marker so a rerun skips it."""
    phases = [("run", args.steps, args.warmup)] + ([("run2", args.extra_steps, 50)] if args.extra_steps else [])
    run_dirs: list[Path] = []
    for name, steps, warmup in phases:
        run_dir = work / name
        done = work / f"{name}_done"
        if not done.is_file():
            started = time.time()
            init_from = run_dirs[-1] if run_dirs else None
            train_phase(base, data_root, run_dir, args, steps=steps, warmup=warmup, init_from=init_from)
            timings[f"unet {name}"] = round(timings.get(f"unet {name}", 0) + time.time() - started, 1)
            (work / "timings.json").write_text(json.dumps(timings, indent=2))
            done.touch()
        run_dirs.append(run_dir)
    return run_dirs


def schedule_check(base: Path) -> dict:
    """How far apart plain colours stay in x_T (noise standard deviations) under SD1.5's
    schedule and under the world model's own, with the trained VAE."""
    from diffusers import DDPMScheduler

    from edlib.demo.noise_check import colour_separation_at_last_timestep
    from edlib.model.models import load_models

    models = load_models(base)
    sd15 = DDPMScheduler.from_config(models.noise_scheduler.config, rescale_betas_zero_snr=False)
    return {
        "sd15_alpha_bar_last": round(float(sd15.alphas_cumprod[-1]), 5),
        "sd15": colour_separation_at_last_timestep(models, sd15.alphas_cumprod, RESOLUTION),
        "world_model": colour_separation_at_last_timestep(models, models.noise_scheduler.alphas_cumprod, RESOLUTION),
    }


def unet_losses(run_dir: Path) -> dict:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    losses = [row["loss"] for row in rows]
    return {
        "steps": rows[-1]["step"],
        "first_100_mean_loss": round(float(np.mean(losses[:100])), 4),
        "last_100_mean_loss": round(float(np.mean(losses[-100:])), 4),
    }


def earlier_runs(continue_from: Path | None, work: Path) -> list[dict]:
    """The runs recorded in --continue-from's pretraining.json (none when starting afresh).

    Read once and kept in `work`: a rerun of the same command (to finish an interrupted
    run, or to evaluate again) whose --out is its --continue-from would otherwise read
    the record it wrote itself and list its own run twice."""
    if continue_from is None:
        return []
    snapshot = work / f"continued_{HISTORY}"
    if snapshot.is_file():
        return json.loads(snapshot.read_text())["runs"]
    path = continue_from / HISTORY
    if not path.is_file():
        raise FileNotFoundError(
            f"--continue-from {continue_from}: {HISTORY} missing; it records the phases that made the weights, "
            "so the new model card can tell them (this script writes it beside every model card)"
        )
    shutil.copy2(path, snapshot)
    return json.loads(path.read_text())["runs"]


def this_run(args, run_dirs: list[Path], timings: dict) -> dict:
    """The record of this invocation: its command, wall time and phases."""
    warmups = [args.warmup, 50]
    phases = []
    for index, run_dir in enumerate(run_dirs):
        start = (
            "the previous phase's weights (init_from)"
            if index
            else "random weights"
            if args.continue_from is None
            else "the previous phase's weights (`--continue-from` the model it made)"
        )
        phases.append(
            {
                "start": start,
                "lr": args.lr,
                "batch": args.batch,
                "schedule": "cosine",
                "warmup_steps": warmups[index],
                "minutes": round(timings[f"unet {run_dir.name}"] / 60, 1),
                **unet_losses(run_dir),
            }
        )
    return {
        "command": "python scripts/pretrain_world_model.py " + " ".join(sys.argv[1:]),
        "minutes": round(sum(timings.values()) / 60, 1),
        "phases": phases,
    }


def export_model(run_dir: Path, base: Path, work: Path, out: Path) -> None:
    """fp16 diffusers folder of the run's last checkpoint, copied into `out` (whose model
    card, if any, is kept until the card stage rewrites it). The scheduler is the base
    model's (SD1.5's PNDM config), so plain `pipeline(prompt)` samples as SD1.5 would."""
    from edlib.export import export_run

    staged = work / "export"
    shutil.rmtree(staged, ignore_errors=True)
    (exported,) = export_run(run_dir, "diffusers", out=staged, dtype="fp16")
    out.mkdir(parents=True, exist_ok=True)
    for entry in out.iterdir():
        if entry.name != "README.md":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    for entry in exported.iterdir():
        (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, out / entry.name)
    shutil.rmtree(out / "scheduler")
    shutil.copytree(base / "scheduler", out / "scheduler")
    index = json.loads((out / "model_index.json").read_text())
    index["scheduler"] = json.loads((base / "model_index.json").read_text())["scheduler"]
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")


def training_captions(split, count: int, seed: int) -> list[str]:
    """Captions of training (colour, shape) pairs, the pairs taking turns."""
    pairs = sorted(split.train)
    rng = np.random.default_rng([seed, 1])
    return [caption(sample_scene(rng, shapes=[s], colours=[c])) for c, s in (pairs[i % len(pairs)] for i in range(count))]


def evaluate_model(out: Path, work: Path, args) -> dict:
    from edlib.demo.evaluate import evaluate
    from edlib.sample import load_pipeline

    pipeline = load_pipeline(out, dtype=torch.float32)
    split = caption_split(seed=args.seed)
    sets = {
        "held_out": held_out_captions(split, args.eval_captions, seed=args.seed + 1),
        "training": training_captions(split, args.eval_captions, args.seed + 1),
    }
    results = {}
    for name, captions in sets.items():
        results[name] = evaluate(
            pipeline, captions, steps=args.eval_steps, shapes=SHAPES, save_dir=work / "eval" / name
        )
        print(f"evaluation {name}: {results[name]}", flush=True)
    results["held_out_pairs"] = sorted(" ".join(p) for p in split.held_out)
    return results


def model_size_mb(out: Path) -> float:
    return round(sum(p.stat().st_size for p in out.rglob("*.safetensors")) / 2**20, 2)


def parameter_count(weights: Path) -> int:
    """Parameters in a safetensors file, read from its header (no tensor is loaded)."""
    from safetensors import safe_open

    with safe_open(weights, framework="pt") as file:
        return sum(math.prod(file.get_slice(name).get_shape()) for name in file.keys())


def write_card(out: Path, args, vae: dict, schedules: dict, runs: list[dict], evaluation: dict, timings: dict) -> None:
    """The model card; `runs` are the records of every invocation that trained the weights,
    this one last (see `this_run`)."""
    def pct(value) -> str:
        return "n/a" if value is None else f"{100 * value:.0f}%"

    def row(name: str, result: dict) -> str:
        return f"| {name} | {result['n']} | {pct(result['colour'])} | {pct(result['shape'])} | {pct(result['both'])} | {pct(result['background'])} |"

    total_min = sum(timings.values()) / 60
    phases = [(number + 1, phase) for number, phase in enumerate(p for run in runs for p in run["phases"])]
    phase_lines = "\n".join(
        f"   - phase {n}: {p['steps']} steps from {p['start']}, batch {p['batch']}, AdamW lr {p['lr']}, "
        f"{p['schedule']} LR schedule ({p['warmup_steps']} warm-up steps), {p['minutes']} min; loss (v MSE) from "
        f"{p['first_100_mean_loss']} (mean of its first 100 steps) to {p['last_100_mean_loss']} (mean of its last 100)."
        for n, p in phases
    )
    commands = "\n".join(
        f"- `{run['command']}` ({run['minutes']} min{'' if len(runs) == 1 else ', run ' + str(i + 1)})"
        for i, run in enumerate(runs)
    )
    earlier_min = sum(run["minutes"] for run in runs[:-1])
    vae_check = vae["check_on_reconstructions"]
    attending = [kind.startswith("CrossAttn") for kind in UNET_CONFIG["down_block_types"]]
    cross_attention_levels = (
        "every level"
        if all(attending)
        else ", ".join(f"{RESOLUTION // 4 >> level}x{RESOLUTION // 4 >> level}" for level, on in enumerate(attending) if on)
    )
    unet_params = parameter_count(out / "unet" / "diffusion_pytorch_model.safetensors")
    ema = (
        f"an EMA of the weights (decay {args.ema_decay}; the EMA weights are the ones exported)"
        if args.ema_decay
        else "no EMA"
    )
    vae_stage = (
        (
            "VAE reused, not retrained, from the model this run continues (`--continue-from`)"
            if args.continue_from
            else f"VAE reused, not retrained, from `{vae['reused_from']}` (`--vae-from`)"
        )
        + "; its latent scale measured again."
        if vae.get("reused_from")
        else "VAE alone, plain PyTorch loop in the script (edlib's engine trains UNets and text encoders, not "
        f"VAEs): {vae['steps']} steps, batch {vae['batch']} of random {vae['crop']}x{vae['crop']} crops, AdamW lr "
        f"{args.vae_lr} cosine, L1 + 1e-6 KL."
    )
    # "Clearly above chance": at least twice the chance rate, judged on the held-out pairs.
    held = evaluation["held_out"]
    chance = {"colour": 1 / len(COLOURS), "background": 1 / (len(COLOURS) - 1), "shape": 1 / len(SHAPES)}
    above = [name for name, rate in chance.items() if held[name] >= 2 * rate]
    below = [name for name in chance if name not in above]

    def listing(names: list[str]) -> str:
        return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names) or "nothing"

    verdict = (
        f"On held-out pairs it draws the asked {listing(above)} clearly above chance (at least "
        "twice the chance rate)"
        + (f"; the asked {listing(below)} not yet (near chance)." if below else ".")
        + " Its edges are softer than the renders'; the check is built to read them."
    )
    card = f"""# edlib world model

A tiny, real Stable Diffusion pipeline (diffusers `UNet2DConditionModel`, `AutoencoderKL`,
transformers `CLIPTextModel` + `CLIPTokenizer`; SD1.5's betas rescaled to zero terminal SNR,
v prediction, DDIM as its scheduler) pretrained from scratch on edlib's toy world: coloured shapes on plain
backgrounds at {RESOLUTION}x{RESOLUTION}, e.g. "a small red circle on the left on a blue background".
It lets the demo, notebooks and tests run the whole edlib flow (scan, train, sample, export)
on a CPU with no download. Load it with `edlib.model.world.bundled_model_path()`.

Rebuild with `python scripts/pretrain_world_model.py --work /tmp/worldmodel` (all numbers
below were written by that script). These weights were built by, in order:

{commands}

## Architecture

- VAE: `AutoencoderKL`, blocks {list(VAE_CONFIG['block_out_channels'])}, 4x downsampling, 4 latent channels
  ({RESOLUTION // 4}x{RESOLUTION // 4}x4 latents), scaling factor {vae['scaling_factor']} (1 / latent std).
- UNet: blocks {list(UNET_CONFIG['block_out_channels'])}, {UNET_CONFIG['layers_per_block']} layer per block,
  cross-attention at {cross_attention_levels}, cross-attention dim {UNET_CONFIG['cross_attention_dim']};
  {unet_params / 1e6:.1f}M parameters.
- Text encoder: CLIP, {TEXT_ENCODER_CONFIG['num_hidden_layers']} layers, width {TEXT_ENCODER_CONFIG['hidden_size']};
  its BPE vocabulary (`edlib.model.tiny.build_tiny_tokenizer`) gives every word of the world
  and the novel shape names (zorblat, blicket, ...) one token. Pretraining never shows a
  novel shape: a fine-tune teaches its word (that is what `edlib demo` does).
- Noise schedule: SD1.5's scaled-linear betas (0.00085..0.012, 1000 steps) rescaled to zero
  terminal SNR, v prediction, "trailing" timesteps (`edlib.model.world.SCHEDULER_CONFIG`).
  Why: under SD1.5's own schedule the last training timestep keeps sqrt({schedules['sd15_alpha_bar_last']}) of the
  latents, and the mean of a 16x16 latent averages the noise down 16x, so plain colours stay
  {schedules['sd15']['median']} noise standard deviations apart in x_T (median over colour pairs, min {schedules['sd15']['min']};
  `edlib.demo.noise_check`). A model trained on it reads the background off the noise and
  ignores the prompt; at sampling x_T is pure noise and the seed picks the colour. Under
  this schedule the separation is {schedules['world_model']['median']}: the colour has to come from the text.
- Weights: fp16 safetensors, {model_size_mb(out)} MB in all.

## Data

{args.images} images from `edlib.world.write_data_root` (seed {args.seed}): the {len(SHAPES)} base shapes x {len(COLOURS)} colours
x {len(SIZES)} sizes x {len(POSITIONS)} positions x {len(COLOURS) - 1} backgrounds, full captions. The (colour, shape) pairs held out by
`caption_split(seed={args.seed})` were never drawn: {', '.join(evaluation['held_out_pairs'])}.

## Training

1. {vae_stage}
   Reconstruction error on {vae["test_images"]} unseen images: {vae['test_mae_0_255']} (mean absolute, 0-255 scale); the automatic
   check reads colour {pct(vae_check['colour'])} and shape {pct(vae_check['shape'])} of the reconstructions right.
2. UNet and text encoder with the VAE frozen, through edlib's own engine (`edlib.train.train`,
   method `full`, v prediction, zero terminal SNR), the same learning rate for both,
   caption dropout 0.1, latents cached, {ema}; each phase a fresh optimizer and LR schedule.
{phase_lines}

Wall time: {total_min:.0f} minutes for the last run ({', '.join(f'{k} {v / 60:.1f} min' for k, v in timings.items())})
{f"plus {earlier_min:.0f} minutes of the runs before it " if earlier_min else ""}on {platform.machine()} CPU, {torch.get_num_threads()} torch thread(s) on a 2-core machine shared with other work, no GPU.

## What it can draw

Accuracy of the automatic check (`edlib.world.check`) on images generated from captions
({args.eval_steps} DPM++ 2M steps, guidance 4.0, one image per caption, seeds 0..n-1), shapes
judged among the {len(SHAPES)} base shapes (chance: colour 1/{len(COLOURS)}, shape 1/{len(SHAPES)}):

| captions | n | colour | shape | both | background |
| --- | --- | --- | --- | --- | --- |
{row('held-out (colour, shape) pairs', evaluation['held_out'])}
{row('training pairs', evaluation['training'])}

The held-out row is the honest one: the model never saw those colours on those shapes.
{verdict}
"""
    (out / "README.md").write_text(card, encoding="utf-8")


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    timings_path = work / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    runs = earlier_runs(args.continue_from, work)  # read first: a missing record fails before training

    with timed(timings, "data", work):
        data_root = make_data(work, args.images, args.seed)
    base = work / "base"
    if args.continue_from is not None:
        args.vae_from = args.vae_from or args.continue_from
        if not (base / "model_index.json").is_file():
            shutil.copytree(args.continue_from, base, ignore=shutil.ignore_patterns("README.md", HISTORY))
    elif not (base / "model_index.json").is_file():
        build_world_pipeline(base, seed=args.seed)
    with timed(timings, "vae", work):
        vae = train_vae(base, data_root, args, work / "vae_metrics.json")
    print(f"vae: {vae}", flush=True)
    schedules = schedule_check(base)
    print(f"colour separation in x_T: {schedules}", flush=True)
    run_dirs = train_unet(base, data_root, work, args, timings)
    print(f"unet: {[unet_losses(run_dir) for run_dir in run_dirs]}", flush=True)
    with timed(timings, "export", work, redone=True):
        export_model(run_dirs[-1], base, work, args.out)
    with timed(timings, "evaluate", work, redone=True):
        evaluation = evaluate_model(args.out, work, args)
    (work / "evaluation.json").write_text(json.dumps(evaluation, indent=2))
    runs.append(this_run(args, run_dirs, timings))
    write_card(args.out, args, vae, schedules, runs, evaluation, timings)
    (args.out / HISTORY).write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    print(f"model and card written to {args.out}", flush=True)


if __name__ == "__main__":
    main()
