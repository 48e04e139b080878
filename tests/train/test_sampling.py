"""Sampling during training (issue 4): samples on a step cadence, at the end and on request land
in ``samples/step-NNNNNN/`` with a grid and their settings in every PNG, are reported as
"sample" events, and leave training exactly as it would have been without them."""

import json
import os
import random
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from edlib.model.checkpoint import load_checkpoint, resolve_checkpoint
from edlib.sample.pngmeta import parse_parameters, read_parameters
from edlib.sample.prompts import PromptFileError, PromptSpec
from edlib.train.handle import start
from edlib.train.hooks import Plugin
from edlib.train.loop import train
from edlib.train.plugins import default_plugins
from edlib.train.sampling import SamplingPlugin
from tests.train.loop_support import (
    make_data_root,
    metrics,
    one_torch_thread,  # noqa: F401 - autouse fixture
    tiny_config,
)

# Random draws in every part of a step (caption dropout, tag shuffling, noise offset), an EMA
# (sampling swaps its weights in and out) and a training text encoder (sampling runs it too).
TRAINING = dict(
    epochs=2,
    ema_decay=0.9,
    caption_dropout=0.3,
    shuffle_caption=True,
    noise_offset=0.05,
    text_encoder_lr=1e-4,
)
# Columns of metrics.jsonl that measure wall-clock time, not training.
TIMING = {"time", "images_per_s", "eta_s"}


def _prompt_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.yaml"
    defaults = {"steps": 2, "sampler": "Euler a", "width": 64, "height": 64}
    prompts = ["red, photo", {"prompt": "blue, photo", "negative_prompt": "green", "seed": 3}]
    path.write_text(yaml.safe_dump({"defaults": defaults, "prompts": prompts}), encoding="utf-8")
    return path


def _data(tmp_path: Path) -> Path:
    data = make_data_root(tmp_path / "data")
    for image in data.rglob("*.png"):
        colour = image.stem.split("_")[0]
        image.with_suffix(".txt").write_text(f"{colour}, photo, simple background", encoding="utf-8")
    return data


class _RecordRng(Plugin):
    """The global RNG states after every step. Listed before the config's plugins, so step
    N+1's record follows the sampling event of step N."""

    name = "record_rng"

    def __init__(self):
        self.states = []

    def on_step(self, ctx, metrics):
        python_state, numpy_state = random.getstate(), np.random.get_state()
        self.states.append((torch.get_rng_state(), python_state, numpy_state[1].copy(), numpy_state[2]))


def _same_rng_states(a: _RecordRng, b: _RecordRng) -> bool:
    return len(a.states) == len(b.states) and all(
        torch_a.equal(torch_b) and python_a == python_b and np.array_equal(numpy_a, numpy_b) and pos_a == pos_b
        for (torch_a, python_a, numpy_a, pos_a), (torch_b, python_b, numpy_b, pos_b) in zip(a.states, b.states)
    )


def _training_columns(run: Path) -> list[dict]:
    return [{k: v for k, v in record.items() if k not in TIMING} for record in metrics(run)]


def _final_state(run: Path):
    checkpoint = load_checkpoint(resolve_checkpoint("latest", run))
    return checkpoint.weights, checkpoint.state["ema"]["shadow_params"]


def _sample_dirs(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "samples").iterdir()) if (run / "samples").exists() else []


