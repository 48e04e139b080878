"""Shared test set-up. Each test package (tests/data, tests/train, ...) keeps its own
fixtures beside its tests; only what every test needs lives here."""

import os
import shutil

import pytest

# Nothing in the tests may reach a model hub: fail fast instead of hanging on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_configure(config):
    # The tiny models run fastest on one thread; several threads per test process on the
    # 2-core CI machine (with pytest -n 2) thrash and make steps ~10x slower.
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_sd1(tmp_path_factory):
    """A tiny SD1-style (epsilon) diffusers folder, built once per test session from configs and
    loaded through the same path a user's model takes; treat it as read-only."""
    from edlib.model.tiny import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd1") / "model", variant="sd1")


@pytest.fixture(scope="session")
def tiny_sd2v(tmp_path_factory):
    """A tiny SD2-style (v-prediction) diffusers folder; treat it as read-only."""
    from edlib.model.tiny import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd2v") / "model", variant="sd2-v")


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory):
    """A tiny SDXL diffusers folder (two text encoders, micro-conditioning); read-only for
    tests. Here, like the SD1/SD2 ones, because model, training, sampling and export tests all use it."""
    from edlib.model.tiny import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny-sdxl") / "model", variant="sdxl")


@pytest.fixture(scope="session")
def tiny_flux(tmp_path_factory):
    """A tiny FLUX.1-dev diffusers folder (transformer with the guidance embedder, CLIP-L, T5,
    FLUX's VAE factors and scheduler); read-only for tests."""
    from edlib.model.tiny import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny-flux") / "model", variant="flux")


@pytest.fixture(scope="session")
def tiny_sd3(tmp_path_factory):
    """A tiny SD3.5 diffusers folder (MMDiT with a dual-attention layer, CLIP-L, CLIP-G, T5);
    read-only for tests."""
    from edlib.model.tiny import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd3") / "model", variant="sd3")


@pytest.fixture(autouse=True)
def _private_cache_dir(tmp_path_factory, monkeypatch):
    """Keep edlib's caches (scan cache, ...) out of the user's home during tests, and off the
    disk once the test is done (a full run makes over a thousand of them)."""
    cache = tmp_path_factory.mktemp("edlib-cache")
    monkeypatch.setenv("EDLIB_CACHE_DIR", str(cache))
    yield
    shutil.rmtree(cache, ignore_errors=True)


def cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs CUDA (run on the GPU machine and report)")
    if not cuda_available():
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip_gpu)
