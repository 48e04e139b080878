"""The end-of-run export: a loop hook that writes the run's result in `export_formats`.

It runs after the last checkpoint is saved, from the modules in memory (no second copy of the
model: a 12 GB Colab would not survive reloading SDXL), with the EMA weights put in when the run
keeps them; the training weights are already in the checkpoint. A failed export is a warning,
not a lost run: the checkpoint is complete and `edlib export RUN` retries from it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from edlib.export.run import export_models
from edlib.model.config import TrainConfig
from edlib.train.hooks import Context, Plugin


class ExportAtEnd(Plugin):
    name = "export"

    @classmethod
    def from_config(cls, config: TrainConfig) -> ExportAtEnd | None:
        return cls() if config.exports_at_end() else None

    def after_end(self, ctx: Context, checkpoint: Path) -> None:
        config, accelerator, report = ctx.config, ctx.accelerator, ctx.report
        if accelerator.is_main_process:
            if ctx.ema is not None:
                ctx.ema.copy_to(ctx.method.trainable_parameters(ctx.models))
            models = replace(ctx.models, unet=accelerator.unwrap_model(ctx.models.unet, keep_torch_compile=False))
            for format in config.exports_at_end(ctx.models.family):
                report.event("exporting", {"format": format, "step": ctx.position.step})
                try:
                    paths = export_models(
                        models,
                        ctx.method,
                        config,
                        format,
                        out_dir=ctx.run.path / "exports",
                        run_name=ctx.run.path.name,
                        step=ctx.position.step,
                        dtype=config.export_dtype,
                    )
                except Exception as error:  # noqa: BLE001 - the run is saved; say how to retry
                    report.warning(
                        f"export {format} failed: {error}. The run is saved ({checkpoint}); "
                        f"retry with: edlib export {ctx.run.path} --format {format}"
                    )
                    continue
                for path in paths:
                    report.log(f"exported {format}: {path}")
                    report.event("export", {"format": format, "path": str(path), "step": ctx.position.step})
                ctx.exports += paths
        accelerator.wait_for_everyone()
