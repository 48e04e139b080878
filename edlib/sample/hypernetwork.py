"""Sampling with an AUTOMATIC1111 hypernetwork file (`.pt`): read it safely, apply it to a
pipeline's UNet.

The file is read with `torch.load(weights_only=True)`, so a malicious file cannot run code,
and interpreted as A1111's `Hypernetwork.load` does (modules/hypernetworks/hypernetwork.py):
only `int` keys are context widths, each a (key, value) pair of state dicts; a missing
metadata key takes A1111's default (`layer_structure` [1, 2, 1], no activation, no layer norm,
`activate_output` true, dropout from `use_dropout` / `last_layer_dropout`). The networks are
then attached by `edlib.model.hypernetwork_layers.attach`, the same code a hypernetwork run
samples with, so an exported file gives the images the run showed.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline

from edlib.model.hypernetwork_layers import Hypernetwork, HypernetworkSpec, attach


def _dropout_structure(contents: dict[Any, Any], layer_structure: list[float]) -> list[float]:
    """A1111's `parse_dropout_structure` for files that predate `dropout_structure`."""
    given = contents.get("dropout_structure")
    if given is not None:
        return [float(p) for p in given]
    if not contents.get("use_dropout", False):
        return [0.0] * len(layer_structure)
    last = 0.3 if contents.get("last_layer_dropout", False) else 0.0
    return [0.0, *[0.3] * (len(layer_structure) - 3), last, 0.0]


def spec_from_file(contents: dict[Any, Any], where: str) -> HypernetworkSpec:
    """The architecture a hypernetwork file's metadata describes, with A1111's defaults."""
    layer_structure = [float(f) for f in contents.get("layer_structure", [1, 2, 1])]
    activation = contents.get("activation_func") or "linear"  # A1111 treats None as "linear"
    try:
        return HypernetworkSpec(
            layer_structure=tuple(layer_structure),
            activation_func=str(activation),
            is_layer_norm=bool(contents.get("is_layer_norm", False)),
            dropout_structure=tuple(_dropout_structure(contents, layer_structure)),
            activate_output=bool(contents.get("activate_output", True)),
            weight_initialization=str(contents.get("weight_initialization", "Normal")),
        )
    except ValueError as error:
        raise ValueError(f"{where}: not a hypernetwork edlib can apply: {error}") from None


def read_hypernetwork(path: str | Path) -> Hypernetwork:
    """The hypernetwork in an A1111 ``.pt`` file, on the CPU in fp32 (as A1111 keeps it)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such hypernetwork file")
    try:
        contents = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
        raise ValueError(f"{path}: not a readable hypernetwork file ({str(error).splitlines()[0]})") from None
    if not isinstance(contents, dict):
        raise ValueError(f"{path}: not a hypernetwork file (expected a dict, found {type(contents).__name__})")
    layers = {key: value for key, value in contents.items() if type(key) is int}
    if not layers:
        raise ValueError(f"{path}: holds no networks (no context-width keys like 768); is it a hypernetwork file?")
    spec = spec_from_file(contents, str(path))
    hypernetwork = Hypernetwork(sorted(layers), spec)
    for width, pair in layers.items():
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(s, dict) for s in pair)):
            raise ValueError(f"{path}: width {width} should hold two state dicts (key and value network)")
        # Pre-October-2022 files name the two layers linear1/linear2 (A1111's fix_old_state_dict).
        layers[width] = tuple({_new_key(k): v for k, v in state.items()} for state in pair)
    hypernetwork.load_layer_state(layers, str(path))
    return hypernetwork.float().eval()


def _new_key(key: str) -> str:
    for old, new in (("linear1.", "linear.0."), ("linear2.", "linear.1.")):
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def apply_hypernetwork(pipeline: DiffusionPipeline, path: str | Path, strength: float = 1.0) -> Hypernetwork:
    """Read the hypernetwork file at ``path`` and apply it to ``pipeline``'s UNet at
    ``strength`` (A1111's `<hypernet:NAME:strength>`, ComfyUI's strength). Returns it."""
    hypernetwork = read_hypernetwork(path)
    hypernetwork.set_strength(strength)
    try:
        return attach(pipeline.unet, hypernetwork)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
