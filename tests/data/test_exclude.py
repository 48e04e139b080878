"""exclude.txt: a folder's images stay in the scan but get 0 samples per epoch, whatever
multiplier applies; read again between epochs; a file that says "no" is an error."""

from __future__ import annotations

from fractions import Fraction

from edlib.data.reread import reread_settings
from edlib.data.scan import scan
from edlib.data.schedule import EpochPlanner
from tests.data.make_images import make_tree, write_text


def test_exclude_txt_wins_over_every_multiplier_and_says_so(tmp_path):
    make_tree(tmp_path, {"keep": 2, "drop": 3}, size=(64, 64))
    write_text(tmp_path / "drop/multiply.txt", "4")
    write_text(tmp_path / "drop/local.yaml", "multiply: 3\n")
    write_text(tmp_path / "drop/drop 0_000.yaml", "multiply: 2\n")  # an image's own multiplier
    write_text(tmp_path / "drop/exclude.txt", "\ufeffblurry, retake later\r\nsecond line\r\n")
    result = scan(tmp_path)
    assert result.ok, result.errors
    drop = result.folder("drop")
    assert drop.settings.exclude and drop.settings.multiply == 0
    assert (drop.sources["multiply"], drop.sources["exclude"]) == ("drop/local.yaml", "drop/exclude.txt")
    assert result.expected_samples() == {"drop": 0, "keep": 2}
    assert result.item_settings(next(i for i, it in enumerate(result.items) if it.path == "drop/drop 0_000.png")).multiply == 0
    warning = next(w for w in result.warnings if w.startswith("drop: "))
    assert warning == (
        'drop: its 3 image(s) are excluded from training by drop/exclude.txt (it says: "blurry, retake later"): '
        "0 samples per epoch; delete drop/exclude.txt (or undo the balance that wrote it) to train them again"
    )
    planner = EpochPlanner(result, resolution=64, seed=1)
    for epoch in range(5):
        assert {result.items[i].folder for i in planner.realise(epoch, batch_size=1).items.tolist()} == {"keep"}


def test_an_exclude_txt_that_says_no_is_an_error_and_misnamed_ones_are_named(tmp_path):
    make_tree(tmp_path, {"a": 1, "b": 1, "c": 1}, size=(64, 64))
    write_text(tmp_path / "a/exclude.txt", "false\n")
    write_text(tmp_path / "b/exclude.txt.txt", "")
    write_text(tmp_path / "c/Excluded.TXT", "")
    result = scan(tmp_path)
    assert result.errors == [
        "a/exclude.txt: this file excludes its folder from training whatever it holds, and it says 'false'; "
        "delete it to train the folder (its text is only a note)"
    ]
    assert "b/exclude.txt.txt: ignored, did you mean exclude.txt? Rename it to exclude.txt to use it" in result.warnings
    assert "c/Excluded.TXT: ignored, did you mean exclude.txt? Rename it to exclude.txt to use it" in result.warnings
    assert not any(f.settings.exclude for f in result.folders)


def test_every_folder_excluded_is_warned_about(tmp_path):
    make_tree(tmp_path, {"a": 1}, size=(64, 64))
    write_text(tmp_path / "a/exclude.txt", "")
    result = scan(tmp_path)
    assert "every folder with images is excluded (exclude.txt): training has nothing to train on" in result.warnings
    assert 'by a/exclude.txt: 0 samples' in " ".join(result.warnings)  # an empty note is not quoted


def test_an_exclude_txt_added_or_removed_mid_run_is_read_at_the_next_epoch(tmp_path):
    make_tree(tmp_path, {"a": 2, "b": 1}, size=(64, 64))
    write_text(tmp_path / "a/multiply.txt", "2")
    result = scan(tmp_path)
    write_text(tmp_path / "a/exclude.txt", "")
    excluded, messages = reread_settings(result)
    assert excluded.folder("a").settings.exclude and excluded.folder("a").settings.multiply == 0
    assert "a/exclude.txt: 2 -> 0" in messages
    (tmp_path / "a/exclude.txt").unlink()
    back, messages = reread_settings(excluded)
    assert back.folder("a").settings.multiply == Fraction(2) and not back.folder("a").settings.exclude
