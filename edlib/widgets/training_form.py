"""The training panel's config form: one widget per config key, built from the key's field
in `TrainConfig` (its type picks the widget, its default the starting value, its bounds
the limits, its description the help), laid out as the most used keys on top and the rest
in sections.

Where the form starts from something other than the config's default, the reason is in
`NEWCOMER_DEFAULTS` and `MODEL_DEFAULTS` below: resolution and learning rates follow the
model (`edlib.model.suggest`: its native size, rates for its method and size), so the
defaults are safe for a first run of whatever model the form names. The form's own conventions (0 = off in a number
box, one prompt per line, one textual inversion word) become config values in
`config_from_form`, which is plain library code a script can call too.
"""

from __future__ import annotations

import html
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import annotated_types
import ipywidgets as widgets

from edlib.environment import has_native_bf16
from edlib.model.config import METHODS, TrainConfig
from edlib.model.suggest import suggested_learning_rates, suggested_resolution

STYLE = {"description_width": "200px"}  # the longest key, gradient_accumulation_steps, in full
WIDE = {"width": "520px"}
FIELD_COLUMN = {"width": "420px"}  # a section's fields, the help to their right
NO_LIMIT = 2**31 - 1  # a number box's limit on a side where the schema sets none

# Form fields where 0 means "off" (the config's null): a number box cannot hold "nothing".
OPTIONAL_COUNTS = (
    "max_steps",
    "save_every_n_steps",
    "save_every_n_epochs",
    "save_every_n_minutes",
    "keep_last_n_checkpoints",
    "sample_every_n_steps",
    "sample_every_n_epochs",
)
# How the form writes the config's null, for the help text ("Null: off" reads "0: off").
FORM_NULL = {**dict.fromkeys(OPTIONAL_COUNTS, "0"), "sample_prompts": "Empty"}
# `method` is a plain string checked against METHODS (not a Literal), so its choices are named here.
CHOICES = {"method": METHODS}
# Text fields that take several lines, and what their empty box says.
TEXTAREAS = {"sample_prompts": "one prompt per line"}
# Form-only fields: textual inversion's one word, which `config_from_form` turns into
# `placeholder_tokens`; their defaults and help are those of that key's description.
TI_WORD = {"token": "<ohwx>", "init_word": "person"}


def _default_precision() -> str:
    """bf16 on a GPU that computes it natively (faster, safe), fp16 on older cards (a T4),
    fp32 on the CPU."""
    import torch

    if not torch.cuda.is_available():
        return "no"
    # bf16 only where the GPU computes it natively (cc 8.0+): a T4 reports bf16 support
    # (`torch.cuda.is_bf16_supported()`) but emulates it slowly; fp16 there.
    return "bf16" if has_native_bf16() else "fp16"


# Where the form starts from something other than the config's default, and why. The config
# defaults suit any machine (a CLI run on a CPU included); a notebook user is on a GPU.
NEWCOMER_DEFAULTS: dict[str, Callable[[], Any]] = {
    # The config's "no" (fp32) runs everywhere; on a card with bf16 it only runs slower,
    # so the form offers bf16 where the card has it.
    "mixed_precision": _default_precision,
}
# Keys whose starting value follows the model and method (`edlib.model.suggest`): the config's
# 512 px and 1e-6 fit SD1.5's full fine-tune only. Offered again when the model or the method
# changes (`METHOD_LRS` holds the rates for Stable Diffusion-sized models).
MODEL_DEFAULTS = ("resolution", "unet_lr", "text_encoder_lr")

# The form's layout: keys on top, then the sections of the accordion. A tuple is one row
# of keys that share the first key's help.
TOP = ("model", "run_dir")
GRID = (("resolution", "batch_size"), ("epochs", "unet_lr"))
SECTIONS: dict[str, tuple[str | tuple[str, ...], ...]] = {
    "Method": (
        "method",
        "network_dim",
        "network_alpha",
        ("token", "init_word"),
        "hypernetwork_activation_func",
        "hypernetwork_strength",
    ),
    "Learning rate and optimizer": ("unet_lr", "text_encoder_lr", "lr_scheduler", "lr_warmup_steps", "optimizer"),
    "Steps": ("gradient_accumulation_steps", "max_steps", "seed"),
    "Memory and speed": ("mixed_precision", "gradient_checkpointing", "cache_latents", "cache_text_embeddings"),
    "Saving and samples": (
        "save_every_n_epochs",
        "save_every_n_steps",
        "save_every_n_minutes",
        "keep_last_n_checkpoints",
        "sample_prompts",
        "sample_every_n_epochs",
        "sample_every_n_steps",
    ),
}


