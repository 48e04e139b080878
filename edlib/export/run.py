"""`edlib export RUN --format ...`: turn what a run trained into the files users load.

Which formats fit depends on the method: a full fine-tune becomes a diffusers folder or one
single-file checkpoint; a LoRA run a kohya-style LoRA file; a textual-inversion run one
A1111 embedding per placeholder. Everything goes under `RUN/exports/` unless told otherwise,
named after the run and the checkpoint step so exports of different steps sit side by side.
"""

from __future__ import annotations

from pathlib import Path

from edlib import __version__
from edlib.export.a1111_embedding import export_a1111_embeddings
from edlib.export.diffusers_folder import export_diffusers
from edlib.export.kohya_lora import export_kohya_lora
from edlib.export.single_file import export_single_file
from edlib.train.trained import load_trained

FORMATS_BY_METHOD = {
    "full": ("diffusers", "single-file"),
    "lora": ("kohya-lora",),
    "textual_inversion": ("a1111-embedding",),
}
FORMATS = tuple(f for formats in FORMATS_BY_METHOD.values() for f in formats)


def export_run(
    run_or_checkpoint: str | Path,
    format: str,
    *,
    out: str | Path | None = None,
    dtype: str = "fp16",
) -> list[Path]:
    """Export a run's newest complete checkpoint (or the checkpoint given); returns what was
    written. `dtype` ("fp16"/"fp32") applies to the weight files."""
    if format not in FORMATS:
        raise ValueError(f"--format: unknown value {format!r}; allowed: {', '.join(FORMATS)}")
    trained = load_trained(run_or_checkpoint)
    method = trained.config.method
    if format not in FORMATS_BY_METHOD[method]:
        raise ValueError(
            f"{trained.checkpoint}: a {method!r} run exports as {' or '.join(FORMATS_BY_METHOD[method])}, not {format!r}"
        )
    run_dir = trained.checkpoint.parent.parent
    out_dir = Path(out) if out is not None else run_dir / "exports"
    name = f"{run_dir.name}-step{trained.step:06d}"
    metadata = {
        "base_model": trained.config.model,
        "edlib_run": run_dir.name,
        "edlib_step": trained.step,
        "edlib_method": method,
        "edlib_version": __version__,
    }
    m = trained.models
    if format == "diffusers":
        target = out_dir / f"{name}-diffusers"
        scheduler = _sampling_scheduler_config(trained.config.model, m.noise_scheduler.config)
        second = {"text_encoder_2": m.text_encoder_2, "tokenizer_2": m.tokenizer_2} if m.is_sdxl else {}
        return [export_diffusers(m.unet, m.vae, m.text_encoder, m.tokenizer, scheduler, target, dtype=dtype, **second)]
    if format == "single-file":
        target = out_dir / f"{name}.safetensors"
        return [
            export_single_file(
                m.unet, m.vae, m.text_encoder, target, dtype=dtype, metadata=metadata, text_encoder_2=m.text_encoder_2
            )
        ]
    if format == "kohya-lora":
        target = out_dir / f"{name}-lora.safetensors"
        return [
            export_kohya_lora(
                m.unet,
                m.text_encoder,
                target,
                dtype=dtype,
                base_model=trained.config.model,
                metadata=metadata,
                text_encoder_2=m.text_encoder_2,
            )
        ]
    second = trained.method.learned_embeddings(m, encoder="text_encoder_2") if m.is_sdxl else None
    return export_a1111_embeddings(trained.method.learned_embeddings(m), out_dir, metadata=metadata, embeddings_g=second)


def _sampling_scheduler_config(model: str, training_config):
    """The base model's own (sampling) scheduler, as users expect in an exported folder;
    the training noise scheduler (DDPM) only when the base has no separate config (a
    single-file model)."""
    from diffusers import DDPMScheduler

    try:
        return DDPMScheduler.load_config(model, subfolder="scheduler")
    except (OSError, ValueError):
        return training_config
