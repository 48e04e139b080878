"""The plugins a training config asks for, added by `train` to those its caller passes.

Each config-driven feature that hooks into the loop (loss tracking, validation, sampling) appears here once, so
a CLI run, a notebook run and a test get the same plugins from the same config.
"""

from __future__ import annotations

from edlib.data.types import ScanResult
from edlib.sample.plugin import SamplingPlugin
from edlib.train.config import TrainConfig
from edlib.train.loop import Plugin
from edlib.train.loss_tracker import LossTrackerPlugin
from edlib.train.validation import ValidationPlugin


def default_plugins(config: TrainConfig, validation: ScanResult | None = None) -> list[Plugin]:
    """The plugins ``config`` switches on, in the order the loop should call them.
    Validation runs before sampling so a step's metrics hold the validation loss before
    anything is reported."""
    candidates = [
        LossTrackerPlugin() if config.loss_tracking else None,
        ValidationPlugin(validation) if validation is not None else None,
        SamplingPlugin.from_config(config),
    ]
    return [plugin for plugin in candidates if plugin is not None]