def config_from_form(values: dict[str, Any]) -> TrainConfig:
    """A `TrainConfig` from the panel's form values (config keys, as the widgets hold them).

    The form's conventions become config values: 0 in `OPTIONAL_COUNTS` is null (off),
    `sample_prompts` is text with one prompt per line, and textual inversion's `token` /
    `init_word` become `placeholder_tokens`. Raises `ConfigError` naming each bad key."""
    config = dict(values)
    for key in OPTIONAL_COUNTS:
        if key in config and not config[key]:
            config[key] = None
    prompts = [line.strip() for line in str(config.pop("sample_prompts", "") or "").splitlines() if line.strip()]
    config["sample_prompts"] = prompts or None
    token, init_word = config.pop("token", ""), config.pop("init_word", "")
    if config.get("method") == "textual_inversion":
        config["placeholder_tokens"] = [{"token": token.strip(), "init_word": init_word.strip()}] if token.strip() else []
    return TrainConfig.from_dict(config)


def field_help(key: str) -> str:
    """The help of a form field: its config key's description, with null written the
    form's way (`FORM_NULL`). The form-only textual inversion fields take `placeholder_tokens`'."""
    description = TrainConfig.model_fields["placeholder_tokens" if key in TI_WORD else key].description or ""
    if key in FORM_NULL:
        description = re.sub(r"\bNull\b", FORM_NULL[key], description)
    return description


def field_bounds(key: str) -> tuple[float | None, float | None]:
    """The lowest and highest value the schema allows for `key` (None where it sets no
    limit). A strict float bound (`gt`/`lt`) is given as is: the config's check rejects the
    bound itself with a message naming the key."""
    low = high = None
    unit = 1 if _value_type(key) is int else 0  # an int above 0 is at least 1
    for bound in TrainConfig.model_fields[key].metadata:
        if isinstance(bound, annotated_types.Ge):
            low = bound.ge
        elif isinstance(bound, annotated_types.Gt):
            low = bound.gt + unit
        elif isinstance(bound, annotated_types.Le):
            high = bound.le
        elif isinstance(bound, annotated_types.Lt):
            high = bound.lt - unit
    if key in OPTIONAL_COUNTS:
        low = 0  # the form's "off"
    return low, high


def field_default(key: str) -> Any:
    """The value a form field starts from: `NEWCOMER_DEFAULTS`, else the schema default,
    with null as 0 in `OPTIONAL_COUNTS` (a text box shows it empty, a dropdown unselected)."""
    if key in TI_WORD:
        return TI_WORD[key]
    if key in NEWCOMER_DEFAULTS:
        return NEWCOMER_DEFAULTS[key]()
    default = TrainConfig.model_fields[key].default
    if default is None and key in OPTIONAL_COUNTS:
        return 0
    return str(default) if isinstance(default, Path) else default


def _value_type(key: str) -> Any:
    """The field's type without its `None` (the form writes null its own way)."""
    annotation = TrainConfig.model_fields[key].annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        return rest[0] if len(rest) == 1 else str
    return annotation


def field_widget(key: str, value: Any = None) -> widgets.ValueWidget:
    """The widget for form field `key`, from its config field: a dropdown for a choice, a
    checkbox for a flag, a number box within the schema's bounds, a text box otherwise.
    `value` (when not None) replaces the default; the help is the widget's tooltip."""
    value = field_default(key) if value is None else value
    common = {"value": value, "description": key, "style": STYLE, "tooltip": _plain(field_help(key))}
    kind = _value_type(key) if key not in TI_WORD else str
    if key in CHOICES or typing.get_origin(kind) is typing.Literal:
        return widgets.Dropdown(options=CHOICES.get(key) or typing.get_args(kind), **common)
    if kind is bool:  # wide enough for the key, which a checkbox shows after its box
        return widgets.Checkbox(layout=FIELD_COLUMN, **common)
    if kind in (int, float):
        low, high = field_bounds(key)
        if low is None and high is None:
            return (widgets.IntText if kind is int else widgets.FloatText)(**common)
        bounded = widgets.BoundedIntText if kind is int else widgets.BoundedFloatText
        low, high = -NO_LIMIT if low is None else low, NO_LIMIT if high is None else high
        extra = TrainConfig.model_fields[key].json_schema_extra or {}
        return bounded(min=low, max=high, step=extra.get("multipleOf", 1 if kind is int else None), **common)
    common["value"] = "" if value is None else value
    if key in TEXTAREAS:
        return widgets.Textarea(placeholder=TEXTAREAS[key], layout=WIDE, **common)
    return widgets.Text(layout=WIDE if key in TOP else {}, **common)


