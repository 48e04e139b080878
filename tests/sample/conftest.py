"""Fixtures for the sampling tests: tiny diffusers folders built once per session by
`edlib.model.tiny` and loaded through the same `load_pipeline` a user's model goes through."""

from pathlib import Path

import pytest

from edlib.model.tiny import build_tiny_pipeline
from edlib.sample import load_pipeline


@pytest.fixture(scope="session")
def tiny_model(tiny_sd1) -> Path:
    """A tiny SD1-style (epsilon) model folder (tests/conftest.py's); treat it as read-only."""
    return tiny_sd1


@pytest.fixture(scope="session")
def other_tiny_model(tmp_path_factory) -> Path:
    """The same architecture with other random weights: a second "checkpoint" for grids."""
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd1-b") / "model", variant="sd1", seed=1)


@pytest.fixture(scope="session")
def tiny_v_model(tiny_sd2v) -> Path:
    """A tiny SD2-style v-prediction model folder (tests/conftest.py's)."""
    return tiny_sd2v


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_model):
    """The tiny model loaded once; sampling must leave it as it was, so tests can share it."""
    return load_pipeline(tiny_model)
