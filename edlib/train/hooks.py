"""How features plug into the training loop: a `Plugin` gets a `Context` at fixed points.

Sampling, per-image loss tracking, validation and the end-of-run export are plugins; the loop
(`edlib.train.loop`) calls them and knows nothing of what they do. A plugin's `state_dict` is
saved in each checkpoint under its `name`, so a resumed run resumes its plugins too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: this module imports no torch or accelerate at run time
    import torch
    from accelerate import Accelerator

    from edlib.data.types import ScanResult
    from edlib.model.config import TrainConfig
    from edlib.model.methods import Method
    from edlib.train.batches import LocalBatch
    from edlib.train.run_dir import Reporter, RunDir


@dataclass
class Position:
    """Where a run is: `batch` is the next batch of `epoch` to train; `step` counts
    optimizer steps done; `samples` counts samples trained (all processes)."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    samples: int = 0


@dataclass
class Context:
    """What a plugin may look at (and, for sampling, use) between steps."""

    config: TrainConfig
    accelerator: Accelerator
    run: RunDir
    models: Any
    method: Method
    position: Position
    ema: Any | None
    data: ScanResult  # the scan with the current epoch's folder settings
    report: Reporter  # for a plugin's own events and log lines (e.g. "sample")
    item_weights: dict[str, float] | None = None  # the current epoch's per-image sampling weights
    exports: list[Path] = field(default_factory=list)  # files written at the end (see `after_end`)
    # Why the run is ending ("epochs", "max_steps", "stop request"), set before `on_end`;
    # None while it trains.
    stopped_by: str | None = None


class Plugin:
    """A hook into the loop for features beside training itself (sampling, per-image loss
    tracking, validation, exports).

    `name` keys the plugin's `state_dict()` in checkpoints (tensors and plain containers
    only); every hook is optional."""

    name = "plugin"

    def on_start(self, ctx: Context) -> None: ...

    def item_weights(self, ctx: Context) -> dict[str, float] | None:
        """Per-image sampling weights (path -> factor) for the epoch about to start, asked
        at each epoch start; the loop multiplies the answers of all plugins. A factor w
        makes an image's samples w times what its folder's multiplier gives it (see
        edlib.data.schedule). None: no change. All processes must answer the same."""
        return None

    def on_sample_losses(self, ctx: Context, batch: LocalBatch, timesteps: torch.Tensor, losses: torch.Tensor) -> None:
        """Per-sample losses (B,) of this process's part of a batch (`batch.items` index the
        scan's images), before min-SNR weighting and loss_scale."""

    def on_step(self, ctx: Context, metrics: dict[str, Any]) -> None:
        """After each optimizer step, before its metrics are reported: may add metrics."""

    def on_epoch_end(self, ctx: Context) -> None: ...

    def on_end(self, ctx: Context) -> None:
        """Training is over (epochs done, max_steps reached or stopped: `ctx.stopped_by`),
        before the last save."""

    def after_end(self, ctx: Context, checkpoint: Path) -> None:
        """The last checkpoint is saved (`checkpoint`): the training weights are safe on disk,
        so a plugin may now change the modules in memory (the export swaps EMA weights in).
        Files meant for the user go in `ctx.exports`. Called on every process."""

    def sample(self, ctx: Context) -> bool:
        """Serve a "sample now" request; return True if handled."""
        return False

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def merged_item_weights(plugins, ctx: Context) -> dict[str, float] | None:
    """The plugins' per-image weights for the next epoch, multiplied together."""
    merged: dict[str, float] = {}
    for plugin in plugins:
        for path, factor in (plugin.item_weights(ctx) or {}).items():
            merged[path] = merged.get(path, 1.0) * factor
    return merged or None
