"""A procedural toy world: coloured shapes on plain backgrounds, with a caption grammar.

It is the world edlib's bundled tiny model is pretrained on, the demo's data, the tests' and
benchmarks' data generator, and (with `check`) the judge of what a model draws:

    scene = sample_scene(np.random.default_rng(0))
    image = render(scene)   # 64x64 RGB
    text = caption(scene)   # e.g. "a small red circle on the left on a blue background"
    classify(image).shape == parse_caption(text).shape
"""

from edlib.world.check import Classification, classify, fidelity, score
from edlib.world.dataset import CaptionSplit, caption_split, held_out_captions, write_data_root
from edlib.world.grammar import VOCABULARY, caption, parse_caption, sample_scene, vocabulary
from edlib.world.render import (
    ALL_SHAPES,
    COLOURS,
    NOVEL_SHAPES,
    PALETTE,
    POSITIONS,
    SHAPES,
    SIZES,
    Scene,
    render,
)

__all__ = [
    "ALL_SHAPES",
    "COLOURS",
    "NOVEL_SHAPES",
    "PALETTE",
    "POSITIONS",
    "SHAPES",
    "SIZES",
    "VOCABULARY",
    "CaptionSplit",
    "Classification",
    "Scene",
    "caption",
    "caption_split",
    "classify",
    "fidelity",
    "held_out_captions",
    "parse_caption",
    "render",
    "sample_scene",
    "score",
    "vocabulary",
    "write_data_root",
]
