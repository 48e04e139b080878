"""The plugins a training config asks for, added by `train` to those its caller passes.

Each config-driven feature that hooks into the loop (loss tracking, validation, sampling, the
end-of-run export) appears here once, so a CLI run, a notebook run and a test get the same
plugins from the same config.
"""

from __future__ import annotations

from collections.abc import Sequence

from edlib.data.types import ScanResult
from edlib.model.config import TrainConfig
from edlib.train.exporting import ExportAtEnd
from edlib.train.hooks import Plugin
from edlib.train.loss_tracker import LossTrackerPlugin
from edlib.train.sampling import SamplingPlugin
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


def run_plugins(given: Sequence[Plugin], config: TrainConfig, validation: ScanResult | None) -> list[Plugin]:
    """Every plugin of a run: the caller's, then the config's features except those the caller
    replaced (same name), then the end-of-run export, last so it follows the end samples."""
    names = {plugin.name for plugin in given}
    plugins = [*given, *(plugin for plugin in default_plugins(config, validation) if plugin.name not in names)]
    export = ExportAtEnd.from_config(config)
    return plugins if export is None or export.name in names else [*plugins, export]
