"""`edlib export RUN --format ...`: turn what a run trained into the files users load.

Which formats fit depends on the method: a full fine-tune becomes a diffusers folder or one
single-file checkpoint; a LoRA run a kohya-style LoRA file; a textual-inversion run one
A1111 embedding per placeholder; a hypernetwork run an A1111 hypernetwork `.pt`. SD3 and FLUX runs export through `flow_exports`: a diffusers
folder for a full fine-tune, a LoRA in kohya's layout (FLUX) or diffusers' (both). Everything goes under `RUN/exports/` unless told otherwise,
named after the run and the checkpoint step so exports of different steps sit side by side,
and after the dtype unless it is the usual fp16 (`...-fp32.safetensors`), so an fp32 export
and an fp16 one of the same step never replace each other. Embeddings (named after their
trigger word, as A1111 wants) are always fp32.
"""

from __future__ import annotations

from pathlib import Path, PureWindowsPath

from edlib import __version__
from edlib.export.a1111_embedding import export_a1111_embeddings
from edlib.export.a1111_hypernetwork import export_a1111_hypernetwork
from edlib.export.diffusers_folder import export_diffusers
from edlib.export.kohya_lora import export_kohya_lora
from edlib.export.single_file import export_single_file
from edlib.model.config import EXPORT_FORMATS, TrainConfig
from edlib.model.identify import model_location
from edlib.model.methods import Method
from edlib.model.models import Models
from edlib.model.trained import load_trained

FORMATS = tuple(f for formats in EXPORT_FORMATS.values() for f in formats)


def export_run(
    run_or_checkpoint: str | Path,
    format: str,
    *,
    out: str | Path | None = None,
    dtype: str = "fp16",
) -> list[Path]:
    """Export a run's newest complete checkpoint (or the checkpoint given); returns what was
    written. `dtype` ("fp16"/"fp32") applies to the weight files. A run with EMA exports
    its EMA weights (see `load_trained`)."""
    _check_format(format)
    trained = load_trained(run_or_checkpoint)
    run_dir = trained.checkpoint.parent.parent
    return export_models(
        trained.models,
        trained.method,
        trained.config,
        format,
        out_dir=Path(out) if out is not None else run_dir / "exports",
        run_name=run_dir.name,
        step=trained.step,
        dtype=dtype,
        where=str(trained.checkpoint),
    )


def export_models(
    models: Models,
    method: Method,
    config: TrainConfig,
    format: str,
    *,
    out_dir: Path,
    run_name: str,
    step: int,
    dtype: str = "fp16",
    where: str = "export",
) -> list[Path]:
    """Export modules as they are now: a loaded checkpoint's (`export_run`) or, at the end
    of a run, the training modules themselves (plain ones: `accelerator.unwrap_model`), so
    ending a run needs no second copy of the model in memory. `where` names the source in
    errors."""
    _check_format(format)
    if format not in EXPORT_FORMATS[config.method]:
        allowed = " or ".join(EXPORT_FORMATS[config.method])
        raise ValueError(f"{where}: a {config.method!r} run exports as {allowed}, not {format!r}")
    name = f"{run_name}-step{step:06d}" + ("" if dtype == "fp16" else f"-{dtype}")
    metadata = {
        "base_model": base_model_name(config.model),
        "edlib_run": run_name,
        "edlib_step": step,
        "edlib_method": config.method,
        "edlib_version": __version__,
    }
    m = models
    if m.flow_matching:
        from edlib.export.flow_exports import export_flow

        return export_flow(m, config, format, out_dir=out_dir, name=name, dtype=dtype, metadata=metadata)
    if format == "peft-lora":
        raise ValueError(f"{where}: peft-lora is offered for SD3 and FLUX LoRAs; an SD1/SDXL LoRA exports as kohya-lora")
    if format == "diffusers":
        target = out_dir / f"{name}-diffusers"
        scheduler = _sampling_scheduler_config(config.model, m.noise_scheduler.config)
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
                base_model=base_model_name(config.model),
                metadata=metadata,
                text_encoder_2=m.text_encoder_2,
            )
        ]
    if format == "a1111-hypernetwork":
        target = out_dir / f"{name}.pt"
        label = base_model_name(config.model)
        hypernetwork = method.hypernetwork(m)
        return [export_a1111_hypernetwork(hypernetwork, target, step=step, base_model=config.model, base_model_label=label, dtype=dtype)]
    second = method.learned_embeddings(m, encoder="text_encoder_2") if m.is_sdxl else None
    # Embeddings are a few KB: always fp32, whatever `dtype` says, so they never clash either.
    return export_a1111_embeddings(method.learned_embeddings(m), out_dir, metadata=metadata, embeddings_g=second)


def base_model_name(model: str) -> str:
    """How an export names its base model: a hub id as it is, a local model by its file or
    folder name only (as kohya does), so no user's folder layout (a Drive path, a home
    folder) travels with the file. A local path is one that exists here, or that cannot be a
    hub id ("owner/name"): absolute, relative with ./ or ~, deeper than one "/", or a
    checkpoint file name."""
    text = str(model).rstrip("/\\")
    path = Path(text).expanduser()
    local = (
        path.exists()
        or path.is_absolute()
        or text.startswith((".", "~"))
        or "\\" in text
        or text.count("/") > 1
        or path.suffix in (".safetensors", ".ckpt", ".pt", ".bin")
    )
    return PureWindowsPath(text).name if local else text


def _check_format(format: str) -> None:
    if format not in FORMATS:
        raise ValueError(f"--format: unknown value {format!r}; allowed: {', '.join(FORMATS)}")


def _sampling_scheduler_config(model: str, training_config):
    """The base model's own (sampling) scheduler, as users expect in an exported folder;
    the training noise scheduler (DDPM) only when the base has no separate config (a
    single-file model)."""
    from diffusers import DDPMScheduler

    try:
        return DDPMScheduler.load_config(model_location(model), subfolder="scheduler")
    except (OSError, ValueError):
        return training_config
