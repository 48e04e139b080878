"""What a model argument names, told from configs and file headers without loading weights
or importing torch: a hub id or a path, SD1.x/SD2.x or SDXL, and its native resolution.

The config schema asks this when it fills in an unset `resolution`, so validating a config
(the CLI's argument checks, every keystroke of the notebook form) stays light. Headers are
read with safetensors' numpy framework, which does not import torch.
"""

from __future__ import annotations

import json
from pathlib import Path

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
# Models that ship inside edlib, by the name a config uses (`model: edlib:world`).
BUNDLED_MODELS = ("edlib:world",)


def model_location(model: str | Path) -> str:
    """Where a model argument points: a bundled model's name (`edlib:world`, the toy-world
    model that trains on a CPU) becomes its folder inside the installed package; anything
    else (hub id, folder, file) is returned as given. Configs keep the name, so a run moves
    between machines whose package lives elsewhere."""
    text = str(model)
    if text in BUNDLED_MODELS:
        from edlib.model.world import bundled_model_path

        return str(bundled_model_path())
    if text.startswith("edlib:"):
        raise ValueError(f"model: {text!r} is not a model that ships with edlib; bundled: {', '.join(BUNDLED_MODELS)}")
    return text


def looks_like_path(model: str) -> bool:
    """A hub id is `name` or `org/name`; anything else that reads like a path is one."""
    return (
        model.startswith((".", "/", "~", "\\"))
        or "\\" in model
        or model.count("/") > 1
        or model.lower().endswith(SINGLE_FILE_SUFFIXES)
        or Path(model).expanduser().exists()
    )


def is_sdxl_file(path: Path) -> bool:
    """Whether a single .safetensors file is an SDXL checkpoint (its second text encoder's
    keys), read from the header alone. A .ckpt is pickled: assumed SD1.x/SD2.x."""
    if path.suffix.lower() != ".safetensors":
        return False
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as handle:
        return any(key.startswith("conditioner.embedders.1.") for key in handle.keys())


# The UNet's first cross-attention key in the original layout: its input width is the text
# encoder's (768 for SD1.x's CLIP, 1024 for SD2.x's OpenCLIP).
_SD_CROSS_ATTENTION_KEY = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"


def _single_file_resolution(path: Path) -> int | None:
    """From a .safetensors header: 1024 for SDXL, 768 for SD2.x (diffusers loads an SD2 single
    file without a config as SD 2.1 768-v; an SD 2 *base* file wants `resolution: 512`), 512
    for SD1.x. None for a .ckpt (pickled: not read before loading) or an unknown layout."""
    if path.suffix.lower() != ".safetensors":
        return None
    if is_sdxl_file(path):
        return 1024
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as handle:
        if _SD_CROSS_ATTENTION_KEY not in handle.keys():
            return None
        width = handle.get_slice(_SD_CROSS_ATTENTION_KEY).get_shape()[-1]
    return {768: 512, 1024: 768}.get(width)


def native_resolution(model: str | Path) -> int | None:
    """The image size a model was made for, read from its configs without loading weights:
    the UNet's sample size times the VAE's downsampling (512 for SD1.x, 768 for SD2.x 768-v,
    1024 for SDXL). A single file's is the size of the configs diffusers loads it with (see
    `_single_file_resolution`). None when it cannot be told offline (a hub model not in the
    local cache, a .ckpt)."""
    configs = {}
    text = model_location(model)
    path = Path(text).expanduser()
    if path.is_file():
        return _single_file_resolution(path)
    for name in ("unet", "vae"):
        if path.is_dir():
            candidate = path / name / "config.json"
        elif not looks_like_path(text):
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(text, f"{name}/config.json")
            candidate = Path(cached) if isinstance(cached, str) else None
        else:
            candidate = None
        if candidate is None or not candidate.is_file():
            return None
        configs[name] = json.loads(candidate.read_text(encoding="utf-8"))
    try:
        return int(configs["unet"]["sample_size"]) * 2 ** (len(configs["vae"]["block_out_channels"]) - 1)
    except (KeyError, TypeError, ValueError):
        return None


def folder_is_sdxl(path: Path) -> bool:
    return "text_encoder_2" in json.loads((path / "model_index.json").read_text(encoding="utf-8"))


def hub_is_sdxl(model: str) -> bool:
    """Whether a hub model is SDXL, from its model_index.json (one small download, cached)."""
    from huggingface_hub import hf_hub_download

    return folder_is_sdxl(Path(hf_hub_download(model, "model_index.json")).parent)
