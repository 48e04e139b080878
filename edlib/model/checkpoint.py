"""Checkpoints a run can always resume from, even when the machine vanished mid-save.

A checkpoint is a folder `checkpoints/step-NNNNNN/`:

    unet.safetensors, ...   weights of the modules the method trains (safetensors only)
    state.pt                everything else needed to continue exactly: optimizer, LR
                            scheduler, grad scaler, EMA, epoch, step, position in the epoch,
                            the epoch's folder settings, plugin state (loss tracker, ...)
                            and the config it was run with
    rng-R.pt                RNG states (python, numpy, torch, CUDA) of process R
    complete.json           written last: only folders holding it are ever loaded; it
                            lists every file with its size and CRC-32, checked on load, so
                            a file damaged later (truncated, bytes flipped) is named, never
                            loaded silently

It is written as `.tmp-step-NNNNNN/` and renamed when complete, so a process killed while
saving leaves only a temp folder, which `list_checkpoints` never returns and the next save
removes. Pruning deletes `complete.json` first, so a kill while pruning leaves an incomplete
folder (ignored, removed by the next prune), never one that looks complete without its files.
A save that fails (a full disk) removes its temp folder and says which checkpoint is intact.
`state.pt` and `rng-R.pt` hold only tensors and plain containers, and are loaded
with `torch.load(weights_only=True)`: resuming never runs pickled code.

We do not use `accelerator.save_state` because it writes in place (a kill leaves a
half-written folder that looks complete), loads custom state with `weights_only=False`, and
silently continues when RNG states fail to load, which would break exact resume unnoticed.
"""

from __future__ import annotations

import errno
import json
import random
import re
import shutil
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from edlib.files import describe_write_error

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


def saved_position(path: Path) -> dict[str, int] | None:
    """The run position (epoch, batch, step, samples) a checkpoint was saved at, read from its
    complete.json alone (state.pt holds the optimizer: gigabytes); None for checkpoints saved
    before edlib wrote it there."""
    try:
        position = json.loads((Path(path) / COMPLETE_MARKER).read_text(encoding="utf-8")).get("position")
    except (OSError, ValueError, AttributeError):
        return None
    return position if isinstance(position, dict) else None


def finished_by(path: Path, epochs: int, max_steps: int | None) -> str | None:
    """Why resuming checkpoint `path` with `epochs` and `max_steps` would train no step
    ("epochs" or "max_steps", the loop's own end conditions), or None when it would train on
    (or the checkpoint does not say where it was saved)."""
    position = saved_position(path)
    if position is None:
        return None
    if max_steps and position["step"] >= max_steps:
        return "max_steps"
    if position["epoch"] >= epochs:
        return "epochs"
    return None


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
    try:
        torch.save(capture_rng_state(), tmp / f"rng-{rank}.pt")
        if main:
            _save_weights(tmp, weights or {})
            torch.save(state or {}, tmp / STATE_FILE)
        _barrier(accelerator)
        if main:
            marker = {"step": step, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "files": _sums(tmp)}
            if state and "position" in state:  # readable without loading state.pt (see `saved_position`)
                marker["position"] = state["position"]
            (tmp / COMPLETE_MARKER).write_text(json.dumps(marker) + "\n", encoding="utf-8")
    except Exception as error:  # noqa: BLE001 - any failed write: say it plainly, keep what is intact
        shutil.rmtree(tmp, ignore_errors=True)  # frees the space a full disk needs back
        raise CheckpointError(_save_failed(directory, step, error)) from error
    if main:
        _replace_dir(tmp, final)
    _barrier(accelerator)
    return final


def _sums(folder: Path) -> dict[str, dict[str, Any]]:
    """Size and CRC-32 of every file in a checkpoint folder being saved. CRC-32 finds
    damage (a cut or flipped byte) at several GB/s; it does not defend against tampering."""
    return {p.name: {"size": p.stat().st_size, "crc32": _crc32(p)} for p in sorted(folder.iterdir()) if p.is_file()}


def _crc32(path: Path) -> str:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            crc = zlib.crc32(chunk, crc)
    return f"{crc:08x}"


