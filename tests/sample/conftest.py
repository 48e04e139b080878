"""Fixtures for the sampling tests: tiny diffusers folders built once per session by
`edlib.train.tiny` and loaded through the same `load_pipeline` a user's model goes through."""

from pathlib import Path

import pytest

from edlib.sample import load_pipeline
from edlib.train.tiny import build_tiny_pipeline


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny SD1-style (epsilon) model folder; treat it as read-only."""
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd1") / "model", variant="sd1")


@pytest.fixture(scope="session")
def other_tiny_model(tmp_path_factory) -> Path:
    """The same architecture with other random weights: a second "checkpoint" for grids."""
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd1-b") / "model", variant="sd1", seed=1)


@pytest.fixture(scope="session")
def tiny_v_model(tmp_path_factory) -> Path:
    """A tiny SD2-style v-prediction model folder."""
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd2v") / "model", variant="sd2-v")


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_model):
    """The tiny model loaded once; sampling must leave it as it was, so tests can share it."""
    return load_pipeline(tiny_model)
