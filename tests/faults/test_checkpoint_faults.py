"""Checkpoints under faults (issue 21, item 8 and the checkpoint messages): a kill while
pruning never leaves a folder that looks complete without its files; a damaged file is
named with the checkpoint to resume from instead; a full disk while saving says so and
leaves the previous checkpoint as `latest`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from edlib.model.checkpoint import (
    COMPLETE_MARKER,
    CheckpointError,
    list_checkpoints,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from edlib.train.loop import train
from tests.faults.support import REPO, edlib
from tests.train.loop_support import make_data_root, one_torch_thread, tiny_config  # noqa: F401


def _save(directory: Path, step: int) -> Path:
    weights = {"unet": {"w": torch.arange(4096.0) + step}, "text_encoder": {"w": torch.ones(64) * step}}
    return save_checkpoint(directory, step, weights=weights, state={"step": step, "blob": torch.zeros(2048)})


# -- item 8: a kill during pruning --------------------------------------------------------

_PRUNE_AND_DIE = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from edlib.model.checkpoint import prune_checkpoints

    kill_after = int(sys.argv[2])
    unlinks = 0
    real_unlink = os.unlink

    def unlink(*args, **kwargs):  # the process dies right after its k-th file deletion
        global unlinks
        real_unlink(*args, **kwargs)
        unlinks += 1
        if unlinks == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    os.unlink = unlink
    prune_checkpoints(Path(sys.argv[1]), 1)
    """
)


def test_a_kill_at_any_moment_of_pruning_leaves_only_whole_checkpoints(tmp_path):
    """The process pruning 2 of 3 checkpoints is killed after its 1st, 2nd, ... file
    deletion. Before: killed after deleting rng-0.pt, a folder still held complete.json
    and was loaded as complete."""
    template = tmp_path / "template"
    for step in (1, 2, 3):
        _save(template, step)
    files = sorted(p.name for p in (template / "step-000001").iterdir())
    for kill_after in range(1, len(files) + 2):  # each deletion of the first folder, and the next one
        directory = tmp_path / f"kill-{kill_after}"
        shutil.copytree(template, directory)
        done = subprocess.run(
            [sys.executable, "-c", _PRUNE_AND_DIE, str(directory), str(kill_after)],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            timeout=120,
        )
        assert done.returncode in (0, -signal.SIGKILL), done.stderr.decode()[-2000:]
        for checkpoint in list_checkpoints(directory):
            assert sorted(p.name for p in checkpoint.iterdir()) == files, (kill_after, checkpoint.name)
            load_checkpoint(checkpoint)
        assert list_checkpoints(directory)[-1].name == "step-000003"


def test_pruning_clears_what_a_killed_prune_left(tmp_path):
    for step in (1, 2, 3):
        _save(tmp_path, step)
    (tmp_path / "step-000001" / COMPLETE_MARKER).unlink()  # as a prune killed after its first deletion
    from edlib.model.checkpoint import prune_checkpoints

    _save(tmp_path, 4)
    removed = prune_checkpoints(tmp_path, 2)
    assert [p.name for p in removed] == ["step-000002"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000003", "step-000004"]


# -- damaged checkpoint files ---------------------------------------------------------------


def _flip_bytes(path: Path, count: int = 16) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + count] = bytes(b ^ 0xFF for b in data[middle : middle + count])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage, what",
    [
        (lambda f: _flip_bytes(f), "has changed since it was saved (checksum mismatch)"),
        (lambda f: f.write_bytes(f.read_bytes()[:100]), "is 100 bytes, "),
        (lambda f: f.write_bytes(b""), "is 0 bytes, "),
        (lambda f: f.unlink(), "is missing"),
    ],
    ids=["flipped", "truncated", "zero-bytes", "missing"],
)
def test_a_damaged_file_is_named_with_the_checkpoint_to_use_instead(tmp_path, damage, what):
    for step in (1, 2):
        _save(tmp_path, step)
    unet = tmp_path / "step-000002" / "unet.safetensors"
    damage(unet)
    with pytest.raises(CheckpointError) as raised:
        load_checkpoint(tmp_path / "step-000002")  # before: 16 flipped bytes loaded silently
    message = str(raised.value)
    assert message.startswith(f"{unet}: damaged, it {what}")
    assert f"the previous complete checkpoint is {tmp_path / 'step-000001'}: resume from it with --resume " in message


