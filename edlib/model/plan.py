"""The plan of a run from its config: the data layer's preview at the config's batch size,
resolution, seed and step cap, with the learning-rate curve the run will follow. The loop
plans with it (its LR schedule's length) and the notebook panel draws it, so both agree."""

from __future__ import annotations

from edlib.data.preview import Preview, preview
from edlib.data.types import ScanResult
from edlib.model.config import TrainConfig
from edlib.model.lr import with_lr_curve


def base_lr(config: TrainConfig) -> float:
    """The rate the LR curve is drawn for: the UNet's, or for textual inversion (no UNet
    training) the embeddings' (`text_encoder_lr`)."""
    return config.text_encoder_lr if config.method == "textual_inversion" else config.unet_lr


def preview_run(scan: ScanResult, config: TrainConfig, *, num_processes: int = 1, lr: bool = True) -> Preview:
    """The preview of a run of `config` over `scan` on `num_processes` processes (batches of
    batch_size x processes, as the loop realises them); with `lr`, its LR curve too."""
    p = preview(
        scan,
        epochs=config.epochs,
        batch_size=config.batch_size * num_processes,
        resolution=config.resolution,
        seed=config.seed,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        max_steps=config.max_steps,
    )
    if not lr:
        return p
    return with_lr_curve(
        p,
        config.lr_scheduler,
        base_lr(config),
        warmup_steps=config.lr_warmup_steps,
        num_cycles=config.lr_num_cycles,
        power=config.lr_power,
    )
