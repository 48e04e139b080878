"""What a model argument names, told from configs and file headers without loading weights
or importing torch: a hub id or a path, its family (SD1.x/SD2.x, SDXL, SD3.x, FLUX.1) and its
native resolution.

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


# The model families edlib trains, by the name the code dispatches on: "sd" is SD1.x and SD2.x
# (one UNet layout, one text encoder), "sdxl" SDXL, "sd3" SD3/SD3.5 (MMDiT transformer, CLIP-L
# + CLIP-G + T5), "flux" FLUX.1 dev and schnell (transformer, CLIP-L + T5). "sd3" and "flux"
# train by flow matching; the others by noise (epsilon or v) prediction.
FAMILIES = ("sd", "sdxl", "sd3", "flux")
FLOW_FAMILIES = ("sd3", "flux")
# diffusers' pipeline class of each family, as model_index.json names it.
PIPELINES = {
    "sd": "StableDiffusionPipeline",
    "sdxl": "StableDiffusionXLPipeline",
    "sd3": "StableDiffusion3Pipeline",
    "flux": "FluxPipeline",
}
# Single-file layouts, told apart by a key prefix (with or without ComfyUI's
# `model.diffusion_model.`): SD3's joint blocks, FLUX's double blocks, SDXL's second encoder.
_FILE_MARKERS = (
    ("sd3", ("joint_blocks.", "model.diffusion_model.joint_blocks.")),
    ("flux", ("double_blocks.", "model.diffusion_model.double_blocks.")),
    ("sdxl", ("conditioner.embedders.1.",)),
)


def file_family(path: Path) -> str:
    """The family of a single .safetensors file, read from its header alone. A .ckpt is
    pickled (SD1.x/SD2.x era): "sd"."""
    if Path(path).suffix.lower() != ".safetensors":
        return "sd"
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as handle:
        keys = list(handle.keys())
    for family, prefixes in _FILE_MARKERS:
        if any(key.startswith(prefixes) for key in keys):
            return family
    return "sd"


def index_family(index: dict) -> str:
    """The family of a diffusers folder from its model_index.json (its pipeline class, or for
    an unknown class the components it lists)."""
    for family, name in PIPELINES.items():
        if index.get("_class_name") == name:
            return family
    if "text_encoder_3" in index:
        return "sd3"
    if "transformer" in index and "text_encoder_2" in index:
        return "flux"
    return "sdxl" if "text_encoder_2" in index else "sd"


def folder_family(path: Path) -> str:
    return index_family(json.loads((Path(path) / "model_index.json").read_text(encoding="utf-8")))


def hub_family(model: str) -> str:
    """The family of a hub model, from its model_index.json (one small download, cached)."""
    from huggingface_hub import hf_hub_download

    return folder_family(Path(hf_hub_download(model, "model_index.json")).parent)


def model_family(model: str | Path) -> str | None:
    """The family of a model argument when it can be told offline (a folder, a file, a hub
    model in the local cache); None otherwise."""
    try:
        text = model_location(model)
        path = Path(text).expanduser()
        if (path / "model_index.json").is_file():
            return folder_family(path)
        if path.is_file():
            return file_family(path)
        if not looks_like_path(text):
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(text, "model_index.json")
            return folder_family(Path(cached).parent) if isinstance(cached, str) else None
    except (OSError, ValueError):
        return None
    return None


def is_sdxl_file(path: Path) -> bool:
    """Whether a single .safetensors file is an SDXL checkpoint (its second text encoder's
    keys), read from the header alone. A .ckpt is pickled: assumed SD1.x/SD2.x."""
    return file_family(path) == "sdxl"


# The UNet's first cross-attention key in the original layout: its input width is the text
# encoder's (768 for SD1.x's CLIP, 1024 for SD2.x's OpenCLIP).
_SD_CROSS_ATTENTION_KEY = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"


def _single_file_resolution(path: Path) -> int | None:
    """From a .safetensors header: 1024 for SDXL, 768 for SD2.x (diffusers loads an SD2 single
    file without a config as SD 2.1 768-v; an SD 2 *base* file wants `resolution: 512`), 512
    for SD1.x. None for a .ckpt (pickled: not read before loading) or an unknown layout."""
    if path.suffix.lower() != ".safetensors":
        return None
    if file_family(path) in ("sdxl", "sd3", "flux"):  # all made for 1024 x 1024
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
    denoiser = "transformer" if model_family(model) in FLOW_FAMILIES else "unet"
    for name in (denoiser, "vae"):
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
    # FLUX's transformer has no sample size: its pipeline samples 128 latent pixels a side.
    sample_size = configs[denoiser].get("sample_size", 128)
    try:
        return int(sample_size) * 2 ** (len(configs["vae"]["block_out_channels"]) - 1)
    except (KeyError, TypeError, ValueError):
        return None


def folder_is_sdxl(path: Path) -> bool:
    return folder_family(path) == "sdxl"


def hub_is_sdxl(model: str) -> bool:
    """Whether a hub model is SDXL, from its model_index.json (one small download, cached)."""
    return hub_family(model) == "sdxl"
