"""Aspect buckets: sizes on the 64 grid near resolution**2, nearest-aspect assignment."""

import numpy as np
import pytest

from edlib.data.buckets import assign_buckets, make_buckets


@pytest.mark.parametrize("resolution", [256, 512, 768, 1024])
def test_buckets_are_on_the_grid_within_the_area_and_aspect_limits(resolution):
    buckets = make_buckets(resolution)
    area = resolution * resolution
    assert (resolution, resolution) in buckets
    for w, h in buckets:
        assert w % 64 == 0 and h % 64 == 0
        assert w * h <= area
        assert w * h >= 0.75 * area, (w, h)
        assert 1 / 4 <= w / h <= 4
        # the largest size of its shape: one more step on the other side would overflow
        assert w * (h + 64) > area or (w + 64) * h > area
    assert sorted(buckets) == sorted((h, w) for w, h in buckets)  # symmetric
    aspects = [w / h for w, h in buckets]
    assert aspects == sorted(aspects) and len(set(buckets)) == len(buckets)


def test_max_aspect_limits_the_range():
    buckets = make_buckets(512, max_aspect=2.0)
    assert max(w / h for w, h in buckets) <= 2.0
    assert min(w / h for w, h in buckets) >= 0.5
    assert len(buckets) < len(make_buckets(512))


def test_resolution_below_the_step_is_refused():
    with pytest.raises(ValueError, match="smaller than the bucket step"):
        make_buckets(32)


def test_assignment_is_the_nearest_log_aspect():
    buckets = make_buckets(512)
    rng = np.random.default_rng(0)
    widths = rng.integers(50, 3000, 2000)
    heights = rng.integers(50, 3000, 2000)
    got = assign_buckets(widths, heights, buckets)

    bucket_log = np.log([w / h for w, h in buckets])
    for w, h, b in zip(widths, heights, got):
        distances = np.abs(np.log(w / h) - bucket_log)
        assert distances[b] == pytest.approx(distances.min(), abs=1e-12)


def test_assignment_of_typical_shapes():
    buckets = make_buckets(512)
    got = [buckets[i] for i in assign_buckets([512, 3000, 2000, 640, 100], [512, 2000, 3000, 480, 1000], buckets)]
    assert got[0] == (512, 512)
    assert got[1] == (640, 384)  # 1.5: log-nearer 1.67 than 1.29
    assert got[2] == (got[1][1], got[1][0])  # the portrait twin
    assert got[3] == (576, 448)  # 4:3
    assert got[4] == (256, 1024)  # 1:10 clamps to the tallest bucket


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="positive"):
        assign_buckets([0, 10], [10, 10], make_buckets(512))
    with pytest.raises(ValueError, match="shape"):
        assign_buckets([10, 10], [10], make_buckets(512))


def test_a_single_bucket_takes_everything():
    assert assign_buckets([10, 300, 64], [300, 10, 64], make_buckets(64)).tolist() == [0, 0, 0]
