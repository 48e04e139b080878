"""Notebook panel for after training: a prompts x checkpoints grid to compare epochs, and
the export of the chosen checkpoint for AUTOMATIC1111, ComfyUI or diffusers.

The grid is `edlib.sample.sample_grid` (every cell of a column shares seed and settings, so
cells differ only by the checkpoint); the export is `edlib.export.export_run`. The panel
only gathers the settings and shows what those calls return.
"""

from __future__ import annotations

import html
from pathlib import Path

import ipywidgets as widgets
import torch
from PIL import Image

from edlib.data.scan import scan
from edlib.export.run import export_run
from edlib.model.config import EXPORT_FORMATS, TrainConfig
from edlib.sample import SAMPLER_NAMES, PromptSpec, run_checkpoints, sample_grid
from edlib.train.run_dir import RunDir
from edlib.widgets.common import error_text, ok_text, widget_bundle

BASE_LABEL = "base model"
GRID_FOLDER = Path("samples") / "compare"  # inside the run folder

# Where each export goes in the tools people load it with.
USAGE = {
    "diffusers": "diffusers: StableDiffusionPipeline.from_pretrained(folder); also the input of most training tools.",
    "single-file": "AUTOMATIC1111: copy into models/Stable-diffusion/. ComfyUI: models/checkpoints/. "
    "diffusers: StableDiffusionPipeline.from_single_file(file).",
    "kohya-lora": "AUTOMATIC1111: copy into models/Lora/ and write <lora:NAME:1> in the prompt. "
    "ComfyUI: models/loras/. diffusers: pipeline.load_lora_weights(file).",
    "a1111-embedding": "AUTOMATIC1111: copy into embeddings/ and use the file name in the prompt. "
    "ComfyUI: models/embeddings/. diffusers: pipeline.load_textual_inversion(file).",
    "a1111-hypernetwork": "AUTOMATIC1111: copy into models/hypernetworks/ and write <hypernet:NAME:1> in the prompt. "
    "ComfyUI: models/hypernetworks/ (Load Hypernetwork node). edlib: edlib sample MODEL --hypernetwork file.pt.",
}


def default_prompts(data_root: str | Path, count: int = 3) -> list[str]:
    """The caption of the first image of each of the first `count` folders of a data root:
    prompts from the user's own captions show at a glance whether training took."""
    result = scan(data_root)
    prompts: list[str] = []
    for folder in result.folders:
        if len(prompts) == count:
            break
        first = next(item for item in result.items if item.folder == folder.path)
        prompts.append(first.caption.text())
    return prompts


def run_config(run_dir: Path) -> TrainConfig:
    """The configuration a run was started with (its `config.yaml`). Relative paths in it
    are read as training read them, from the working folder, as `load_trained` does."""
    values = RunDir(run_dir, writer=False).read_config()
    if values is None:
        raise FileNotFoundError(f"{run_dir}: not a run folder (no config.yaml); train a run first")
    return TrainConfig.from_dict(values)


def grid_display_width(path: Path, largest: int = 960) -> int:
    """How wide to show a grid: its own width (a toy model's 64 px samples are enlarged in the
    grid itself, `edlib.sample.grid.MIN_LABELLED_CELL`), reduced to `largest` (512 px cells,
    many prompts) so it fits a laptop screen."""
    with Image.open(path) as image:
        return min(image.width, largest)


def next_grid_path(folder: Path) -> Path:
    """`folder/grid-NNN.png` with the first unused number: earlier grids are kept."""
    number = 1
    while (folder / f"grid-{number:03d}.png").exists():
        number += 1
    return folder / f"grid-{number:03d}.png"


