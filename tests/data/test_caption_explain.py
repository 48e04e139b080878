"""`explain_caption`: the caption an image trains with, its parts and their files, and the
variation training adds; checked against the trainer's own per-sample captions."""

from __future__ import annotations

import random

import pytest

from edlib.data.caption_explain import (
    CaptionRules,
    explain_caption,
    format_explanation,
    item_training_caption,
    select_items,
)
from edlib.data.scan import scan
from edlib.data.types import DataRootError

from .make_images import make_tree, write_text


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "data"
    make_tree(root, {"subject": 3, "gt": 3}, size=(64, 64))
    write_text(root / "subject/trigger.txt", "zorb\n")
    write_text(root / "subject/subject 0_000.txt", "bob, red hat, standing, smiling\n")
    write_text(root / "subject/shuffle_tags.txt", "")
    write_text(root / "gt/local.yaml", "tags:\n  - tag: photo\n    weight: 2\n  - tag: daylight\ncond_dropout: 0.25\n")
    write_text(root / "gt/gt 1_001.yaml", "main_prompt: a dog\ntags: [grass]\n")
    return scan(root)


def index(result, path):
    return next(i for i, it in enumerate(result.items) if it.path == path)


def test_each_part_is_named_with_the_file_it_came_from(data):
    e = explain_caption(data, index(data, "subject/subject 0_000.png"))
    assert e.caption == "zorb, bob, red hat, standing, smiling"
    assert e.trigger == ("zorb", "subject/trigger.txt")
    assert e.main_prompt == ("bob", "subject/subject 0_000.txt")
    assert [(t, s) for t, _, s in e.tags] == [(t, "subject/subject 0_000.txt") for t in ("red hat", "standing", "smiling")]
    assert e.shuffle and e.shuffle_source == "subject/shuffle_tags.txt" and e.keep_tokens == 1
    assert e.dropout == 0 and e.dropout_source == "caption_dropout in default"

    e = explain_caption(data, index(data, "gt/gt 1_001.png"), rules_source="c.yaml")
    assert e.caption == "a dog, photo, grass, daylight"  # tags sorted heaviest first
    assert e.main_prompt == ("a dog", "gt/gt 1_001.yaml")
    assert e.tags == [("photo", 2.0, "gt/local.yaml"), ("grass", 1.0, "gt/gt 1_001.yaml"), ("daylight", 1.0, "gt/local.yaml")]
    assert not e.shuffle and e.examples == []
    assert e.dropout == 0.25 and e.dropout_source == "gt/local.yaml"
    text = format_explanation(e)
    assert "about 25% of samples train with an empty caption" in text
    assert "shuffling     off: shuffle_caption is off in c.yaml" in text

    e = explain_caption(data, index(data, "subject/subject 1_001.png"))
    assert e.main_prompt == ("subject 1", "the file name, up to its first _") and e.tags == []


def test_examples_and_every_training_caption_follow_the_explained_rule(data):
    """What `edlib caption` says about shuffling holds for the captions the trainer makes
    (`edlib.train.batches.batch_captions`, the same per-sample function), over many samples."""
    from edlib.train.batches import LocalBatch, batch_captions

    i = index(data, "subject/subject 0_000.png")
    e = explain_caption(data, i, examples=5)
    assert len(e.examples) == 5 and len(set(e.examples)) > 1
    config = CaptionRules(shuffle_caption=False, keep_tokens=1, caption_dropout=0.2)
    seen = set()
    for epoch in range(60):
        batch = LocalBatch(epoch, 0, (64, 64), (0, 1), (i, i), (False, False))
        seen.update(batch_captions(data, batch, config, seed=3))
    assert "" in seen  # the dropout of the config
    for caption in (seen - {""}) | set(e.examples):
        parts = caption.split(", ")
        assert parts[:2] == ["zorb", "bob"] and sorted(parts[2:]) == ["red hat", "smiling", "standing"]
    assert seen - {""} >= set(e.examples) - {""}  # the examples are orders training draws too

    # keep_tokens 0 shuffles the main prompt as well; the trigger always stays first
    rules = CaptionRules(shuffle_caption=True, keep_tokens=0)
    drawn = {item_training_caption(data, i, random.Random(k), rules) for k in range(40)}
    assert {c.split(", ")[0] for c in drawn} == {"zorb"} and {c.split(", ")[1] for c in drawn} > {"bob"}
    assert "the main prompt is shuffled with the tags" in format_explanation(explain_caption(data, i, rules))


def test_the_shortcut_for_methods_that_keep_captions_holds():
    """`edlib caption --config` asks the method for its caption changes only when the method
    is not `full`: full fine-tuning and LoRA must keep the base class's unchanged captions."""
    from edlib.model.methods import FullFineTune, LoraMethod, Method

    assert FullFineTune.prepare_captions is Method.prepare_captions
    assert LoraMethod.prepare_captions is Method.prepare_captions


def test_paths_select_images_and_folders_or_say_why_not(data):
    root = data.root
    assert select_items(data, []) == list(range(6))
    assert [data.items[i].path for i in select_items(data, ["gt"])] == ["gt/gt 0_000.png", "gt/gt 1_001.png", "gt/gt 2_002.png"]
    assert select_items(data, [str(root / "gt" / "gt 0_000.png")]) == [index(data, "gt/gt 0_000.png")]
    assert select_items(data, ["."]) == list(range(6))
    with pytest.raises(DataRootError, match="gt/local.yaml: not an image edlib trains on"):
        select_items(data, ["gt/local.yaml"])
    with pytest.raises(DataRootError, match="nothing: no image or folder of that name"):
        select_items(data, ["nothing"])
