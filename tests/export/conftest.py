"""Fixtures for the export tests: the tiny SD1 (CLIP) and SD2-v (OpenCLIP) pipelines, built
once per session as diffusers folders."""

from pathlib import Path

import pytest

from edlib.model.tiny import build_tiny_pipeline

VARIANTS = {"sd1": "sd1", "sd2": "sd2-v"}  # export variant -> tiny pipeline variant


@pytest.fixture(scope="session")
def tiny_folders(tmp_path_factory) -> dict[str, Path]:
    """Export variant -> a tiny diffusers folder of that family (read-only for tests)."""
    root = tmp_path_factory.mktemp("tiny-export")
    return {name: build_tiny_pipeline(root / name, variant=tiny) for name, tiny in VARIANTS.items()}
