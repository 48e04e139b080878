"""EveryDream2 data roots read as EveryDream2 reads them (issue 20).

The expected captions and settings below are what EveryDream2's own data code
(victorchall/EveryDream2trainer, data/dataset.py and data/image_train_item.py at main,
commit 5098db8: `Dataset.from_path(root).image_train_items(...)`, then each item's
`caption.get_caption()`, `multiplier`, `flip.p`, `loss_scale`, `cond_dropout`, `batch_id`)
gives on the same small roots; they were checked by running that code on them. Where edlib
deliberately differs, the test says so (docs/DESIGN.md, "EveryDream2 file -> what edlib does").
"""

import random
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest

from edlib.data.balance import apply_balance, plan_balance
from edlib.data.captions import training_caption
from edlib.data.reread import reread_settings
from edlib.data.scan import scan
from edlib.data.schedule import EpochPlanner
from edlib.data.types import Caption, DataRootError, Tag
from tests.data.make_images import write_image, write_text


def at(result, path):
    index = next(i for i, it in enumerate(result.items) if it.path == path)
    return result.items[index], result.item_settings(index)


def caption(result, path) -> str:
    return at(result, path)[0].caption.text()


def test_per_image_yaml_settings_apply_to_that_image(tmp_path):
    write_image(tmp_path / "a" / "img.png", size=(64, 64))
    write_text(tmp_path / "a" / "img.yaml", "main_prompt: x\nmultiply: 3\nflip_p: 1.0\nloss_scale: 4\n")
    write_image(tmp_path / "a" / "other.png", size=(64, 64))
    write_text(tmp_path / "a" / "flip_p.txt", "0.2")
    result = scan(tmp_path)
    assert result.ok, result.errors
    item, settings = at(result, "a/img.png")
    assert item.caption == Caption("x")
    assert (settings.multiply, settings.flip_p, settings.loss_scale) == (3, 1.0, 4.0)
    _, other = at(result, "a/other.png")
    assert (other.multiply, other.flip_p, other.loss_scale) == (1, 0.2, 1.0)
    # the schedule uses them: img.png three times per epoch, always flipped
    planner = EpochPlanner(result, resolution=64, seed=1)
    schedule = planner.realise(0, batch_size=1)
    index = [it.path for it in result.items].index("a/img.png")
    mine = schedule.items == index
    assert mine.sum() == 3 and schedule.flips[mine].all()
    assert planner.counts(0, batch_size=1).folder_samples.tolist() == [4]


def test_folder_caption_keys_complete_the_captions(tmp_path):
    write_image(tmp_path / "a" / "hello.png", size=(64, 64))
    write_text(tmp_path / "a" / "hello.txt", "hello")
    write_text(tmp_path / "a" / "local.yaml", "tags: [folder tag]\n")
    write_image(tmp_path / "b" / "x.png", size=(64, 64))
    write_text(tmp_path / "b" / "x.txt", "b text")
    write_text(tmp_path / "b" / "global.yaml", "tags: [folder tag]\nmain_prompt: gmain\n")
    write_text(tmp_path / "b" / "local.yaml", "tags: [local tag]\n")
    write_image(tmp_path / "b" / "sub" / "y.png", size=(64, 64))
    result = scan(tmp_path)
    assert caption(result, "a/hello.png") == "hello, folder tag"
    # the image's own main prompt wins; local tags come before global ones
    assert caption(result, "b/x.png") == "b text, local tag, folder tag"
    # global.yaml reaches subfolders; its main prompt stands in for the file name
    assert caption(result, "b/sub/y.png") == "gmain, folder tag"
    assert "folder captions (main_prompt/tags/caption in local.yaml or global.yaml): a/local.yaml, " in (
        "\n".join(result.everydream2)
    )


