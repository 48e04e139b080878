"""Balancing from a weight tree: shares, multipliers, the weights file, apply and undo."""

from fractions import Fraction

import pytest

from edlib.data.balance import (
    apply_balance,
    format_plan,
    load_weights,
    multiplier_text,
    plan_balance,
    starting_weights,
    undo_balance,
)
from edlib.data.types import DataRootError

from .fake_scan import FakeFolder, fake_scan
from .make_images import make_tree, tree_digest, write_text

WORKED_WEIGHTS = {
    "1_character": 3,
    "others": 1,
    "1_character/class1": 4,
    "1_character/class2": 6,
    "others/class1": 4,
    "others/class3": 1,
}
WORKED_FOLDERS = {"1_character/class1": 30, "1_character/class2": 90, "others/class1": 10, "others/class3": 50}


def worked_scan(root="/fake-data-root"):
    return fake_scan(*(FakeFolder(p, n) for p, n in WORKED_FOLDERS.items()), root=root)


def entries(plan):
    return {e.path: e for e in plan.entries}


def test_worked_example_from_issue_2():
    plan = plan_balance(worked_scan(), WORKED_WEIGHTS, epoch_size=1000)
    got = entries(plan)
    assert {p: e.share for p, e in got.items()} == {
        "1_character/class1": Fraction("0.30"),
        "1_character/class2": Fraction("0.45"),
        "others/class1": Fraction("0.20"),
        "others/class3": Fraction("0.05"),
    }
    assert {p: e.text for p, e in got.items()} == {
        "1_character/class1": "10",
        "1_character/class2": "5",
        "others/class1": "20",
        "others/class3": "1",
    }
    assert plan.epoch_size == 1000 and not plan.warnings
    assert "1_character/class2" in format_plan(plan) and "45.0%" in format_plan(plan)
    assert plan.to_json()["folders"][0]["new_multiply"] == 10.0
    assert plan.to_json()["folders"][0]["written"] == "10"


def test_default_epoch_size_is_the_current_one_and_default_weight_is_1():
    scan = fake_scan(FakeFolder("a", 10, 2), FakeFolder("b", 30, Fraction("0.5")), FakeFolder("c/d", 5))
    plan = plan_balance(scan, {})
    assert plan.epoch_size == 20 + 15 + 5
    got = entries(plan)
    assert all(e.share == Fraction(1, 3) for e in got.values())
    assert got["a"].new == Fraction(40, 3) / 10 and got["a"].text == "1.333333"
    assert got["b"].text == "0.444444" and got["c/d"].text == "2.666667"


def test_a_folder_with_images_and_subfolders_competes_with_its_children():
    scan = fake_scan(FakeFolder("set", 10), FakeFolder("set/x", 20), FakeFolder("set/y", 40), FakeFolder("other", 5))
    plan = plan_balance(scan, {"set": 3, "other": 1}, epoch_size=400)
    got = entries(plan)
    # set has 3/4; its own images, x and y share it equally (default weight 1 each)
    assert got["set"].share == got["set/x"].share == got["set/y"].share == Fraction(1, 4)
    assert got["set"].text == "10" and got["set/x"].text == "5" and got["set/y"].text == "2.5"

    plan = plan_balance(scan, {"set": 3, "other": 1, "set/.": 2, "set/y": 0.5}, epoch_size=400)
    got = entries(plan)
    assert got["set"].share == Fraction(3, 4) * Fraction(2, Fraction("3.5"))
    assert got["set/y"].share == Fraction(3, 4) * Fraction("0.5") / Fraction("3.5")


def test_images_in_the_data_root_use_the_dot_key():
    scan = fake_scan(FakeFolder("", 10), FakeFolder("sub", 10))
    got = entries(plan_balance(scan, {".": 3}, epoch_size=100))
    assert got[""].share == Fraction(3, 4) and got[""].text == "7.5"


