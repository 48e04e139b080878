"""The scan cache: identical results, picks up changes, lives outside the data root, and
survives being corrupted."""

import os

from edlib.data.scan import scan
from edlib.data.scan_cache import cache_path
from edlib.data.types import Caption
from tests.data.make_images import make_tree, write_image, write_text


def _bump_mtime(path, seconds=5):
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 1_000_000_000))


def test_rescan_gives_identical_results_and_cache_is_outside_root(tmp_path):
    root = tmp_path / "root"
    make_tree(root, {"a": 3, "a/b": 2, "c": 1})
    write_text(root / "a" / "a 0_000.txt", "captioned")
    write_text(root / "a" / "b" / "a-b 1_001.yaml", "main_prompt: yaml\ntags: [{tag: x, weight: 2}]")
    write_text(root / "c" / "bad.png", "not an image")
    write_text(root / "c" / "c 0_000.txt", raw=b"\xff")
    write_text(root / "a" / "multiply.txt", "1.5")
    first = scan(root)
    path = cache_path(root.resolve())
    assert path.is_file() and not path.resolve().is_relative_to(root)
    assert path.is_relative_to(os.environ["EDLIB_CACHE_DIR"])
    second = scan(root)
    assert second.items == first.items
    assert second.folders == first.folders
    assert second.warnings == first.warnings
    assert second.errors == first.errors
    assert second.skipped == first.skipped
    assert second == scan(root, use_cache=False)


def test_cache_is_really_used_for_unchanged_files(tmp_path):
    # Replace an image's bytes but keep its size and mtime: only a cache can still know
    # the old header, which proves the re-scan did not open the file.
    root = tmp_path / "root"
    img = write_image(root / "a.png", size=(64, 48))
    write_image(root / "b.png", size=(64, 64))
    scan(root)
    st = img.stat()
    img.write_bytes(b"x" * st.st_size)
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns))
    cached = scan(root)
    assert [(i.path, i.width, i.height) for i in cached.items] == [("a.png", 64, 48), ("b.png", 64, 64)]
    fresh = scan(root, use_cache=False)
    assert [p for p, _ in fresh.skipped] == ["a.png"]


def test_rescan_picks_up_changed_caption_and_image(tmp_path):
    root = tmp_path / "root"
    write_image(root / "a.png", size=(64, 48))
    cap = write_text(root / "a.txt", "old caption")
    write_image(root / "b.png", size=(64, 64))
    scan(root)

    write_text(cap, "new caption")  # same length: only the mtime tells
    _bump_mtime(cap)
    img = write_image(root / "b.png", size=(80, 64))
    _bump_mtime(img)
    write_image(root / "c.png", size=(96, 64))
    result = scan(root)
    assert result.items[0].caption == Caption("new caption")
    assert (result.items[1].width, result.items[1].height) == (80, 64)
    assert [i.path for i in result.items] == ["a.png", "b.png", "c.png"]

    os.remove(root / "b.png")
    (root / "a.txt").unlink()
    result = scan(root)
    assert [i.path for i in result.items] == ["a.png", "c.png"]
    assert result.items[0].caption == Caption("a")


def test_corrupt_cache_is_ignored_and_rewritten(tmp_path):
    root = tmp_path / "root"
    make_tree(root, {"a": 2})
    expected = scan(root)
    path = cache_path(root.resolve())
    damaged_record = b'{"version": 2, "root": "%s", "folders": {"a": {"names": 5}}}' % str(root.resolve()).encode()
    for garbage in [b"{not json", b"\x00\xff" * 50, damaged_record, b"[]"]:
        path.write_bytes(garbage)
        assert scan(root) == expected
    assert scan(root) == expected
    assert path.read_bytes().startswith(b'{"version"')


def test_cache_dir_inside_root_is_never_written(tmp_path, monkeypatch):
    root = tmp_path / "root"
    make_tree(root, {"a": 2})
    monkeypatch.setenv("EDLIB_CACHE_DIR", str(root / "cache"))
    scan(root)
    assert not (root / "cache").exists()