def test_tags_without_main_prompt_use_the_file_name(tmp_path):
    write_image(tmp_path / "ted_1.png", size=(64, 64))
    write_text(tmp_path / "ted_1.yaml", "tags: [alpha, beta]\n")
    write_image(tmp_path / "ted, smiling_2.png", size=(64, 64))
    write_text(tmp_path / "ted, smiling_2.yaml", "tags: [alpha]\n")
    result = scan(tmp_path)
    assert caption(result, "ted_1.png") == "ted, alpha, beta"
    assert caption(result, "ted, smiling_2.png") == "ted, smiling, alpha"  # the file name is a caption too
    assert not any("empty" in w for w in result.warnings)


def test_the_caption_key(tmp_path):
    write_image(tmp_path / "a.png", size=(64, 64))
    write_text(tmp_path / "a.yaml", 'caption: "main text, tag1, tag2"\n')
    write_image(tmp_path / "b.png", size=(64, 64))
    write_text(tmp_path / "b.yaml", 'caption: "main text, tag1, tag2"\nmain_prompt: mp\ntags: [t3]\n')
    write_image(tmp_path / "c.png", size=(64, 64))
    write_text(tmp_path / "c.yaml", "caption:\n  main_prompt: nested\n  tags: [n1]\n")
    result = scan(tmp_path)
    assert caption(result, "a.png") == "main text, tag1, tag2"
    assert caption(result, "b.png") == "main text, tag1, tag2, t3"  # caption's main prompt wins, tags pooled
    assert caption(result, "c.png") == "nested, n1"
    assert not result.warnings
    assert "'caption:' key in sidecars: 3 files" in result.everydream2


def test_weighted_tags_are_ordered_by_weight_and_weigh_in_shuffling(tmp_path):
    write_image(tmp_path / "w.png", size=(64, 64))
    write_text(tmp_path / "w.yaml", "main_prompt: ted\ntags:\n  - smiling\n  - tag: red shirt\n    weight: 2.0\n")
    result = scan(tmp_path)
    item, _ = at(result, "w.png")
    assert item.caption.text() == "ted, red shirt, smiling"
    rng = random.Random(5)
    firsts = Counter(training_caption(item.caption, rng, shuffle_tags=True).split(", ")[1] for _ in range(6000))
    # EveryDream2 draws the next tag with probability proportional to its weight: 2/3 here
    assert abs(firsts["red shirt"] / 6000 - 2 / 3) < 0.03


def test_max_caption_length_cuts_a_weighted_shuffle_at_whole_tags():
    tags = (Tag("aaaa", 3.0), Tag("bbbb"), Tag("cccc"))
    cap = Caption("main", tags, max_length=14)
    seen = set()
    for seed in range(200):
        text = training_caption(cap, random.Random(seed), shuffle_tags=True)
        parts = text.split(", ")
        # budget 14 - len("main") = 10: a tag is added while the tags so far are shorter than
        # 10 characters, so two 4-letter tags ("xxxx, yyyy" is 10) and no third
        assert parts[0] == "main" and len(parts) == 3
        seen.add(tuple(parts[1:]))
    assert len(seen) > 3
    assert cap.text() == "main, aaaa, bbbb, cccc"  # unshuffled: every tag, as in EveryDream2


def test_comma_captions_in_text_files_are_split_stripped_and_deduplicated(tmp_path):
    write_image(tmp_path / "bob.png", size=(64, 64))
    write_text(tmp_path / "bob.txt", "bob,  blue hat ,blue hat, standing")
    result = scan(tmp_path)
    item, _ = at(result, "bob.png")
    assert item.caption == Caption("bob", (Tag("blue hat"), Tag("standing")))
    assert item.caption.text() == "bob, blue hat, standing"
    assert "repeated tags dropped: 1 caption" in result.everydream2


def test_text_and_yaml_captions_of_one_image_merge(tmp_path):
    write_image(tmp_path / "both.png", size=(64, 64))
    write_text(tmp_path / "both.txt", "txt main, t1")
    write_text(tmp_path / "both.yaml", "main_prompt: yaml main\ntags: [t2]\n")
    result = scan(tmp_path)
    assert caption(result, "both.png") == "yaml main, t2, t1"