def test_globs_exact_keys_and_the_last_matching_pattern():
    scan = fake_scan(FakeFolder("chars/bob", 10), FakeFolder("chars/bill", 10), FakeFolder("chars/amy", 10))
    weights = {"chars/*": 2, "chars/b*": 4, "chars/bill": 1}
    got = entries(plan_balance(scan, weights, epoch_size=90))
    assert got["chars/bob"].share == Fraction(4, 7)
    assert got["chars/bill"].share == Fraction(1, 7)
    assert got["chars/amy"].share == Fraction(2, 7)


def test_a_key_naming_no_folder_is_an_error_that_names_it_and_the_closest_folders(tmp_path):
    with pytest.raises(DataRootError) as err:
        plan_balance(worked_scan(), {"1_charcter": 3, "others/class3": 1, "nothing/*": 2}, source="w.yaml")
    message = str(err.value)
    assert message.startswith("w.yaml: keys matching no folder with images")
    assert "'1_charcter' (did you mean '1_character'?)" in message
    assert "'nothing/*' (no folder name is close to it)" in message
    assert "'others/class3'" not in message.split("Folders:")[0]  # a good key is not blamed
    assert "folder path relative to the data root" in message and "glob pattern" in message
    assert "Folders: 1_character, 1_character/class1, 1_character/class2, others, others/class1" in message
    # a folder that exists but holds no images is named as such
    make_tree(tmp_path, {"a": 2})
    (tmp_path / "empty").mkdir()
    from edlib.data.scan import scan

    with pytest.raises(DataRootError, match=r"'empty' \(that folder holds no images, in it or below it\)"):
        plan_balance(scan(tmp_path), {"empty": 1})


def test_weight_zero_excludes_explicitly_in_the_plan():
    scan = fake_scan(FakeFolder("keep", 10), FakeFolder("drop", 10), FakeFolder("drop/sub", 4))
    plan = plan_balance(scan, {"drop": 0}, epoch_size=50)
    got = entries(plan)
    assert got["keep"].share == 1 and got["keep"].text == "5"
    assert got["drop"].excluded and got["drop/sub"].excluded
    assert plan.excluded == ["drop", "drop/sub"]
    assert "weight 0 excludes drop, drop/sub: applying writes an exclude.txt into each" in " ".join(plan.warnings)
    assert "excluded" in format_plan(plan)


def test_weight_zero_applied_writes_exclude_txt_that_the_scan_preview_and_schedule_follow(tmp_path):
    from edlib.data.preview import format_preview, preview
    from edlib.data.scan import format_report, scan

    root = tmp_path / "data"
    make_tree(root, {"keep": 6, "drop": 5, "drop/sub": 3}, size=(64, 64))
    write_text(root / "drop/multiply.txt", "2\n")  # the user's value: kept while excluded
    before = tree_digest(root)

    history = apply_balance(plan_balance(scan(root), {"drop": 0}, epoch_size=12))
    note = (root / "drop/exclude.txt").read_text()
    assert note.startswith("written by edlib balance --apply on ") and f"edlib balance {root} --undo" in note
    assert (root / "drop/sub/exclude.txt").is_file()
    assert (root / "drop/multiply.txt").read_text() == "2\n"
    assert (root / "keep/multiply.txt").read_text() == "2\n"  # 12 samples over 6 images
    assert history.parent == root / ".edlib" / "balance_history"

    excluded = scan(root)
    assert {f.path: (f.settings.exclude, f.settings.multiply) for f in excluded.folders} == {
        "drop": (True, 0), "drop/sub": (True, 0), "keep": (False, 2)
    }
    assert len(excluded.items) == 14  # the images stay listed: nothing moved or deleted
    warning = next(w for w in excluded.warnings if w.startswith("drop: "))
    assert "its 5 image(s) are excluded from training by drop/exclude.txt" in warning
    assert 'it says: "written by edlib balance --apply on' in warning and "0 samples per epoch" in warning
    report = format_report(excluded)
    assert "(8 images in 2 folder(s) excluded by exclude.txt, not trained)" in report
    assert any(line.split()[:3] == ["drop/sub", "3", "excluded"] for line in report.splitlines())

    p = preview(excluded, epochs=3, resolution=64, batch_size=2)
    per_folder = {f.path: f.expected_per_epoch for f in p.folders}
    assert per_folder == {"drop": 0, "drop/sub": 0, "keep": 12} and p.epoch_size == 12
    rows = {line.split()[0]: line.split()[1:] for line in format_preview(p).splitlines()[1:4]}
    assert rows["drop"] == ["5", "excluded", "1", "0", "0.0%"] and rows["keep"][-1] == "100.0%"
    for epoch in range(3):
        trained = {excluded.items[i].folder for i in p.realise(epoch).items.tolist()}
        assert trained == {"keep"}

    lines = undo_balance(root)
    assert "removed drop/exclude.txt (it did not exist before)" in lines
    after = {k: v for k, v in tree_digest(root).items() if not k.startswith(".edlib")}
    assert after == before
    assert not any(f.settings.exclude for f in scan(root).folders)


