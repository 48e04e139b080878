"""Review of a run's image_loss.csv, and quarantine / restore: files move with their
captions, a manifest records it, nothing is overwritten or deleted, and a running
training drops a quarantined image from its next epoch."""

import json

import numpy as np
import pytest
import torch
import yaml

from edlib.data.reread import reread_settings
from edlib.data.scan import scan
from edlib.data.schedule import realise_epoch
from edlib.train.loss_tracker import LossTracker
from edlib.train.review import (
    QUARANTINE,
    format_review,
    quarantine,
    quarantined,
    restore,
    review,
    review_folders,
)
from edlib.world.dataset import write_data_root


@pytest.fixture
def data_root(tmp_path):
    root = tmp_path / "data"
    write_data_root(root, {"people": {"count": 4}, "things": {"count": 4}}, seed=3)
    (root / "things" / "00001.yaml").write_text("main_prompt: a sidecar caption\n", encoding="utf-8")
    return root


def _file_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _run_with_losses(tmp_path, root, hard: str):
    """A run folder as training leaves it: config.yaml and an image_loss.csv from a tracker
    fed with losses where `hard` is consistently 1.7x the others at its timestep."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"data_root": str(root)}), encoding="utf-8")
    data = scan(root)
    tracker = LossTracker(buckets=4, warmup=3, min_observations=5)
    rng = np.random.default_rng(0)
    paths = [item.path for item in data.items]
    for step in range(60):
        t = torch.from_numpy(rng.integers(0, 1000, len(paths)))
        losses = (1.0 - 0.8 * t.double() / 1000) * torch.from_numpy(rng.lognormal(0, 0.1, len(paths)))
        losses *= torch.tensor([1.7 if p == hard else 1.0 for p in paths], dtype=torch.float64)
        tracker.observe(paths, t, losses.float(), step + 1)
    tracker.write_csv(run / "image_loss.csv", data)
    return run


def test_review_lists_the_worst_images_with_captions(tmp_path, data_root):
    run = _run_with_losses(tmp_path, data_root, "things/00002.png")
    reports = review(run, top=3)
    # only images above expectation are listed (issue 19: the list showed below-average ones)
    assert reports and reports[0].path == "things/00002.png" and reports[0].flagged
    assert all(r.mean > 0 and r.observations >= 5 for r in reports)
    assert reports[0].present and 50 < reports[0].observations < 60  # observations in warm-up buckets do not count
    caption = (data_root / "things" / "00002.txt").read_text(encoding="utf-8").strip()
    assert reports[0].caption == caption
    folders = review_folders(run)
    assert folders[0].folder == "things" and folders[0].flagged == 1
    text = format_review(reports, folders)
    assert "things/00002.png" in text and caption in text and "things" in text.split("folder")[-1]

    quarantine(data_root, ["things/00002.png"], run_dir=run)
    assert not review(run, top=1)[0].present
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        review(tmp_path / "nowhere")


def test_folder_table_counts_seen_images_against_the_folders_size(tmp_path, data_root):
    # Issue 19: the table said "195 images" of a folder of 200; the first samples of a run only
    # warm the timestep buckets, so some images have no observation yet. It says "seen N of M".
    write_data_root(data_root, {"late": {"count": 3}}, seed=4)  # a folder no observation reached
    run = _run_with_losses(tmp_path, data_root, "things/00002.png")
    csv_file = run / "image_loss.csv"
    lines = csv_file.read_text(encoding="utf-8").splitlines()
    csv_file.write_text("\n".join(l for l in lines if "/late/" not in f"/{l}" and not l.startswith("people/00000")) + "\n")
    folders = {f.folder: f for f in review_folders(run)}
    assert (folders["people"].seen, folders["people"].in_folder) == (3, 4)
    assert (folders["things"].seen, folders["things"].in_folder) == (4, 4)
    assert (folders["late"].seen, folders["late"].in_folder, folders["late"].observations) == (0, 3, 0)
    assert list(folders)[-1] == "late"  # nothing seen yet: listed last
    text = format_review(review(run), list(folders.values()))
    table = text.split("per folder")[1]
    assert "3 of 4" in table and "4 of 4" in table and "0 of 3" in table

    (run / "config.yaml").write_text(yaml.safe_dump({"data_root": str(tmp_path / "moved")}), encoding="utf-8")
    unknown = review_folders(run)  # the data root is gone: the statistics still show, the size is unknown
    assert {f.folder for f in unknown} == {"people", "things"} and all(f.in_folder is None for f in unknown)
    assert "3 of ?" in format_review([], unknown)


def test_quarantine_and_restore_move_files_with_a_manifest(tmp_path, data_root):
    run = _run_with_losses(tmp_path, data_root, "things/00001.png")
    original = _file_bytes(data_root)
    qdir = quarantine(data_root, ["things/00001.png", "people/00000.png"], run_dir=run, reason="wrong person")
    assert qdir == data_root / QUARANTINE
    for moved in ("things/00001.png", "things/00001.txt", "things/00001.yaml", "people/00000.png", "people/00000.txt"):
        assert not (data_root / moved).exists()
        assert (qdir / moved).read_bytes() == original[moved]
    entries = json.loads((qdir / "manifest.json").read_text(encoding="utf-8"))["entries"]
    first = entries[0]
    assert first["image"] == "things/00001.png" and first["reason"] == "wrong person"
    assert first["files"] == ["things/00001.png", "things/00001.txt", "things/00001.yaml"]
    assert first["stats"]["flagged"] is True and first["when"] and first["run"] == str(run.resolve())
    assert quarantined(data_root) == ["things/00001.png", "people/00000.png"]

    assert restore(data_root, ["people/00000.png"]) == ["people/00000.png"]
    assert quarantined(data_root) == ["things/00001.png"]
    assert restore(data_root) == ["things/00001.png"]
    assert _file_bytes(data_root) == {**original, f"{QUARANTINE}/manifest.json": (qdir / "manifest.json").read_bytes()}
    assert all("restored" in e for e in json.loads((qdir / "manifest.json").read_text())["entries"])


def test_nothing_is_overwritten_and_bad_requests_move_nothing(data_root):
    before = _file_bytes(data_root)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        quarantine(data_root, ["people/00000.png", "people/missing.png"])
    with pytest.raises(ValueError, match="without '..'"):
        quarantine(data_root, ["../outside.png"])
    with pytest.raises(ValueError, match="not an image"):
        quarantine(data_root, ["people/00000.txt"])
    assert _file_bytes(data_root) == before

    quarantine(data_root, ["people/00000.png"])
    # The same name again (a new image put where the old one was) must not replace the old one.
    (data_root / "people" / "00000.png").write_bytes(before["people/00001.png"])
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        quarantine(data_root, ["people/00000.png"])
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        restore(data_root)
    assert (data_root / QUARANTINE / "people" / "00000.png").read_bytes() == before["people/00000.png"]
    with pytest.raises(ValueError, match="not in the quarantine"):
        restore(data_root, ["things/00003.png"])


def test_a_quarantined_image_leaves_the_next_epoch(data_root):
    data = scan(data_root)
    target = "things/00003.png"
    index = [i.path for i in data.items].index(target)
    assert index in realise_epoch(data, 0, seed=1, batch_size=2, resolution=64).items
    quarantine(data_root, [target])
    data, messages = reread_settings(data)
    assert target not in [i.path for i in data.items] and data.folder("things").images == 3
    assert any("no longer in the data root" in m for m in messages)
    epoch = realise_epoch(data, 1, seed=1, batch_size=2, resolution=64)
    assert target not in {data.items[i].path for i in epoch.items}
    assert len(set(epoch.items.tolist())) == 7


def test_a_new_scan_skips_the_quarantine_folder(data_root):
    target = "things/00003.png"
    quarantine(data_root, [target])
    data = scan(data_root)
    assert [i.path for i in data.items if i.path.endswith("00003.png")] == ["people/00003.png"]
    assert not any(QUARANTINE in f.path for f in data.folders)
    assert not any(QUARANTINE in w for w in data.warnings)


def test_review_command_quarantines_and_restores(tmp_path, data_root):
    from tests.test_cli import edlib

    run = _run_with_losses(tmp_path, data_root, hard="people/00002.png")
    before = _file_bytes(data_root)
    r = edlib("review", run, "--top", "3")
    assert r.returncode == 0, r.stderr
    listed = r.stdout.split("per folder")[0]  # the images above expectation: the hard one first
    assert "people/00002.png" in listed
    assert "things/" not in listed or listed.index("people/00002.png") < listed.index("things/")
    assert "4 of 4" in r.stdout.split("per folder")[1]  # seen of the folder's images
    r = edlib("review", run, "--quarantine", "people/00002.png")
    assert r.returncode == 0, r.stderr
    assert not (data_root / "people" / "00002.png").exists()
    r = edlib("review", run, "--restore")
    assert r.returncode == 0, r.stderr
    after = {k: v for k, v in _file_bytes(data_root).items() if not k.startswith(QUARANTINE)}
    assert after == before
