"""The training panel's form: every field's widget, default, limits and help come from the
config schema (`TrainConfig`'s fields), and the few starting values that differ for a
newcomer are the ones named in the form's tables."""

import annotated_types
import ipywidgets as widgets
import pytest

from edlib.model.config import METHODS, OPTIMIZERS, TrainConfig
from edlib.model.lr import LR_SCHEDULERS
from edlib.model.suggest import METHOD_LRS
from edlib.widgets.training_form import (
    NEWCOMER_DEFAULTS,
    NO_LIMIT,
    OPTIONAL_COUNTS,
    TI_WORD,
    TrainingForm,
    config_from_form,
    field_widget,
)

FIELDS = TrainConfig.model_fields


def _bound(key, kind):
    found = [b for b in FIELDS[key].metadata if isinstance(b, kind)]
    return found[0] if found else None


@pytest.fixture
def form(tmp_path):
    return TrainingForm("some/model", tmp_path / "run")


def test_number_boxes_take_the_schema_limits(form):
    f = form.fields
    assert isinstance(f["resolution"], widgets.BoundedIntText)
    assert (f["resolution"].min, f["resolution"].max, f["resolution"].step, f["resolution"].value) == (64, 4096, 64, 512)
    assert (f["batch_size"].min, f["batch_size"].max, f["batch_size"].value) == (1, 1024, 4)
    assert (f["epochs"].min, f["epochs"].max) == (1, 100_000)
    assert (f["gradient_accumulation_steps"].min, f["gradient_accumulation_steps"].max) == (1, 1024)
    assert (f["unet_lr"].min, f["unet_lr"].max) == (0.0, NO_LIMIT) and f["unet_lr"].step is None  # 1e-6 is no step off
    assert f["network_dim"].min == 1 and isinstance(f["seed"], widgets.IntText)  # any seed is a seed
    # 0 is the form's "off" for an optional count, whatever the schema's lowest value.
    assert all(f[key].min == 0 and _bound(key, annotated_types.Ge).ge == 1 for key in OPTIONAL_COUNTS if key != "save_every_n_minutes")
    assert f["save_every_n_minutes"].min == 0 and f["save_every_n_minutes"].value == FIELDS["save_every_n_minutes"].default


def test_the_builder_follows_any_bound_the_schema_sets():
    """Keys outside today's form too: a key added to the form gets its limits without code."""
    cases = {  # key: (min, max) of its widget
        "caption_dropout": (0.0, 1.0),  # ge / le
        "hard_example_boost": (-1.0, 1.0),
        "validation_fraction": (0.0, 1.0),  # lt 1: the config's check rejects 1.0 itself
        "multires_noise_discount": (0.0, 1.0),  # gt 0: the config's check rejects 0 itself
        "lr_power": (0.0, NO_LIMIT),
        "clip_skip": (1, NO_LIMIT),  # ge only
        "keep_tokens": (0, NO_LIMIT),
    }
    for key, limits in cases.items():
        widget = field_widget(key)
        assert (widget.min, widget.max) == limits, key
    assert isinstance(field_widget("shuffle_caption"), widgets.Checkbox)
    assert field_widget("attention").options == ("sdpa", "xformers")
    assert field_widget("prediction_type").options == ("epsilon", "v_prediction")  # the Literal of an optional key


def test_choices_flags_and_defaults_are_the_schemas(form, tmp_path):
    f = form.fields
    assert f["method"].options == METHODS and f["optimizer"].options == OPTIMIZERS
    assert f["lr_scheduler"].options == LR_SCHEDULERS and f["cache_latents"].options == ("no", "memory", "disk")
    assert isinstance(f["gradient_checkpointing"], widgets.Checkbox)
    assert f["sample_prompts"].placeholder == "one prompt per line" and f["sample_prompts"].value == ""
    assert (f["model"].value, f["run_dir"].value) == ("some/model", str(tmp_path / "run"))  # the panel's arguments
    for key, widget in f.items():
        if key in ("model", "run_dir", "sample_prompts", *TI_WORD, *NEWCOMER_DEFAULTS):
            continue
        default = FIELDS[key].default
        assert widget.value == (0 if default is None else default), key
    assert f["mixed_precision"].value == NEWCOMER_DEFAULTS["mixed_precision"]()
    assert (f["token"].value, f["init_word"].value) == ("<ohwx>", "person")
    # Starting as "full" and switching back to it give the same rates: the schema's.
    assert METHOD_LRS["full"] == (FIELDS["unet_lr"].default, FIELDS["text_encoder_lr"].default)
    form.offer_method_lrs("lora")
    form.offer_method_lrs("full")
    assert (f["unet_lr"].value, f["text_encoder_lr"].value) == METHOD_LRS["full"]


def test_help_is_the_schemas_description_in_the_forms_words(form):
    f = form.fields
    assert f["unet_lr"].tooltip == FIELDS["unet_lr"].description
    assert f["max_steps"].tooltip == "Stop after this many optimizer steps even if epochs remain. 0: run all epochs."
    assert f["keep_last_n_checkpoints"].tooltip.endswith("keeping the newest N. 0 keeps all.")
    assert f["sample_prompts"].tooltip.endswith("Empty: no samples.")
    assert "Null" not in f["save_every_n_minutes"].tooltip and "vanished GPU" in f["save_every_n_minutes"].tooltip
    assert "`" not in f["cache_text_embeddings"].tooltip  # plain text in a tooltip
    assert "init_word" in f["token"].tooltip  # the form-only TI fields explain placeholder_tokens
    assert all(widget.tooltip for widget in f.values())

    # In the sections each field has its help beside it, config keys in code style.
    accordion = form.sections({})
    rows = [row for page in accordion.children for row in page.children]
    helps = {row.children[0].children[0].description: row.children[1].value for row in rows}
    assert "0: run all epochs." in helps["max_steps"]
    assert "<code>text_encoder_lr: 0</code>" in helps["cache_text_embeddings"]
    assert set(helps) | {"init_word", "model", "run_dir", "resolution", "batch_size", "epochs"} == set(f)


def test_form_values_make_the_config(form, tmp_path):
    form.set("max_steps", None)
    form.set("sample_prompts", ["a star", "a red circle"])
    config = config_from_form({**form.values(), "data_root": str(tmp_path)})
    assert config.max_steps is None and config.sample_prompts == ["a star", "a red circle"]
    assert config.unet_lr == FIELDS["unet_lr"].default and config.resolution == 512