def test_an_excluded_folder_stays_excluded_until_a_key_names_it_and_undo_puts_the_file_back(tmp_path):
    from edlib.data.scan import scan

    root = tmp_path / "data"
    make_tree(root, {"keep": 4, "drop": 4}, size=(64, 64))
    write_text(root / "drop/exclude.txt", "blurry set, my own note\n")  # excluded by hand

    plan = plan_balance(scan(root), {"keep": 2})
    assert entries(plan)["drop"].excluded and entries(plan)["drop"].was_excluded
    assert "drop stay(s) excluded by exclude.txt: no key of the weights names it" in " ".join(plan.warnings)
    assert format_plan(plan).splitlines()[1].split()[:3] == ["drop", "4", "excluded"]  # current: excluded
    apply_balance(plan)
    assert (root / "drop/exclude.txt").read_text() == "blurry set, my own note\n"  # left as it was

    plan = plan_balance(scan(root), {"drop": 1, "keep": 1}, epoch_size=8)
    assert entries(plan)["drop"].text == "1" and not entries(plan)["drop"].excluded
    assert "drop is/are excluded by exclude.txt now; applying this plan trains it again" in " ".join(plan.warnings)
    apply_balance(plan)
    assert not (root / "drop/exclude.txt").exists()
    assert {f.path: f.settings.multiply for f in scan(root).folders} == {"drop": 1, "keep": 1}

    lines = undo_balance(root)
    assert "restored drop/exclude.txt (the balance had removed it)" in lines
    assert (root / "drop/exclude.txt").read_text() == "blurry set, my own note\n"


def test_starting_weights_are_1_and_0_for_the_node_of_an_excluded_folder(tmp_path):
    from edlib.data.scan import scan

    root = tmp_path / "data"
    make_tree(root, {"keep": 1, "drop": 1, "drop/sub": 1, "out": 1}, size=(64, 64))
    write_text(root / "drop/exclude.txt", "")
    write_text(root / "out/exclude.txt", "")
    weights = starting_weights(scan(root))
    assert weights == {"": 1.0, "drop": 1.0, "drop/.": 0.0, "drop/sub": 1.0, "keep": 1.0, "out": 0.0}
    plan = plan_balance(scan(root), {})  # what the plan does with no weights named
    assert plan.excluded == ["drop", "out"]


def test_an_excluded_folder_whose_local_yaml_sets_multiply_is_not_trained_again_at_that_value(tmp_path):
    """Its local.yaml's multiply wins over a written multiply.txt once exclude.txt is gone:
    a plan that trains it again names that file and is not applied, as for any folder."""
    from edlib.data.scan import scan

    root = tmp_path / "data"
    make_tree(root, {"keep": 4, "drop": 4}, size=(64, 64))
    write_text(root / "drop/local.yaml", "multiply: 3\n")
    write_text(root / "drop/exclude.txt", "")
    before = tree_digest(root)

    plan = plan_balance(scan(root), {"keep": 2})  # drop stays excluded: nothing is written there
    assert plan.overridden == []
    plan = plan_balance(scan(root), {"drop": 1, "keep": 1}, epoch_size=8)
    assert plan.overridden == ["drop/local.yaml"]
    assert "multiply is set in drop/local.yaml, which wins over multiply.txt" in " ".join(plan.warnings)
    with pytest.raises(DataRootError, match="cannot apply: drop/local.yaml set"):
        apply_balance(plan)
    assert tree_digest(root) == before


