"""reread_settings: what the trainer calls between epochs to pick up edited folder files."""

import logging
from fractions import Fraction

from edlib.data.reread import reread_settings
from edlib.data.scan import scan
from tests.data.make_images import make_tree, write_text


def test_changed_values_are_applied_and_logged(tmp_path, caplog):
    make_tree(tmp_path, {"a/b": 2, "c": 1})
    write_text(tmp_path / "a" / "b" / "multiply.txt", "1")
    result = scan(tmp_path)
    write_text(tmp_path / "a" / "b" / "multiply.txt", "2.5")
    write_text(tmp_path / "c" / "loss_scale.txt", "0.5")
    with caplog.at_level(logging.INFO, logger="edlib.data"):
        new, messages = reread_settings(result)
    assert new.folder("a/b").settings.multiply == Fraction(5, 2)
    assert new.folder("c").settings.loss_scale == 0.5
    assert messages == ["a/b/multiply.txt: 1 -> 2.5", "c/loss_scale.txt: 1.0 -> 0.5"]
    assert [r.getMessage() for r in caplog.records] == messages
    assert new.items == result.items
    assert result.folder("a/b").settings.multiply == 1  # the old result is not changed


def test_bad_new_value_keeps_the_previous_value(tmp_path):
    make_tree(tmp_path, {"a": 2})
    write_text(tmp_path / "a" / "multiply.txt", "3")
    write_text(tmp_path / "a" / "flip_p.txt", "0.5")
    result = scan(tmp_path)
    write_text(tmp_path / "a" / "multiply.txt", "three")
    write_text(tmp_path / "a" / "flip_p.txt", "0.25")
    new, messages = reread_settings(result)
    assert new.folder("a").settings.multiply == 3
    assert new.folder("a").settings.flip_p == 0.25
    assert messages == [
        "a/multiply.txt: multiply must be a number, found 'three'; keeping the previous value",
        "a/flip_p.txt: 0.5 -> 0.25",
    ]
    # fixed again: applied
    write_text(tmp_path / "a" / "multiply.txt", "0.5")
    newer, messages = reread_settings(new)
    assert newer.folder("a").settings.multiply == Fraction(1, 2)
    assert messages == ["a/multiply.txt: 3 -> 0.5"]


def test_bad_global_yaml_value_keeps_previous_inherited_value(tmp_path):
    make_tree(tmp_path, {"p/kid": 1})
    write_text(tmp_path / "p" / "global.yaml", "multiply: 2\n")
    result = scan(tmp_path)
    assert result.folder("p/kid").settings.multiply == 2
    write_text(tmp_path / "p" / "global.yaml", "multiply: lots\n")
    new, messages = reread_settings(result)
    assert new.folder("p/kid").settings.multiply == 2
    assert messages == ["p/global.yaml (multiply): multiply must be a number, found 'lots'; keeping the previous value"]


def test_removed_file_returns_to_default_and_trigger_updates_captions(tmp_path):
    make_tree(tmp_path, {"a": 2})
    write_text(tmp_path / "a" / "multiply.txt", "4")
    write_text(tmp_path / "a" / "trigger.txt", "ohwx")
    result = scan(tmp_path)
    assert result.items[0].caption.text() == "ohwx, a 0"
    (tmp_path / "a" / "multiply.txt").unlink()
    write_text(tmp_path / "a" / "trigger.txt", "zkz")
    new, messages = reread_settings(result)
    assert new.folder("a").settings.multiply == 1
    assert [i.caption.text() for i in new.items] == ["zkz, a 0", "zkz, a 1"]
    assert "a/multiply.txt: 4 -> 1" in messages and "a/trigger.txt: ohwx -> zkz" in messages


def test_vanished_images_are_dropped(tmp_path):
    make_tree(tmp_path, {"a": 3, "b": 1})
    result = scan(tmp_path)
    quarantine = tmp_path.parent / f"{tmp_path.name}-quarantine"
    quarantine.mkdir()
    (tmp_path / "a" / "a 1_001.png").rename(quarantine / "a 1_001.png")
    (tmp_path / "b" / "b 0_000.png").rename(quarantine / "b 0_000.png")
    new, messages = reread_settings(result)
    assert [i.path for i in new.items] == ["a/a 0_000.png", "a/a 2_002.png"]
    assert [(f.path, f.images) for f in new.folders] == [("a", 2)]
    assert messages == ["2 image(s) no longer in the data root are dropped (e.g. a/a 1_001.png)"]


def test_nothing_changed_gives_no_messages(tmp_path):
    make_tree(tmp_path, {"a": 1})
    write_text(tmp_path / "a" / "local.yaml", "multiply: 2\nflip_p: 0.5\n")
    result = scan(tmp_path)
    new, messages = reread_settings(result)
    assert messages == [] and new == result


def test_broken_local_yaml_keeps_all_its_values_but_txt_files_still_apply(tmp_path):
    make_tree(tmp_path, {"a": 1})
    write_text(tmp_path / "a" / "local.yaml", "multiply: 2\nflip_p: 0.5\n")
    write_text(tmp_path / "a" / "loss_scale.txt", "2")
    result = scan(tmp_path)
    write_text(tmp_path / "a" / "local.yaml", "multiply: [2\n")  # saved half-way through an edit
    write_text(tmp_path / "a" / "loss_scale.txt", "3")
    new, messages = reread_settings(result)
    s = new.folder("a").settings
    assert (s.multiply, s.flip_p, s.loss_scale) == (2, 0.5, 3.0)
    assert messages[0].startswith("a/local.yaml: not valid YAML") and messages[0].endswith("keeping the previous value")
    assert messages[1:] == ["a/loss_scale.txt: 2.0 -> 3.0"]


def test_bad_value_in_lower_layer_does_not_block_a_good_txt_value(tmp_path):
    # loss_scale.txt is above local.yaml (EveryDream2's order), so a bad loss_scale in
    # local.yaml does not keep the previous value when loss_scale.txt has a good one
    make_tree(tmp_path, {"a": 1})
    write_text(tmp_path / "a" / "local.yaml", "loss_scale: 2\n")
    result = scan(tmp_path)
    write_text(tmp_path / "a" / "local.yaml", "loss_scale: x\n")
    write_text(tmp_path / "a" / "loss_scale.txt", "4")
    new, messages = reread_settings(result)
    assert new.folder("a").settings.loss_scale == 4
    assert "a/loss_scale.txt: 2.0 -> 4.0" in messages


def test_bad_value_in_the_winning_local_yaml_keeps_the_previous_value(tmp_path):
    # local.yaml is above multiply.txt: a bad multiply there keeps the value in use
    make_tree(tmp_path, {"a": 1})
    write_text(tmp_path / "a" / "local.yaml", "multiply: 2\n")
    result = scan(tmp_path)
    write_text(tmp_path / "a" / "local.yaml", "multiply: x\n")
    write_text(tmp_path / "a" / "multiply.txt", "4")
    new, messages = reread_settings(result)
    assert new.folder("a").settings.multiply == 2
    assert messages == ["a/local.yaml (multiply): multiply must be a number, found 'x'; keeping the previous value"]
