"""Bad input in a data root (issue 21, items 3, 5, 7, 10 and the scan's messages): each
case used to hang, exhaust memory, read a wrong value or print a poor message. They run
the real CLI in a subprocess with a time limit, as a user would meet them."""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

import pytest

from edlib.data.scan import scan
from tests.data.make_images import make_tree, write_image, write_text
from tests.faults.support import edlib


@pytest.fixture
def root(tmp_path) -> Path:
    root = tmp_path / "data"
    make_tree(root, {"a": 3, "b": 2}, size=(64, 64))
    return root


def _limit_memory():
    """At most 1.5 GB of address space: an unbounded expansion fails fast instead of
    swapping the shared test machine."""
    resource.setrlimit(resource.RLIMIT_AS, (1536 * 2**20, 1536 * 2**20))


def _scan_json(root, *args, timeout=60):
    r = edlib("scan", root, "--json", "--no-cache", *args, timeout=timeout, preexec_fn=_limit_memory)
    return r, (json.loads(r.stdout) if r.stdout.strip().startswith("{") else None)


# -- item 5: files that are not regular files ---------------------------------------------


def test_a_fifo_named_png_is_skipped_without_opening_it(root):
    os.mkfifo(root / "a" / "stuck.png")
    r, report = _scan_json(root)  # before: blocked forever in open()
    assert r.returncode == 0, r.stderr
    assert report["images"] == 5
    assert any("a/stuck.png" in w and "named pipe" in w for w in report["warnings"]), report["warnings"]


def test_fifo_caption_and_setting_files_are_errors_not_hangs(root):
    os.mkfifo(root / "a" / "a 0_000.txt")
    os.mkfifo(root / "b" / "multiply.txt")
    r, report = _scan_json(root)
    assert r.returncode == 1
    errors = " | ".join(report["errors"])
    assert "a/a 0_000.txt: is a named pipe (FIFO), not a file" in errors
    assert "b/multiply.txt: is a named pipe (FIFO), not a file" in errors


def test_a_link_to_dev_urandom_is_a_device_not_an_empty_file(root):
    (root / "a" / "noise.png").symlink_to("/dev/urandom")
    (root / "b" / "loss_scale.txt").symlink_to("/dev/urandom")
    r, report = _scan_json(root)
    warnings = " | ".join(report["warnings"])
    assert "skipped a/noise.png: a character device, not an image file" in warnings
    assert "empty file" not in warnings
    assert report["errors"] == ["b/loss_scale.txt: is a character device, not a file; skipped without reading it"]


# -- item 3 and messages: YAML bombs and huge files ---------------------------------------

_BOMB_LEVELS = "\n".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]" for prev, name in zip("abcdefgh", "bcdefghi")
)
BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + _BOMB_LEVELS + "\n"


def test_a_yaml_alias_bomb_is_refused_quickly_and_quoted_short(root):
    write_text(root / "a" / "local.yaml", BOMB + "multiply: *i\n")
    write_text(root / "b" / "b 0_000.yaml", BOMB + "main_prompt: x\ntags: *i\n")
    assert len(BOMB) < 700
    started = time.time()
    r, report = _scan_json(root)  # before: 9^9 values repr'd: MemoryError or gigabytes printed
    assert time.time() - started < 30
    assert r.returncode == 1, r.stderr[-2000:]
    assert len(r.stdout) + len(r.stderr) < 10_000
    assert any(e.startswith("a/local.yaml: not valid YAML: holds more than 100,000 values") for e in report["errors"])
    assert any(e.startswith("b/b 0_000.yaml: not valid YAML: holds more than 100,000 values") for e in report["errors"])


def test_a_moderate_alias_expansion_still_loads(root):
    write_text(root / "a" / "local.yaml", "defaults: &d 2\nmultiply: *d\n")
    r, report = _scan_json(root)
    assert r.returncode == 0, r.stderr
    assert {f["path"]: f["multiply"] for f in report["folders"]}["a"] == 2.0


def test_a_20_mb_multiply_txt_is_refused_by_size_and_not_echoed(root):
    write_text(root / "a" / "multiply.txt", "1" * (20 * 2**20))
    r, report = _scan_json(root)
    assert r.returncode == 1
    assert report["errors"] == ["a/multiply.txt: is 20.0 MB, more than the 64 KB such a file can hold; not read"]
    assert len(r.stdout) + len(r.stderr) < 5_000


def test_bad_values_are_quoted_short(root):
    write_text(root / "a" / "multiply.txt", "x" * 5000)
    r, report = _scan_json(root)
    (error,) = report["errors"]
    assert error.startswith("a/multiply.txt: multiply must be a number, found 'xxx") and len(error) < 150


# -- item 7: plain decimal numbers only -----------------------------------------------------


@pytest.mark.parametrize("text", ["0_5", "1_000", "٣"])
def test_multiply_with_digit_separators_or_foreign_digits_is_an_error(root, text):
    write_text(root / "a" / "multiply.txt", text)
    r, report = _scan_json(root)
    assert r.returncode == 1
    assert report["errors"][0].startswith(f"a/multiply.txt: multiply must be a number, found {text!r}")


