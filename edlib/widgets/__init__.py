"""ipywidgets panels for the guided notebooks. No training logic lives here: the panels
gather input, call `edlib` and lay out what it returns.

    from edlib.widgets import DatasetPanel
    DatasetPanel("my_data_root")      # last expression of a cell: shows the panel
"""

from edlib.widgets.common import demo_data_root, write_multipliers
from edlib.widgets.dataset_panel import (
    BalancePanel,
    DatasetPanel,
    share_figure,
    weight_nodes,
)
from edlib.widgets.gather_panel import GatherPanel, demo_gather_pool
from edlib.widgets.preservation_panel import (
    PreservationPanel,
    coverage_figure,
    guess_preservation_folder,
    mix_figure,
)
from edlib.widgets.sampling_panel import SamplingPanel
from edlib.widgets.training_panel import TrainingPanel, config_from_form

__all__ = [
    "BalancePanel",
    "DatasetPanel",
    "GatherPanel",
    "PreservationPanel",
    "SamplingPanel",
    "TrainingPanel",
    "config_from_form",
    "coverage_figure",
    "demo_data_root",
    "demo_gather_pool",
    "guess_preservation_folder",
    "mix_figure",
    "share_figure",
    "weight_nodes",
    "write_multipliers",
]
