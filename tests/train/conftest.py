"""Fixtures for the training tests: tiny SD1 (epsilon) and SD2 (v-prediction) pipelines,
built once per test session from configs and written as ordinary diffusers folders, so the
tests load them through the same path a user's model takes."""

from pathlib import Path

import pytest

from edlib.train.tiny import build_tiny_pipeline


@pytest.fixture(scope="session")
def tiny_sd1(tmp_path_factory) -> Path:
    """A tiny SD1-style (epsilon) diffusers folder; treat it as read-only."""
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd1") / "model", variant="sd1")


@pytest.fixture(scope="session")
def tiny_sd2v(tmp_path_factory) -> Path:
    """A tiny SD2-style (v-prediction) diffusers folder; treat it as read-only."""
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd2v") / "model", variant="sd2-v")