@pytest.mark.parametrize("text", ["0_5", "1:30", "0x10"])
def test_yaml_numbers_are_read_as_written(root, text):
    """YAML 1.1 reads 0_5 as 5, 1:30 as 90 and 0x10 as 16; here they are errors."""
    write_text(root / "a" / "local.yaml", f"multiply: {text}\n")
    r, report = _scan_json(root)
    assert r.returncode == 1
    assert report["errors"] == [f"a/local.yaml (multiply): multiply must be a number, found {text!r}" + (
        " (write the number without _ or spaces)" if "_" in text else "")]


def test_yaml_octal_looking_number_is_decimal(root):
    write_text(root / "a" / "local.yaml", "multiply: 010\n")
    r, report = _scan_json(root)
    assert {f["path"]: f["multiply"] for f in report["folders"]}["a"] == 10.0


def test_loss_scale_that_overflows_every_loss_is_refused(root):
    write_text(root / "a" / "loss_scale.txt", "1e308")
    r, report = _scan_json(root)
    assert r.returncode == 1
    assert report["errors"][0].startswith("a/loss_scale.txt: loss_scale '1e308' is beyond ±1,000")


# -- item 10: control characters in names --------------------------------------------------


def test_newline_and_tab_in_names_are_skipped_and_schedules_stay_one_line_per_sample(root, tmp_path):
    write_image(root / "a" / "two\nlines.png", size=(64, 64))
    write_image(root / "a" / "tab\there.png", size=(64, 64))
    write_image(root / "odd\nfolder" / "c.png", size=(64, 64))
    r, report = _scan_json(root)
    assert r.returncode == 0, r.stderr
    assert report["images"] == 5
    warnings = " | ".join(report["warnings"])
    assert "skipped 'a/two\\nlines.png': its name contains a newline ('\\n'); rename the file" in warnings
    assert "skipped 'a/tab\\there.png': its name contains a tab ('\\t')" in warnings
    assert "'odd\\nfolder': skipped, the folder name contains a newline" in warnings
    assert all("\n" not in w for w in report["warnings"])

    schedules = tmp_path / "schedules"
    r = edlib("preview", root, "--epochs", "2", "--write-schedule", schedules)
    assert r.returncode == 0, r.stderr
    for file in schedules.iterdir():
        for line in file.read_text(encoding="utf-8").splitlines():
            batch, size, path = line.split("\t")
            assert (root / path).is_file()


# -- poor messages: a folder named like a setting file; links leaving the data root -------


def test_a_folder_named_multiply_txt_is_explained(root):
    (root / "a" / "multiply.txt").mkdir()
    r, report = _scan_json(root)
    assert any(w.startswith("a/multiply.txt: is a folder, so it is not read as a setting") for w in report["warnings"])


def test_links_leaving_the_data_root_are_named_and_can_be_refused(root, tmp_path):
    outside = tmp_path / "elsewhere"
    make_tree(outside, {"x": 3}, size=(64, 64))
    (root / "linked").symlink_to(outside / "x")
    (root / "b" / "one.png").symlink_to(outside / "x" / "x 0_000.png")
    r, report = _scan_json(root)
    warnings = report["warnings"]
    assert report["images"] == 5 + 3 + 1
    assert [w for w in warnings if w.startswith("linked:")] == [
        f"linked: a symbolic link to {outside / 'x'}, outside the data root; its images are used "
        "(set follow_outside_links: false to skip links that leave the data root)"
    ]
    assert any(w.startswith("b: 1 image(s) are symbolic links to files outside the data root") for w in warnings)

    r, report = _scan_json(root, "--skip-outside-links")
    assert r.returncode == 0, r.stderr
    assert report["images"] == 5
    assert any(w.startswith("linked: skipped, a symbolic link to") for w in report["warnings"])
    assert scan(root, follow_outside_links=False, use_cache=False).skipped == [
        ("b/one.png", "a symbolic link to a file outside the data root; skipped (follow_outside_links is off)")
    ]


def test_links_inside_the_data_root_are_quiet(root):
    (root / "alias").symlink_to(root / "a")
    (root / "b" / "again.png").symlink_to(root / "a" / "a 0_000.png")
    r, report = _scan_json(root)
    assert not [w for w in report["warnings"] if "outside the data root" in w]


def test_weights_and_config_files_are_bounded_too(root, tmp_path):
    weights = tmp_path / "w.yaml"
    weights.write_text(BOMB + "a: *i\n")
    r = edlib("balance", root, "--weights", weights, timeout=60, preexec_fn=_limit_memory)
    assert r.returncode == 1 and "holds more than 100,000 values" in r.stderr and len(r.stderr) < 2_000
    config = tmp_path / "config.yaml"
    config.write_text(BOMB + f"data_root: {root}\nbatch_size: *i\n")
    r = edlib("train", config, timeout=60, preexec_fn=_limit_memory)
    assert r.returncode == 1 and "holds more than 100,000 values" in r.stderr and len(r.stderr) < 2_000
