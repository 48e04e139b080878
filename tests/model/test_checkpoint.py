"""Checkpoint files: atomic commit, 'latest' resolution, retention, weights_only loading,
and RNG states that really restore the random streams."""

import random

import numpy as np
import pytest
import torch
from diffusers.training_utils import EMAModel

from edlib.model.checkpoint import (
    CheckpointError,
    capture_rng_state,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    resolve_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from edlib.model.lr import make_lr_scheduler


def _trained_state():
    """A real module, AdamW, LR scheduler and EMA after two steps, like the loop saves."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = make_lr_scheduler(opt, "cosine", total_steps=10, warmup_steps=2)
    ema = EMAModel(model.parameters(), decay=0.9)
    for _ in range(2):
        model(torch.randn(2, 4)).pow(2).mean().backward()
        opt.step()
        sched.step()
        opt.zero_grad()
        ema.step(model.parameters())
    state = {
        "step": 2,
        "epoch": 0,
        "batch": 4,
        "optimizer": opt.state_dict(),
        "lr_scheduler": sched.state_dict(),
        "ema": ema.state_dict(),
        "plugins": {},
    }
    return model, opt, sched, ema, state


def test_round_trip_loads_with_weights_only(tmp_path):
    model, opt, sched, ema, state = _trained_state()
    path = save_checkpoint(tmp_path, 2, weights={"unet": model.state_dict()}, state=state)
    assert path.name == "step-000002" and (path / "complete.json").is_file()
    assert not any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())

    ckpt = load_checkpoint(path)  # torch.load(weights_only=True) inside: must not raise
    assert ckpt.step == 2 and ckpt.state["batch"] == 4
    for k, v in model.state_dict().items():
        assert torch.equal(ckpt.weights["unet"][k], v)

    # The restored optimizer / scheduler / EMA continue exactly like the originals.
    model2 = torch.nn.Linear(4, 3)
    model2.load_state_dict(ckpt.weights["unet"])
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-2)
    # Build the scheduler first: building it resets the optimizer's lr, loading restores it.
    sched2 = make_lr_scheduler(opt2, "cosine", total_steps=10, warmup_steps=2)
    opt2.load_state_dict(ckpt.state["optimizer"])
    sched2.load_state_dict(ckpt.state["lr_scheduler"])
    ema2 = EMAModel(model2.parameters(), decay=0.9)
    ema2.load_state_dict(ckpt.state["ema"])
    x = torch.randn(2, 4)
    for m, o, s, e in ((model, opt, sched, ema), (model2, opt2, sched2, ema2)):
        m(x).pow(2).mean().backward()
        o.step()
        s.step()
        e.step(m.parameters())
    assert sched.get_last_lr() == sched2.get_last_lr()
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(ema.shadow_params, ema2.shadow_params):
        assert torch.equal(a, b)


def test_rng_state_restores_every_stream():
    state = capture_rng_state()
    first = (random.random(), np.random.rand(), torch.rand(3))
    restore_rng_state(state)
    second = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == second[0] and first[1] == second[1]
    assert torch.equal(first[2], second[2])


def test_half_written_checkpoint_is_never_latest(tmp_path):
    run = tmp_path / "run"
    save_checkpoint(run / "checkpoints", 5, weights={}, state={"step": 5})
    # What a process killed mid-save leaves: a temp folder, and (worse) a step folder
    # without its completion marker (e.g. a partial copy of the run folder).
    (run / "checkpoints" / ".tmp-step-000010").mkdir()
    (run / "checkpoints" / ".tmp-step-000010" / "unet.safetensors").write_bytes(b"partial")
    (run / "checkpoints" / "step-000009").mkdir()

    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step-000005"]
    assert resolve_checkpoint("latest", run).name == "step-000005"
    assert resolve_checkpoint(run).name == "step-000005"
    with pytest.raises(CheckpointError, match="step-000009 is not a complete checkpoint"):
        resolve_checkpoint(run / "checkpoints" / "step-000009")
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        load_checkpoint(run / "checkpoints" / "step-000009")

    # The next save at that step clears the stale temp folder and commits normally.
    save_checkpoint(run / "checkpoints", 10, weights={}, state={"step": 10})
    assert resolve_checkpoint("latest", run).name == "step-000010"
    assert not (run / "checkpoints" / ".tmp-step-000010").exists()


def test_no_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no complete checkpoint in"):
        resolve_checkpoint("latest", tmp_path)


def test_saving_a_step_again_replaces_it(tmp_path):
    save_checkpoint(tmp_path, 3, weights={"unet": {"w": torch.zeros(2)}}, state={"step": 3})
    save_checkpoint(tmp_path, 3, weights={"unet": {"w": torch.ones(2)}}, state={"step": 3})
    ckpt = load_checkpoint(tmp_path / "step-000003")
    assert torch.equal(ckpt.weights["unet"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["step-000003"]


def test_retention_keeps_the_newest(tmp_path):
    for step in (1, 2, 10, 20):
        save_checkpoint(tmp_path, step, weights={}, state={"step": step})
    removed = prune_checkpoints(tmp_path, 2)
    assert [p.name for p in removed] == ["step-000001", "step-000002"]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000010", "step-000020"]
    assert prune_checkpoints(tmp_path, None) == []
