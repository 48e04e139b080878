"""What the training-panel tests share: a quick run's form values, and plotly rendering the
way JupyterLab does (import the fixture into a test module; `data_root` is in conftest.py)."""

import time

import plotly.io as pio
import pytest
import torch

QUICK = {"resolution": 64, "batch_size": 2, "unet_lr": 1e-4, "save_every_n_epochs": 0, "save_every_n_minutes": 0, "keep_last_n_checkpoints": 0}


@pytest.fixture(autouse=True)
def plotly_as_json(monkeypatch):
    """Outside a notebook plotly picks no renderer; the one JupyterLab uses makes the
    charts' data visible to the tests. One torch thread: the panel's run shares 2 cores."""
    monkeypatch.setattr(pio.renderers, "default", "plotly_mimetype")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def wait_for(condition, timeout=120.0):
    """Wait (polling) until `condition()` is true; fail after `timeout` seconds."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out waiting for the run"
        time.sleep(0.01)
