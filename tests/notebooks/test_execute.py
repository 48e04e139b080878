"""Every notebook in notebooks/ runs top to bottom, twice in one kernel, on a small generated
data root.

The notebooks read their data root from EDLIB_DATA_ROOT (the parameters cell), so CI points
them at a toy-world root written here; a failing cell fails the test with its traceback."""

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from edlib.world import write_data_root

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
SPEC = {
    "concept": {"count": 12, "shapes": ["star"]},
    "style/ink": {"count": 6},
    "preservation": {"count": 40, "multiply": "0.1"},
}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("nb") / "data"
    write_data_root(root, SPEC, seed=1, size=64)
    return root


def test_there_are_notebooks():
    names = [p.name for p in NOTEBOOKS]
    assert "01_dataset_and_balancing.ipynb" in names and "02_preservation_mixing.ipynb" in names


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, data_root, tmp_path, monkeypatch):
    if path.name.startswith("02_"):
        # Notebook 02 gathers a preservation folder into its data root: it gets a copy of its
        # own, so the notebooks sharing the module's data root see the same folders in any order.
        data_root = Path(shutil.copytree(data_root, tmp_path / "own_data"))
        pool = tmp_path / "pool"
        write_data_root(pool, {"photos": {"count": 60}}, seed=4, size=64)
        monkeypatch.setenv("EDLIB_GATHER_FROM", str(pool))
    monkeypatch.setenv("EDLIB_DATA_ROOT", str(data_root))
    monkeypatch.setenv("EDLIB_QUICK", "1")  # training notebooks: a few steps on the tiny model
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the kernel is a process of its own: one thread, as in tests
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # where 00 remembers the work folder
    monkeypatch.delenv("EDLIB_WORK", raising=False)  # the work folder is the kernel's folder, tmp_path
    nb = nbformat.read(path, as_version=4)
    # The kernel is this interpreter (the venv), whatever kernels the machine has installed.
    client = NotebookClient(nb, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    # Run All twice in one kernel: every cell must be safe to re-run (a user does, after an
    # edit or a reconnect), with data, models and runs from the first pass already there.
    with client.setup_kernel():
        for _ in range(2):
            for index, cell in enumerate(nb.cells):
                client.execute_cell(cell, index)  # raises CellExecutionError with the cell's traceback
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    widgets_shown = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]
    assert widgets_shown, f"{path.name} displayed no panel"
    assert not (tmp_path / "data" / "demo").exists(), "the notebook ignored EDLIB_DATA_ROOT and wrote demo data"
    if path.name.startswith("02_"):
        assert len(list((data_root / "ground_truth").glob("*.png"))) == 40, "notebook 02 gathered no preservation set"
    if path.name == "00_quickstart.ipynb":
        # The plain train(...) call shows a live progress bar (tqdm's widget) in the cell.
        texts = [o.get("data", {}).get("text/plain", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
        assert any(text.startswith("training:") for text in texts)
        assert (tmp_path / "runs" / "quickstart" / "checkpoints").is_dir()  # under the work folder
