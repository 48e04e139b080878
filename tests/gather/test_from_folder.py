"""Gathering from a big local folder: a seeded, reproducible draw; copies or links with
their captions; filters and near-duplicates; resuming and adding; clear errors."""

import hashlib
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from edlib.data.scan import scan
from edlib.gather import GatherError, GatherOptions, gather
from edlib.gather import report as R
from edlib.gather.journal import Journal
from edlib.gather.target import STAGING
from edlib.world import write_data_root
from tests.gather.conftest import TRAINING_SPEC, jpeg_bytes

OPTS = GatherOptions(resolution=64, progress=False)


def _snapshot(root: Path, skip: str | None = None) -> dict[str, str]:
    """Every file below `root` (links not followed) with a hash of its bytes."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if skip and (rel == skip or rel.startswith(skip + os.sep)):
            dirnames[:] = []
            continue
        for name in filenames:
            p = Path(dirpath, name)
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _kept(root: Path, folder: str = "gt") -> list[dict]:
    return Journal(root / folder / STAGING / "journal.jsonl").state.kept


@pytest.fixture
def pool(tmp_path) -> Path:
    path = tmp_path / "pool"
    write_data_root(path, {"a": {"count": 60}, "b": {"count": 60}}, seed=11, size=64)
    return path


def _root(tmp_path: Path, name: str) -> Path:
    root = tmp_path / name
    write_data_root(root, TRAINING_SPEC, seed=3, size=64)
    return root


def test_the_same_seed_draws_the_same_files(tmp_path, pool):
    runs = {}
    for name, seed in (("one", 5), ("two", 5), ("three", 6)):
        root = _root(tmp_path, name)
        report = gather(root, pool, "gt", count=30, options=GatherOptions(resolution=64, seed=seed, progress=False))
        assert report.kept == 30
        runs[name] = [k["origin"] for k in _kept(root)]
    assert runs["one"] == runs["two"]
    assert runs["one"] != runs["three"]
    # Files with the same name in a/ and b/ keep both, under distinct names.
    assert len({k["name"] for k in _kept(tmp_path / "one")}) == 30


def test_copies_and_links_leave_the_source_as_it_was(tmp_path, pool):
    before = _snapshot(pool)
    copy_root, link_root = _root(tmp_path, "copy"), _root(tmp_path, "link")
    gather(copy_root, pool, "gt", count=12, options=OPTS)
    gather(link_root, pool, "gt", count=12, options=GatherOptions(resolution=64, link=True, progress=False))
    assert _snapshot(pool) == before
    for k in _kept(copy_root):
        dest = copy_root / "gt" / k["name"]
        assert not dest.is_symlink() and dest.read_bytes() == (pool / k["origin"]).read_bytes()
    for k in _kept(link_root):
        dest = link_root / "gt" / k["name"]
        assert dest.is_symlink() and dest.resolve() == (pool / k["origin"]).resolve()
    assert [k["origin"] for k in _kept(copy_root)] == [k["origin"] for k in _kept(link_root)]


def test_captions_come_along_as_the_scan_reads_them(tmp_path):
    pool = tmp_path / "pool"
    (pool / "x").mkdir(parents=True)
    (pool / "y").mkdir()
    image = Image.new("RGB", (80, 80), (200, 30, 30))
    colours = iter([(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200), (200, 30, 200)])

    def put(rel: str) -> None:
        Image.new("RGB", (80, 80), next(colours)).save(pool / rel)

    put("x/0001.png")
    (pool / "x/0001.txt").write_text("a caption from a txt file\n")
    put("y/0001.png")  # the same file name in another folder
    (pool / "y/0001.caption").write_text("from a .caption file")
    put("x/tagged.jpg")
    (pool / "x/tagged.yaml").write_text("main_prompt: a photo\ntags:\n  - tag: red\n    weight: 2\n")
    put("x/rare photo_01.png")
    put("y/plain.png")
    assert image  # the pool holds five images of five colours
    root = _root(tmp_path, "data")
    report = gather(root, pool, "gt", count=10, options=OPTS)
    assert report.kept == 5 and report.exhausted
    expected = {it.path: it.caption for it in scan(pool).items}
    gathered = {it.path.split("/", 1)[1]: it.caption for it in scan(root).items if it.folder == "gt"}
    by_origin = {k["origin"]: k["name"] for k in _kept(root)}
    assert set(by_origin) == set(expected)
    for origin, name in by_origin.items():
        assert gathered[name] == expected[origin], origin
    assert (root / "gt" / "tagged.yaml").read_bytes() == (pool / "x/tagged.yaml").read_bytes()
    assert gathered[by_origin["x/rare photo_01.png"]].main_prompt == "rare photo"


def test_small_long_unreadable_and_duplicate_images_are_refused(tmp_path):
    root = _root(tmp_path, "data")
    pool = tmp_path / "pool"
    write_data_root(pool, {"good": {"count": 8, "shapes": ["circle", "square"], "sizes": ["large"]}}, seed=2, size=64)
    training = Image.open(root / "concept/00000.png")
    (pool / "training_copy.jpg").write_bytes(jpeg_bytes(training.resize((96, 96))))
    first = Image.open(pool / "good/00000.png")
    (pool / "copy_a.jpg").write_bytes(jpeg_bytes(first.resize((90, 90)), quality=80))
    (pool / "copy_b.png").write_bytes((pool / "good/00000.png").read_bytes())
    Image.new("RGB", (40, 40), (9, 9, 9)).save(pool / "tiny.png")
    Image.new("RGB", (200, 64), (9, 99, 9)).save(pool / "wide.png")
    (pool / "notes.jpg").write_text("this is not a picture")
    report = gather(root, pool, "gt", count=100, options=OPTS)
    # Scenes drawn at random may repeat exactly; those are duplicates too.
    distinct = len({hashlib.sha256((pool / "good" / f"{i:05d}.png").read_bytes()).digest() for i in range(8)})
    assert report.reasons[R.DUPLICATE_OF_TRAINING] == 1
    assert report.reasons[R.DUPLICATE] == 2 + (8 - distinct)
    assert report.reasons[R.TOO_SMALL] == 1 and report.reasons[R.ASPECT] == 1 and report.reasons[R.NOT_AN_IMAGE] == 1
    assert report.kept == distinct
    assert report.looked_at == 14 and report.exhausted
    kept = {k["origin"] for k in _kept(root)}
    assert not kept & {"training_copy.jpg", "tiny.png", "wide.png", "notes.jpg"}
    assert len(kept & {"good/00000.png", "copy_a.jpg", "copy_b.png"}) == 1


def test_a_larger_count_adds_to_the_set_as_one_run_would(tmp_path, pool):
    stepwise, direct = _root(tmp_path, "stepwise"), _root(tmp_path, "direct")
    first = gather(stepwise, pool, "gt", count=10, per_epoch=4, options=OPTS)
    names_first = [k["name"] for k in _kept(stepwise)]
    second = gather(stepwise, pool, "gt", count=25, options=OPTS)
    gather(direct, pool, "gt", count=25, options=OPTS)
    assert (first.kept, first.added, second.kept, second.added) == (10, 10, 25, 15)
    assert [k["name"] for k in _kept(stepwise)][:10] == names_first
    assert [k["origin"] for k in _kept(stepwise)] == [k["origin"] for k in _kept(direct)]
    # The remembered 4 images per epoch is recomputed for 25 images.
    assert first.multiply == "0.4" and second.multiply == "0.16"
    assert (stepwise / "gt/multiply.txt").read_text().strip() == "0.16"
    doc = json.loads((stepwise / "gt" / R.REPORT_NAME).read_text())
    assert doc["kept"] == 25 and [r["added"] for r in doc["runs"]] == [10, 15]
    again = gather(stepwise, pool, "gt", count=20, options=OPTS)
    assert again.kept == 25 and again.added == 0  # never removes images


def test_a_hand_edited_multiply_is_left_alone(tmp_path, pool):
    root = _root(tmp_path, "data")
    gather(root, pool, "gt", count=10, fraction=0.5, options=OPTS)
    (root / "gt/multiply.txt").write_text("0.3\n")
    report = gather(root, pool, "gt", count=12, options=OPTS)
    assert (root / "gt/multiply.txt").read_text() == "0.3\n"
    assert report.multiply == "0.3" and any("changed by hand" in n for n in report.notes)
    report = gather(root, pool, "gt", count=12, share=0.5, options=OPTS)
    # Half of the epoch: 6 training images, so 6 of the 12 gathered ones per epoch.
    assert report.multiply == "0.5" and report.per_epoch == pytest.approx(6)


def test_files_of_an_interrupted_run_that_were_never_recorded_are_removed(tmp_path, pool):
    root = _root(tmp_path, "data")
    gather(root, pool, "gt", count=5, options=OPTS)
    journal = Journal(root / "gt" / STAGING / "journal.jsonl")
    journal.append({"t": "pending", "names": ["half_done.png"]})
    (root / "gt/half_done.txt").write_text("caption\n")
    (root / "gt/half_done.png").write_bytes((pool / "a/00000.png").read_bytes())
    (root / "gt/.00000.png.123.tmp").write_bytes(b"partial")
    with open(journal.path, "ab") as fh:
        fh.write(b'{"t":"window","kept":[{"na')  # a line cut off by the crash
    report = gather(root, pool, "gt", count=5, options=OPTS)
    assert report.kept == 5
    left = sorted(p.name for p in (root / "gt").iterdir())
    assert "half_done.png" not in left and "half_done.txt" not in left and ".00000.png.123.tmp" not in left
    assert len([n for n in left if n.endswith(".png")]) == 5


def test_nothing_outside_the_new_folder_changes(tmp_path, pool):
    root = _root(tmp_path, "data")
    before = _snapshot(root)
    gather(root, pool, "gt", count=20, per_epoch=5, options=OPTS)
    assert _snapshot(root, skip="gt") == before


def test_bad_input_is_refused_before_anything_is_written(tmp_path, pool):
    root = _root(tmp_path, "data")
    before = _snapshot(root)
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub/readme.txt").write_text("no pictures here")
    cases = [
        ({"source": empty}, "no images found"),
        ({"source": root / "concept"}, "overlap"),
        ({"source": tmp_path}, "overlap"),
        ({"folder": tmp_path / "elsewhere"}, "outside the data root"),
        ({"folder": "."}, "not the data root itself"),
        ({"folder": ".hidden"}, "leading '.'"),
        ({"folder": "concept"}, "did not put there"),
        ({"count": 0}, "count must be a whole number"),
        ({"share": 0.2, "per_epoch": 3}, "give one of"),
        ({"source": tmp_path / "nothing.parquet"}, "no such file"),
        ({"source": tmp_path / "nothing"}, "no such file or folder"),
    ]
    for change, message in cases:
        kwargs = {"source": pool, "folder": "gt", "count": 5, **change}
        with pytest.raises((GatherError, ValueError), match=message):
            gather(root, kwargs.pop("source"), kwargs.pop("folder"), options=OPTS, **kwargs)
    assert _snapshot(root) == before


def test_a_rerun_with_other_draw_settings_says_what_differs(tmp_path, pool):
    root = _root(tmp_path, "data")
    gather(root, pool, "gt", count=5, options=OPTS)
    with pytest.raises(GatherError, match=r"seed: 0 then, 3 now"):
        gather(root, pool, "gt", count=5, options=GatherOptions(resolution=64, seed=3, progress=False))
    with pytest.raises(GatherError, match=r"min_side: 64 then, 512 now"):
        gather(root, pool, "gt", count=5, options=GatherOptions(progress=False))


def test_a_share_needs_other_images(tmp_path, pool):
    root = tmp_path / "empty_root"
    root.mkdir()
    with pytest.raises(GatherError, match="share of the epoch needs other folders"):
        gather(root, pool, "gt", count=5, share=0.1, options=OPTS)
