"""Checkpoints a run can always resume from, even when the machine vanished mid-save.

A checkpoint is a folder `checkpoints/step-NNNNNN/`:

    unet.safetensors, ...   weights of the modules the method trains (safetensors only)
    state.pt                everything else needed to continue exactly: optimizer, LR
                            scheduler, grad scaler, EMA, epoch, step, position in the epoch,
                            the epoch's folder settings, plugin state (loss tracker, ...)
                            and the config it was run with
    rng-R.pt                RNG states (python, numpy, torch, CUDA) of process R
    complete.json           written last: only folders holding it are ever loaded

It is written as `.tmp-step-NNNNNN/` and renamed when complete, so a process killed while
saving leaves only a temp folder, which `list_checkpoints` never returns and the next save
removes. `state.pt` and `rng-R.pt` hold only tensors and plain containers, and are loaded
with `torch.load(weights_only=True)`: resuming never runs pickled code.

We do not use `accelerator.save_state` because it writes in place (a kill leaves a
half-written folder that looks complete), loads custom state with `weights_only=False`, and
silently continues when RNG states fail to load, which would break exact resume unnoticed.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import time
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from edlib.data.types import ImageOwn, ScanResult

COMPLETE_MARKER = "complete.json"
STATE_FILE = "state.pt"
_NAME = re.compile(r"^step-(\d{6,})$")
_TMP_PREFIX = ".tmp-"


class CheckpointError(ValueError):
    """A checkpoint or resume target that cannot be used; the message says why."""


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def checkpoint_step(path: Path) -> int:
    match = _NAME.match(path.name)
    if not match:
        raise CheckpointError(f"{path} is not a checkpoint folder (expected a name like step-000123)")
    return int(match.group(1))


def is_complete(path: Path) -> bool:
    return bool(_NAME.match(path.name)) and (path / COMPLETE_MARKER).is_file()


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints in `directory`, oldest first."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and is_complete(p)]
    return sorted(found, key=checkpoint_step)


def resolve_checkpoint(target: str | Path, run_dir: Path | None = None) -> Path:
    """The checkpoint folder meant by `target`: "latest" (newest complete one of `run_dir`),
    a checkpoint folder, or a run folder (its newest complete checkpoint)."""
    if str(target) == "latest":
        if run_dir is None:
            raise CheckpointError("resume 'latest' needs a run folder")
        path = Path(run_dir)
    else:
        path = Path(target)
    if _NAME.match(path.name):
        if not is_complete(path):
            raise CheckpointError(
                f"{path} is not a complete checkpoint (no {COMPLETE_MARKER}: the save did not finish)"
            )
        return path
    checkpoints = list_checkpoints(path / "checkpoints")
    if not checkpoints:
        raise CheckpointError(f"no complete checkpoint in {path / 'checkpoints'}")
    return checkpoints[-1]


# -- RNG states ---------------------------------------------------------------------------


def capture_rng_state() -> dict[str, Any]:
    """RNG states of this process as tensors and plain containers (weights_only-loadable)."""
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
            "has_gauss": np_state["has_gauss"],
            "gauss": np_state["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- saving -------------------------------------------------------------------------------


def _save_weights(folder: Path, weights: dict[str, dict[str, torch.Tensor]]) -> None:
    for name, tensors in weights.items():
        cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        save_file(cpu, str(folder / f"{name}.safetensors"))


def save_checkpoint(
    directory: Path,
    step: int,
    *,
    weights: dict[str, dict[str, torch.Tensor]] | None,
    state: dict[str, Any] | None,
    accelerator=None,
) -> Path:
    """Write checkpoint `step` into `directory` atomically and return its final path.

    Call it on every process: each writes its own RNG state; the main process (the only
    one that needs to pass `weights` and `state`) writes the rest and commits.
    """
    final = directory / checkpoint_name(step)
    tmp = directory / f"{_TMP_PREFIX}{final.name}"
    main = accelerator is None or accelerator.is_main_process
    if main:
        if tmp.exists():  # left by a process killed while saving
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    _barrier(accelerator)
    rank = 0 if accelerator is None else accelerator.process_index
    torch.save(capture_rng_state(), tmp / f"rng-{rank}.pt")
    if main:
        _save_weights(tmp, weights or {})
        torch.save(state or {}, tmp / STATE_FILE)
    _barrier(accelerator)
    if main:
        marker = {"step": step, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (tmp / COMPLETE_MARKER).write_text(json.dumps(marker) + "\n", encoding="utf-8")
        _replace_dir(tmp, final)
    _barrier(accelerator)
    return final


def _replace_dir(src: Path, dst: Path) -> None:
    """Rename `src` to `dst`; an existing `dst` (same step saved again after resuming from
    an older checkpoint) is moved aside first and removed only once `src` is in place."""
    old = None
    if dst.exists():
        old = dst.with_name(f"{_TMP_PREFIX}old-{dst.name}")
        if old.exists():
            shutil.rmtree(old)
        dst.rename(old)
    src.rename(dst)
    if old is not None:
        shutil.rmtree(old)


def _barrier(accelerator) -> None:
    if accelerator is not None:
        accelerator.wait_for_everyone()


def prune_checkpoints(directory: Path, keep_last_n: int | None) -> list[Path]:
    """Delete all but the newest `keep_last_n` complete checkpoints (None/0 keeps all).
    Returns the removed folders."""
    if not keep_last_n:
        return []
    removed = list_checkpoints(directory)[:-keep_last_n]
    for path in removed:
        shutil.rmtree(path)
    return removed


# -- loading ------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    path: Path
    weights: dict[str, dict[str, torch.Tensor]]
    state: dict[str, Any]
    rng: dict[str, Any] | None  # this process's RNG states; None if saved by fewer processes

    @property
    def step(self) -> int:
        return int(self.state["step"])


def load_checkpoint(path: Path, *, process_index: int = 0, with_state: bool = True) -> Checkpoint:
    """Load a complete checkpoint. `with_state=False` reads only the weights (init_from)."""
    path = Path(path)
    if not is_complete(path):
        raise CheckpointError(f"{path} is not a complete checkpoint (no {COMPLETE_MARKER}: the save did not finish)")
    weights = {p.stem: load_file(str(p)) for p in sorted(path.glob("*.safetensors"))}
    state: dict[str, Any] = {}
    rng = None
    if with_state:
        state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
        rng_file = path / f"rng-{process_index}.pt"
        if rng_file.exists():
            rng = torch.load(rng_file, map_location="cpu", weights_only=True)
    return Checkpoint(path=path, weights=weights, state=state, rng=rng)


# -- what else a run keeps with its checkpoints ----------------------------------------


_SAVED_KEYS = ("multiply", "loss_scale")


def folder_settings(data: ScanResult) -> dict[str, dict[str, Any]]:
    """The settings that shape an epoch's schedule and loss, as saved in a checkpoint.
    Resuming mid-epoch restores them, so the rest of the epoch is the one that was planned
    even if `multiply.txt` was edited in between; the edit applies from the next epoch.
    Under "images", the images whose own .yaml sidecar sets them (read at the start of a
    run and kept for the whole run, so a resumed run keeps them too)."""
    out: dict[str, dict[str, Any]] = {
        f.path: {"multiply": str(f.settings.multiply), "loss_scale": f.settings.loss_scale, "images": {}}
        for f in data.folders
    }
    for item in data.items:
        own = {k: v for k, v in (item.own.settings if item.own is not None else ()) if k in _SAVED_KEYS}
        if own and item.folder in out:
            out[item.folder]["images"][item.path] = {k: str(v) if k == "multiply" else v for k, v in own.items()}
    return out


def with_folder_settings(data: ScanResult, saved: dict[str, dict[str, Any]]) -> ScanResult:
    folders = []
    for info in data.folders:
        if info.path in saved:
            values = saved[info.path]
            settings = info.settings.with_(multiply=Fraction(values["multiply"]), loss_scale=values["loss_scale"])
            info = replace(info, settings=settings)
        folders.append(info)
    items = [_with_saved_image(item, saved.get(item.folder)) for item in data.items]
    return replace(data, folders=folders, items=items)


def _with_saved_image(item, saved_folder: dict[str, Any] | None):
    """An image with the per-image multiply / loss_scale its run saved (checkpoints from
    before per-image settings have no "images" and leave it as it is)."""
    if saved_folder is None or "images" not in saved_folder:
        return item
    values = saved_folder["images"].get(item.path, {})
    own = item.own if item.own is not None else ImageOwn()
    kept = [(k, v) for k, v in own.settings if k not in _SAVED_KEYS]
    restored = [(k, Fraction(v) if k == "multiply" else v) for k, v in values.items()]
    if item.own is None and not restored:
        return item
    return replace(item, own=replace(own, settings=tuple(kept + restored)))


def parent_phase(parent_checkpoint: Path) -> dict[str, Any]:
    """The chain of phases: this run's parent checkpoint and the parent run's own phase."""
    parent_run = parent_checkpoint.parent.parent
    phase_file = parent_run / "phase.json"
    parent = json.loads(phase_file.read_text(encoding="utf-8")) if phase_file.exists() else None
    return {
        "init_from": str(parent_checkpoint),
        "parent_run": str(parent_run),
        "parent_step": checkpoint_step(parent_checkpoint),
        "parent_phase": parent,
    }
