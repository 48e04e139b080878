"""Generation settings in PNG files, in AUTOMATIC1111's "parameters" text chunk.

The format is the one A1111 writes and A1111, ComfyUI, InvokeAI and image browsers read::

    <prompt, may span lines>
    Negative prompt: <negative prompt, may span lines>
    Steps: 30, Sampler: Euler a, CFG scale: 7, Seed: 123, Size: 512x512, Model: name

Like A1111: the negative prompt line is left out when there is none; a value in the last line
that contains ``,``, ``:`` or a newline is written as a JSON string; reading takes the last line
as settings only if it holds at least three ``key: value`` pairs, and every line is stripped of
surrounding whitespace (so a prompt's leading/trailing spaces per line do not survive).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

PARAMETERS_KEY = "parameters"
_NEGATIVE = "Negative prompt:"

# key: value pairs of the settings line; a value is a JSON string or runs to the next comma.
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^(\d+)x(\d+)$")

# Settings line keys read back into the names `PromptSpec` uses, with their types.
_KNOWN = {
    "Steps": ("steps", int),
    "Sampler": ("sampler", str),
    "CFG scale": ("cfg_scale", float),
    "Seed": ("seed", int),
    "Clip skip": ("clip_skip", int),
}


def _quote(value: Any) -> str:
    text = str(value)
    if any(c in text for c in ',:\n"'):
        return json.dumps(text, ensure_ascii=False)
    return text


def _number(value: float) -> str:
    """7.0 -> "7", 7.5 -> "7.5": how A1111 shows CFG scales."""
    return f"{value:g}"


def format_parameters(
    *,
    prompt: str,
    negative_prompt: str = "",
    steps: int,
    sampler: str,
    cfg_scale: float,
    seed: int,
    width: int,
    height: int,
    model: str = "",
    extra: dict[str, Any] | None = None,
) -> str:
    """The "parameters" text for one image (``extra`` settings are appended to the last line)."""
    settings: dict[str, Any] = {
        "Steps": steps,
        "Sampler": sampler,
        "CFG scale": _number(cfg_scale),
        "Seed": seed,
        "Size": f"{width}x{height}",
    }
    if model:
        settings["Model"] = model
    settings.update(extra or {})
    lines = [prompt]
    if negative_prompt:
        lines.append(f"{_NEGATIVE} {negative_prompt}")
    lines.append(", ".join(f"{key}: {_quote(value)}" for key, value in settings.items()))
    return "\n".join(lines)


def parse_parameters(text: str) -> dict[str, Any]:
    """Read a "parameters" text back.

    Returns ``prompt`` and ``negative_prompt``; ``steps``, ``sampler``, ``cfg_scale``, ``seed``,
    ``width``, ``height``, ``clip_skip`` and ``model`` (typed) when present; and any other setting under the
    name it has in the text (e.g. ``"Model hash"``), as a string. FLUX's "Distilled CFG Scale" is its
    ``cfg_scale`` (the guidance value it was sampled with).
    """
    *lines, last = text.strip().split("\n")
    if len(_PARAM.findall(last)) < 3:
        lines.append(last)  # not a settings line: it is part of the prompt
        last = ""

    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    for line in lines:
        line = line.strip()
        if not negative_lines and line.startswith(_NEGATIVE):
            negative_lines.append(line[len(_NEGATIVE) :].strip())
        elif negative_lines:
            negative_lines.append(line)
        else:
            prompt_lines.append(line)

    result: dict[str, Any] = {"prompt": "\n".join(prompt_lines), "negative_prompt": "\n".join(negative_lines)}
    for key, value in _PARAM.findall(last):
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = json.loads(value)
        size = _SIZE.match(value)
        if key == "Size" and size:
            result["width"], result["height"] = int(size.group(1)), int(size.group(2))
        elif key == "Model":
            result["model"] = value
        elif key in _KNOWN:
            name, kind = _KNOWN[key]
            result[name] = kind(value)
        else:
            result[key] = value
    if "Distilled CFG Scale" in result:  # FLUX.1-dev (Forge's way): the guidance it sampled with
        result["cfg_scale"] = float(result.pop("Distilled CFG Scale"))
    return result


def save_png(image: Image.Image, path: str | Path, parameters: str) -> Path:
    """Save ``image`` as PNG with ``parameters`` in its text chunk (iTXt when not Latin-1)."""
    info = PngInfo()
    info.add_text(PARAMETERS_KEY, parameters)
    path = Path(path)
    image.save(path, format="PNG", pnginfo=info)
    return path


def read_parameters(path: str | Path) -> str:
    """The "parameters" text of a PNG file; a clear error when it has none."""
    with Image.open(path) as image:
        text = getattr(image, "text", {}).get(PARAMETERS_KEY)
    if text is None:
        raise ValueError(f"{path}: no '{PARAMETERS_KEY}' text chunk in this image")
    return text
