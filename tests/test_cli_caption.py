"""Captions on the command line, run as a user runs it: `edlib scan` shows example captions
per folder (all of them in --json), and `edlib caption` explains the caption an image trains
with."""

from __future__ import annotations

import json

import pytest

from tests.data.make_images import make_tree, write_text
from tests.test_cli import edlib


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "data"
    make_tree(root, {"subject": 5, "gt": 2}, size=(64, 64))
    write_text(root / "subject/trigger.txt", "zorb\n")
    write_text(root / "subject/subject 0_000.txt", "bob, red hat, standing\n")
    write_text(root / "subject/shuffle_tags.txt", "")
    return root


def test_scan_shows_a_few_captions_per_folder_and_json_has_them_all(root):
    r = edlib("scan", root)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("captions (as trained"))
    assert lines[start + 1 : start + 9] == [
        "  gt",
        "    gt 0_000.png: gt 0",
        "    gt 1_001.png: gt 1",
        "  subject",
        "    subject 0_000.png: zorb, bob, red hat, standing",
        "    subject 1_001.png: zorb, subject 1",
        "    subject 2_002.png: zorb, subject 2",
        "",
    ]
    assert "captions (as trained" not in edlib("scan", root, "--captions", "0").stdout

    report = json.loads(edlib("scan", root, "--json").stdout)
    captions = {it["path"]: it["caption"] for it in report["items"]}
    assert len(captions) == 7 and captions["subject/subject 4_004.png"] == "zorb, subject 4"
    assert captions["subject/subject 0_000.png"] == "zorb, bob, red hat, standing"


def test_caption_explains_an_image_with_its_files_and_shuffling(root, tmp_path):
    r = edlib("caption", root, "subject/subject 0_000.png")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.startswith("subject/subject 0_000.png\n  caption       zorb, bob, red hat, standing\n")
    assert "  trigger       zorb  (subject/trigger.txt)" in out
    assert "  main prompt   bob  (subject/subject 0_000.txt)" in out
    assert "on (subject/shuffle_tags.txt); keep_tokens 1: the trigger and the main prompt stay first;" in out
    examples = [line.strip() for line in out.splitlines() if line.startswith("                  ")]
    assert len(examples) == 3 and all(e.startswith("zorb, bob, ") for e in examples)
    assert "dropout       0 (caption_dropout in the training defaults)" in out

    config = tmp_path / "c.yaml"
    config.write_text(
        f"model: edlib:world\ndata_root: {root}\nrun_dir: {tmp_path / 'run'}\ncaption_dropout: 0.1\n"
        "method: textual_inversion\ntext_encoder_lr: 5.0e-3\n"
        "placeholder_tokens: [{token: zorb, init_word: circle, num_vectors: 2}]\n"
    )
    r = edlib("caption", root, "gt", "--config", config, "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert [e["path"] for e in report["images"]] == ["gt/gt 0_000.png", "gt/gt 1_001.png"]
    assert report["images"][0]["caption_dropout"] == 0.1
    assert report["images"][0]["caption_dropout_source"] == f"caption_dropout in {config}"
    r = edlib("caption", root, "subject/subject 1_001.png", "--config", config)
    assert "text encoder  zorb zorb_1, subject 1  (the method spells out its placeholder tokens)" in r.stdout


def test_caption_limits_long_listings_and_names_a_bad_path(root):
    r = edlib("caption", root, "--limit", "2")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("\n  caption ") == 2 and "... and 5 more image(s) (--limit N shows more, 0 all)" in r.stdout
    r = edlib("caption", root, "subjekt")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "subjekt: no image or folder of that name in the data root" in r.stderr
