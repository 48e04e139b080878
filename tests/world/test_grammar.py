"""The caption grammar: captions read back into the scenes they describe."""

from collections import Counter

import numpy as np
import pytest

from edlib.world import (
    ALL_SHAPES,
    COLOURS,
    NOVEL_SHAPES,
    POSITIONS,
    SHAPES,
    SIZES,
    VOCABULARY,
    Scene,
    caption,
    parse_caption,
    sample_scene,
    vocabulary,
)


def test_caption_reads_like_english():
    assert caption(Scene("circle", "red", "small", "left", "blue")) == (
        "a small red circle on the left on a blue background"
    )
    assert caption(Scene("star", "orange", None, "center", "white")) == (
        "an orange star in the center on a white background"
    )
    scene = Scene("heart", "green", "large", "bottom", "orange")
    assert caption(scene, size=False, position=False) == "a green heart on an orange background"
    assert caption(scene, background=False) == "a large green heart at the bottom"
    assert caption(Scene("zorblat")) == "a zorblat"


def test_every_sampled_caption_parses_back_to_its_scene():
    rng = np.random.default_rng(0)
    for _ in range(300):
        scene = sample_scene(rng, shapes=ALL_SHAPES)
        assert parse_caption(caption(scene)) == scene
        short = caption(scene, size=False, position=False, background=False)
        assert parse_caption(short) == Scene(scene.shape, scene.colour)


def test_parse_forgives_case_commas_and_a_full_stop():
    assert parse_caption("  A Large BLUE Square, at the top, on a yellow background. ") == Scene(
        "square", "blue", "large", "top", "yellow"
    )
    assert parse_caption("a circle on a white background") == Scene("circle", background="white")


@pytest.mark.parametrize(
    "text",
    [
        "a red hexagon",
        "red circle",
        "a red circle on blue",
        "a circle circle",
        "",
        "a red circle please",
    ],
)
def test_text_outside_the_grammar_is_an_error_that_quotes_it(text):
    with pytest.raises(ValueError, match="is not a toy-world caption") as error:
        parse_caption(text)
    assert repr(text) in str(error.value)


def test_parse_rejects_a_shape_on_its_own_colour():
    with pytest.raises(ValueError, match="invisible"):
        parse_caption("a red circle on a red background")


def test_vocabulary_covers_every_caption_word_and_takes_new_words():
    rng = np.random.default_rng(1)
    words = Counter()
    for _ in range(500):
        words.update(caption(sample_scene(rng)).split())
    assert set(words) <= set(VOCABULARY)
    assert not set(NOVEL_SHAPES) & set(VOCABULARY)  # pretraining never sees the novel names
    assert set(vocabulary()) == set(VOCABULARY) | set(NOVEL_SHAPES)
    assert "zorblat" not in vocabulary(novel=False)
    with_florp = vocabulary(["florp"])
    assert "florp" in with_florp and list(with_florp) == sorted(with_florp)
    with pytest.raises(ValueError, match="lowercase letters"):
        vocabulary(["Bad Word"])


def test_sampling_is_deterministic_and_covers_the_world():
    first = [sample_scene(np.random.default_rng(7)) for _ in range(3)]
    assert first[0] == first[1] == first[2]
    rng = np.random.default_rng(2)
    scenes = [sample_scene(rng) for _ in range(2000)]
    assert {s.shape for s in scenes} == set(SHAPES)  # novel shapes only when asked for
    assert {s.colour for s in scenes} == set(COLOURS) == {s.background for s in scenes}
    assert {s.size for s in scenes} == set(SIZES) and {s.position for s in scenes} == set(POSITIONS)
    assert all(s.colour != s.background for s in scenes)
    shape_counts = Counter(s.shape for s in scenes)
    assert min(shape_counts.values()) > 0.6 * len(scenes) / len(SHAPES)  # roughly uniform


def test_sampling_respects_restrictions_and_exclusions():
    rng = np.random.default_rng(3)
    exclude = {("red", "zorblat")}
    scenes = [
        sample_scene(
            rng,
            shapes=["zorblat", "circle"],
            colours=["red", "blue"],
            backgrounds=["red", "white"],
            sizes=["large"],
            positions=["left", "right"],
            exclude=exclude,
        )
        for _ in range(300)
    ]
    assert {s.shape for s in scenes} == {"zorblat", "circle"}
    pairs = {(s.colour, s.shape) for s in scenes}
    assert pairs == {("red", "circle"), ("blue", "zorblat"), ("blue", "circle")}
    assert {s.background for s in scenes} == {"red", "white"}
    assert all(s.background == "white" for s in scenes if s.colour == "red")
    assert {s.size for s in scenes} == {"large"}
    assert {s.position for s in scenes} == {"left", "right"}


def test_impossible_restrictions_are_clear_errors():
    rng = np.random.default_rng(4)
    with pytest.raises(ValueError, match="shapes must be"):
        sample_scene(rng, shapes=["hexagon"])
    with pytest.raises(ValueError, match="colours must be"):
        sample_scene(rng, colours=[])
    with pytest.raises(ValueError, match="no \\(colour, shape\\) pair is left"):
        sample_scene(rng, colours=["red"], backgrounds=["red"])
    with pytest.raises(ValueError, match="no \\(colour, shape\\) pair is left"):
        sample_scene(rng, shapes=["star"], colours=["red"], exclude={("red", "star")})