def test_precedence_in_one_folder_follows_everydream2(tmp_path):
    write_image(tmp_path / "a" / "hello.png", size=(64, 64))
    write_text(tmp_path / "a" / "local.yaml", "multiply: 2\nflip_p: 0.6\nloss_scale: 0.5\nbatch_id: yl\ncond_dropout: 0.3\n")
    for name, value in [("multiply", "3"), ("flip_p", "0.2"), ("loss_scale", "0.7"), ("batch_id", "bt"), ("cond_dropout", "0.1")]:
        write_text(tmp_path / "a" / f"{name}.txt", value)
    result = scan(tmp_path)
    s = result.folder("a").settings
    # local.yaml beats multiply.txt, flip_p.txt and cond_dropout.txt ...
    assert (s.multiply, s.flip_p, s.cond_dropout) == (2, 0.6, 0.3)
    # ... and loss_scale.txt and batch_id.txt beat local.yaml
    assert (s.loss_scale, s.batch_id) == (0.7, "bt")
    assert "multiply is set in both a/local.yaml (2) and a/multiply.txt (3); a/local.yaml wins (EveryDream2's order)" in (
        result.warnings
    )


def test_shuffling_keeps_the_main_prompt_first(tmp_path):
    write_image(tmp_path / "m.png", size=(64, 64))
    write_text(tmp_path / "m.txt", "main part, t1, t2, t3, t4")
    result = scan(tmp_path)
    item, _ = at(result, "m.png")
    rng = random.Random(0)
    shuffles = [training_caption(item.caption, rng, shuffle_tags=True).split(", ") for _ in range(1000)]
    assert all(parts[0] == "main part" for parts in shuffles)
    assert Counter(parts[1] for parts in shuffles).keys() == {"t1", "t2", "t3", "t4"}  # the tags do move


def test_empty_caption_file_and_main_prompt_list(tmp_path):
    write_image(tmp_path / "e" / "empty_1.png", size=(64, 64))
    write_text(tmp_path / "e" / "empty_1.txt", "")
    write_image(tmp_path / "e" / "lead_1.png", size=(64, 64))
    write_text(tmp_path / "e" / "lead_1.txt", ", a, b")
    write_image(tmp_path / "e" / "lst.png", size=(64, 64))
    write_text(tmp_path / "e" / "lst.yaml", "main_prompt: [first, second]\n")
    write_text(tmp_path / "e" / "local.yaml", "main_prompt: lm\n")
    result = scan(tmp_path)
    assert caption(result, "e/empty_1.png") == "lm"  # the folder's main prompt before the file name
    assert caption(result, "e/lead_1.png") == "lm, a, b"
    assert caption(result, "e/lst.png") == "first"


def test_shuffle_tags_is_on_when_any_file_turns_it_on(tmp_path):
    write_image(tmp_path / "g" / "a.png", size=(64, 64))
    write_image(tmp_path / "g" / "sub" / "b.png", size=(64, 64))
    write_text(tmp_path / "g" / "global.yaml", "shuffle_tags: true\n")
    write_image(tmp_path / "s" / "d.png", size=(64, 64))
    write_text(tmp_path / "s" / "d.yaml", "main_prompt: dd\nshuffle_tags: false\n")
    write_text(tmp_path / "s" / "local.yaml", "shuffle_tags: true\n")
    write_image(tmp_path / "t" / "c.png", size=(64, 64))
    write_text(tmp_path / "t" / "shuffle_tags.txt", "false")
    result = scan(tmp_path)
    assert at(result, "g/a.png")[1].shuffle_tags
    # Deliberate: global.yaml reaches subfolders as EveryDream2's DATA.md says (its code
    # drops shuffle_tags below the folder of the global.yaml, and for file-name captions)
    assert at(result, "g/sub/b.png")[1].shuffle_tags
    assert at(result, "s/d.png")[1].shuffle_tags  # a sidecar's false does not undo local.yaml's true
    # Deliberate: edlib reads shuffle_tags.txt; "false" is off (EveryDream2: any such file is on)
    assert not at(result, "t/c.png")[1].shuffle_tags


