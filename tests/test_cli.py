"""The `edlib` command line, run as a user runs it: a real subprocess of the installed
entry point, checking stdout, stderr and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.data.make_images import make_tree, tree_digest, write_text


def edlib(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edlib", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        # one torch thread: the test processes already use both CI cores
        env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"},
        timeout=120,
    )


@pytest.fixture
def root(tmp_path) -> Path:
    root = tmp_path / "data"
    make_tree(root, {"subject": 6, "subject/closeups": 2, "preservation": 10}, size=(64, 64))
    write_text(root / "subject" / "multiply.txt", "2.5\r\n")
    write_text(root / "preservation" / "multiply.txt", "0.1")
    write_text(root / "preservation" / "loss_scale.txt", "0.5")
    return root


def test_scan_json_has_the_contract_fields(root):
    r = edlib("scan", root, "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["images"] == 18
    folders = {f["path"]: f for f in report["folders"]}
    assert folders["subject"]["images"] == 6 and folders["subject"]["multiply"] == 2.5
    # multiply.txt never cascades: the subfolder keeps the default
    assert folders["subject/closeups"]["multiply"] == 1.0
    assert folders["preservation"]["loss_scale"] == 0.5
    assert report["warnings"] == [] and report["errors"] == []


def test_scan_logs_each_applied_file_once(root):
    r = edlib("scan", root)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("subject/multiply.txt") == 1
    assert r.stderr.count("preservation/loss_scale.txt") == 1


def test_bad_multiplier_exits_nonzero_naming_file_and_text(root):
    write_text(root / "subject" / "multiply.txt", "abc")
    for command in ("scan", "preview"):
        r = edlib(command, root)
        assert r.returncode == 1
        assert "multiply.txt" in r.stderr and "abc" in r.stderr


def test_missing_root_is_a_clear_error(tmp_path):
    r = edlib("scan", tmp_path / "nope")
    assert r.returncode == 1
    assert "nope" in r.stderr and "Traceback" not in r.stderr


def test_preview_json_and_schedules_agree(root, tmp_path):
    out = tmp_path / "schedules"
    r = edlib("preview", root, "--json", "--epochs", "3", "--batch-size", "2", "--resolution", "64",
              "--write-schedule", out)
    assert r.returncode == 0, r.stderr
    p = json.loads(r.stdout)
    for key in ("folders", "epoch_size", "steps_per_epoch", "total_steps", "warnings"):
        assert key in p
    assert p["epoch_size"] == pytest.approx(6 * 2.5 + 2 + 10 * 0.1)
    lines_per_epoch = []
    for epoch in range(3):
        lines = (out / f"ep{epoch}_batch_schedule.txt").read_text().splitlines()
        assert all(len(line.split("\t")) == 3 for line in lines)
        lines_per_epoch.append(len(lines))
    # every batch is full (fill-up), so samples = 2 * batches = 2 * steps (no accumulation)
    assert sum(lines_per_epoch) == 2 * p["total_steps"]


def test_balance_apply_and_undo_roundtrip(root, tmp_path):
    weights = tmp_path / "w.yaml"
    weights.write_text("subject: 3\npreservation: 1\n")
    before = tree_digest(root)
    r = edlib("balance", root, "--weights", weights)
    assert r.returncode == 0, r.stderr
    assert tree_digest(root) == before, "without --apply nothing is written"
    r = edlib("balance", root, "--weights", weights, "--apply", "--epoch-size", "100")
    assert r.returncode == 0, r.stderr
    assert tree_digest(root) != before
    r = edlib("balance", root, "--undo")
    assert r.returncode == 0, r.stderr
    after = {k: v for k, v in tree_digest(root).items() if not k.startswith(".edlib")}
    assert after == before


@pytest.mark.slow
def test_demo_quick_runs_end_to_end_and_opens_with_its_own_line(tmp_path):
    # stderr merged into stdout, in order, as a terminal shows them (issue 19: the demo opened
    # with a dozen lines of other libraries' noise, edlib/quiet.py; later a diffusers
    # FutureWarning about `torch_dtype`)
    r = subprocess.run(
        [sys.executable, "-m", "edlib", "demo", "--out", str(tmp_path / "demo"), "--quick"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600,
        env={**{k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"},
    )  # fmt: skip; Python's default warning filters, as a user runs it
    assert r.returncode == 0, r.stdout[-3000:]
    lines = [line for line in r.stdout.splitlines() if line.strip()]
    assert lines[0].startswith("== Writing a toy-world data root"), lines[:15]
    warnings = [line for line in lines if "Warning:" in line and "site-packages" in line]
    assert not warnings, warnings
    assert "zorblat" in r.stdout and "total steps" in r.stdout
    assert (tmp_path / "demo" / "schedules" / "ep0_batch_schedule.txt").exists()


@pytest.mark.slow
def test_train_resume_and_sample_from_the_command_line(tmp_path):
    from edlib.model.tiny import build_tiny_pipeline
    from tests.train.loop_support import make_data_root

    model = build_tiny_pipeline(tmp_path / "model")
    data = make_data_root(tmp_path / "data")
    config = tmp_path / "train.yaml"
    config.write_text(
        f"model: {model}\ndata_root: {data}\nrun_dir: {tmp_path / 'run'}\n"
        "resolution: 64\nbatch_size: 2\nepochs: 3\nseed: 1\nunet_lr: 1.0e-4\n"
        "save_every_n_steps: 2\nlog_every_n_steps: 1\n"
    )
    r = edlib("train", config, "max_steps=2")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "run" / "checkpoints" / "step-000002").is_dir()

    # a key that cannot change on resume is refused with its name, no traceback
    r = edlib("train", config, "--resume", "latest", f"model={tmp_path}")
    assert r.returncode == 1 and "model" in r.stderr and "Traceback" not in r.stderr

    r = edlib("train", config, "--resume", "latest", "max_steps=4")
    assert r.returncode == 0, r.stderr
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("red\n# a comment\nblue\n")
    r = edlib("sample", tmp_path / "run", "--prompts", prompts, "--out", tmp_path / "samples")
    assert r.returncode == 0, r.stderr
    written = [Path(line) for line in r.stdout.split()]
    assert len(written) == 2 and all(p.exists() for p in written)


def test_bad_config_key_is_named(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("model: x\ndata_root: y\nrun_dir: z\nlr_scheduler: sometimes\n")
    r = edlib("train", config)
    assert r.returncode == 1
    assert "lr_scheduler" in r.stderr and "cosine" in r.stderr and "Traceback" not in r.stderr


def _train_tiny(tmp_path, name, extra: str) -> Path:
    from edlib.model.tiny import build_tiny_pipeline
    from tests.train.loop_support import make_data_root

    model = tmp_path / "model"
    if not model.exists():
        build_tiny_pipeline(model)
        make_data_root(tmp_path / "data")
    config = tmp_path / f"{name}.yaml"
    config.write_text(
        f"model: {model}\ndata_root: {tmp_path / 'data'}\nrun_dir: {tmp_path / name}\n"
        "resolution: 64\nbatch_size: 2\nmax_steps: 2\nseed: 1\n" + extra
    )
    r = edlib("train", config)
    assert r.returncode == 0, r.stderr
    return tmp_path / name


@pytest.mark.slow
def test_export_each_method_in_its_formats(tmp_path):
    """Every method's run exports through the CLI into files diffusers' own loaders read."""
    from diffusers import StableDiffusionPipeline

    full = _train_tiny(tmp_path, "full", "unet_lr: 1.0e-4\n")
    r = edlib("export", full, "--format", "single-file", "--dtype", "fp32")
    assert r.returncode == 0, r.stderr
    single = Path(r.stdout.split()[-1])
    assert single.suffix == ".safetensors" and single.parent == full / "exports"
    r = edlib("export", full, "--format", "diffusers")
    assert r.returncode == 0, r.stderr
    exported = Path(r.stdout.split()[-1])
    StableDiffusionPipeline.from_pretrained(exported)
    # the base model's sampling scheduler, not the training noise scheduler
    index = [json.loads((p / "model_index.json").read_text()) for p in (exported, tmp_path / "model")]
    assert index[0]["scheduler"] == index[1]["scheduler"]
    r = edlib("export", full, "--format", "kohya-lora")
    assert r.returncode == 1 and "exports as diffusers or single-file" in r.stderr

    lora = _train_tiny(tmp_path, "lora", "method: lora\nunet_lr: 1.0e-4\nnetwork_dim: 4\nnetwork_alpha: 4\n")
    r = edlib("export", lora, "--format", "kohya-lora")
    assert r.returncode == 0, r.stderr
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "model")
    pipe.load_lora_weights(r.stdout.split()[-1])
    # sampling a LoRA run puts its adapters back onto the base model
    prompts = tmp_path / "prompts.yaml"
    prompts.write_text("defaults: {steps: 2}\nprompts: [red]\n")
    r = edlib("sample", lora, "--prompts", prompts)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.split()[0]).is_file()

    ti = _train_tiny(
        tmp_path, "ti",
        "method: textual_inversion\ntext_encoder_lr: 1.0e-3\n"
        "placeholder_tokens: [{token: zorblat, init_word: red, num_vectors: 1}]\n",
    )
    r = edlib("export", ti, "--format", "a1111-embedding")
    assert r.returncode == 0, r.stderr
    embedding = Path(r.stdout.split()[-1])
    assert embedding.name == "zorblat.safetensors"
    pipe.load_textual_inversion(str(embedding), token="zorblat")


@pytest.mark.slow
def test_hypernetwork_export_and_sample_from_the_command_line(tmp_path):
    """`edlib export RUN --format a1111-hypernetwork`, then `edlib sample MODEL --hypernetwork
    FILE`: the base model with the file draws what sampling the run itself draws."""
    import numpy as np
    from PIL import Image

    run = _train_tiny(tmp_path, "hyper", "method: hypernetwork\nunet_lr: 5.0e-2\nhypernetwork_strength: 0.8\nexport_formats: []\n")
    r = edlib("export", run, "--format", "a1111-hypernetwork", "--dtype", "fp32")
    assert r.returncode == 0, r.stderr
    exported = Path(r.stdout.split()[-1])
    assert exported == run / "exports" / "hyper-step000002-fp32.pt"  # an export other than fp16 is named by its dtype
    prompts = tmp_path / "prompts.yaml"
    prompts.write_text("defaults: {steps: 2, seed: 3}\nprompts: [red]\n")
    r = edlib("sample", tmp_path / "model", "--prompts", prompts, "--out", tmp_path / "file",
              "--hypernetwork", exported, "--hypernetwork-strength", "0.8")  # fmt: skip
    assert r.returncode == 0, r.stderr
    from_file = Path(r.stdout.split()[0])
    r = edlib("sample", run, "--prompts", prompts, "--out", tmp_path / "run-samples")
    assert r.returncode == 0, r.stderr
    from_run = Path(r.stdout.split()[0])
    assert np.array_equal(np.asarray(Image.open(from_file)), np.asarray(Image.open(from_run)))
