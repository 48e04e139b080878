"""Sampling after training: what `edlib sample MODEL_OR_RUN --prompts FILE [--out DIR]` does.

MODEL_OR_RUN is a diffusers folder, a single-file model, a run folder (its newest checkpoint)
or one checkpoint. With ``grid=True`` and a run folder, every complete checkpoint becomes a
row of an X/Y grid against the prompts, to see which step looks best. ``hypernetwork`` applies
an AUTOMATIC1111 hypernetwork file (e.g. a hypernetwork run's export) to the model first.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from edlib.model.checkpoint import checkpoint_step, list_checkpoints, resolve_checkpoint
from edlib.sample.generate import sample_grid, sample_images
from edlib.sample.hypernetwork import apply_hypernetwork
from edlib.sample.pipeline import is_run_or_checkpoint, load_pipeline
from edlib.sample.prompts import PromptSpec, load_prompts

GRID_FILE = "checkpoints-grid.png"


def model_label(model_or_run: str | Path) -> str:
    """The "Model" written into PNG parameters: ``RUN step-NNNNNN`` for a run or checkpoint,
    else the folder or file name (or the hub id)."""
    path = Path(model_or_run)
    if is_run_or_checkpoint(path):
        checkpoint = resolve_checkpoint(path)
        return f"{checkpoint.parent.parent.name} {checkpoint.name}"
    if path.is_file():
        return path.stem
    return path.name if path.exists() else str(model_or_run)


def default_out_dir(model_or_run: str | Path) -> Path:
    """Where samples go without ``--out``: inside the run (``samples/manual/``) for a run or
    checkpoint, so they stay with it; else ``samples/<model name>`` in the working folder."""
    path = Path(model_or_run)
    if is_run_or_checkpoint(path):
        return resolve_checkpoint(path).parent.parent / "samples" / "manual"
    return Path("samples") / model_label(path).replace("/", "_")


def run_checkpoints(run_dir: str | Path) -> list[tuple[str, Path]]:
    """(label, folder) of every complete checkpoint of a run, oldest first."""
    checkpoints = list_checkpoints(Path(run_dir) / "checkpoints")
    if not checkpoints:
        raise ValueError(f"{run_dir}: no complete checkpoint in {Path(run_dir) / 'checkpoints'}")
    return [(path.name, path) for path in checkpoints]


def sample_model(
    model_or_run: str | Path,
    prompts: str | Path | Sequence[PromptSpec],
    out_dir: str | Path | None = None,
    *,
    grid: bool = False,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    config: str | Path | None = None,
    hypernetwork: str | Path | None = None,
    hypernetwork_strength: float = 1.0,
) -> list[Path]:
    """Sample ``prompts`` (a prompt file or specs) from a model, run or checkpoint.

    Without ``grid``: one PNG per prompt and ``grid.png`` under ``out_dir`` (for a run or
    checkpoint: in ``step-NNNNNN/``); returns the image paths. With ``grid`` (a run folder):
    an X/Y grid of all its checkpoints x the prompts, ``out_dir/checkpoints-grid.png``;
    returns ``[grid path]``. ``config``: for a single-file model, the diffusers folder or hub
    id holding its configs (see `load_pipeline`). ``hypernetwork``: an A1111 hypernetwork
    ``.pt`` applied at ``hypernetwork_strength`` (not with ``grid``).
    """
    specs = load_prompts(prompts) if isinstance(prompts, (str, Path)) else list(prompts)
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(model_or_run)
    if grid:
        if hypernetwork is not None:
            raise ValueError("--hypernetwork: applies to one model; sample without --grid")
        rows = run_checkpoints(model_or_run)
        return [sample_grid(rows, specs, out_dir / GRID_FILE, device=device, dtype=dtype)]

    path = Path(model_or_run)
    step = None
    if is_run_or_checkpoint(path):
        step = checkpoint_step(resolve_checkpoint(path))
    pipeline = load_pipeline(model_or_run, dtype=dtype, config=config)
    if hypernetwork is not None:
        apply_hypernetwork(pipeline, hypernetwork, hypernetwork_strength)
    return sample_images(pipeline, specs, out_dir, step=step, model_name=model_label(model_or_run), device=device)