def test_deliberate_strictness_is_kept(tmp_path):
    write_image(tmp_path / "a.png", size=(64, 64))
    write_text(tmp_path / "a.yaml", "main_prompt: a\nmultiply: 0\nflip_p: 2\n")
    write_image(tmp_path / "b.png", size=(64, 64))
    write_text(tmp_path / "b.yaml", raw=b"main_prompt: caf\xe9\n")
    write_text(tmp_path / "flip_p.txt", "0.25")
    result = scan(tmp_path)
    assert "a.yaml (multiply): multiply must be > 0, found 0" in result.errors
    assert "a.yaml (flip_p): flip_p is a probability between 0 and 1, found 2" in result.errors
    assert any(e.startswith("b.yaml: not valid UTF-8") for e in result.errors)
    _, settings = at(result, "a.png")
    assert (settings.multiply, settings.flip_p) == (1, 0.25)  # bad values: the folder's apply


def test_per_image_batch_id_groups_batches(tmp_path):
    for i in range(4):
        write_image(tmp_path / f"p{i}.png", size=(64, 64))
        write_text(tmp_path / f"p{i}.yaml", f"main_prompt: p{i}\nbatch_id: {'pair' if i < 2 else 'other'}\n")
    result = scan(tmp_path)
    schedule = EpochPlanner(result, resolution=64, seed=3).realise(0, batch_size=2)
    paths = [it.path for it in result.items]
    batches = {frozenset(paths[i] for i in b.items) for b in schedule}
    assert batches == {frozenset({"p0.png", "p1.png"}), frozenset({"p2.png", "p3.png"})}


def _multiplier_root(root, with_overrides: bool):
    """Folder a: 10 images, multiply.txt 1; with overrides, 4 of them say multiply 0.5 and
    one 2.5 in their sidecars. Folder b: 6 images at 0.5, no overrides."""
    for i in range(10):
        write_image(root / "a" / f"a{i}.png", size=(64, 64))
        if with_overrides and i < 5:
            write_text(root / "a" / f"a{i}.yaml", f"main_prompt: a{i}\nmultiply: {2.5 if i == 4 else 0.5}\n")
    for i in range(6):
        write_image(root / "b" / f"b{i}.png", size=(64, 64))
    write_text(root / "a" / "multiply.txt", "1")
    write_text(root / "b" / "multiply.txt", "0.5")
    return scan(root)


def test_per_image_multipliers_are_drawn_with_exact_expectation(tmp_path):
    result = _multiplier_root(tmp_path, with_overrides=True)
    planner = EpochPlanner(result, resolution=64, seed=11)
    paths = [it.path for it in result.items]
    half = [paths.index(f"a/a{i}.png") for i in range(4)]
    twice_and_a_half = paths.index("a/a4.png")
    plain = [paths.index(f"a/a{i}.png") for i in range(5, 10)]
    epochs = 400
    totals = np.zeros(len(paths))
    for epoch in range(epochs):
        schedule = planner.realise(epoch, batch_size=1)
        counts = np.bincount(schedule.items, minlength=len(paths))
        totals += counts
        assert counts[half].sum() == 2  # the four 0.5 images form one draw: exactly 2 per epoch
        assert counts[half].max() == 1
        assert counts[twice_and_a_half] in (2, 3)
        assert (counts[plain] == 1).all()
        # the preview's counts are the realisation's
        assert planner.counts(epoch, batch_size=1).folder_samples.tolist() == [
            int(counts[[paths.index(f"a/a{i}.png") for i in range(10)]].sum()),
            int(counts[[paths.index(f"b/b{i}.png") for i in range(6)]].sum()),
        ]
    assert abs(totals[twice_and_a_half] / epochs - 2.5) < 0.1  # sd of the mean 0.025
    assert all(abs(totals[i] / epochs - 0.5) < 0.1 for i in half)
    assert result.expected_samples() == {"a": Fraction(4 * 1, 2) + Fraction(5, 2) + 5, "b": 3}


