"""Folder setting files: value parsing, yaml layers and their precedence, near-miss names."""

from fractions import Fraction

import pytest

from edlib.data.folder_files import Layer, SettingError, near_miss, parse_setting, read_folder
from tests.data.make_images import write_text


@pytest.mark.parametrize(
    "text,expected",
    [
        ("2", Fraction(2)),
        (" 2.5\r\n", Fraction(5, 2)),
        ("0.1", Fraction(1, 10)),
        ("1e2", Fraction(100)),
    ],
)
def test_multiply_is_exact(text, expected):
    assert parse_setting("multiply", text, "multiply.txt") == expected


def test_multiply_tenth_of_ten_is_exactly_one():
    m = parse_setting("multiply", "0.1", "multiply.txt")
    assert m * 10 == 1 and isinstance(m, Fraction)


@pytest.mark.parametrize(
    "text,message",
    [
        ("abc", r"a/multiply\.txt: multiply must be a number, found 'abc'"),
        ("", r"a/multiply\.txt: multiply must be a number, found '' \(empty\)"),
        ("-1", r"a/multiply\.txt: multiply must be > 0, found '-1'"),
        ("0", r"a/multiply\.txt: multiply must be > 0, found '0'"),
        ("nan", r"a/multiply\.txt: multiply must be a finite number, found 'nan'"),
        ("1e309", r"a/multiply\.txt: multiply must be a finite number, found '1e309'"),
        ("inf", r"must be a finite number, found 'inf'"),
        ("2,5", r"must be a number, found '2,5' \(use a dot"),
        ("5000000", r"larger than 1,000,000"),
    ],
)
def test_bad_multiply_names_file_and_text(text, message):
    with pytest.raises(SettingError, match=message):
        parse_setting("multiply", text, "a/multiply.txt")


def test_other_settings_parse_and_validate():
    assert parse_setting("loss_scale", "-0.5", "l") == -0.5
    assert parse_setting("flip_p", "0.25", "f") == 0.25
    assert parse_setting("cond_dropout", 0.1, "c") == 0.1  # a YAML number
    assert parse_setting("shuffle_tags", "", "s") is True  # presence = on
    assert parse_setting("shuffle_tags", "False", "s") is False
    assert parse_setting("batch_id", "  group A \n", "b") == "group A"
    assert parse_setting("trigger", " ohwx man ", "t") == "ohwx man"
    with pytest.raises(SettingError, match=r"f: flip_p is a probability between 0 and 1, found '1.5'"):
        parse_setting("flip_p", "1.5", "f")
    with pytest.raises(SettingError, match=r"s: shuffle_tags must be empty, true or false, found 'maybe'"):
        parse_setting("shuffle_tags", "maybe", "s")
    with pytest.raises(SettingError, match=r"l: loss_scale must be a finite number"):
        parse_setting("loss_scale", "nan", "l")
    with pytest.raises(SettingError, match=r"b: batch_id is empty"):
        parse_setting("batch_id", "  ", "b")


def _read(folder, rel="", inherited=None):
    names = {p.name for p in folder.iterdir()}
    return read_folder(folder, rel, names, inherited or Layer())


def test_txt_files_with_bom_and_crlf(tmp_path):
    write_text(tmp_path / "multiply.txt", " 2.5\r\n", bom=True)
    write_text(tmp_path / "loss_scale.txt", "0.5")
    write_text(tmp_path / "shuffle_tags.txt", "")
    write_text(tmp_path / "trigger.txt", "ohwx\n")
    read = _read(tmp_path)
    assert read.errors == []
    s = read.settings
    assert (s.multiply, s.loss_scale, s.shuffle_tags, s.trigger) == (Fraction(5, 2), 0.5, True, "ohwx")
    assert read.sources["multiply"] == "multiply.txt"


def test_bad_value_is_an_error_and_keeps_the_default(tmp_path):
    write_text(tmp_path / "multiply.txt", "abc")
    write_text(tmp_path / "flip_p.txt", "0.5")
    read = _read(tmp_path, rel="x/y")
    assert read.errors == ["x/y/multiply.txt: multiply must be a number, found 'abc'"]
    assert read.failed == {"multiply"}
    assert read.settings.multiply == 1 and read.settings.flip_p == 0.5


def test_invalid_utf8_setting_file_is_an_error(tmp_path):
    write_text(tmp_path / "multiply.txt", raw=b"\xff\xfe2\x00")
    read = _read(tmp_path)
    assert len(read.errors) == 1 and "multiply.txt: not valid UTF-8" in read.errors[0]


