import pytest
from PIL import Image

from edlib.sample import format_parameters, parse_parameters, read_parameters, save_png

SETTINGS = dict(steps=30, sampler="Euler a", cfg_scale=7.0, seed=123, width=512, height=512)


def test_format_is_automatic1111s():
    text = format_parameters(prompt="a cat", negative_prompt="blurry", model="name", **SETTINGS)

    assert text == (
        "a cat\nNegative prompt: blurry\n"
        "Steps: 30, Sampler: Euler a, CFG scale: 7, Seed: 123, Size: 512x512, Model: name"
    )


def test_no_negative_prompt_line_when_there_is_none():
    text = format_parameters(prompt="a cat", cfg_scale=7.5, **{k: v for k, v in SETTINGS.items() if k != "cfg_scale"})

    assert text == "a cat\nSteps: 30, Sampler: Euler a, CFG scale: 7.5, Seed: 123, Size: 512x512"


@pytest.mark.parametrize(
    "prompt, negative",
    [
        ("a photo of sks dog, best quality, 8k", "blurry, lowres"),
        ("first line, with comma\nsecond line: with colon\nthird", "bad\nworse, worst"),
        ("ünïcødé prompt — 日本語", ""),
        ("Steps: 1, Sampler: x, Seed: 2", ""),  # looks like settings, but is a prompt line
    ],
)
def test_roundtrip_through_a_png_file(tmp_path, prompt, negative):
    model = "run, phase 2: step-000100"  # commas and colons get quoted, as A1111 does
    text = format_parameters(prompt=prompt, negative_prompt=negative, model=model, **SETTINGS)
    path = save_png(Image.new("RGB", (8, 8), (10, 20, 30)), tmp_path / "a.png", text)

    parsed = parse_parameters(read_parameters(path))

    assert parsed == {"prompt": prompt, "negative_prompt": negative, "model": model, **SETTINGS}
    with Image.open(path) as image:  # the pixels are unchanged by the metadata
        assert image.getpixel((3, 3)) == (10, 20, 30)


def test_reads_what_automatic1111_writes():
    text = (
        "masterpiece, 1girl, (smile:1.2)\n"
        "Negative prompt: lowres, bad hands\n"
        'Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 3829420, Size: 512x768, '
        'Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Clip skip: 2, '
        'Lora hashes: "style: 1a2b3c, other: 4d5e6f", Version: v1.7.0'
    )

    parsed = parse_parameters(text)

    assert parsed == {
        "prompt": "masterpiece, 1girl, (smile:1.2)",
        "negative_prompt": "lowres, bad hands",
        "steps": 20,
        "sampler": "DPM++ 2M Karras",
        "cfg_scale": 6.5,
        "seed": 3829420,
        "width": 512,
        "height": 768,
        "Model hash": "6ce0161689",
        "model": "v1-5-pruned-emaonly",
        "clip_skip": 2,  # typed: sampling reads it back
        "Lora hashes": "style: 1a2b3c, other: 4d5e6f",
        "Version": "v1.7.0",
    }


def test_text_without_settings_is_all_prompt():
    assert parse_parameters("just a prompt\nover two lines") == {
        "prompt": "just a prompt\nover two lines",
        "negative_prompt": "",
    }


def test_png_without_parameters_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "plain.png"
    Image.new("RGB", (4, 4)).save(path)

    with pytest.raises(ValueError, match=rf"{path}: no 'parameters' text chunk"):
        read_parameters(path)
