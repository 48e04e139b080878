"""Export a hypernetwork as the `.pt` file AUTOMATIC1111 and ComfyUI load from their
hypernetworks folders.

The file is `torch.save` of one dict, in the order A1111's `Hypernetwork.save` writes it
(modules/hypernetworks/hypernetwork.py):

    {768: (key network state dict, value network state dict),   # per context width, a Python int
     "step", "name", "layer_structure", "activation_func", "is_layer_norm",
     "weight_initialization", "sd_checkpoint", "sd_checkpoint_name", "activate_output",
     "use_dropout", "dropout_structure", "last_layer_dropout", "optional_info"}

Traps it avoids, each a way a client would refuse or misread the file:

- A1111 turns only keys whose type is `int` into layers (not "768", not a numpy int).
- ComfyUI rebuilds each network from its `*.weight` keys in stored order, so the state dicts
  keep the Sequential's order (`linear.10` must not sort before `linear.2`); it refuses an
  `activation_func` of None (written as "linear"), and defaults `activate_output` to False where
  A1111 defaults it to True, so it is always written.
- A1111's safe unpickler (modules/safe.py) rejects the zip entries current torch adds
  (`.format_version`, `byteorder`, `.data/serialization_id`, ...); the file is written in torch's
  legacy (non-zip) serialization, which it checks pickle by pickle.
- Only tensors, plain containers (dict, OrderedDict, tuple, list) and plain values: the file
  loads with `torch.load(path, weights_only=True)`, as ComfyUI loads it, and runs no code.

There is no safetensors variant: neither client reads a hypernetwork from one (A1111 lists
only `*.pt`; ComfyUI's loader indexes the nested per-width pairs a flat safetensors file
cannot hold).
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from edlib import __version__
from edlib.export.single_file import DTYPES
from edlib.model.hypernetwork_layers import Hypernetwork


def base_model_shorthash(model: str) -> str | None:
    """A1111's short hash of a single-file base model (the first 10 hex digits of its
    sha256), or None for a diffusers folder or hub id, which A1111 has no hash for."""
    path = Path(model)
    if not (path.is_file() and path.suffix.lower() in (".safetensors", ".ckpt")):
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:10]


def hypernetwork_file_contents(
    hypernetwork: Hypernetwork, *, name: str, step: int, base_model: str, base_model_label: str, dtype: str = "fp16"
) -> dict[Any, Any]:
    """The dict A1111 saves for ``hypernetwork``, with CPU copies of its weights in ``dtype``.
    ``base_model`` is the model trained on (a single file is hashed as A1111 hashes it);
    ``base_model_label`` how the file names it (no local folders, see `export.run.base_model_name`)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype: unknown value {dtype!r}; allowed: {', '.join(DTYPES)}")
    spec = hypernetwork.spec
    contents: dict[Any, Any] = {}
    for width, pair in hypernetwork.layer_state().items():
        contents[int(width)] = tuple(
            OrderedDict((key, value.to("cpu", DTYPES[dtype], copy=True).contiguous()) for key, value in state.items())
            for state in pair
        )
    dropout = [float(p) for p in spec.dropout_structure]
    contents.update(
        {
            "step": int(step),
            "name": str(name),
            "layer_structure": [float(f) for f in spec.layer_structure],
            "activation_func": str(spec.activation_func),
            "is_layer_norm": bool(spec.is_layer_norm),
            "weight_initialization": str(spec.weight_initialization),
            "sd_checkpoint": base_model_shorthash(base_model),
            # A1111's checkpoint name is the file name without its extension.
            "sd_checkpoint_name": base_model_label.removesuffix(".safetensors").removesuffix(".ckpt"),
            "activate_output": bool(spec.activate_output),
            "use_dropout": any(p > 0 for p in dropout),
            "dropout_structure": dropout,
            "last_layer_dropout": dropout[-2] != 0,
            "optional_info": f"trained with edlib {__version__} on {base_model_label}, step {step}",
        }
    )
    return contents


def export_a1111_hypernetwork(
    hypernetwork: Hypernetwork,
    out_path: str | Path,
    *,
    step: int,
    base_model: str,
    base_model_label: str | None = None,
    dtype: str = "fp16",
) -> Path:
    """Write ``hypernetwork`` to ``out_path`` (a ``.pt`` file; its stem becomes the name A1111
    shows and prompts use: ``<hypernet:STEM:1>``). Written beside the target and renamed into
    place, so a crash never leaves a half-written file that could be loaded. ``base_model_label``
    names the base model in the file (default: a local model's file or folder name, else
    ``base_model``). Returns the path."""
    out_path = Path(out_path)
    if out_path.suffix != ".pt":
        raise ValueError(f"{out_path}: a hypernetwork export must end in .pt (A1111 lists only .pt files)")
    label = base_model_label
    if label is None:  # a local model by its own name only: no folder of the user's in the file
        label = Path(base_model).name if Path(base_model).exists() else base_model
    contents = hypernetwork_file_contents(
        hypernetwork, name=out_path.stem, step=step, base_model=base_model, base_model_label=label, dtype=dtype
    )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = out_path.with_name(f".{out_path.name}.{os.getpid()}.partial")
    try:
        torch.save(contents, temporary, _use_new_zipfile_serialization=False)
        os.replace(temporary, out_path)
    finally:
        temporary.unlink(missing_ok=True)
    return out_path
