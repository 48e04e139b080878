"""The learning-rate curve a preview shows: the model layer adds it over the preview's steps,
and it is the schedule the trainer follows (see test_optim for the trainer's side)."""

import numpy as np
import pytest

from edlib.data.preview import preview
from edlib.model.lr import with_lr_curve
from tests.data.fake_scan import FakeFolder, fake_scan
from tests.data.test_preview import RES, mixed_scan


def test_the_curve_has_one_rate_per_optimizer_step():
    p = with_lr_curve(preview(mixed_scan(), epochs=8, batch_size=3, resolution=RES, seed=4, gradient_accumulation_steps=2), "constant", 1e-6)
    assert len(p.lr) == p.total_steps


def test_max_steps_caps_the_run_and_the_lr_curve():
    p = preview(mixed_scan(), epochs=10, batch_size=2, resolution=RES, max_steps=25)
    p = with_lr_curve(p, "cosine", 1e-4, warmup_steps=5)
    assert sum(p.steps_per_epoch_all) > 25 and p.total_steps == 25
    assert len(p.lr) == 25
    assert p.lr[0] == 0.0 and max(p.lr) == pytest.approx(1e-4) and int(np.argmax(p.lr)) == 5
    assert p.lr[-1] < p.lr[10]
    assert any("max_steps=25 ends training in epoch" in w for w in p.warnings)


def test_a_long_lr_curve_is_cheap():
    scan = fake_scan(FakeFolder("a", 10_000, 10))  # 100,000 steps at batch size 1
    p = with_lr_curve(preview(scan, resolution=RES), "linear", 2e-6, warmup_steps=100)
    assert p.total_steps == 100_000 and len(p.lr) == 100_000
    assert p.lr[-1] < 1e-10 and max(p.lr) == pytest.approx(2e-6)
