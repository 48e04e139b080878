"""The command line as a new user meets it (issue 19): one default seed for preview and
training, warnings from the scan wherever a command scans, one resolution rule, help that
shows defaults, hints for other trainers' config keys, and plain-language output."""

from __future__ import annotations

import json
import re

from edlib.data.preview import preview
from edlib.data.scan import scan
from edlib.data.schedule import DEFAULT_SEED
from edlib.model.config import ConfigError, TrainConfig
from tests.data.make_images import make_tree, write_text
from tests.test_cli import edlib, root  # noqa: F401 - the data-root fixture


def test_preview_and_training_share_one_default_seed(root):  # noqa: F811
    assert TrainConfig(data_root=root).seed == DEFAULT_SEED
    r = edlib("preview", root, "--help")
    assert r.returncode == 0 and re.search(rf"--seed SEED .*\(default: {DEFAULT_SEED}\)", " ".join(r.stdout.split()))
    # the default preview draws the batches a default training run draws
    cli = json.loads(edlib("preview", root, "--json", "--epochs", "2", "--batch-size", "2", "--resolution", "64").stdout)
    library = preview(scan(root), epochs=2, batch_size=2, resolution=64, seed=TrainConfig(data_root=root).seed)
    assert cli["batches_per_epoch_all"] == library.batches_per_epoch_all
    assert cli["samples_per_epoch_all"] == [c.samples for c in library.epoch_counts]


def test_preview_help_names_defaults_and_choices(root):  # noqa: F811
    text = " ".join(edlib("preview", "--help").stdout.split())
    for option in ("--epochs", "--batch-size", "--resolution", "--lr ", "--lr-scheduler"):
        assert option in text
    assert "{constant,constant_with_warmup,linear,cosine,cosine_with_restarts,polynomial}" in text
    assert text.count("(default:") >= 8
    top = " ".join(edlib("--help").stdout.split())
    assert "Each command's --help says more." in top  # the description is whole, not cut at its first line
    version = edlib("--version")
    assert version.returncode == 0 and version.stdout.startswith("edlib ")


def test_every_command_that_scans_shows_the_scans_warnings(root, tmp_path):  # noqa: F811
    write_text(root / "subject" / "multiply.txt.txt", "3")
    weights = tmp_path / "weights.yaml"
    weights.write_text("subject: 1\npreservation: 1\n", encoding="utf-8")
    for command in (["preview", root, "--resolution", "64"], ["balance", root, "--weights", weights]):
        text = edlib(*command)
        assert text.returncode == 0, text.stderr
        assert "multiply.txt.txt" in text.stdout, command
        as_json = json.loads(edlib(*command, "--json").stdout)
        assert any("multiply.txt.txt" in w for w in as_json["warnings"]), command


def test_preview_and_train_refuse_the_same_resolutions(root):  # noqa: F811
    r = edlib("preview", root, "--resolution", "100")
    assert r.returncode == 1 and "resolution 100: must be a multiple of 64" in r.stderr
    try:
        TrainConfig(data_root=root, resolution=100)
    except ValueError as error:
        assert "must be a multiple of 64" in str(error)
    else:
        raise AssertionError("resolution 100 accepted by the config")


def test_other_trainers_keys_get_edlibs_name(tmp_path):
    for key, edlib_key in (("learning_rate", "unet_lr"), ("train_batch_size", "batch_size"), ("max_train_steps", "max_steps")):
        try:
            TrainConfig.from_dict({"data_root": str(tmp_path), key: 1})
        except ConfigError as error:
            assert f"{key}: unknown key; other trainers call it that; edlib's key is {edlib_key}" in str(error)
        else:
            raise AssertionError(f"{key} accepted")


def test_the_bundled_world_model_has_a_name_for_configs(tmp_path):
    config = TrainConfig(model="edlib:world", data_root=tmp_path)
    assert config.model == "edlib:world" and config.resolution == 64  # read from the bundled model's configs
    try:
        TrainConfig(model="edlib:nothing", data_root=tmp_path)
    except ValueError as error:
        assert "edlib:world" in str(error)
    else:
        raise AssertionError("edlib:nothing accepted")


def test_review_restore_says_what_it_did(tmp_path):
    data = tmp_path / "data"
    make_tree(data, {"a": 2}, size=(64, 64))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(f"data_root: {data}\n", encoding="utf-8")
    image = sorted((data / "a").glob("*.png"))[0].relative_to(data).as_posix()
    moved = edlib("review", run, "--quarantine", image)
    assert moved.returncode == 0, moved.stderr
    assert "_quarantine (each move is recorded in" in moved.stdout and "manifest.json" in moved.stdout
    restored = edlib("review", run, "--restore")
    assert restored.stdout.strip() == f"restored {data / image}"
    assert edlib("review", run, "--restore").stdout.strip().startswith("nothing to restore")