def _plain(description: str) -> str:
    return description.replace("`", "")


def help_html(key: str) -> str:
    """The help of `key` in grey, config keys and values in code style."""
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(field_help(key)))
    return f"<div style='color:#666;font-size:0.9em;line-height:1.35;padding-top:5px'>{text}</div>"


class TrainingForm:
    """The form: `fields` (one widget per key), `top` (the keys a newcomer sets) and
    `sections(extras)` (the rest, as accordion pages). `values` overrides starting values."""

    def __init__(self, model: str | Path, run_dir: str | Path, values: dict[str, Any] | None = None):
        keys = [*TOP, *(k for column in GRID for k in column)]
        keys += [k for rows in SECTIONS.values() for row in rows for k in (row if isinstance(row, tuple) else (row,))]
        given = {"model": str(model), "run_dir": str(run_dir)}
        self.fields: dict[str, widgets.ValueWidget] = {k: field_widget(k, given.get(k)) for k in dict.fromkeys(keys)}
        self.suggested: dict[str, Any] = {}  # the MODEL_DEFAULTS values last offered
        self.offer_model_defaults()
        for key, value in (values or {}).items():
            self.set(key, value)
        for key, widget in self.fields.items():
            widget.add_class(f"edlib-field-{key}")  # hooks for the browser test
        columns = [widgets.VBox([self.fields[k] for k in column]) for column in GRID]
        self.top = [*(self.fields[k] for k in TOP), widgets.HBox(columns)]

    def set(self, key: str, value: Any) -> None:
        """Set a form field (a config key; `token`/`init_word` for textual inversion)."""
        if key not in self.fields:
            raise KeyError(f"the training form has no field {key!r}; fields: {', '.join(self.fields)}")
        if key == "sample_prompts" and isinstance(value, list | tuple):
            value = "\n".join(value)
        self.fields[key].value = 0 if value is None and key in OPTIONAL_COUNTS else value

    def values(self) -> dict[str, Any]:
        """The form as config keys, before `config_from_form`'s conversions."""
        return {key: widget.value for key, widget in self.fields.items()}

    def model_defaults(self) -> dict[str, Any]:
        """The `MODEL_DEFAULTS` values for the model and method in the form now."""
        model, method = self.fields["model"].value.strip(), self.fields["method"].value
        values = (suggested_resolution(model), *suggested_learning_rates(method, model))
        return dict(zip(MODEL_DEFAULTS, values, strict=True))

    def offer_model_defaults(self) -> None:
        """After the model changed: its resolution and rates, in each field that still holds
        the value offered before (a value the user typed is kept)."""
        new = self.model_defaults()
        for key, value in new.items():
            if key not in self.suggested or self.fields[key].value == self.suggested[key]:
                self.fields[key].value = value
        self.suggested = new

    def offer_method_lrs(self, method: str) -> None:
        """Each method has its own sensible learning rates (for this model's size); switching
        offers them."""
        rates = suggested_learning_rates(method, self.fields["model"].value.strip())
        self.fields["unet_lr"].value, self.fields["text_encoder_lr"].value = rates
        self.suggested.update(zip(("unet_lr", "text_encoder_lr"), rates, strict=True))

    def sections(self, extras: dict[str, list[widgets.Widget]]) -> widgets.Accordion:
        """The accordion of `SECTIONS`, closed, each field with its help beside it;
        `extras` adds widgets at the end of a section (e.g. the LR curve)."""
        pages = []
        for title, rows in SECTIONS.items():
            boxes = []
            for row in rows:
                keys = row if isinstance(row, tuple) else (row,)
                fields = widgets.VBox([self.fields[k] for k in keys], layout={"min_width": FIELD_COLUMN["width"]})
                boxes.append(widgets.HBox([fields, widgets.HTML(help_html(keys[0]), layout={"width": "460px"})]))
            pages.append(widgets.VBox(boxes + extras.get(title, [])))
        accordion = widgets.Accordion(children=pages)
        for i, title in enumerate(SECTIONS):
            accordion.set_title(i, title)
        accordion.selected_index = None
        return accordion
