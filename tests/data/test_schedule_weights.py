"""Per-image weights on a schedule (the hard-example boost): exact for whole products,
right in expectation for fractions, reproducible, counted as realised, and invisible when
no image is weighted."""

import math
from fractions import Fraction

import numpy as np
import pytest

from edlib.data.schedule import EpochPlanner, count_epoch, realise_epoch

from .fake_scan import FakeFolder, fake_scan

RES = 256
MIXED = [(256, 256), (384, 256), (256, 384), (512, 128)]


def drawn_per_item(schedule, n_items):
    return np.bincount(schedule.items[~schedule.fill], minlength=n_items)


def index_of(scan):
    return {it.path: i for i, it in enumerate(scan.items)}


def test_whole_weights_give_exactly_w_times_the_folder_count():
    scan = fake_scan(FakeFolder("a", 7, 1, MIXED), FakeFolder("b", 5, 2, MIXED), FakeFolder("c", 3, 3))
    weights = {"a/img_000000.png": 3, "b/img_000001.png": 2, "b/img_000002.png": 0, "c/img_000000.png": 0.5}
    base = {"a": 1, "b": 2, "c": 3}
    expected = np.array([base[it.folder] for it in scan.items])
    index = index_of(scan)
    for path, w in weights.items():
        expected[index[path]] = base[path[0]] * w if path != "c/img_000000.png" else -1
    for epoch in range(4):
        for batch_size in (1, 3):
            s = realise_epoch(scan, epoch, seed=5, batch_size=batch_size, resolution=RES, item_weights=weights)
            counts = drawn_per_item(s, len(scan.items))
            # 0.5 x 3 = 1.5 is not whole: one or two, the rest exactly
            assert counts[index["c/img_000000.png"]] in (1, 2)
            mask = expected >= 0
            assert counts[mask].tolist() == expected[mask].tolist()


def test_fractional_products_are_right_in_expectation_and_others_keep_their_draws():
    scan = fake_scan(FakeFolder("f", 10, Fraction("2.35"), MIXED), FakeFolder("g", 4, 1))
    index = index_of(scan)
    weights = {"f/img_000000.png": 1.5, "g/img_000001.png": 0.3}
    planner = EpochPlanner(scan, resolution=RES, seed=11)
    epochs = 400
    boosted, lowered = [], []
    for epoch in range(epochs):
        plain = drawn_per_item(planner.realise(epoch, batch_size=2), len(scan.items))
        weighted = drawn_per_item(planner.realise(epoch, batch_size=2, item_weights=weights), len(scan.items))
        f0, g1 = index["f/img_000000.png"], index["g/img_000001.png"]
        # each epoch: floor or ceil of w x (what the multiplier gave this image this epoch)
        assert weighted[f0] in (math.floor(1.5 * plain[f0]), math.ceil(1.5 * plain[f0]))
        assert weighted[g1] in (0, 1)
        others = np.ones(len(scan.items), bool)
        others[[f0, g1]] = False
        assert weighted[others].tolist() == plain[others].tolist()  # folder draws unchanged
        boosted.append(weighted[f0])
        lowered.append(weighted[g1])
    # E = w x multiplier: 1.5 x 2.35 = 3.525 (sd per epoch < 1) and 0.3 x 1 (sd 0.46); 4 standard errors
    assert np.mean(boosted) == pytest.approx(1.5 * 2.35, abs=4 * 1.0 / np.sqrt(epochs))
    assert np.mean(lowered) == pytest.approx(0.3, abs=4 * 0.46 / np.sqrt(epochs))


def test_no_weights_empty_weights_and_unit_weights_change_nothing():
    scan = fake_scan(FakeFolder("a", 9, Fraction("1.5"), MIXED, flip_p=0.5), FakeFolder("b", 6, 2, MIXED))
    unit = {it.path: 1.0 for it in scan.items} | {"gone/quarantined.png": 3.0}  # unknown paths are ignored
    for epoch in range(3):
        plain = realise_epoch(scan, epoch, seed=3, batch_size=4, resolution=RES)
        for weights in (None, {}, unit):
            s = realise_epoch(scan, epoch, seed=3, batch_size=4, resolution=RES, item_weights=weights)
            for name in ("items", "flips", "fill", "batch_buckets"):
                assert np.array_equal(getattr(s, name), getattr(plain, name))


def test_counts_with_weights_equal_the_realised_epoch():
    scan = fake_scan(
        FakeFolder("mixed", 13, Fraction("2.5"), MIXED),  # several groups: its choice is always made
        FakeFolder("square", 11, Fraction("0.4")),  # one group: counting alone may skip the choice
        FakeFolder("pres", 20, Fraction("0.15"), MIXED),
    )
    weights = {it.path: w for it, w in zip(scan.items[::3], [2.0, 0.5, 1.7, 0.0, 1.25] * 10)}
    planner = EpochPlanner(scan, resolution=RES, seed=9)
    folder_paths = [f.path for f in scan.folders]
    item_folder = np.array([folder_paths.index(it.folder) for it in scan.items])
    for epoch in range(12):
        counts = planner.counts(epoch, batch_size=3, item_weights=weights)
        s = planner.realise(epoch, batch_size=3, item_weights=weights)
        per_item = drawn_per_item(s, len(scan.items))
        assert counts.folder_samples.tolist() == np.bincount(item_folder, per_item, len(folder_paths)).tolist()
        assert counts.batches == len(s) and counts.samples == s.n_samples - s.n_fill
        assert int(counts.group_fill.sum()) == s.n_fill
        realised_buckets = np.bincount(s.batch_buckets, minlength=len(s.buckets)) * 3
        assert (counts.bucket_samples + counts.bucket_fill).tolist() == realised_buckets.tolist()
        same = count_epoch(scan, epoch, seed=9, batch_size=3, resolution=RES, item_weights=weights)
        assert same.folder_samples.tolist() == counts.folder_samples.tolist()


def test_weighted_epochs_are_reproducible():
    scan = fake_scan(FakeFolder("a", 8, Fraction("1.3"), MIXED))
    weights = {"a/img_000002.png": 1.6, "a/img_000005.png": 0.4}
    one = realise_epoch(scan, 2, seed=1, batch_size=2, resolution=RES, item_weights=weights)
    two = realise_epoch(scan, 2, seed=1, batch_size=2, resolution=RES, item_weights=dict(reversed(weights.items())))
    assert np.array_equal(one.items, two.items) and np.array_equal(one.flips, two.flips)


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf")])
def test_a_bad_weight_is_refused_naming_the_image(bad):
    scan = fake_scan(FakeFolder("a", 3))
    with pytest.raises(ValueError, match="a/img_000001.png"):
        realise_epoch(scan, 0, seed=1, batch_size=1, resolution=RES, item_weights={"a/img_000001.png": bad})
