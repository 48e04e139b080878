"""The preview shows the validation hold-out and counts only the images left to train."""

import json

from edlib.cli import main
from edlib.data.holdout import describe_split, split_validation
from edlib.data.preview import format_preview, preview

from .fake_scan import FakeFolder, fake_scan
from .make_images import write_image

RES = 256


def test_preview_holds_out_what_training_holds_out_and_counts_the_rest():
    scan = fake_scan(FakeFolder("a", 10, 2), FakeFolder("b", 5), FakeFolder("c", 1))
    p = preview(scan, epochs=2, batch_size=2, resolution=RES, seed=4, validation_fraction=0.2)
    train, val = split_validation(scan, 0.2, 4)
    held = {it.path for it in val.items}

    assert held == {it.path for it in p.validation.items} and len(held) == 2 + 1  # c keeps its only image
    assert {f.path: f.images for f in p.folders} == {"a": 8, "b": 4, "c": 1}
    assert float(p.epoch_size) == 8 * 2 + 4 + 1
    for epoch in range(2):
        s = p.realise(epoch)
        assert not held & {p.planner.scan.items[i].path for i in s.items}
        assert s.n_samples - s.n_fill == 21

    data = json.loads(json.dumps(p.to_json()))
    assert sorted(data["validation"]["images"]) == sorted(held)
    assert data["validation"]["folders"] == {"a": 2, "b": 1}
    assert data["validation"]["fraction"] == 0.2
    assert data["validation"]["description"] == describe_split(train, val)
    text = format_preview(p)
    assert "validation hold-out (validation_fraction 0.2)" in text and "a: 2 of 10 held out for validation" in text


def test_without_a_fraction_nothing_is_held_out():
    p = preview(fake_scan(FakeFolder("a", 10)), resolution=RES)
    assert p.validation is None and p.to_json()["validation"] is None
    assert "validation" not in format_preview(p)


def test_cli_preview_shows_the_hold_out(tmp_path, capsys):
    root = tmp_path / "data"
    for i in range(4):
        write_image(root / "faces" / f"f{i}.png", size=(32, 32))
    args = ["preview", str(root), "--resolution", "64", "--validation-fraction", "0.25"]
    assert main([*args, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["validation"]["folders"] == {"faces": 1} and data["folders"][0]["images"] == 3
    assert main([*args, "--write-schedule", str(tmp_path / "schedules")]) == 0
    assert "faces: 1 of 4 held out for validation" in capsys.readouterr().out
    held = data["validation"]["images"][0]
    assert held not in (tmp_path / "schedules" / "ep0_batch_schedule.txt").read_text()
