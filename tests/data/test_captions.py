"""Caption parsing and the caption fed to the text encoder at a training step."""

import random
from collections import Counter

import pytest

from edlib.data.captions import (
    CaptionError,
    decode_text,
    filename_caption,
    training_caption,
    with_trigger,
)
from edlib.data.sidecars import parse_caption_file, text_entry
from edlib.data.types import IMAGE_SETTING_KEYS, Caption, Tag


def parse(data: bytes, name: str):
    return parse_caption_file(data, name, IMAGE_SETTING_KEYS)


def text_caption(text: str) -> Caption:
    """The caption a .txt file with `text` gives (main prompt, then tags)."""
    entry = text_entry(text)
    return Caption(entry.main_prompt or "", entry.tags)


def test_filename_caption_cuts_at_first_underscore():
    assert filename_caption("rare photo_01.png").main_prompt == "rare photo"
    assert filename_caption("a/b/cat_on_mat.JPG").main_prompt == "cat"
    assert filename_caption("plain.webp").main_prompt == "plain"
    # read like a .txt caption: the first comma-separated part is the main prompt
    assert filename_caption("ted, smiling_2.png") == Caption("ted", (Tag("smiling"),))


def test_text_caption_tolerates_bom_crlf_and_whitespace():
    entry = parse(b"\xef\xbb\xbf  a red car, parked\r\n", "a/img.txt")
    assert entry.main_prompts == ("a red car",) and entry.tags == (Tag("parked"),) and entry.settings == ()


def test_invalid_utf8_names_the_file():
    with pytest.raises(CaptionError, match=r"a/img\.txt: not valid UTF-8 \(byte 3"):
        parse(b"caf\xc3\x28 latte", "a/img.txt")
    with pytest.raises(CaptionError, match=r"multiply\.txt: not valid UTF-8"):
        decode_text(b"\xff\xfe2\x00", "multiply.txt")  # UTF-16 from Notepad


def test_yaml_sidecar_with_plain_and_weighted_tags():
    text = "main_prompt: a portrait of jane\ntags:\n  - smiling\n  - tag: outdoors\n    weight: 3\n  - tag: ''\n"
    entry = parse(text.encode(), "img.yaml")
    assert entry.main_prompt == "a portrait of jane"
    assert entry.tags == (Tag("smiling", 1.0), Tag("outdoors", 3.0))
    assert entry.settings == () and entry.unknown == ()


def test_yaml_sidecar_keeps_per_image_settings_and_rejects_bad_input():
    entry = parse(b"main_prompt: x\nmultiply: 2\nflip_p: 0.5\nrating: 3\nfoo: 1\n", "img.yml")
    assert entry.settings == (("multiply", 2), ("flip_p", 0.5))
    assert entry.unknown == ("foo",)  # rating is EveryDream2's, known but unused
    with pytest.raises(CaptionError, match=r"img\.yaml: not valid YAML"):
        parse(b"main_prompt: [unclosed\n", "img.yaml")
    with pytest.raises(CaptionError, match=r"img\.yaml: tag 'x' has weight -1"):
        parse(b"tags:\n  - tag: x\n    weight: -1\n", "img.yaml")
    with pytest.raises(CaptionError, match=r"img\.yaml: expected a mapping"):
        parse(b"- just\n- a list\n", "img.yaml")
    with pytest.raises(CaptionError, match=r"img\.yaml: max_caption_length must be a whole number"):
        parse(b"max_caption_length: -3\n", "img.yaml")
    with pytest.raises(CaptionError, match=r"img\.yaml: caption must be text or a mapping"):
        parse(b"caption: [a, b]\n", "img.yaml")


