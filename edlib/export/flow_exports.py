"""What `edlib.export.run.export_models` does for SD3 and FLUX runs: a diffusers folder for a
full fine-tune (`flow_folder`), a LoRA in kohya's layout (FLUX only) or diffusers/PEFT's
(`flow_lora`, where the reasons are)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edlib.export.flow_folder import export_flow_folder
from edlib.export.flow_lora import export_kohya_flux_lora, export_peft_lora
from edlib.model.models import Models


def export_flow(models: Models, config, format: str, *, out_dir: Path, name: str, dtype: str, metadata: dict[str, Any]) -> list[Path]:
    family = models.family.upper()
    if format == "diffusers":
        return [export_flow_folder(models, models.noise_scheduler.config, out_dir / f"{name}-diffusers", dtype=dtype)]
    if format == "single-file":
        raise ValueError(f"single-file: not offered for {family} yet; a {family} full fine-tune exports as diffusers")
    extra = {"edlib_max_sequence_length": models.max_sequence_length}
    if format == "kohya-lora":
        if models.family != "flux":
            raise ValueError(
                "kohya-lora: diffusers ignores kohya-format SD3 LoRAs without a warning (sd-scripts #1743); "
                "export SD3 LoRAs as peft-lora, which diffusers and ComfyUI both load"
            )
        target = out_dir / f"{name}-lora.safetensors"
        return [
            export_kohya_flux_lora(
                models.unet,
                models.text_encoder,
                target,
                dtype=dtype,
                base_model=config.model,
                network=(config.network_dim, config.network_alpha),
                metadata={**metadata, **extra},
            )
        ]
    # peft-lora: the transformer and the CLIP encoders that trained (T5 never does)
    modules = {"transformer": models.unet}
    modules.update({name: getattr(models, name) for name in models.trainable_text_encoder_names})
    target = out_dir / f"{name}-peft-lora.safetensors"
    return [export_peft_lora(modules, target, dtype=dtype, metadata={**metadata, **extra})]