def test_undo_does_not_overwrite_an_exclude_txt_made_again_after_the_apply(tmp_path):
    from edlib.data.scan import scan

    root = tmp_path / "data"
    make_tree(root, {"keep": 4, "drop": 4}, size=(64, 64))
    write_text(root / "drop/exclude.txt", "first\n")
    apply_balance(plan_balance(scan(root), {"drop": 1}))
    write_text(root / "drop/exclude.txt", "second\n")
    with pytest.raises(DataRootError, match="changed since the balance was applied, not undoing: .*drop/exclude.txt"):
        undo_balance(root)
    assert (root / "drop/exclude.txt").read_text() == "second\n"
    undo_balance(root, force=True)
    assert (root / "drop/exclude.txt").read_text() == "first\n"


def test_weights_given_directly_are_checked_too():
    with pytest.raises(DataRootError, match="weight of 'others' must be a finite number >= 0, found -2"):
        plan_balance(worked_scan(), {"others": -2})
    got = entries(plan_balance(worked_scan(), {"./others/": 0.5, "1_character": 1.5}, epoch_size=100))
    assert got["others/class1"].share == Fraction(1, 8)


def test_all_children_weighing_zero_is_an_error():
    with pytest.raises(DataRootError, match="every subfolder of 1_character has weight 0"):
        plan_balance(worked_scan(), {"1_character/class1": 0, "1_character/class2": 0})


def test_written_values_are_exact_when_a_short_exact_decimal_exists():
    assert multiplier_text(Fraction(1, 2)) == "0.5" and multiplier_text(Fraction(9, 4)) == "2.25"
    assert multiplier_text(Fraction(1, 1024)) == "0.0009765625"  # exact, though 10 decimals
    assert multiplier_text(Fraction(1000001, 1000000)) == "1.000001"
    assert multiplier_text(Fraction(123456789, 10**12)) == "0.000123456789"
    assert multiplier_text(Fraction(29, 15)) == "1.933333"  # no exact decimal: 6 decimals
    assert multiplier_text(Fraction(1, 3 * 10**9)) == "0.000000000333333"  # 6 significant digits below 1
    assert multiplier_text(Fraction(1, 2**60)) == "0.000000000000000000867362"  # exact needs 42 digits
    assert multiplier_text(Fraction(7)) == "7" and multiplier_text(Fraction(250)) == "250"
    for m in (Fraction(1, 2), Fraction(9, 4), Fraction(1, 1024), Fraction(3, 80)):
        assert Fraction(multiplier_text(m)) == m


def test_tiny_shares_are_never_rounded_to_zero():
    scan = fake_scan(FakeFolder("big", 10), FakeFolder("tiny", 1000))
    plan = plan_balance(scan, {"big": 1, "tiny": 0.000001}, epoch_size=10)
    tiny = entries(plan)["tiny"]
    assert Fraction(tiny.text) > 0 and tiny.text == "0.00000000999999"
    assert any("tiny" in w and "< 1" in w for w in plan.warnings)


def test_load_weights(tmp_path):
    good = write_text(tmp_path / "w.yaml", "1_character: 3\nothers: 1.5\n'others/*': 0\n./x/: 2\n")
    assert load_weights(good) == {"1_character": 3, "others": 1.5, "others/*": 0, "x": 2}
    for text, found in [
        ("a: abc\n", "'abc'"),
        ("a: -1\n", "-1"),
        ("a: .nan\n", "nan"),
        ("a: true\n", "True"),
        ("- a\n- b\n", "expected a mapping"),
        ("a: [1\n", "not a readable YAML file"),
    ]:
        bad = write_text(tmp_path / "bad.yaml", text)
        with pytest.raises(DataRootError, match="bad.yaml") as err:
            load_weights(bad)
        assert found in str(err.value)
    with pytest.raises(DataRootError, match="not found"):
        load_weights(tmp_path / "missing.yaml")