def test_precedence_global_then_txt_then_local_then_txt(tmp_path):
    parent = tmp_path / "p"
    child = parent / "c"
    write_text(parent / "global.yaml", "multiply: 3\nflip_p: 0.5\ntrigger: style\nloss_scale: 2\n")
    write_text(child / "global.yaml", "loss_scale: 4\n")
    write_text(child / "local.yaml", "multiply: 0.5\nflip_p: 0.1\nbatch_id: from_yaml\n")
    write_text(child / "multiply.txt", "0.25")
    write_text(child / "cond_dropout.txt", "0.3")
    write_text(child / "batch_id.txt", "from_txt")
    top = _read(parent, "p")
    assert top.settings.multiply == 3 and top.settings.trigger == "style"
    read = _read(child, "p/c", top.inherited)
    s = read.settings
    assert s.multiply == Fraction(1, 2)  # local.yaml beats multiply.txt (EveryDream2's order)
    assert s.cond_dropout == 0.3  # multiply.txt and friends beat global.yaml
    assert s.batch_id == "from_txt"  # batch_id.txt and loss_scale.txt beat local.yaml
    assert s.flip_p == 0.1  # local.yaml beats the inherited global
    assert s.loss_scale == 4.0  # the nearer global.yaml wins
    assert s.trigger == "style"  # inherited from the parent's global.yaml
    assert read.sources == {
        "multiply": "p/c/local.yaml",
        "cond_dropout": "p/c/cond_dropout.txt",
        "batch_id": "p/c/batch_id.txt",
        "flip_p": "p/c/local.yaml",
        "loss_scale": "p/c/global.yaml",
        "trigger": "p/global.yaml",
    }
    assert any(
        "multiply is set in both p/c/local.yaml (0.5) and p/c/multiply.txt (0.25); p/c/local.yaml wins" in w
        for w in read.warnings
    )
    assert any("batch_id is set in both p/c/local.yaml (from_yaml) and p/c/batch_id.txt (from_txt); p/c/batch_id.txt wins" in w for w in read.warnings)
    # local.yaml does not pass down; global.yaml does
    (child / "g").mkdir()
    grandchild = _read(child / "g", "p/c/g", read.inherited)
    assert grandchild.settings.multiply == 3 and grandchild.settings.loss_scale == 4.0
    assert grandchild.settings.flip_p == 0.5


def test_yaml_errors_and_unknown_keys(tmp_path):
    write_text(tmp_path / "local.yaml", "multiply: abc\nflip: 0.5\nmain_prompt: x\nrating: 2\n")
    read = _read(tmp_path, "f")
    assert read.errors == ["f/local.yaml (multiply): multiply must be a number, found 'abc'"]
    assert any("f/local.yaml: unknown setting 'flip' ignored" in w for w in read.warnings)
    assert any("f/local.yaml: 'rating' is not used by edlib" in w for w in read.warnings)
    assert read.settings.main_prompt == "x"  # a folder caption key (EveryDream2), not a warning
    write_text(tmp_path / "local.yaml", "tags: [ok, {tag: bad, weight: 0}]\nflip_p: 0.5\n")
    read = _read(tmp_path, "f")
    assert read.errors == ["f/local.yaml: tag 'bad' has weight 0; weights must be numbers > 0"]
    assert read.settings.flip_p == 0.5 and read.settings.tags == ()  # the settings still apply
    write_text(tmp_path / "local.yaml", "multiply: [unclosed\n")
    assert "f/local.yaml: not valid YAML" in _read(tmp_path, "f").errors[0]


@pytest.mark.parametrize(
    "name,meant",
    [
        ("multiply.txt.txt", "multiply.txt"),
        ("Multiply.TXT", "multiply.txt"),
        ("multiply.text", "multiply.txt"),
        ("multiplier.txt", "multiply.txt"),
        ("mulitply.txt", "multiply.txt"),
        ("multiply", "multiply.txt"),
        ("multiply .txt", "multiply.txt"),
        ("loss_scale.txt.txt", "loss_scale.txt"),
        ("Loss_Scale.TXT", "loss_scale.txt"),
        ("loss-scale.txt", "loss_scale.txt"),
        ("lossscale.text", "loss_scale.txt"),
        ("loss_scal.txt", "loss_scale.txt"),
        ("flip_p.txt.txt", "flip_p.txt"),
        ("cond_dropout.text", "cond_dropout.txt"),
        ("shuffle-tags.txt", "shuffle_tags.txt"),
        ("batchid.txt", "batch_id.txt"),
        ("Trigger.txt", "trigger.txt"),
        ("local.yaml.txt", "local.yaml"),
        ("Global.YAML", "global.yaml"),
        ("global.txt", "global.yaml"),
    ],
)
def test_near_miss_names(name, meant):
    assert near_miss(name) == meant


@pytest.mark.parametrize(
    "name", ["multiply.txt", "global.yml", "notes.txt", "local", "photo.txt", "readme.md", "multiplication_table.txt"]
)
def test_not_near_misses(name):
    assert near_miss(name) is None
