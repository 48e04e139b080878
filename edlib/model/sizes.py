"""How many parameters a model's parts hold, read from its safetensors headers: no weights are
loaded and torch is not imported, so the training form may ask on every change.

The estimate (`edlib.model.estimate`) sizes memory and time by the model in hand rather than by
its family's published figures, and the form picks learning rates by size
(`edlib.model.suggest`). A header is 8 bytes of length then JSON naming every tensor's shape.
"""

from __future__ import annotations

import functools
import json
import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from edlib.model.identify import looks_like_path, model_location

# Parts of a diffusers folder, by component name, and of a single file, by key prefix.
_DENOISERS = ("unet", "transformer")
_SINGLE_FILE_PARTS = (
    ("vae", ("first_stage_model.", "vae.")),
    ("text_encoders", ("cond_stage_model.", "conditioner.", "text_encoders.", "text_encoder.")),
    ("denoiser", ("model.diffusion_model.",)),
)
_SKIPPED_PREFIXES = ("model_ema.",)  # a second copy of the UNet some files carry
_VARIANT = re.compile(r"\.(fp16|bf16|fp32|ema|non_ema)\.")
_HEADER_LIMIT = 100 * 1024**2  # a header larger than this is no safetensors header


@dataclass(frozen=True)
class ModelSize:
    """Parameters of a model's denoiser (UNet or transformer), text encoders together, VAE."""

    denoiser: int
    text_encoders: int
    vae: int


def header_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor name -> shape, from a .safetensors file's header alone."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > _HEADER_LIMIT:
            raise ValueError(f"{path}: not a safetensors file (header of {length} bytes)")
        header = json.loads(handle.read(length))
    return {name: entry["shape"] for name, entry in header.items() if name != "__metadata__"}


def _count(shapes: dict[str, list[int]]) -> int:
    return sum(math.prod(shape) for shape in shapes.values())


def _component_files(folder: Path) -> list[Path]:
    """The weight files of one component: the plain ones (all shards), else one variant's."""
    files = sorted(folder.glob("*.safetensors"))
    plain = [f for f in files if not _VARIANT.search(f.name)]
    if plain or not files:
        return plain
    variant = _VARIANT.search(files[0].name).group(1)
    return [f for f in files if f".{variant}." in f.name]


def _folder_size(folder: Path) -> ModelSize | None:
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    parts = {"denoiser": 0, "text_encoders": 0, "vae": 0}
    for name in (k for k in index if not k.startswith("_")):
        part = "denoiser" if name in _DENOISERS else "vae" if name == "vae" else "text_encoders" if name.startswith("text_encoder") else None
        if part is None:
            continue
        files = _component_files(folder / name)
        if not files and part == "denoiser":
            return None  # a hub snapshot whose weights are not downloaded yet
        parts[part] += sum(_count(header_shapes(f)) for f in files)
    return ModelSize(**parts)


def _file_size(path: Path) -> ModelSize | None:
    if path.suffix.lower() != ".safetensors":
        return None  # a pickled .ckpt is not read before loading
    parts = {"denoiser": 0, "text_encoders": 0, "vae": 0}
    shapes = header_shapes(path)
    known = any(name.startswith(p) for name in shapes for _, prefixes in _SINGLE_FILE_PARTS for p in prefixes)
    for name, shape in shapes.items():
        if name.startswith(_SKIPPED_PREFIXES):
            continue
        part = next((part for part, prefixes in _SINGLE_FILE_PARTS if name.startswith(prefixes)), None)
        if part is None and not known:
            part = "denoiser"  # a bare transformer or UNet file (FLUX's own layout)
        if part is not None:
            parts[part] += math.prod(shape)
    return ModelSize(**parts)


@functools.lru_cache(maxsize=32)
def _cached_size(location: str, stamp: tuple[int, ...]) -> ModelSize | None:
    """Read once per state of the files (`stamp`: their folders' times, which change when a
    file is added, e.g. a hub download finishing)."""
    path = Path(location)
    return _folder_size(path) if path.is_dir() else _file_size(path)


def model_size(model: str | Path) -> ModelSize | None:
    """The parameter counts of a model argument (a bundled name, a diffusers folder, a
    .safetensors file, a hub model in the local cache); None when they cannot be told without
    a download or loading (a hub model not cached, a .ckpt, a damaged header)."""
    try:
        text = model_location(model)
        path = Path(text).expanduser()
        if not path.exists() and not looks_like_path(text):
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(text, "model_index.json")
            path = Path(cached).parent if isinstance(cached, str) else path
        if not ((path / "model_index.json").is_file() or path.is_file()):
            return None
        parts = [path, *(p for p in path.iterdir() if p.is_dir())] if path.is_dir() else [path]
        stamp = tuple(p.stat().st_mtime_ns for p in parts)
        size = _cached_size(str(path.resolve()), stamp)
    except (OSError, ValueError, KeyError, struct.error):
        return None
    return size if size is not None and size.denoiser > 0 else None