def test_apply_and_undo_roundtrip(tmp_path):
    make_tree(tmp_path, WORKED_FOLDERS, size=(16, 16))
    write_text(tmp_path / "others/class1/multiply.txt", "0.5\r\n", bom=True)  # the user's own file
    before = tree_digest(tmp_path)

    plan = plan_balance(worked_scan(tmp_path), WORKED_WEIGHTS, epoch_size=1000)
    history = apply_balance(plan)
    assert history.parent == tmp_path / ".edlib" / "balance_history"
    for path, text in {"1_character/class1": "10", "1_character/class2": "5", "others/class1": "20",
                       "others/class3": "1"}.items():
        assert (tmp_path / path / "multiply.txt").read_text() == text + "\n"
    # a second apply stacks on the first; undo goes back one at a time
    plan2 = plan_balance(worked_scan(tmp_path), {"others": 3}, epoch_size=100)
    apply_balance(plan2)
    assert (tmp_path / "others/class3/multiply.txt").read_text() == entries(plan2)["others/class3"].text + "\n"

    assert sorted(undo_balance(tmp_path)) == sorted(
        f"restored {p}/multiply.txt" for p in WORKED_FOLDERS
    )
    assert (tmp_path / "others/class3/multiply.txt").read_text() == "1\n"
    lines = undo_balance(tmp_path)
    assert "restored others/class1/multiply.txt" in lines
    assert "removed 1_character/class1/multiply.txt (it did not exist before)" in lines
    after = {p: h for p, h in tree_digest(tmp_path).items() if not p.startswith(".edlib")}
    assert after == before  # byte for byte, the user's BOM and CRLF included
    with pytest.raises(DataRootError, match="no balance history"):
        undo_balance(tmp_path)


def test_undo_keeps_a_file_edited_after_apply(tmp_path):
    make_tree(tmp_path, WORKED_FOLDERS, size=(16, 16))
    apply_balance(plan_balance(worked_scan(tmp_path), WORKED_WEIGHTS, epoch_size=1000))
    write_text(tmp_path / "others/class3/multiply.txt", "7\n")
    with pytest.raises(DataRootError, match="others/class3/multiply.txt"):
        undo_balance(tmp_path)
    assert (tmp_path / "others/class3/multiply.txt").read_text() == "7\n"
    assert len(undo_balance(tmp_path, force=True)) == 4
    assert not (tmp_path / "others/class3/multiply.txt").exists()


def test_end_to_end_balance_writes_files_the_scanner_reads_back(tmp_path):
    from edlib.data.preview import preview
    from edlib.data.scan import scan

    root = tmp_path / "data"
    make_tree(root, WORKED_FOLDERS, size=(64, 64))
    weights = write_text(tmp_path / "weights.yaml", "".join(f"{k}: {v}\n" for k, v in WORKED_WEIGHTS.items()))
    first = scan(root)
    assert first.ok and {f.settings.multiply for f in first.folders} == {1}

    plan = plan_balance(first, load_weights(weights), epoch_size=1000)
    apply_balance(plan)
    second = scan(root)
    assert second.ok and len(second.items) == len(first.items)
    assert not [w for w in second.warnings if ".edlib" in w]  # the history is not data
    assert {f.path: f.settings.multiply for f in second.folders} == {
        "1_character/class1": 10, "1_character/class2": 5, "others/class1": 20, "others/class3": 1
    }
    assert preview(second, resolution=64).epoch_size == 1000

    undo_balance(root)
    third = scan(root)
    assert {f.settings.multiply for f in third.folders} == {1}
    assert not any((root / p / "multiply.txt").exists() for p in WORKED_FOLDERS)