def test_checkpoints_saved_without_checksums_still_name_a_damaged_file(tmp_path):
    _save(tmp_path, 1)
    marker = tmp_path / "step-000001" / COMPLETE_MARKER
    marker.write_text(json.dumps({"step": 1, "saved_at": "2024-01-01T00:00:00Z"}))  # the old format
    assert load_checkpoint(tmp_path / "step-000001").step == 1
    (tmp_path / "step-000001" / "state.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"state\.pt: damaged, it cannot be read .*there is no earlier complete checkpoint"):
        load_checkpoint(tmp_path / "step-000001")


def test_resuming_from_a_damaged_checkpoint_says_which_to_use(tiny_sd1, tmp_path):
    root = make_data_root(tmp_path / "data")
    run = tmp_path / "run"
    config = tiny_config(tiny_sd1, root, run, epochs=1, save_every_n_steps=1)
    train(config)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    (run / "checkpoints" / "step-000002" / "state.pt").write_bytes(b"")
    r = edlib("train", config_file, "--resume", "latest", "epochs=2")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr  # before: a traceback without the file name
    assert f"{run / 'checkpoints' / 'step-000002' / 'state.pt'}: damaged, it is 0 bytes" in r.stderr
    assert f"resume from it with --resume {run / 'checkpoints' / 'step-000001'}" in r.stderr
    r = edlib("train", config_file, "--resume", run / "checkpoints" / "step-000001", "epochs=2")
    assert r.returncode == 0, r.stderr[-3000:]


# -- a full disk while saving ---------------------------------------------------------------

_FILL_DISK_AFTER_FIRST_SAVE = textwrap.dedent(
    """
    import resource, signal, sys
    from edlib.model.checkpoint import CheckpointError
    from edlib.model.config import TrainConfig
    from edlib.train.loop import train

    def full_disk_after_the_first_checkpoint(event):
        # From here on no file may grow past 64 KB, as on a full disk (EFBIG, not ENOSPC:
        # a real full file system needs root to make). SIGXFSZ would kill the process.
        if event.kind == "checkpoint" and event.data["step"] == 2:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))

    config = TrainConfig.model_validate_json(open(sys.argv[1]).read())
    try:
        train(config, callbacks=[full_disk_after_the_first_checkpoint])
    except CheckpointError as error:
        print(error)
        sys.exit(3)
    """
)


def test_a_full_disk_while_saving_names_it_and_keeps_the_previous_checkpoint(tiny_sd1, tmp_path):
    root = make_data_root(tmp_path / "data")
    run = tmp_path / "run"
    config = tiny_config(tiny_sd1, root, run, epochs=2, save_every_n_steps=2, export_formats=[])
    (tmp_path / "config.json").write_text(config.model_dump_json())
    done = subprocess.run(
        [sys.executable, "-c", _FILL_DISK_AFTER_FIRST_SAVE, str(tmp_path / "config.json")],
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 3, done.stderr[-3000:]  # before: a torch "unexpected pos" traceback
    message = done.stdout.strip()
    assert message.startswith(
        f"could not save checkpoint step 4: file too large for the file system or a size limit, writing in {run / 'checkpoints'} ("
    )
    assert message.endswith("the previous checkpoint step-000002 is intact. Free some space, then resume with --resume latest")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000002"]  # no half-written folder
    assert resolve_checkpoint("latest", run).name == "step-000002"
    load_checkpoint(resolve_checkpoint("latest", run))