@pytest.mark.parametrize("model, method", [("tiny_sd1", "full"), ("tiny_sd1", "lora"), ("tiny_sdxl", "full")])
def test_sampling_during_a_run_leaves_training_unchanged(request, tmp_path, model, method):
    tiny_sd1 = request.getfixturevalue(model)
    data = _data(tmp_path)
    plain, sampled = tmp_path / "plain", tmp_path / "sampled"
    events, plain_rng, sampled_rng = [], _RecordRng(), _RecordRng()
    options = dict(TRAINING, method=method)

    train(tiny_config(tiny_sd1, data, plain, **options), plugins=[plain_rng])
    config = tiny_config(
        tiny_sd1, data, sampled, sample_prompts=str(_prompt_file(tmp_path)), sample_every_n_steps=2, **options
    )
    summary = train(config, callbacks=[events.append], plugins=[sampled_rng])

    # Same global RNG streams, losses, learning rates and sample counts at every step; same
    # final weights and EMA.
    assert summary.step == 4
    assert _same_rng_states(plain_rng, sampled_rng)
    assert _training_columns(sampled) == _training_columns(plain)
    (weights_a, ema_a), (weights_b, ema_b) = _final_state(plain), _final_state(sampled)
    assert weights_a.keys() == weights_b.keys()
    for module in weights_a:
        for key, tensor in weights_a[module].items():
            assert tensor.equal(weights_b[module][key]), f"{module}.{key} differs after sampling"
    assert all(a.equal(b) for a, b in zip(ema_a, ema_b, strict=True))

    # Steps 2 and 4 sampled; the end of the run is step 4 again, so it is not sampled twice.
    assert _sample_dirs(plain) == []
    assert _sample_dirs(sampled) == ["step-000002", "step-000004"]
    sample_events = [e.data for e in events if e.kind == "sample"]
    assert [e["step"] for e in sample_events] == [2, 4]
    for event in sample_events:
        folder = sampled / "samples" / f"step-{event['step']:06d}"
        assert Path(event["path"]) == folder / "grid.png"
        images = sorted(folder.glob("0*.png"))
        assert [p.name for p in images] == ["000-seed555.png", "001-seed3.png"]
        second = parse_parameters(read_parameters(images[1]))
        assert second["prompt"] == "blue, photo" and second["negative_prompt"] == "green"
        assert (second["steps"], second["sampler"], second["seed"]) == (2, "Euler a", 3)
        assert (second["width"], second["height"]) == (64, 64)
        assert second["model"] == f"sampled step-{event['step']:06d}"
        assert parse_parameters(read_parameters(folder / "grid.png"))["prompt"] == "red, photo"
    assert "step 2: sampled 2 prompt(s)" in (sampled / "log.txt").read_text(encoding="utf-8")


def test_sample_now_and_the_end_of_a_run_make_samples(tiny_sd1, tmp_path):
    """A request through the handle (a control/sample file) is served after the step it
    arrives in; the end of the run samples by default; epochs cadence samples at epoch ends."""
    data = _data(tmp_path)
    run = tmp_path / "run"
    box = {}

    def ask_at_step_one(event):
        if event.kind == "step" and event.data["step"] == 1:
            box["handle"].sample_now()

    config = tiny_config(tiny_sd1, data, run, sample_prompts=str(_prompt_file(tmp_path)), epochs=3, sample_every_n_epochs=2)
    box["handle"] = handle = start(config, callbacks=[ask_at_step_one])
    summary = handle.wait(timeout=300)

    assert summary.step == 6
    # Step 1: the request; step 4: the end of epoch 2; step 6: the end of the run.
    assert _sample_dirs(run) == ["step-000001", "step-000004", "step-000006"]
    assert [e.data["step"] for e in handle.events if e.kind == "sample"] == [1, 4, 6]
    assert not any(e.kind == "sample_request" for e in handle.events)  # served, not dropped
    assert not (run / "control" / "sample").exists()
    for folder in (run / "samples").iterdir():
        assert (folder / "grid.png").is_file()
        assert parse_parameters(read_parameters(folder / "000-seed555.png"))["model"] == f"run {folder.name}"


