"""The preservation lab: the demo's fine-tune with and without preservation images, measured.

EveryDream's claim is that mixing a fraction of real "ground truth" images into each epoch
lets a model learn a new concept without forgetting what it knew. The lab runs the demo's
fine-tune (`edlib.demo.fine_tune`: the bundled world model, the new shape "zorblat" with 40
images, stars with 10) once without a preservation folder and once per preservation
fraction (`multiply.txt` on 200 ordinary world images), and scores every run with the
world's automatic check on the same prompts and seeds:

- learning: how often prompts with the new word draw the new shape, before -> after;
- forgetting: colour, shape and background accuracy on base-world prompts, before -> after.

Every run trains the same number of epochs, so each sees the new concept equally often;
preservation only adds samples (and steps) to each epoch, as it does for a user.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from edlib.demo.run import RESOLUTION, fine_tune, sample_and_score, scene_prompts
from edlib.world.dataset import write_data_root
from edlib.world.demo_data import DEMO_SPEC, NEW_CONCEPT
from edlib.world.render import SHAPES

PRESERVATION = "preservation"
DEFAULT_FRACTIONS = (0.05, 0.1, 0.25)


@dataclass(frozen=True)
class LabRun:
    """One fine-tune of the lab and what the check saw after it."""

    label: str
    fraction: float | None  # preservation multiplier; None: no preservation folder at all
    preservation_per_epoch: int
    steps: int
    new_concept: dict  # score() of the new-concept prompts after the fine-tune
    base_world: dict  # score() of the base-world prompts after the fine-tune


@dataclass(frozen=True)
class LabResult:
    before_new_concept: dict  # the base model, same prompts and seeds
    before_base_world: dict
    runs: tuple[LabRun, ...]


def _spec(fraction: float | None) -> dict:
    spec = {name: dict(settings) for name, settings in DEMO_SPEC.items() if name != PRESERVATION}
    if fraction is not None:
        spec[PRESERVATION] = {**DEMO_SPEC[PRESERVATION], "multiply": str(fraction)}
    return spec


def _label(fraction: float | None) -> str:
    return "no preservation" if fraction is None else f"preservation x{fraction:g}"


def run_lab(
    out: str | Path,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    epochs: int = 40,
    prompts: int = 32,
    seed: int = 0,
    model: str | Path | None = None,
) -> LabResult:
    """Fine-tune once without preservation and once per fraction, into `out`; score each.

    Every run starts from `model` (default: the bundled world model) with the demo's
    settings; data roots, runs and sample images are written under `out`. A rerun resumes
    finished runs (which returns at once) and samples again."""
    from edlib.model.world import bundled_model_path
    from edlib.sample import load_pipeline

    if any(f <= 0 for f in fractions):
        raise ValueError(f"fractions must be > 0 (no preservation is always run), got {list(fractions)}")
    model = Path(model) if model is not None else bundled_model_path()
    out = Path(out)
    new_prompts = scene_prompts([NEW_CONCEPT], prompts, seed)
    old_prompts = scene_prompts(list(SHAPES), prompts, seed + 1)

    # fp32 on the CPU: the bundled weights are stored in fp16.
    base = load_pipeline(model, dtype=torch.float32)
    before_new = sample_and_score(base, new_prompts, out / "samples" / "before" / NEW_CONCEPT, "base", seed)
    before_old = sample_and_score(base, old_prompts, out / "samples" / "before" / "base-world", "base", seed)
    del base

    runs = []
    for fraction in (None, *fractions):
        name = "none" if fraction is None else f"p{fraction:g}"
        data_root = out / "data" / name
        if not (data_root.exists() and any(data_root.iterdir())):
            write_data_root(data_root, _spec(fraction), seed=seed, size=RESOLUTION)
        run_dir = out / "runs" / name
        summary = fine_tune(model, data_root, run_dir, epochs=epochs, seed=seed)
        tuned = load_pipeline(run_dir, dtype=torch.float32)
        after_new = sample_and_score(tuned, new_prompts, out / "samples" / name / NEW_CONCEPT, name, seed)
        after_old = sample_and_score(tuned, old_prompts, out / "samples" / name / "base-world", name, seed)
        del tuned
        per_epoch = 0 if fraction is None else round(fraction * DEMO_SPEC[PRESERVATION]["count"])
        runs.append(LabRun(_label(fraction), fraction, per_epoch, summary.step, after_new, after_old))
        print(format_table(LabResult(before_new, before_old, tuple(runs))), flush=True)
    result = LabResult(before_new, before_old, tuple(runs))
    (out / "lab.json").write_text(json.dumps(asdict(result), indent=2) + "\n", encoding="utf-8")
    return result


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def _fidelity(score: dict) -> str:
    value = score.get("fidelity")
    return "n/a" if value is None else f"{value:.2f}"


def format_table(result: LabResult) -> str:
    """A markdown table: one row for the base model, one per run."""
    header = (
        f"| run | preservation images / epoch | steps | {NEW_CONCEPT} drawn | base world: colour | shape "
        "| shape fidelity | background |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- |"
    )

    def row(label, per_epoch, steps, new, old) -> str:
        return (
            f"| {label} | {per_epoch} | {steps} | {_pct(new['shape'])} | {_pct(old['colour'])} | "
            f"{_pct(old['shape'])} | {_fidelity(old)} | {_pct(old['background'])} |"
        )

    rows = [row("base model (before)", "-", 0, result.before_new_concept, result.before_base_world)]
    rows += [row(r.label, r.preservation_per_epoch, r.steps, r.new_concept, r.base_world) for r in result.runs]
    return "\n".join([header, *rows])


def write_chart(result: LabResult, path: str | Path) -> Path:
    """A plotly chart (a self-contained HTML file, viewable offline): learning of the new
    concept and accuracy on the base world per run, the base model as dashed lines."""
    try:
        import plotly.graph_objects as go
    except ImportError as error:
        raise ImportError("the lab's chart needs plotly: pip install 'edlib-sd-trainer[notebook]' (or pip install plotly)") from error

    labels = [r.label for r in result.runs]
    series = [
        (f"{NEW_CONCEPT} drawn (learning)", "new_concept", "shape", result.before_new_concept),
        ("base world: colour", "base_world", "colour", result.before_base_world),
        ("base world: shape", "base_world", "shape", result.before_base_world),
        ("base world: background", "base_world", "background", result.before_base_world),
    ]
    figure = go.Figure()
    colours = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"]
    for (name, group, key, before), colour in zip(series, colours):
        values = [100 * (getattr(r, group)[key] or 0) for r in result.runs]
        figure.add_bar(name=name, x=labels, y=values, marker_color=colour)
        figure.add_hline(y=100 * (before[key] or 0), line_dash="dash", line_color=colour, opacity=0.6)
    figure.update_layout(
        barmode="group",
        title=f"Learning '{NEW_CONCEPT}' vs forgetting the base world (dashed: base model before fine-tuning)",
        yaxis_title="automatic check accuracy (%)",
        yaxis_range=[0, 100],
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.write_html(path, include_plotlyjs=True)
    return path
