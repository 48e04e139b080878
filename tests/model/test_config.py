"""TrainConfig: YAML + overrides, path resolution, clear errors, resume rules, docs."""

from pathlib import Path

import pytest
import yaml

from edlib.model.config import ConfigError, TrainConfig
from edlib.model.config_files import config_reference_markdown, load_config, parse_overrides
from edlib.model.lr import LR_SCHEDULERS
from edlib.model.resume_keys import RESUME_IMMUTABLE_KEYS, diff_configs

DOCS = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def _write(path: Path, values: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path


def test_only_data_root_is_required_and_every_key_is_described():
    config = TrainConfig(data_root="images")
    assert config.method == "full" and config.text_encoder_lr == 0.0 and config.optimizer == "adamw"
    for name, field in TrainConfig.model_fields.items():
        assert field.description and len(field.description) > 15, name
    with pytest.raises(ConfigError, match="data_root: required"):
        TrainConfig.from_dict({})


def test_load_config_resolves_paths_against_the_config_folder(tmp_path, monkeypatch):
    (tmp_path / "project" / "base-model").mkdir(parents=True)
    path = _write(
        tmp_path / "project" / "train.yaml",
        {"data_root": "data", "run_dir": "../runs/one", "model": "base-model", "sample_prompts": "prompts.txt"},
    )
    monkeypatch.chdir(tmp_path)  # the current folder must not matter for paths in the file
    config = load_config(path)
    assert config.data_root == tmp_path / "project" / "data"
    assert config.run_dir == tmp_path / "runs" / "one"
    assert config.model == str(tmp_path / "project" / "base-model")
    assert config.sample_prompts == tmp_path / "project" / "prompts.txt"


def test_model_hub_id_is_kept_and_dotted_paths_resolve(tmp_path):
    path = _write(tmp_path / "a.yaml", {"data_root": "d", "model": "stabilityai/stable-diffusion-2-1"})
    assert load_config(path).model == "stabilityai/stable-diffusion-2-1"
    path = _write(tmp_path / "b.yaml", {"data_root": "d", "model": "./models/mine.safetensors"})
    assert load_config(path).model == str(tmp_path / "models" / "mine.safetensors")


def test_overrides_are_yaml_values_and_paths_resolve_against_cwd(tmp_path, monkeypatch):
    path = _write(tmp_path / "cfg" / "train.yaml", {"data_root": "data", "max_steps": 10})
    monkeypatch.chdir(tmp_path)
    config = load_config(
        path,
        [
            "max_steps=500",
            "unet_lr=2e-6",
            "shuffle_caption=true",
            "ema_decay=null",
            "optimizer_args={weight_decay: 0.01, betas: [0.9, 0.99]}",
            "run_dir=elsewhere",
        ],
    )
    assert config.max_steps == 500 and config.unet_lr == 2e-6 and config.shuffle_caption is True
    assert config.ema_decay is None
    assert config.optimizer_args == {"weight_decay": 0.01, "betas": [0.9, 0.99]}
    assert config.run_dir == tmp_path / "elsewhere"
    assert config.data_root == tmp_path / "cfg" / "data"
    assert parse_overrides(["sample_prompts=[a cat, a dog]"]) == {"sample_prompts": ["a cat", "a dog"]}


def test_bare_yaml_no_means_no(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("data_root: d\nmixed_precision: no\ncache_latents: no\n", encoding="utf-8")
    config = load_config(path, ["mixed_precision=bf16"])
    assert config.mixed_precision == "bf16" and config.cache_latents == "no"
    assert load_config(path).mixed_precision == "no"


def test_errors_name_the_file_the_key_and_the_allowed_values(tmp_path):
    path = _write(
        tmp_path / "bad.yaml",
        {"data_root": "d", "optimizer": "adam", "lr_sheduler": "cosine", "caption_dropout": 1.5, "resolution": 500},
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert "optimizer: unknown value 'adam'; allowed: 'adamw', 'adamw8bit', 'lion', 'prodigy' or 'adafactor'" in message
    assert "lr_sheduler: unknown key; did you mean 'lr_scheduler'?" in message
    assert "caption_dropout:" in message and "1.5" in message
    assert "resolution: must be a multiple of 64" in message


def test_every_lr_scheduler_is_accepted_and_unknown_one_lists_them():
    for name in LR_SCHEDULERS:
        assert TrainConfig(data_root="d", lr_scheduler=name).lr_scheduler == name
    with pytest.raises(ConfigError, match="cosine_with_restarts"):
        TrainConfig.from_dict({"data_root": "d", "lr_scheduler": "cosin"})


def test_methods_are_checked_with_their_keys():
    assert TrainConfig.from_dict({"data_root": "d", "method": "lora", "conv_dim": 8}).conv_dim == 8
    placeholder = {"token": "<ohwx>", "init_word": "person"}
    ti = {"data_root": "d", "method": "textual_inversion", "text_encoder_lr": 5e-3, "placeholder_tokens": [placeholder]}
    assert TrainConfig.from_dict(ti).placeholder_tokens == [placeholder]
    with pytest.raises(ConfigError, match="placeholder_tokens: textual_inversion needs at least one"):
        TrainConfig.from_dict({**ti, "placeholder_tokens": []})
    with pytest.raises(ConfigError, match="text_encoder_lr: textual_inversion trains the new embeddings"):
        TrainConfig.from_dict({**ti, "text_encoder_lr": 0})
    with pytest.raises(ConfigError, match="method: unknown method 'dreambooth'"):
        TrainConfig.from_dict({"data_root": "d", "method": "dreambooth"})


def test_inconsistent_caching_is_refused_naming_both_keys():
    with pytest.raises(ConfigError, match="cache_text_embeddings.*text_encoder_lr"):
        TrainConfig.from_dict({"data_root": "d", "cache_text_embeddings": True, "text_encoder_lr": 1e-6})
    with pytest.raises(ConfigError, match="cache_text_embeddings.*shuffle_caption"):
        TrainConfig.from_dict({"data_root": "d", "cache_text_embeddings": True, "shuffle_caption": True})


def test_bad_files_and_overrides_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(listing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("data_root: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not a readable YAML"):
        load_config(broken)
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["max_steps"])


def test_save_and_load_round_trip(tmp_path):
    config = TrainConfig(
        data_root=tmp_path / "d",
        run_dir=tmp_path / "r",
        optimizer_args={"eps": 1e-7},
        sample_prompts=["a cat"],
        prediction_type="v_prediction",
        mixed_precision="no",
    )
    loaded = load_config(config.save(tmp_path / "run" / "config.yaml"))
    assert loaded == config


def test_diff_configs_separates_immutable_from_mutable_keys():
    old = TrainConfig(data_root="d")
    new = old.model_copy(update={"save_every_n_steps": 100, "max_steps": 900})
    assert diff_configs(old, old) == ({}, {})
    assert diff_configs(old, new) == ({}, {"save_every_n_steps": (None, 100), "max_steps": (None, 900)})
    changed = TrainConfig(data_root="d", model="other/model", seed=1, save_every_n_epochs=2)
    immutable, mutable = diff_configs(old, changed)
    assert immutable == {"model": ("stable-diffusion-v1-5/stable-diffusion-v1-5", "other/model"), "seed": (555, 1)}
    assert mutable == {"save_every_n_epochs": (1, 2)}


def test_immutable_keys_are_real_keys_with_reasons():
    assert set(RESUME_IMMUTABLE_KEYS) <= set(TrainConfig.model_fields)
    assert all(len(reason) > 20 for reason in RESUME_IMMUTABLE_KEYS.values())


def test_docs_config_md_is_generated_and_up_to_date():
    text = config_reference_markdown()
    for name in TrainConfig.model_fields:
        assert f"| `{name}` |" in text
    assert DOCS.read_text(encoding="utf-8") == text, (
        "docs/config.md is stale: regenerate with "
        'python -c \'from edlib.model.config_files import config_reference_markdown as m; open("docs/config.md", "w").write(m())\''
    )


def test_the_example_in_the_docs_is_a_valid_config():
    text = config_reference_markdown()
    example = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    config = TrainConfig.from_dict(yaml.safe_load(example))
    assert config.mixed_precision == "bf16" and config.data_root == Path("data").absolute()


def test_upper_bounds_name_the_key_and_the_limit():
    """The limits the notebook form's number boxes take from the schema hold for any config."""
    too_big = {"resolution": 8192, "batch_size": 2000, "gradient_accumulation_steps": 2048, "epochs": 200_000}
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict({"data_root": "d", **too_big})
    message = str(info.value)
    assert "resolution: Input should be less than or equal to 4096 (got 8192)" in message
    assert "batch_size: Input should be less than or equal to 1024 (got 2000)" in message
    assert "gradient_accumulation_steps: Input should be less than or equal to 1024 (got 2048)" in message
    assert "epochs: Input should be less than or equal to 100000 (got 200000)" in message
    at_limit = TrainConfig(data_root="d", resolution=4096, batch_size=1024, gradient_accumulation_steps=1024, epochs=100_000)
    assert (at_limit.resolution, at_limit.batch_size, at_limit.epochs) == (4096, 1024, 100_000)
