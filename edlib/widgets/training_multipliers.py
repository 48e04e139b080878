"""The training panel's multiplier table, editable while a run trains: the data root's
`DatasetPanel`, and a note that says which epoch of the run first uses a Save (the trainer
re-reads multiply.txt at each epoch boundary, so the epoch in progress keeps its plan) and
confirms it when that epoch begins."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import ipywidgets as widgets

from edlib.widgets.common import ok_text
from edlib.widgets.dataset_panel import DatasetPanel


class MultipliersView:
    """`table` (the `DatasetPanel`), `note` and `widget`; `epoch` is the epoch the run is
    in and `epoch_samples` the samples each epoch was planned with, from its events."""

    def __init__(self, data_root: Path, *, on_saved: Callable[[], None]):
        self.epoch: int | None = None
        self.epoch_samples: dict[int, int] = {}
        self._changed_for_epoch: int | None = None  # the first epoch that trains with a mid-run Save
        self.table = DatasetPanel(data_root, thumbnails=3, on_change=on_saved)
        self.note = widgets.HTML()
        self.note.add_class("edlib-multipliers-note")
        self.widget = widgets.VBox(
            [
                widgets.HTML(
                    "<b>Multipliers</b> <span style='color:#666'>(saved values are used from the next epoch on; "
                    "the epoch in progress keeps its plan)</span>"
                ),
                self.table.widget,
                self.note,
            ]
        )

    def reset(self) -> None:
        """Forget the last run's epochs (a new run starts)."""
        self.epoch, self.epoch_samples, self._changed_for_epoch = None, {}, None

    def saved(self, *, running: bool) -> None:
        """After a Save or Undo: say which epoch first uses the files as written."""
        if running and self.epoch is not None:
            self._changed_for_epoch = self.epoch + 1
            self.note.value = (
                f"multiply.txt written while epoch {self.epoch} trains: the run uses the new multipliers from "
                f"epoch {self.epoch + 1} on (if it gets there)"
            )
        else:
            self.note.value = "multiply.txt written: the next Start or Resume uses it"

    def epoch_began(self, epoch: int, samples: int) -> None:
        """When the epoch a mid-run Save was for begins, show its size next to the last one."""
        self.epoch = epoch
        self.epoch_samples[epoch] = samples
        if self._changed_for_epoch is None or epoch < self._changed_for_epoch:
            return
        self._changed_for_epoch = None
        before = self.epoch_samples.get(epoch - 1)
        was = f" (epoch {epoch - 1} had {before})" if before is not None else ""
        self.note.value = ok_text(f"epoch {epoch} trains with the new multipliers: {samples} samples{was}")