class SamplingPanel:
    """Compare a run's checkpoints (and its base model) on the same prompts and seed, then
    export the one you like.

    Rows of the grid: the selected checkpoints, oldest first (the base model on top when
    selected). Columns: the prompts, one per line. Grids go to `RUN/samples/compare/`.
    """

    def __init__(
        self,
        run_dir: str | Path,
        prompts: list[str] | tuple[str, ...] = (),
        *,
        seed: int = 555,
        steps: int = 20,
        cfg_scale: float = 7.0,
        sampler: str = "DPM++ 2M Karras",
        include_base: bool = True,
    ):
        self.run_dir = Path(run_dir)
        self.config = run_config(self.run_dir)
        self.grid_path: Path | None = None
        self.exported: list[Path] = []
        self.device = "cuda" if torch.cuda.is_available() else None
        # fp16 halves memory and time on a GPU; the CPU computes in fp32.
        self.dtype = torch.float16 if self.device else torch.float32

        prompts = list(prompts) or default_prompts(self.config.data_root)
        self.prompts = widgets.Textarea(
            value="\n".join(prompts),
            description="prompts",
            placeholder="one prompt per line",
            layout=widgets.Layout(width="95%", height="90px"),
        )
        self.negative = widgets.Text(description="negative", layout=widgets.Layout(width="95%"))
        self.models = widgets.SelectMultiple(description="rows", layout=widgets.Layout(width="320px", height="110px"))
        self.refresh_button = widgets.Button(description="Refresh checkpoints", icon="refresh", layout={"width": "190px"})
        self.sampler = widgets.Dropdown(options=list(SAMPLER_NAMES), value=sampler, description="sampler")
        self.seed = widgets.IntText(value=seed, description="seed")
        self.steps = widgets.BoundedIntText(value=steps, min=1, max=150, description="steps")
        self.cfg_scale = widgets.BoundedFloatText(value=cfg_scale, min=0.0, max=30.0, step=0.5, description="CFG")
        self.generate_button = widgets.Button(description="Generate grid", button_style="primary", icon="image")
        # Hidden until there is a grid (an empty image shows as a broken-image icon).
        self.grid = widgets.Image(format="png", layout=widgets.Layout(max_width="100%", display="none"))
        self.grid_status = widgets.HTML()

        self.export_checkpoint = widgets.Dropdown(description="checkpoint")
        self.export_format = widgets.Dropdown(options=list(EXPORT_FORMATS[self.config.method]), description="format")
        # Labelled by a Label beside it: a ToggleButtons' own description wraps above its buttons.
        self.export_dtype = widgets.ToggleButtons(options=["fp16", "fp32"], value="fp16", layout={"width": "auto"})
        self.export_dtype.style.button_width = "60px"
        self.export_button = widgets.Button(description="Export", button_style="success", icon="download")
        self.export_status = widgets.HTML()

        self.widget = widgets.VBox(
            [
                widgets.HTML("<b>Compare checkpoints</b>"),
                self.prompts,
                self.negative,
                widgets.HBox(
                    [
                        self.models,
                        widgets.VBox([self.sampler, self.seed, self.steps, self.cfg_scale]),
                    ]
                ),
                widgets.HBox([self.generate_button, self.refresh_button]),
                self.grid_status,
                self.grid,
                widgets.HTML("<b>Export</b>"),
                widgets.HBox([self.export_checkpoint, self.export_format]),
                widgets.HBox(
                    [widgets.Label("weights", layout={"width": "80px"}), self.export_dtype, self.export_button],
                    layout={"align_items": "center", "grid_gap": "8px"},  # Layout has no "gap"; grid-gap is its alias
                ),
                self.export_status,
            ]
        )
        for widget, name in (
            (self.generate_button, "generate"),
            (self.grid_status, "grid-status"),
            (self.grid, "grid"),
            (self.export_button, "export"),
            (self.export_status, "export-status"),
        ):
            widget.add_class(f"edlib-{name}")  # hooks for the browser test
        self.include_base = include_base
        self.refresh()
        self.refresh_button.on_click(self.refresh)
        self.generate_button.on_click(self._on_generate)
        self.export_button.on_click(self._on_export)

    def _repr_mimebundle_(self, **kwargs):
        return widget_bundle(self.widget, **kwargs)

    def refresh(self, _button=None) -> None:
        """Re-list the run's checkpoints (a running training adds new ones); all of them
        (and the base model) are selected as rows, the newest is chosen for export."""
        self.grid_status.value = ""
        try:
            checkpoints = run_checkpoints(self.run_dir)
        except ValueError as error:  # no complete checkpoint yet
            checkpoints = []
            self.grid_status.value = error_text(error)
        rows = ([(BASE_LABEL, self.config.model)] if self.include_base else []) + [
            (label, str(path)) for label, path in checkpoints
        ]
        self.models.options = rows
        self.models.value = tuple(value for _, value in rows)
        self.export_checkpoint.options = [(label, str(path)) for label, path in checkpoints]
        if checkpoints:
            self.export_checkpoint.value = str(checkpoints[-1][1])

    def specs(self) -> list[PromptSpec]:
        """One prompt spec per non-empty line, with the panel's settings."""
        lines = [line.strip() for line in self.prompts.value.splitlines() if line.strip()]
        if not lines:
            raise ValueError("no prompts: write at least one prompt, one per line")
        return [
            PromptSpec(
                line,
                negative_prompt=self.negative.value,
                seed=self.seed.value,
                steps=self.steps.value,
                cfg_scale=self.cfg_scale.value,
                sampler=self.sampler.value,
            )
            for line in lines
        ]

    def rows(self) -> list[tuple[str, str]]:
        """(label, model) of the selected rows, in the order they are listed."""
        labels = {value: label for label, value in self.models.options}
        chosen = [(labels[value], value) for value in labels if value in self.models.value]
        if not chosen:
            raise ValueError("no rows: select at least one checkpoint (or the base model)")
        return chosen

    def generate(self) -> Path:
        """Sample the grid of selected rows x prompts, show it and return its path."""
        specs, rows = self.specs(), self.rows()
        out = next_grid_path(self.run_dir / GRID_FOLDER)
        self.grid_path = sample_grid(rows, specs, out, device=self.device, dtype=self.dtype)
        self.grid.value = self.grid_path.read_bytes()
        self.grid.layout.width = f"{grid_display_width(self.grid_path)}px"
        self.grid.layout.display = None
        self.grid_status.value = ok_text(f"{len(rows)} rows x {len(specs)} prompts: {self.grid_path}")
        return self.grid_path

    def export(self) -> list[Path]:
        """Export the chosen checkpoint in the chosen format; returns the files written."""
        if not self.export_checkpoint.value:
            raise ValueError(f"{self.run_dir}: no complete checkpoint to export yet")
        fmt = self.export_format.value
        self.exported = export_run(self.export_checkpoint.value, fmt, dtype=self.export_dtype.value)
        files = "".join(f"<li><code>{html.escape(str(path))}</code></li>" for path in self.exported)
        self.export_status.value = (
            f"{ok_text('Written:')}<ul style='margin:2px 0 2px 16px;padding:0'>{files}</ul>"
            f"<div>{html.escape(USAGE[fmt])}</div>"
        )
        return self.exported

    def _on_generate(self, _button) -> None:
        self.grid_status.value = "Sampling... (one model is loaded at a time)"
        try:
            self.generate()
        except torch.cuda.OutOfMemoryError:
            self.grid_status.value = error_text(
                RuntimeError("out of GPU memory: select fewer rows, fewer prompts or a smaller size")
            )
        except (ValueError, OSError, KeyError) as error:
            self.grid_status.value = error_text(error)

    def _on_export(self, _button) -> None:
        self.export_status.value = "Exporting..."
        try:
            self.export()
        except (ValueError, OSError, KeyError) as error:
            self.export_status.value = error_text(error)
