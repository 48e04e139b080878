"""Sampling: prompt files, samplers by their usual names, images with their settings in PNG
text chunks, grids, and sampling during and after training."""

from edlib.sample.from_model import default_out_dir, model_label, run_checkpoints, sample_model
from edlib.sample.generate import generate_image, resolve_spec, sample_grid, sample_images
from edlib.sample.grid import GridLayout, make_grid
from edlib.sample.hypernetwork import apply_hypernetwork, read_hypernetwork
from edlib.sample.pipeline import load_pipeline, pipeline_from_checkpoint, pipeline_from_modules
from edlib.sample.pngmeta import format_parameters, parse_parameters, read_parameters, save_png
from edlib.sample.prompts import PromptFileError, PromptSpec, load_prompts, prompt_specs
from edlib.sample.samplers import SAMPLER_NAMES, get_sampler, make_scheduler

__all__ = [
    "SAMPLER_NAMES",
    "GridLayout",
    "PromptFileError",
    "PromptSpec",
    "apply_hypernetwork",
    "default_out_dir",
    "format_parameters",
    "generate_image",
    "get_sampler",
    "load_pipeline",
    "load_prompts",
    "make_grid",
    "make_scheduler",
    "model_label",
    "parse_parameters",
    "pipeline_from_checkpoint",
    "pipeline_from_modules",
    "prompt_specs",
    "read_hypernetwork",
    "read_parameters",
    "resolve_spec",
    "run_checkpoints",
    "sample_grid",
    "sample_images",
    "sample_model",
    "save_png",
]
