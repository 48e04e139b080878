"""Per-epoch schedules: multiplier realisation, buckets and fill, determinism, the file."""

from fractions import Fraction

import numpy as np
import pytest

from edlib.data.buckets import assign_buckets
from edlib.data.schedule import EpochPlanner, count_epoch, realise_epoch, write_schedule

from .fake_scan import FakeFolder, fake_scan

RES = 256  # small buckets; the schedule never touches pixels
MIXED = [(256, 256), (384, 256), (256, 384), (512, 128)]


def drawn_per_item(schedule, n_items):
    """How often each image is used in an epoch, fill repeats not counted."""
    return np.bincount(schedule.items[~schedule.fill], minlength=n_items)


def folder_of(scan):
    return np.array([it.folder for it in scan.items])


def test_integer_multipliers_give_exact_counts():
    scan = fake_scan(FakeFolder("a", 7, 1, MIXED), FakeFolder("b", 5, 2, MIXED), FakeFolder("c", 3, 3))
    expected = np.array([{"a": 1, "b": 2, "c": 3}[f] for f in folder_of(scan)])
    for epoch in range(3):
        for batch_size in (1, 4):
            s = realise_epoch(scan, epoch, seed=5, batch_size=batch_size, resolution=RES)
            assert drawn_per_item(s, len(scan.items)).tolist() == expected.tolist()
            assert s.n_samples == 7 + 10 + 9 + s.n_fill


def test_fractional_multiplier_mean_is_exact_and_each_epoch_is_floor_or_ceil():
    # m = 2.35 on 10 images: every image twice, plus k = 3.5 drawn: 3 or 4 extra per epoch
    scan = fake_scan(FakeFolder("f", 10, Fraction("2.35"), MIXED), FakeFolder("g", 4, 1))
    planner = EpochPlanner(scan, resolution=RES, seed=11)
    epochs = 400
    extra = np.array([planner.counts(e, batch_size=3).folder_samples[0] - 20 for e in range(epochs)])
    assert set(extra.tolist()) <= {3, 4}
    # k - floor(k) = 0.5 is the Bernoulli p: per-epoch variance p(1-p); 5 standard errors
    tolerance = 5 * np.sqrt(0.5 * 0.5 / epochs)
    assert abs(extra.mean() - 3.5) < tolerance

    f_items = np.flatnonzero(folder_of(scan) == "f")
    seen_extra = np.zeros(len(scan.items), int)
    for e in range(20):  # the realised epochs agree with the counts, draw without replacement
        used = drawn_per_item(planner.realise(e, batch_size=3), len(scan.items))
        assert used[f_items].sum() == 20 + extra[e]
        assert set(used[f_items].tolist()) <= {2, 3}
        seen_extra += used == 3
    assert (seen_extra[f_items] > 0).all()  # every image gets its turn


def test_a_tenth_of_ten_images_is_exactly_one_every_epoch():
    scan = fake_scan(FakeFolder("pres", 10, Fraction("0.1")), FakeFolder("train", 3, 1))
    planner = EpochPlanner(scan, resolution=RES, seed=0)
    pres = folder_of(scan) == "pres"
    for e in range(50):
        assert drawn_per_item(planner.realise(e, batch_size=2), len(scan.items))[pres].sum() == 1


def test_exact_decimal_fractions_never_floor_away():
    # 0.7 * 10 is 7 in exact arithmetic (6.999... in floats)
    scan = fake_scan(FakeFolder("x", 10, Fraction("0.7")), FakeFolder("y", 30, Fraction("0.1")))
    for e in range(10):
        counts = count_epoch(scan, e, seed=3, batch_size=1, resolution=RES)
        assert counts.folder_samples.tolist() == [7, 3]


