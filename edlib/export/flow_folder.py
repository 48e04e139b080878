"""Export an SD3 or FLUX full fine-tune as a diffusers folder (what ``from_pretrained`` loads).

The folder is ``StableDiffusion3Pipeline`` / ``FluxPipeline``'s own ``save_pretrained`` output:
the trained transformer (and text encoders, if they trained) with the base model's other
components and scheduler. Written beside the target and moved into place when complete, as
the SD export does (`edlib.export.diffusers_folder`).
"""

from __future__ import annotations

from pathlib import Path

from edlib.export.diffusers_folder import _check_replaceable, _cpu_copy, save_pipeline_folder
from edlib.export.single_file import DTYPES
from edlib.model.models import Models, pipeline_class
from edlib.sample.samplers import scheduler_from_config

# Components of each flow family's pipeline, as `Models` attributes (the transformer is `unet`).
_COMPONENTS = {
    "flux": ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "vae"),
    "sd3": ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "text_encoder_3", "tokenizer_3", "vae"),
}


def export_flow_folder(models: Models, scheduler_config, out_dir: str | Path, *, dtype: str | None = None) -> Path:
    """Write ``models`` (an SD3 or FLUX bundle) as a diffusers folder at ``out_dir``; ``dtype``
    "fp16", "fp32" or None (as they are). The models are not changed. Returns ``out_dir``."""
    if models.family not in _COMPONENTS:
        raise ValueError(f"export_flow_folder: {models.family!r} is not SD3 or FLUX")
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype: unknown value {dtype!r}; allowed: {', '.join(DTYPES)} or None")
    out_dir = Path(out_dir)
    _check_replaceable(out_dir)
    components = {name: getattr(models, name) for name in _COMPONENTS[models.family]}
    components["transformer"] = models.unet
    if dtype is not None:
        for name, module in components.items():
            if hasattr(module, "state_dict") and module is not None:
                components[name] = _cpu_copy(module, DTYPES[dtype])
    pipeline = pipeline_class(models.family)(scheduler=scheduler_from_config(scheduler_config), **components)
    return save_pipeline_folder(pipeline, out_dir)
