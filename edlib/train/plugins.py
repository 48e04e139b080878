"""The plugins a training config asks for, added by `train` to those its caller passes.

Each config-driven feature that hooks into the loop (sampling, ...) appears here once, so
a CLI run, a notebook run and a test get the same plugins from the same config.
"""

from __future__ import annotations

from edlib.sample.plugin import SamplingPlugin
from edlib.train.config import TrainConfig
from edlib.train.loop import Plugin


def default_plugins(config: TrainConfig) -> list[Plugin]:
    """The plugins ``config`` switches on, in the order the loop should call them."""
    candidates = [SamplingPlugin.from_config(config)]
    return [plugin for plugin in candidates if plugin is not None]
