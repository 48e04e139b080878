"""Prompt files: what to sample, read from plain text, YAML or JSON.

Plain text (``.txt`` or any other suffix): one prompt per line; blank lines and lines starting
with ``#`` are skipped. Every prompt gets the defaults below.

YAML (``.yaml``/``.yml``) or JSON (``.json``): either a list of entries, or a mapping
``{defaults: {...}, prompts: [...]}`` whose defaults apply to every entry. An entry is a prompt
string or a mapping with any of the `PromptSpec` fields::

    defaults: {steps: 25, sampler: Euler a, width: 512, height: 512}
    prompts:
      - a photo of sks dog
      - prompt: a painting of sks dog
        negative_prompt: blurry
        seed: 42
        cfg_scale: 5.5

A seed of -1 means "a new random seed each time"; the seed actually used is written into the
image's PNG parameters so the image can be made again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from edlib.sample.samplers import canonical_sampler_name

RANDOM_SEED = -1
# Width and height must be multiples of 8: SD pipelines refuse anything else.
SIZE_MULTIPLE = 8


@dataclass(frozen=True)
class PromptSpec:
    """One image to sample. ``width``/``height`` of None mean the model's native size."""

    prompt: str
    negative_prompt: str = ""
    seed: int = 555
    steps: int = 30
    # None: the model's usual value (7 for SD and SDXL, FLUX.1-dev's embedded guidance 3.5, ...;
    # `edlib.sample.generate.DEFAULT_CFG`), written into the PNG as used.
    cfg_scale: float | None = None
    width: int | None = None
    height: int | None = None
    sampler: str = "DPM++ 2M Karras"
    # Text encoder layer, counted as A1111 and training's `clip_skip` do (1 = last). None: the
    # pipeline's own (a training run's `clip_skip`, so samples match how the model trains).
    clip_skip: int | None = None

    def __post_init__(self) -> None:
        # Validate once here so specs built in code get the same checks as those from files.
        _check_spec(self)


class PromptFileError(ValueError):
    """A prompt file that cannot be read; the message names the file and the entry."""


FIELD_NAMES = tuple(f.name for f in fields(PromptSpec))


def _check_int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")


def _check_spec(spec: PromptSpec) -> None:
    if not isinstance(spec.prompt, str):
        raise ValueError(f"prompt must be text, got {spec.prompt!r}")
    if not isinstance(spec.negative_prompt, str):
        raise ValueError(f"negative_prompt must be text, got {spec.negative_prompt!r}")
    _check_int("seed", spec.seed, minimum=RANDOM_SEED)
    _check_int("steps", spec.steps, minimum=1)
    if spec.cfg_scale is not None and (
        isinstance(spec.cfg_scale, bool) or not isinstance(spec.cfg_scale, (int, float)) or spec.cfg_scale < 0
    ):
        raise ValueError(f"cfg_scale must be a number >= 0, got {spec.cfg_scale!r}")
    if spec.clip_skip is not None:
        _check_int("clip_skip", spec.clip_skip, minimum=1)
    for name in ("width", "height"):
        value = getattr(spec, name)
        if value is not None:
            _check_int(name, value, minimum=SIZE_MULTIPLE)
            if value % SIZE_MULTIPLE:
                raise ValueError(f"{name} must be a multiple of {SIZE_MULTIPLE}, got {value}")
    # Raises with the list of valid names; the canonical spelling is restored in spec_from_mapping.
    canonical_sampler_name(spec.sampler)


def spec_from_mapping(entry: dict[str, Any], defaults: dict[str, Any] | None = None) -> PromptSpec:
    """A `PromptSpec` from an entry of a prompt file, with ``defaults`` filling what it omits."""
    values = {**(defaults or {}), **entry}
    unknown = sorted(set(values) - set(FIELD_NAMES))
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(FIELD_NAMES)}")
    if "prompt" not in values:
        raise ValueError("missing 'prompt'")
    if values.get("negative_prompt") is None:
        values.pop("negative_prompt", None)  # `negative_prompt:` left empty in YAML
    if "sampler" in values:
        values["sampler"] = canonical_sampler_name(values["sampler"])
    if isinstance(values.get("cfg_scale"), int) and not isinstance(values["cfg_scale"], bool):
        values["cfg_scale"] = float(values["cfg_scale"])
    return PromptSpec(**values)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise PromptFileError(f"{path}: not valid UTF-8 text ({error})") from None


def _parse_structured(path: Path, text: str) -> Any:
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise PromptFileError(f"{path}: cannot parse: {error}") from None


def _specs_from_structured(path: Path, data: Any) -> list[PromptSpec]:
    defaults: dict[str, Any] = {}
    if isinstance(data, dict):
        extra = sorted(set(data) - {"defaults", "prompts"})
        if extra:
            raise PromptFileError(
                f"{path}: unknown top-level key(s) {', '.join(map(repr, extra))}; expected 'defaults' and 'prompts'"
            )
        defaults = data.get("defaults") or {}
        if not isinstance(defaults, dict):
            raise PromptFileError(f"{path}: 'defaults' must be a mapping of settings, got {defaults!r}")
        data = data.get("prompts")
    if not isinstance(data, list):
        raise PromptFileError(f"{path}: expected a list of prompts or {{defaults: ..., prompts: [...]}}")

    specs = []
    for index, entry in enumerate(data):
        if isinstance(entry, str):
            entry = {"prompt": entry}
        try:
            if not isinstance(entry, dict):
                raise ValueError(f"expected a prompt string or a mapping, got {entry!r}")
            specs.append(spec_from_mapping(entry, defaults))
        except ValueError as error:
            raise PromptFileError(f"{path}: prompt entry {index + 1}: {error}") from None
    return specs


def load_prompts(path: str | Path) -> list[PromptSpec]:
    """The prompts of a prompt file (format chosen by suffix, see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise PromptFileError(f"{path}: prompt file not found")
    text = _read_text(path)
    if path.suffix.lower() in (".yaml", ".yml", ".json"):
        specs = _specs_from_structured(path, _parse_structured(path, text))
    else:
        lines = (line.strip() for line in text.splitlines())
        specs = [PromptSpec(prompt=line) for line in lines if line and not line.startswith("#")]
    if not specs:
        raise PromptFileError(f"{path}: no prompts in the file")
    return specs


def prompt_specs(source: str | Path | Sequence[str | dict[str, Any] | PromptSpec]) -> list[PromptSpec]:
    """Prompts from what a training config's ``sample_prompts`` holds: a prompt file, or a
    list of prompt strings, entry mappings or specs."""
    if isinstance(source, (str, Path)):
        return load_prompts(source)
    specs = []
    for index, entry in enumerate(source):
        if isinstance(entry, PromptSpec):
            specs.append(entry)
            continue
        try:
            specs.append(spec_from_mapping({"prompt": entry} if isinstance(entry, str) else dict(entry)))
        except (TypeError, ValueError) as error:
            raise ValueError(f"sample_prompts entry {index + 1}: {error}") from None
    return specs
