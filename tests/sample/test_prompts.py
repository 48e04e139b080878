import json

import pytest

from edlib.sample import PromptFileError, PromptSpec, load_prompts, prompt_specs


def test_text_file_one_prompt_per_line_skipping_blanks_and_comments(tmp_path):
    path = tmp_path / "prompts.txt"
    # BOM and CRLF as Windows editors write them; a '#' inside a prompt is not a comment.
    path.write_bytes("\ufeffa photo of sks dog\r\n\r\n# a comment\r\n  color #ff0000 car  \r\n".encode("utf-8"))

    specs = load_prompts(path)

    assert [s.prompt for s in specs] == ["a photo of sks dog", "color #ff0000 car"]
    assert specs[0] == PromptSpec(prompt="a photo of sks dog")  # every default


def test_yaml_defaults_apply_to_every_entry_and_entries_override_them(tmp_path):
    path = tmp_path / "prompts.yaml"
    path.write_text(
        "defaults: {steps: 12, sampler: euler A, width: 64, height: 64, cfg_scale: 5}\n"
        "prompts:\n"
        "  - a photo of a cat\n"
        "  - prompt: a painting, with commas\n"
        "    negative_prompt: blurry\n"
        "    seed: 42\n"
        "    steps: 3\n"
        "    sampler: DPM++ 2M KARRAS\n"
        "    height: 128\n",
        encoding="utf-8",
    )

    first, second = load_prompts(path)

    assert first == PromptSpec("a photo of a cat", steps=12, sampler="Euler a", width=64, height=64, cfg_scale=5.0)
    assert second == PromptSpec(
        "a painting, with commas",
        negative_prompt="blurry",
        seed=42,
        steps=3,
        cfg_scale=5.0,
        width=64,
        height=128,
        sampler="DPM++ 2M Karras",  # names are case-insensitive and written canonically
    )


def test_json_list_of_entries(tmp_path):
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps(["plain", {"prompt": "with seed", "seed": -1}]), encoding="utf-8")

    specs = load_prompts(path)

    assert [(s.prompt, s.seed) for s in specs] == [("plain", 555), ("with seed", -1)]


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"prompt": "x", "stpes": 3}, "unknown key(s) 'stpes'"),
        ({"negative_prompt": "x"}, "missing 'prompt'"),
        ({"prompt": "x", "steps": "many"}, "steps must be a whole number, got 'many'"),
        ({"prompt": "x", "steps": 0}, "steps must be at least 1"),
        ({"prompt": "x", "width": 100}, "width must be a multiple of 8, got 100"),
        ({"prompt": "x", "seed": 1.5}, "seed must be a whole number"),
        ({"prompt": "x", "cfg_scale": "high"}, "cfg_scale must be a number"),
        ({"prompt": "x", "sampler": "Eular a"}, "unknown sampler 'Eular a'; valid samplers: DDIM, PNDM"),
        (["not", "a", "mapping"], "expected a prompt string or a mapping"),
    ],
)
def test_bad_entry_is_an_error_naming_file_and_entry(tmp_path, entry, message):
    path = tmp_path / "prompts.yaml"
    path.write_text(json.dumps({"prompts": ["fine", entry]}), encoding="utf-8")

    with pytest.raises(PromptFileError) as error:
        load_prompts(path)

    assert str(error.value).startswith(f"{path}: prompt entry 2: ")
    assert message in str(error.value)


def test_bad_defaults_are_reported_for_the_entry_they_break(tmp_path):
    path = tmp_path / "prompts.yml"
    path.write_text("defaults: {sampler: nope}\nprompts: [a, b]\n", encoding="utf-8")

    with pytest.raises(PromptFileError, match=r"prompt entry 1: unknown sampler 'nope'"):
        load_prompts(path)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.txt", b"# only a comment\n\n", "no prompts in the file"),
        ("latin1.txt", "caf\xe9".encode("latin-1"), "not valid UTF-8"),
        ("broken.yaml", b"prompts: [unclosed\n", "cannot parse"),
        ("broken.json", b"{nope", "cannot parse"),
        ("scalar.yaml", b"just a string\n", "expected a list of prompts"),
        ("extra.yaml", b"prompt: [a]\n", "unknown top-level key(s) 'prompt'"),
        ("defaults.yaml", b"defaults: [1]\nprompts: [a]\n", "'defaults' must be a mapping"),
    ],
)
def test_unreadable_files_are_errors_naming_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)

    with pytest.raises(PromptFileError) as error:
        load_prompts(path)

    assert str(error.value).startswith(str(path))
    assert message in str(error.value)


def test_missing_file(tmp_path):
    with pytest.raises(PromptFileError, match="prompt file not found"):
        load_prompts(tmp_path / "nope.txt")


def test_specs_made_in_code_are_checked_too():
    with pytest.raises(ValueError, match="height must be a multiple of 8"):
        PromptSpec("x", height=65)


def test_prompt_specs_from_a_training_config_list(tmp_path):
    specs = prompt_specs(["a cat", {"prompt": "a dog", "seed": 7}, PromptSpec("a bird", steps=2)])

    assert specs == [PromptSpec("a cat"), PromptSpec("a dog", seed=7), PromptSpec("a bird", steps=2)]
    with pytest.raises(ValueError, match="sample_prompts entry 2: unknown key"):
        prompt_specs(["ok", {"promt": "typo"}])
    path = tmp_path / "p.txt"
    path.write_text("from a file\n", encoding="utf-8")
    assert prompt_specs(path) == [PromptSpec("from a file")]
