"""The gather panel driven from Python: fill it in, press Gather, check the folder written,
the thumbnails and the epoch mix against edlib.gather and edlib.data.preservation."""

import pytest

from edlib.data.preservation import mix_per_epoch
from edlib.data.scan import scan
from edlib.gather import GatherOptions, gathered_files
from edlib.widgets import GatherPanel, demo_gather_pool
from edlib.world import write_data_root


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "data"
    write_data_root(root, {"concept": {"count": 8, "shapes": ["star"]}}, seed=2, size=64)
    return root


def test_gather_panel_fills_a_folder_and_shows_it(root, tmp_path, recwarn):
    pool = demo_gather_pool(tmp_path / "pool", count=40)
    panel = GatherPanel(root, source=pool, count=20, per_epoch=4, resolution=64, thumbnails=6, epochs_shown=3, options=GatherOptions(progress=False))
    report = panel.gather_button.click() or panel.report
    assert report is not None and report.kept == 20 and report.multiply == "0.2"
    assert "20 of 20 images" in panel.result.value and "multiply.txt = 0.2" in panel.result.value
    assert len(panel.thumbs.children) == 6
    assert len(gathered_files(root, "ground_truth")) == 20
    expected = mix_per_epoch(scan(root), "ground_truth", "0.2", epochs=3)
    assert panel.mix.samples.tolist() == expected.samples.tolist()
    assert not [str(w.message) for w in recwarn if "unrecognized arguments" in str(w.message)]

    panel.count.value = 25  # pressing again adds to the same folder
    assert panel.run().added == 5 and len(gathered_files(root, "ground_truth")) == 25


def test_gather_panel_shows_bad_input_instead_of_raising(root, tmp_path):
    panel = GatherPanel(root, count=5, resolution=64, options=GatherOptions(progress=False))
    assert panel.run() is None and "choose a source" in panel.result.value
    panel.source.value = str(tmp_path / "missing.parquet")
    assert panel.run() is None and "no such file" in panel.result.value
    panel.source.value = str(demo_gather_pool(tmp_path / "pool", count=10))
    panel.folder.value = str(tmp_path / "outside")
    assert panel.run() is None and "outside the data root" in panel.result.value
    assert not panel.gather_button.disabled
