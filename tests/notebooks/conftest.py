"""Fixtures of the notebook and panel tests (a module may define its own `data_root`)."""

from pathlib import Path

import pytest

from edlib.world import write_data_root


@pytest.fixture
def data_root(tmp_path) -> Path:
    root = tmp_path / "data"
    write_data_root(root, {"concept": {"count": 4, "shapes": ["star"]}, "other": {"count": 2}}, seed=1, size=64)
    return root