def test_per_image_multipliers_leave_other_draws_alone_and_repeat_on_resume(tmp_path):
    with_ = _multiplier_root(tmp_path / "with", with_overrides=True)
    without = _multiplier_root(tmp_path / "without", with_overrides=False)

    def drawn(result, planner, epoch, folder):
        items = planner.realise(epoch, batch_size=1).items
        return sorted(result.items[i].path for i in items if result.items[i].folder == folder)

    p_with, p_without = EpochPlanner(with_, resolution=64, seed=7), EpochPlanner(without, resolution=64, seed=7)
    for epoch in range(5):
        # folder b has no per-image multiplier: its draw does not depend on folder a's
        assert drawn(with_, p_with, epoch, "b") == drawn(without, p_without, epoch, "b")
        # a new planner (a preview, or a resumed run) realises the same epoch
        again = EpochPlanner(scan(tmp_path / "with"), resolution=64, seed=7).realise(epoch, batch_size=2)
        first = p_with.realise(epoch, batch_size=2)
        assert np.array_equal(again.items, first.items) and np.array_equal(again.flips, first.flips)


def test_folder_caption_keys_are_reread_between_epochs(tmp_path):
    write_image(tmp_path / "a" / "x.png", size=(64, 64))
    write_text(tmp_path / "a" / "x.txt", "x main, own")
    write_text(tmp_path / "a" / "local.yaml", "tags: [old]\n")
    result = scan(tmp_path)
    assert caption(result, "a/x.png") == "x main, own, old"
    write_text(tmp_path / "a" / "local.yaml", "tags: [new]\n")
    write_text(tmp_path / "a" / "trigger.txt", "ohwx")
    new, messages = reread_settings(result)
    assert caption(new, "a/x.png") == "ohwx, x main, own, new"
    assert "tags from a/local.yaml: [old] -> [new]" in messages


def test_scan_summary_names_the_everydream2_features(tmp_path):
    write_image(tmp_path / "a" / "img.png", size=(64, 64))
    write_text(tmp_path / "a" / "img.yaml", "main_prompt: x\nmultiply: 3\nrating: 2\ntags: [{tag: t, weight: 2}, u]\n")
    write_image(tmp_path / "a" / "n_1.png", size=(64, 64))
    write_text(tmp_path / "a" / "local.yaml", "flip_p: 0.5\ntags: [folder]\n")
    write_text(tmp_path / "a" / "cond_dropout.txt", "0.1")
    result = scan(tmp_path)
    assert result.everydream2 == [
        ".yaml sidecar captions: 1 image",
        "file-name captions: 1 image",
        "weighted tags: 1 image",
        "per-image settings in .yaml sidecars: multiply (1 image)",
        "folder captions (main_prompt/tags/caption in local.yaml or global.yaml): a/local.yaml",
        "settings in local.yaml/global.yaml: flip_p (1 file)",
        "setting files: cond_dropout.txt (1 folder)",
        "keys edlib does not use: rating (1 file)",
    ]
    # a second (cached) scan reads the same
    again = scan(tmp_path)
    assert again.everydream2 == result.everydream2 and again.items == result.items


def test_balance_respects_multipliers_it_cannot_change(tmp_path):
    for folder in ("a", "b"):
        for i in range(2):
            write_image(tmp_path / folder / f"{folder}{i}.png", size=(64, 64))
    write_text(tmp_path / "a" / "local.yaml", "multiply: 2\n")
    write_text(tmp_path / "b" / "b0.yaml", "main_prompt: b\nmultiply: 3\n")
    result = scan(tmp_path)
    plan = plan_balance(result, {"a": 1, "b": 1})
    assert plan.epoch_size == 2 * 2 + 3 + 1  # images with their own multiply count at theirs
    assert plan.overridden == ["a/local.yaml"]
    assert any("1 image(s) set their own multiply" in w for w in plan.warnings)
    with pytest.raises(DataRootError, match=r"a/local\.yaml set\(s\) multiply, which wins over"):
        apply_balance(plan)
    assert not (tmp_path / "a" / "multiply.txt").exists()
