"""What edlib writes and moves in a user's data root (issue 21, items 6 and 9 and the
messages of quarantine and balance): captions travel with a quarantined image whatever
their suffix, links stay links, modes follow the umask, a full disk leaves no debris, and
every refusal says what to do in words the CLI can follow."""

from __future__ import annotations

import json
import os
import resource
import signal
import stat
from pathlib import Path

import pytest
import yaml

from edlib.data.balance import HISTORY_DIR, apply_balance, plan_balance, undo_balance
from edlib.data.scan import scan
from edlib.files import write_text_atomic
from edlib.train.review import QUARANTINE, quarantine, restore
from tests.data.make_images import make_tree, tree_digest, write_text
from tests.faults.support import edlib


@pytest.fixture
def root(tmp_path) -> Path:
    root = tmp_path / "data"
    make_tree(root, {"a": 3, "b": 2}, size=(64, 64))
    return root


@pytest.fixture
def run(tmp_path, root) -> Path:
    """A run folder as a training leaves it before its first epoch ends: a config, no
    image_loss.csv yet."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"data_root": str(root)}), encoding="utf-8")
    return run


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# -- item 6 and quarantine messages --------------------------------------------------------


def test_quarantine_takes_every_caption_file_the_scan_reads(root):
    image = "a/a 0_000.png"
    write_text(root / "a" / "a 0_000.yml", "main_prompt: from yml\n")
    write_text(root / "a" / "a 0_000.TXT", "upper case suffix")
    write_text(root / "a" / "a 0_000.caption", "caption file")
    quarantine(root, [image])
    left = sorted(p.name for p in (root / "a").iterdir())
    assert left == ["a 1_001.png", "a 2_002.png"]  # before: "a 0_000.yml" stayed behind
    restore(root)
    assert sorted(p.name for p in (root / "a").iterdir())[:4] == ["a 0_000.TXT", "a 0_000.caption", "a 0_000.png", "a 0_000.yml"]


def test_quarantining_the_same_image_twice(run, root):
    r = edlib("review", run, "--quarantine", "a/a 0_000.png", "a/a 0_000.png", "./a/a 0_000.png")
    assert r.returncode == 0, r.stderr  # before: [Errno 2] No such file or directory
    assert "Moved 1 image(s)" in r.stdout
    r = edlib("review", run, "--quarantine", "a/a 0_000.png")
    assert r.returncode == 1
    assert "a/a 0_000.png: is already in the quarantine (moved " in r.stderr
    assert "restore it with --restore a/a 0_000.png" in r.stderr and "Errno" not in r.stderr


def test_quarantine_works_before_the_first_epoch_ends(run, root):
    assert not (run / "image_loss.csv").exists()
    r = edlib("review", run, "--quarantine", "b/b 1_001.png")
    assert r.returncode == 0, r.stderr  # before: image_loss.csv not found
    assert (root / QUARANTINE / "b" / "b 1_001.png").is_file()
    entry = json.loads((root / QUARANTINE / "manifest.json").read_text())["entries"][0]
    assert entry["image"] == "b/b 1_001.png" and "stats" not in entry


def test_quarantine_refuses_files_outside_the_data_root(tmp_path, root):
    outside = tmp_path / "elsewhere"
    make_tree(outside, {"x": 2}, size=(64, 64))
    (root / "linked").symlink_to(outside / "x")
    before = tree_digest(outside)
    with pytest.raises(ValueError, match=r"linked/x 0_000.png: its folder is a symbolic link to .*outside the data root"):
        quarantine(root, ["a/a 1_001.png", "linked/x 0_000.png"])
    assert tree_digest(outside) == before
    assert (root / "a" / "a 1_001.png").is_file()  # nothing moved


# -- item 9: links, modes --------------------------------------------------------------------


def test_balance_writes_through_a_symlinked_multiply_txt_and_undo_keeps_the_link(tmp_path, root):
    shared = tmp_path / "shared_multiply.txt"
    shared.write_text("3\n")
    shared.chmod(0o644)
    (root / "a" / "multiply.txt").symlink_to(shared)
    entry = apply_balance(plan_balance(scan(root), {"a": 1, "b": 1}, epoch_size=10))
    link = root / "a" / "multiply.txt"
    assert link.is_symlink() and shared.read_text() == "1.666667\n"
    assert stat.S_IMODE(shared.stat().st_mode) == 0o644  # before: a regular file, mode 0600
    created = root / "b" / "multiply.txt"
    assert stat.S_IMODE(created.stat().st_mode) == 0o666 & ~_umask()
    assert entry.is_dir()
    undo_balance(root)
    assert link.is_symlink() and shared.read_text() == "3\n"
    assert stat.S_IMODE(shared.stat().st_mode) == 0o644
    assert not created.exists()


def test_files_edlib_writes_follow_the_umask(tmp_path):
    target = write_text_atomic(tmp_path / "sub" / "schedule.txt", "x\n")
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~_umask()
    target.chmod(0o640)
    write_text_atomic(target, "y\n")
    assert stat.S_IMODE(target.stat().st_mode) == 0o640 and target.read_text() == "y\n"


# -- balance messages ------------------------------------------------------------------------


def test_undo_advice_is_a_command_the_cli_runs(tmp_path, root):
    weights = tmp_path / "w.yaml"
    weights.write_text("a: 3\nb: 1\n")
    assert edlib("balance", root, "--weights", weights, "--apply").returncode == 0
    (root / "a" / "multiply.txt").write_text("7\n")
    r = edlib("balance", root, "--undo")
    assert r.returncode == 1
    assert f"edlib balance {root} --undo --force" in r.stderr and "force=True" in r.stderr
    r = edlib("balance", root, "--undo", "--force")
    assert r.returncode == 0, r.stderr
    assert not (root / "a" / "multiply.txt").exists()


def _tiny_file_limit():
    """Every file this process writes stops at 1 byte, as on a full disk (EFBIG instead of
    ENOSPC: a real full file system needs root to make). SIGXFSZ would kill the process."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1, 1))


def test_a_full_disk_during_balance_apply_leaves_nothing_behind(tmp_path, root):
    write_text(root / "a" / "multiply.txt", "2\n")
    weights = tmp_path / "w.yaml"
    weights.write_text("a: 3\nb: 1\n")
    before = tree_digest(root)
    r = edlib("balance", root, "--weights", weights, "--apply", preexec_fn=_tiny_file_limit)
    assert r.returncode == 1
    assert "could not keep the previous multiply.txt and exclude.txt files (file too large" in r.stderr
    assert "nothing was written" in r.stderr and "Traceback" not in r.stderr
    history = root / HISTORY_DIR
    assert not history.exists() or list(history.iterdir()) == []  # before: an empty entry folder
    assert tree_digest(root) == before