def test_multipliers_do_not_cascade_into_subfolders():
    scan = fake_scan(FakeFolder("a", 4, 3), FakeFolder("a/b", 5), FakeFolder("a/b/c", 2, Fraction("0.5")))
    s = realise_epoch(scan, 0, seed=1, batch_size=1, resolution=RES)
    used = drawn_per_item(s, len(scan.items))
    folders = folder_of(scan)
    assert used[folders == "a"].tolist() == [3] * 4
    assert used[folders == "a/b"].tolist() == [1] * 5
    assert used[folders == "a/b/c"].sum() == 1


def test_same_seed_and_epoch_give_the_same_schedule_and_others_differ():
    scan = fake_scan(FakeFolder("a", 40, Fraction("1.5"), MIXED, flip_p=0.5), FakeFolder("b", 25, Fraction("0.3")))
    one = realise_epoch(scan, 2, seed=7, batch_size=4, resolution=RES)
    two = realise_epoch(scan, 2, seed=7, batch_size=4, resolution=RES)
    for name in ("items", "flips", "fill", "batch_buckets"):
        assert np.array_equal(getattr(one, name), getattr(two, name)), name
    for other in (
        realise_epoch(scan, 3, seed=7, batch_size=4, resolution=RES),
        realise_epoch(scan, 2, seed=8, batch_size=4, resolution=RES),
    ):
        assert not np.array_equal(one.items, other.items)


def test_changing_one_folder_does_not_change_another_folders_draw():
    def drawn_from_a(b_multiply, b_images):
        scan = fake_scan(FakeFolder("a", 30, Fraction("0.4")), FakeFolder("b", b_images, Fraction(b_multiply)))
        a_paths = {it.path for it in scan.items if it.folder == "a"}
        out = []
        for e in range(5):
            s = realise_epoch(scan, e, seed=9, batch_size=4, resolution=RES)
            out.append(sorted(p for i in s.items[~s.fill] if (p := scan.items[i].path) in a_paths))
        return out

    base = drawn_from_a("0.5", 20)
    assert drawn_from_a("2.75", 20) == base
    assert drawn_from_a("0.5", 33) == base
    assert len(base[0]) == 12


def test_batches_hold_one_bucket_and_fill_is_counted_never_dropping_anything():
    scan = fake_scan(FakeFolder("a", 23, Fraction("1.3"), MIXED), FakeFolder("b", 9, 2, [(700, 300), (256, 256)]))
    planner = EpochPlanner(scan, resolution=RES, seed=4)
    item_bucket = assign_buckets([it.width for it in scan.items], [it.height for it in scan.items], planner.buckets)
    for e in range(4):
        s = planner.realise(e, batch_size=4)
        counts = planner.counts(e, batch_size=4)
        assert len(s) == counts.batches and s.n_samples == 4 * len(s)
        assert s.n_fill == counts.group_fill.sum()
        for batch in s:
            assert {item_bucket[i] for i in batch.items} == {planner.buckets.index(batch.bucket)}
        # every drawn sample is there exactly as often as drawn; fill is the only extra
        drawn = drawn_per_item(s, len(scan.items))
        assert drawn.sum() == counts.samples
        filled_per_bucket = np.bincount(item_bucket[s.items[s.fill]], minlength=len(planner.buckets))
        assert filled_per_bucket.tolist() == counts.bucket_fill.tolist()
        used_per_bucket = np.bincount(item_bucket[s.items[~s.fill]], minlength=len(planner.buckets))
        assert used_per_bucket.tolist() == counts.bucket_samples.tolist()
        assert ((counts.bucket_samples + counts.bucket_fill) % 4 == 0).all()
        assert (counts.bucket_fill < 4).all()


def test_a_group_smaller_than_a_batch_is_filled_with_repeats():
    scan = fake_scan(FakeFolder("wide", 1, 1, [(512, 128)]), FakeFolder("square", 8, 1))
    s = realise_epoch(scan, 0, seed=0, batch_size=4, resolution=RES)
    wide = [b for b in s if b.bucket == (512, 128)]
    assert len(wide) == 1 and len(s) == 3
    wide_index = next(i for i, it in enumerate(scan.items) if it.folder == "wide")
    assert wide[0].items == (wide_index,) * 4
    assert sorted(wide[0].fill) == [False, True, True, True]
    assert s.n_fill == 3