def test_trigger_goes_in_front_once():
    assert with_trigger(Caption("a man"), "ohwx").text() == "ohwx, a man"
    already = with_trigger(text_caption("ohwx, a man"), "ohwx")
    assert already.text() == "ohwx, a man" and already.main_prompt == "" and already.tags == (Tag("a man"),)
    assert with_trigger(Caption("ohwxyz man"), "ohwx").text() == "ohwx, ohwxyz man"
    assert with_trigger(Caption("a man"), None) == Caption("a man")
    # a trigger of several comma-separated parts is recognised as a whole
    two = with_trigger(text_caption("ohwx, style, a man"), "ohwx, style")
    assert two.text() == "ohwx, style, a man" and two.tags == (Tag("a man"),)


def test_no_shuffle_gives_the_caption_text():
    caption = Caption("main", (Tag("a"), Tag("b")), trigger="trig")
    assert training_caption(caption, random.Random(0), shuffle_tags=False) == "trig, main, a, b"


def test_dropout_rate_and_determinism():
    caption = Caption("a cat")
    rng = random.Random(1)
    out = [training_caption(caption, rng, shuffle_tags=False, dropout=0.25) for _ in range(4000)]
    empty = out.count("")
    # binomial(4000, 0.25): sd ~ 27, so +-5 sd
    assert abs(empty - 1000) < 140
    assert set(out) == {"", "a cat"}
    again = [training_caption(caption, random.Random(1), shuffle_tags=False, dropout=0.25) for _ in range(1)]
    assert again[0] == out[0]
    assert all(training_caption(caption, random.Random(s), shuffle_tags=False, dropout=1.0) == "" for s in range(20))


def test_shuffle_keeps_trigger_and_main_prompt_in_front():
    caption = Caption("main", tuple(Tag(t) for t in "abcdef"), trigger="trig")
    seen = set()
    rng = random.Random(0)
    for _ in range(200):
        parts = training_caption(caption, rng, shuffle_tags=True).split(", ")
        assert parts[:2] == ["trig", "main"]
        assert sorted(parts[2:]) == list("abcdef")
        seen.add(tuple(parts[2:]))
    assert len(seen) > 100  # really shuffled


def test_plain_caption_shuffle_respects_keep_tokens():
    caption = with_trigger(text_caption("ohwx, 1girl, red hair, smiling, outdoors"), "style")
    rng = random.Random(3)
    firsts = Counter()
    for _ in range(300):
        parts = training_caption(caption, rng, shuffle_tags=True, keep_tokens=2).split(", ")
        assert parts[:3] == ["style", "ohwx", "1girl"]
        assert sorted(parts[3:]) == ["outdoors", "red hair", "smiling"]
        firsts[parts[3]] += 1
    assert len(firsts) == 3
    # keep_tokens=0: every part may move (kohya semantics); the trigger still stays first
    moved = {
        training_caption(caption, random.Random(s), shuffle_tags=True, keep_tokens=0).split(", ")[1] for s in range(50)
    }
    assert "ohwx" in moved and len(moved) > 2
    # the default (1) keeps the main prompt first, as EveryDream2 does
    kept = {training_caption(caption, random.Random(s), shuffle_tags=True).split(", ")[1] for s in range(50)}
    assert kept == {"ohwx"}


def test_weighted_shuffle_puts_heavy_tags_first_in_proportion():
    caption = Caption("m", (Tag("heavy", 3.0), Tag("light1", 1.0), Tag("light2", 1.0)))
    rng = random.Random(7)
    n = 6000
    first = Counter(training_caption(caption, rng, shuffle_tags=True).split(", ")[1] for _ in range(n))
    # P(heavy first) = 3 / 5 exactly for draws proportional to weight; sd ~ 0.0063
    assert abs(first["heavy"] / n - 0.6) < 0.03
    assert abs(first["light1"] / n - 0.2) < 0.03


def test_training_caption_is_deterministic_given_rng():
    caption = Caption("m", tuple(Tag(t, w) for t, w in [("a", 1), ("b", 2), ("c", 0.5)]))
    a = [training_caption(caption, random.Random(42), shuffle_tags=True, dropout=0.1) for _ in range(5)]
    b = [training_caption(caption, random.Random(42), shuffle_tags=True, dropout=0.1) for _ in range(5)]
    assert a == b