def test_resume_with_sampling_is_exact_and_keeps_the_plugin_state(tiny_sd1, tmp_path):
    data = _data(tmp_path)
    prompts = str(_prompt_file(tmp_path))
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    options = dict(sample_prompts=prompts, sample_every_n_steps=2, sample_every_n_minutes=60.0, sample_at_end=False, **TRAINING)

    train(tiny_config(tiny_sd1, data, straight, **options))

    def stop_after_step_three(event):
        if event.kind == "step" and event.data["step"] == 3:
            (resumed / "control" / "stop").touch()

    assert train(tiny_config(tiny_sd1, data, resumed, **options), callbacks=[stop_after_step_three]).step == 3
    state = load_checkpoint(resolve_checkpoint("latest", resumed)).state["plugins"]["sampling"]
    assert state["sampled_step"] == 2 and 0 <= state["seconds_since_sample"] < 3600
    assert train(tiny_config(tiny_sd1, data, resumed, **options), resume="latest").step == 4

    assert _training_columns(resumed) == _training_columns(straight)
    assert _sample_dirs(resumed) == _sample_dirs(straight) == ["step-000002", "step-000004"]


def test_the_minute_clock_survives_a_checkpoint():
    plugin = SamplingPlugin([PromptSpec("red")], every_n_minutes=5)
    plugin.load_state_dict({"seconds_since_sample": 400.0, "sampled_step": 7})
    state = plugin.state_dict()
    assert 400.0 <= state["seconds_since_sample"] < 460.0
    assert state["sampled_step"] == 7


def test_default_plugins_follow_the_config(tiny_sd1, tmp_path):
    data = _data(tmp_path)
    assert default_plugins(tiny_config(tiny_sd1, data, tmp_path / "a", loss_tracking=False)) == []
    assert [p.name for p in default_plugins(tiny_config(tiny_sd1, data, tmp_path / "a"))] == ["loss_tracker"]

    (plugin,) = default_plugins(
        tiny_config(
            tiny_sd1, data, tmp_path / "b", loss_tracking=False,
            sample_prompts=["red", "blue"], sample_every_n_minutes=1.5, sample_at_end=False,
        )
    )
    assert isinstance(plugin, SamplingPlugin)
    assert [p.prompt for p in plugin.prompts] == ["red", "blue"]
    assert (plugin.every_n_steps, plugin.every_n_epochs, plugin.every_n_minutes, plugin.at_end) == (None, None, 1.5, False)

    missing = tmp_path / "no-such-prompts.txt"
    with pytest.raises(PromptFileError, match="no-such-prompts.txt"):
        default_plugins(tiny_config(tiny_sd1, data, tmp_path / "c", sample_prompts=str(missing)))


# A two-process run that samples every step, on a minute cadence of ~0 s (decided by the main
# process and shared) and on a request at step 1; each process records the events it saw.
_TWO_PROCESS_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path

    from edlib.model.config import TrainConfig
    from edlib.train.loop import train

    events = []

    def on_event(event):
        events.append(event.kind)
        if event.kind == "step" and event.data["step"] == 1:
            (Path(sys.argv[2]) / "control" / "sample").touch()

    train(TrainConfig.model_validate_json(Path(sys.argv[1]).read_text()), callbacks=[on_event])
    Path(sys.argv[2], f"events-rank{os.environ['RANK']}.json").write_text(json.dumps(events))
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_sample_on_the_main_process_only(tiny_sd1, tmp_path):
    data = _data(tmp_path)
    run = tmp_path / "two"
    config = tiny_config(
        tiny_sd1,
        data,
        run,
        batch_size=1,
        sample_prompts=str(_prompt_file(tmp_path)),
        sample_every_n_steps=2,
        sample_every_n_minutes=1e-6,
    )
    (tmp_path / "config.json").write_text(config.model_dump_json())
    (tmp_path / "script.py").write_text(_TWO_PROCESS_SCRIPT)
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        str(tmp_path / "script.py"), str(tmp_path / "config.json"), str(run),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    # Every step sampled once (the minute cadence, step cadence, request and end coincide on
    # some steps), by the main process alone, which alone reports events.
    assert _sample_dirs(run) == [f"step-{step:06d}" for step in range(1, 5)]
    for step in range(1, 5):
        assert len(list((run / "samples" / f"step-{step:06d}").glob("*.png"))) == 3  # 2 prompts + grid
    main, other = (json.loads((run / f"events-rank{rank}.json").read_text()) for rank in (0, 1))
    assert main.count("sample") == 4 and "sample_request" not in main
    assert other == []