def _save_failed(directory: Path, step: int, error: Exception) -> str:
    """Why checkpoint `step` could not be saved, and which checkpoint is still intact."""
    if isinstance(error, OSError):
        why = describe_write_error(error, directory)
    else:  # torch ("unexpected pos") and safetensors wrap the OS error in their own
        text = str(error)
        code = next((c for c in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT) if f"os error {c})" in text), None)
        if code is None and directory.exists() and shutil.disk_usage(directory).free < 256 * 2**20:
            code = errno.ENOSPC  # torch's "unexpected pos" hides the cause; the free space shows it
        why = describe_write_error(OSError(code, text), directory) if code else f"writing failed ({text[:200]})"
    previous = list_checkpoints(directory)
    kept = f"the previous checkpoint {previous[-1].name} is intact" if previous else "no earlier checkpoint exists"
    return f"could not save checkpoint step {step}: {why}; {kept}. Free some space, then resume with --resume latest"


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
    Returns the removed folders. The completeness marker goes first, so a kill mid-way
    leaves a folder no one loads; such leftovers older than the kept ones go too."""
    if not keep_last_n:
        return []
    complete = list_checkpoints(directory)
    removed = complete[:-keep_last_n]
    for path in removed:
        (path / COMPLETE_MARKER).unlink()
        shutil.rmtree(path)
    oldest_kept = checkpoint_step(complete[-keep_last_n]) if len(complete) >= keep_last_n else None
    for path in directory.iterdir():
        if _NAME.match(path.name) and path.is_dir() and not is_complete(path):
            if oldest_kept is not None and checkpoint_step(path) < oldest_kept:
                shutil.rmtree(path, ignore_errors=True)  # left by a kill during an earlier prune
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
    """Load a complete checkpoint. `with_state=False` reads only the weights (init_from).
    A damaged file raises `CheckpointError` naming it and the previous complete checkpoint."""
    path = Path(path)
    if not is_complete(path):
        raise CheckpointError(f"{path} is not a complete checkpoint (no {COMPLETE_MARKER}: the save did not finish)")
    verify_checkpoint(path)
    weights = {p.stem: _read(p, lambda f: load_file(str(f))) for p in sorted(path.glob("*.safetensors"))}
    state: dict[str, Any] = {}
    rng = None
    if with_state:
        state = _read(path / STATE_FILE, lambda f: torch.load(f, map_location="cpu", weights_only=True))
        rng_file = path / f"rng-{process_index}.pt"
        if rng_file.exists():
            rng = _read(rng_file, lambda f: torch.load(f, map_location="cpu", weights_only=True))
    return Checkpoint(path=path, weights=weights, state=state, rng=rng)


def verify_checkpoint(path: Path) -> None:
    """Check every file of checkpoint `path` against the sizes and CRC-32s in its
    complete.json (checkpoints saved before edlib wrote them are not checked)."""
    marker_file = path / COMPLETE_MARKER
    try:
        marker = json.loads(marker_file.read_text(encoding="utf-8"))
        files = marker.get("files", {})
    except (OSError, ValueError, AttributeError) as error:
        raise CheckpointError(_damaged(marker_file, f"cannot be read ({error})")) from None
    for name, expected in files.items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(_damaged(file, "is missing"))
        size = file.stat().st_size
        if size != expected["size"]:
            raise CheckpointError(_damaged(file, f"is {size:,} bytes, {expected['size']:,} when saved (cut short?)"))
        if _crc32(file) != expected["crc32"]:
            raise CheckpointError(_damaged(file, "has changed since it was saved (checksum mismatch)"))


def _read(file: Path, load):
    """`load(file)`, with any failure to read it reported as a damaged file."""
    try:
        return load(file)
    except Exception as error:  # noqa: BLE001 - torch/safetensors raise many kinds; all mean "damaged"
        raise CheckpointError(_damaged(file, f"cannot be read ({str(error)[:200]})")) from error


def _damaged(file: Path, what: str) -> str:
    """A damaged checkpoint file, and the checkpoint `--resume` can use instead."""
    folder = file.parent
    earlier = [p for p in list_checkpoints(folder.parent) if checkpoint_step(p) < checkpoint_step(folder)]
    advice = (
        f"the previous complete checkpoint is {earlier[-1]}: resume from it with --resume {earlier[-1]}"
        if earlier
        else f"there is no earlier complete checkpoint in {folder.parent}"
    )
    return f"{file}: damaged, it {what}; checkpoint {folder.name} cannot be used, {advice}"


# -- what else a run keeps with its checkpoints ----------------------------------------


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
