"""The preview: its numbers are what realising the epochs produces."""

import json
from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest

from edlib.data.preview import format_preview, optimizer_steps, preview

from .fake_scan import FakeFolder, fake_scan

RES = 256
MIXED = [(256, 256), (384, 256), (256, 384), (512, 128)]


def mixed_scan():
    return fake_scan(
        FakeFolder("chars/bob", 13, Fraction("2.5"), MIXED, flip_p=0.5),
        FakeFolder("chars/alice", 7, 3, MIXED[:2]),
        FakeFolder("pres", 60, Fraction("0.15"), MIXED),
        FakeFolder("", 4, Fraction("0.05"), loss_scale=-0.5),
    )


def test_preview_numbers_equal_the_realised_epochs():
    scan = mixed_scan()
    p = preview(scan, epochs=8, batch_size=3, resolution=RES, seed=4, gradient_accumulation_steps=2)
    folder_paths = [f.path for f in scan.folders]
    item_folder = np.array([folder_paths.index(it.folder) for it in scan.items])
    assert len(set(p.batches_per_epoch_all)) > 1  # fractional multipliers make epochs differ

    realised_steps = []
    for e in range(8):
        s = p.realise(e)
        assert len(s) == p.batches_per_epoch_all[e]
        realised_steps.append(-(-len(s) // 2))
        per_folder = np.bincount(item_folder[s.items[~s.fill]], minlength=len(folder_paths))
        assert per_folder.tolist() == p.epoch_counts[e].folder_samples.tolist()
        assert s.n_fill == p.fill_per_epoch[e]
    assert realised_steps == p.steps_per_epoch_all
    assert p.total_steps == sum(realised_steps)
    assert p.steps_per_epoch == realised_steps[0]
    bucket_fill = {b.size: b.fill for b in p.buckets}
    assert sum(bucket_fill.values()) == sum(p.fill_per_epoch)


def test_folder_expectations_are_exact():
    p = preview(mixed_scan(), resolution=RES)
    by_path = {f.path: f for f in p.folders}
    assert by_path["chars/bob"].expected_per_epoch == Fraction("32.5")
    assert by_path["pres"].expected_per_epoch == 9
    assert by_path[""].expected_per_epoch == Fraction("0.2")
    assert p.epoch_size == Fraction("32.5") + 21 + 9 + Fraction("0.2")
    assert sum(f.share for f in p.folders) == pytest.approx(1.0)
    assert by_path["pres"].share == pytest.approx(9 / float(p.epoch_size))


def test_mean_samples_over_epochs_match_the_expected_epoch_size():
    scan = fake_scan(FakeFolder("a", 20, Fraction("0.35")), FakeFolder("b", 9, Fraction("1.5")))
    p = preview(scan, epochs=300, resolution=RES)
    samples = np.array([c.samples for c in p.epoch_counts])
    # k = 7 exactly for a, 4.5 for b: one Bernoulli(0.5) per epoch, variance 0.25
    assert abs(samples.mean() - float(p.epoch_size)) < 5 * np.sqrt(0.25 / 300)
    assert set(samples.tolist()) <= {7 + 9 + 4, 7 + 9 + 5}


def test_optimizer_steps_rule():
    assert optimizer_steps(8, 2) == 4
    assert optimizer_steps(7, 2) == 4  # the remainder still makes a step
    assert optimizer_steps(0, 3) == 0
    with pytest.raises(ValueError):
        optimizer_steps(5, 0)


def test_warnings_name_the_problems():
    p = preview(mixed_scan(), batch_size=4, resolution=RES, gradient_accumulation_steps=4)
    text = "\n".join(p.warnings)
    assert "folder (data root): multiply 0.05 x 4 images = 0.2 expected samples per epoch (< 1)" in text
    assert "loss_scale -0.5 is negative" in text
    assert "repeat(s) added" in text  # some bucket needs filling with a batch of 4


def test_json_and_text_forms():
    p = preview(mixed_scan(), epochs=3, batch_size=2, resolution=RES)
    p = replace(p, lr_scheduler="constant", lr=[1e-6] * p.total_steps)  # a curve, as edlib.model.lr adds it
    data = json.loads(json.dumps(p.to_json()))
    for key in ("folders", "epoch_size", "steps_per_epoch", "steps_per_epoch_all", "total_steps", "warnings"):
        assert key in data
    assert {f["path"] for f in data["folders"]} == {"", "chars/alice", "chars/bob", "pres"}
    assert set(data["folders"][0]) >= {"path", "images", "multiply", "expected_per_epoch", "share"}
    assert data["steps_per_epoch_all"] == p.steps_per_epoch_all
    assert sum(b["samples"] for b in data["buckets"]) == sum(c.samples for c in p.epoch_counts)

    text = format_preview(p)
    for needle in ("chars/bob", "pres", "total steps", f"{p.total_steps}", "learning rate (constant)", "buckets"):
        assert needle in text


def test_end_to_end_scan_preview_and_schedule_files(tmp_path, monkeypatch):
    from PIL import ImageFile

    from edlib.data.scan import scan
    from edlib.data.schedule import write_schedule

    from .make_images import write_image, write_text

    root = tmp_path / "data"
    for i in range(4):
        write_image(root / "portrait" / f"p{i}.png", size=(24, 48))
        write_image(root / "land" / f"l{i}.png", size=(48, 24))
        write_image(root / "square" / f"s{i}.png", size=(32, 32))
    write_text(root / "land" / "multiply.txt", " 0.5\r\n")
    write_text(root / "square" / "multiply.txt", "1.5", bom=True)
    write_text(root / "portrait" / "flip_p.txt", "1")
    result = scan(root)
    assert result.ok and len(result.items) == 12

    def no_decoding(self):
        raise AssertionError("the preview must not decode images")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    p = preview(result, epochs=3, batch_size=2, resolution=128, seed=1)
    assert {f.path: float(f.expected_per_epoch) for f in p.folders} == {"land": 2, "portrait": 4, "square": 6}

    for e in range(3):
        s = p.realise(e)
        path = write_schedule(s, result, tmp_path / "run" / "schedules")
        rows = [line.split("\t") for line in path.read_text().splitlines()]
        assert len({r[0] for r in rows}) == p.batches_per_epoch_all[e] == len(s)
        assert [r[2] for r in rows] == [result.items[i].path for i in s.items]
        drawn = [result.items[i].folder for i in s.items[~s.fill]]
        assert drawn.count("land") == 2 and drawn.count("portrait") == 4 and drawn.count("square") == 6
        assert all(s.flips[k] for k, i in enumerate(s.items) if result.items[i].folder == "portrait")
        by_batch = {}
        for r in rows:
            by_batch.setdefault(r[0], set()).add(r[1])
        assert all(len(sizes) == 1 for sizes in by_batch.values())  # one bucket per batch
    assert sorted(x.name for x in (tmp_path / "run" / "schedules").iterdir()) == [
        "ep0_batch_schedule.txt", "ep1_batch_schedule.txt", "ep2_batch_schedule.txt"
    ]
