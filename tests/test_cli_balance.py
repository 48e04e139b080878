"""`edlib balance` as a user runs it: a typo'd folder in the weights file, and weight 0,
which --apply writes as an exclude.txt that scan and preview follow and --undo removes."""

from __future__ import annotations

import json

from tests.data.make_images import make_tree, tree_digest, write_text
from tests.test_cli import edlib


def test_a_typo_in_the_weights_names_the_key_and_the_folders_it_may_mean(tmp_path):
    root = tmp_path / "data"
    make_tree(root, {"character/bob": 2, "character/amy": 2, "ground_truth": 4}, size=(64, 64))
    weights = write_text(tmp_path / "w.yaml", "character/bbo: 2\nground_truth: 1\n")
    r = edlib("balance", root, "--weights", weights)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"{weights}: key matching no folder with images (or above some) under {root}" in r.stderr
    assert "'character/bbo' (did you mean 'character/bob'?)" in r.stderr
    assert "A key is a folder path relative to the data root" in r.stderr and "glob pattern" in r.stderr


def test_weight_zero_applies_as_exclude_txt_seen_by_scan_and_preview_and_undone(tmp_path):
    root = tmp_path / "data"
    make_tree(root, {"subject": 4, "blurry": 3}, size=(64, 64))
    write_text(root / "blurry/multiply.txt", "2\n")
    before = tree_digest(root)
    weights = write_text(tmp_path / "w.yaml", "blurry: 0\n")

    r = edlib("balance", root, "--weights", weights, "--apply")
    assert r.returncode == 0, r.stderr
    assert "Wrote multiply.txt files, exclude.txt in 1 excluded folder(s)" in r.stdout
    assert (root / "blurry/exclude.txt").is_file() and (root / "blurry/multiply.txt").read_text() == "2\n"

    r = edlib("scan", root)
    assert "7 images in 2 folders (3 images in 1 folder(s) excluded by exclude.txt, not trained)" in r.stdout
    assert "blurry: its 3 image(s) are excluded from training by blurry/exclude.txt" in r.stdout
    preview = json.loads(edlib("preview", root, "--json", "--resolution", "64").stdout)
    folders = {f["path"]: f for f in preview["folders"]}
    assert folders["blurry"]["expected_per_epoch"] == 0 and folders["blurry"]["share"] == 0 and folders["blurry"]["excluded"]
    assert set(preview["samples_per_epoch_all"]) == {folders["subject"]["expected_per_epoch"]} == {10}
    assert any("excluded from training by blurry/exclude.txt" in w for w in preview["warnings"])

    r = edlib("balance", root, "--undo")
    assert r.returncode == 0, r.stderr
    assert "removed blurry/exclude.txt (it did not exist before)" in r.stdout
    assert {k: v for k, v in tree_digest(root).items() if not k.startswith(".edlib")} == before
