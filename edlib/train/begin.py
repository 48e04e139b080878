"""How a run begins: fresh, as a new phase from another run's weights (`init_from`), or as an
exact resume from one of its checkpoints."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from edlib.model import checkpoint as ckpt
from edlib.model.config import ConfigError, TrainConfig
from edlib.model.resume_keys import RESUME_IMMUTABLE_KEYS, diff_configs
from edlib.train.hooks import Plugin, Position
from edlib.train.run_dir import Reporter, RunDir
from edlib.train.setup import Training, lr_schedule, unwrapper


@dataclass
class Start:
    """Where the run starts and, on resume, what its epoch was planned with: the folder
    settings, images and per-image weights saved with the checkpoint (see
    `edlib.train.epoch_state`), and the run's length as last re-counted (None: as planned now)."""

    position: Position
    folder_settings: Any = None
    epoch_items: list | None = None
    item_weights: dict[str, float] | None = None
    total_steps: int | None = None

    @property
    def resumed(self) -> bool:
        return self.folder_settings is not None


def begin(
    config: TrainConfig,
    resume: str | Path | None,
    run: RunDir,
    report: Reporter,
    training: Training,
    accelerator: Accelerator,
    plugins: list[Plugin],
) -> Start:
    """Load what a resume or a new phase needs, and write the run folder's config."""
    if resume is None:
        return _fresh(config, run, report, training, accelerator)
    return _resume(config, resume, run, report, training, accelerator, plugins)


def _fresh(config: TrainConfig, run: RunDir, report: Reporter, training: Training, accelerator: Accelerator) -> Start:
    existing = ckpt.list_checkpoints(run.checkpoints)
    if existing:
        raise ckpt.CheckpointError(
            f"run folder {run.path} already holds checkpoints (newest {existing[-1].name}); "
            f"resume it (--resume latest) or choose another run_dir"
        )
    phase = {"model": config.model, "init_from": None}
    if config.init_from is not None:
        parent = ckpt.load_checkpoint(ckpt.resolve_checkpoint(config.init_from), with_state=False)
        training.method.init_weights(training.models, parent.weights, unwrap=unwrapper(accelerator))
        phase.update(ckpt.parent_phase(parent.path))
        report.log(f"new phase from {parent.path} (weights only; fresh optimizer and schedule)")
    run.truncate_metrics(after_step=0)
    run.write_phase(phase)
    run.write_config(config.model_dump(mode="json"))
    report.log(f"training {config.model} on {config.data_root} into {run.path}")
    return Start(Position())


def _resume(config, resume, run: RunDir, report: Reporter, training: Training, accelerator, plugins) -> Start:
    path = ckpt.resolve_checkpoint(resume, run.path)
    saved = ckpt.load_checkpoint(path, process_index=accelerator.process_index)
    changed = _changes_allowed_on_resume(path, TrainConfig.from_dict(saved.state["config"]), config)
    training.method.load_weights(training.models, saved.weights, unwrap=unwrapper(accelerator))
    # The LR schedule keeps the length the run was started with: a multiplier changed since
    # would plan another length now, and the resumed run would leave the unbroken run's curve.
    # (Made before the optimizer state loads: a new schedule sets the groups' rates.)
    lr_steps = saved.state.get("lr_steps", training.lr_steps)
    if lr_steps != training.lr_steps:
        training.lr_scheduler, training.lr_steps = lr_schedule(config, training.optimizer, lr_steps), lr_steps
    training.optimizer.load_state_dict(saved.state["optimizer"])
    training.lr_scheduler.load_state_dict(saved.state["lr_scheduler"])
    if accelerator.scaler is not None and saved.state.get("scaler"):
        accelerator.scaler.load_state_dict(saved.state["scaler"])
    if training.ema is not None:
        training.ema.load_state_dict(saved.state["ema"])
    for plugin in plugins:
        plugin.load_state_dict(saved.state["plugins"].get(plugin.name, {}))
    if saved.rng is not None:
        ckpt.restore_rng_state(saved.rng)
    else:
        report.warning(f"{path} has no RNG state for process {accelerator.process_index}; continuing with fresh RNG")
    position = Position(**saved.state["position"])
    run.truncate_metrics(after_step=position.step)
    run.write_config(config.model_dump(mode="json"))
    report.log(f"resumed from {path} at step {position.step} (epoch {position.epoch}, batch {position.batch})")
    for key, (old, new) in changed.items():
        report.log(f"config change on resume: {key}: {old!r} -> {new!r}")
    state = saved.state
    return Start(position, state["folder_settings"], state.get("epoch_items"), state.get("item_weights"), state.get("total_steps"))


def _changes_allowed_on_resume(path: Path, saved: TrainConfig, config: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """The keys changed since the checkpoint was saved; an error if any is fixed on resume."""
    immutable, mutable = diff_configs(saved, config)
    if immutable:
        lines = [f"{key}: {old!r} -> {new!r} ({RESUME_IMMUTABLE_KEYS[key]})" for key, (old, new) in immutable.items()]
        raise ConfigError(
            f"cannot resume {path} with a changed config; these keys are fixed on resume:\n  "
            + "\n  ".join(lines)
            + "\nrevert them, or start a new phase with init_from"
        )
    return mutable