def test_batch_id_groups_batches():
    scan = fake_scan(
        FakeFolder("x", 1, batch_id="pair"), FakeFolder("y", 1, batch_id="pair"), FakeFolder("z", 2)
    )
    folders = folder_of(scan)
    for e in range(5):
        s = realise_epoch(scan, e, seed=e, batch_size=2, resolution=RES)
        assert sorted(tuple(sorted(folders[list(b.items)])) for b in s) == [("x", "y"), ("z", "z")]


def test_batch_id_never_mixes_with_other_groups():
    scan = fake_scan(
        FakeFolder("p1", 13, Fraction("1.5"), batch_id="p"),
        FakeFolder("p2", 9, batch_id="p"),
        FakeFolder("q", 11, batch_id="q"),
        FakeFolder("none", 17),
    )
    group = {"p1": "p", "p2": "p", "q": "q", "none": None}
    folders = folder_of(scan)
    s = realise_epoch(scan, 1, seed=2, batch_size=4, resolution=RES)
    for b in s:
        assert len({group[f] for f in folders[list(b.items)]}) == 1


def test_flip_probability_per_folder():
    scan = fake_scan(FakeFolder("never", 50), FakeFolder("always", 50, flip_p=1.0), FakeFolder("half", 400, flip_p=0.5))
    s = realise_epoch(scan, 0, seed=3, batch_size=5, resolution=RES)
    folders = folder_of(scan)[s.items]
    assert not s.flips[folders == "never"].any()
    assert s.flips[folders == "always"].all()
    half = s.flips[folders == "half"]
    assert abs(half.mean() - 0.5) < 5 * np.sqrt(0.25 / len(half))


def test_batch_objects_match_the_flat_arrays():
    scan = fake_scan(FakeFolder("a", 10, 1, MIXED, flip_p=0.5))
    s = realise_epoch(scan, 0, seed=0, batch_size=3, resolution=RES)
    batches = list(s)
    assert [b.index for b in batches] == list(range(len(s)))
    assert np.concatenate([b.items for b in batches]).tolist() == s.items.tolist()
    assert sum(b.fill.count(True) for b in batches) == s.n_fill
    assert s.batch(1).flips == tuple(s.flips[3:6].tolist())
    with pytest.raises(IndexError):
        s.batch(len(s))


def test_bad_arguments_are_refused():
    scan = fake_scan(FakeFolder("a", 2))
    with pytest.raises(ValueError, match="batch_size"):
        realise_epoch(scan, 0, seed=0, batch_size=0, resolution=RES)
    with pytest.raises(ValueError, match="epoch"):
        realise_epoch(scan, -1, seed=0, batch_size=1, resolution=RES)


def test_write_schedule_format(tmp_path):
    scan = fake_scan(FakeFolder("a", 5, Fraction("1.5"), MIXED), FakeFolder("b/c", 3))
    s = realise_epoch(scan, 3, seed=0, batch_size=2, resolution=RES)
    path = write_schedule(s, scan, tmp_path / "schedules")
    assert path == tmp_path / "schedules" / "ep3_batch_schedule.txt"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left

    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == s.n_samples
    rows = [line.split("\t") for line in lines]
    assert all(len(r) == 3 for r in rows)
    assert [int(r[0]) for r in rows] == np.repeat(np.arange(len(s)), 2).tolist()
    for r, item in zip(rows, s.items):
        assert r[2] == scan.items[item].path
        w, h = s.buckets[s.batch_buckets[int(r[0])]]
        assert r[1] == f"{w}x{h}"


def test_write_schedule_refuses_a_schedule_of_another_scan(tmp_path):
    big = fake_scan(FakeFolder("a", 10))
    small = fake_scan(FakeFolder("a", 2))
    s = realise_epoch(big, 0, seed=0, batch_size=1, resolution=RES)
    with pytest.raises(ValueError, match="does not have"):
        write_schedule(s, small, tmp_path)
