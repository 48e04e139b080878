"""What every notebook must hold, read from the files (no kernel): the setup cell written
from edlib.notebook_setup (one install source, the install and its check), a "what you will
do" list first, a parameters cell, no secrets, no outputs."""

import re
from pathlib import Path

import nbformat
import pytest

from edlib.notebook_setup import setup_cell_source

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
SYNC = "run `python scripts/sync_notebook_setup.py`"
# A token pasted into a cell, or a login call given one as text.
SECRET = re.compile(r"hf_[A-Za-z0-9]{20,}|(token|password|api_key)\s*=\s*['\"][^'\"]+['\"]|login\(\s*['\"]", re.I)


@pytest.fixture(params=NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def nb(request):
    return request.param.name, nbformat.read(request.param, as_version=4)


def test_every_notebook_opens_with_what_you_will_do(nb):
    name, notebook = nb
    intro = notebook.cells[0]
    assert intro.cell_type == "markdown" and "**What you will do**" in intro.source
    assert re.search(r"^1\. .+^2\. ", intro.source, re.M | re.S), f"{name}: the steps are a numbered list"


def test_every_notebook_installs_edlib_from_one_source_and_checks_it_first(nb):
    name, notebook = nb
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code[0].source == setup_cell_source(), f"{name}: the setup cell differs from edlib.notebook_setup; {SYNC}"
    lines = code[0].source.splitlines()
    # The source is one variable near the top, with a real default (no placeholder address).
    [source_line] = [line for line in lines if line.startswith("EDLIB_SOURCE =")]
    assert lines.index(source_line) < 12 and source_line == 'EDLIB_SOURCE = os.environ.get("EDLIB_SOURCE", "")'
    assert "edlib-project" not in code[0].source and "%pip" not in code[0].source
    assert "check_install(pinned=ON_COLAB, installed_now=INSTALLED_NOW)" in code[0].source


def test_no_notebook_points_at_a_placeholder_address(nb):
    name, notebook = nb
    text = "\n".join(c.source for c in notebook.cells)
    assert "edlib-project/edlib" not in text and "colab.research.google.com/github" not in text, name
    assert '"edlib[notebook]"' not in text, f"{name}: pip's edlib is another project; the distribution is edlib-sd-trainer"


def test_every_notebook_has_a_parameters_cell_no_secrets_and_no_outputs(nb):
    name, notebook = nb
    assert any("parameters" in c.metadata.get("tags", []) for c in notebook.cells), f"{name}: no parameters cell"
    for cell in notebook.cells:
        assert not SECRET.search(cell.source), f"{name}: a cell holds what looks like a secret:\n{cell.source}"
        if cell.cell_type == "code":
            # Saved outputs would carry someone's paths and tokens, and go stale.
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: saved outputs"


def test_the_secret_pattern_catches_pasted_tokens():
    assert SECRET.search('login("hf_abcdefghijklmnopqrstuvwx")') and SECRET.search("token = 'abc'")
    assert not SECRET.search('login(token=token or getpass("Hugging Face token: "))')


def test_widgets_are_the_portable_ones():
    """Colab, JupyterLab 4 and VS Code render the widgets of ipywidgets itself and plotly's
    mime bundle; a third-party widget package would need a front-end extension that Colab and
    VS Code do not have."""
    imported = set()
    for path in [*NOTEBOOKS, *(Path(__file__).resolve().parents[2] / "edlib" / "widgets").glob("*.py")]:
        text = path.read_text(encoding="utf-8")
        imported |= set(re.findall(r"(?:^|\\n|\n)\s*(?:\"\s*)?(?:import|from)\s+([A-Za-z_][\w]*)", text))
    front_end = {"ipywidgets", "plotly", "IPython"}
    extensions = {"ipympl", "bqplot", "ipyvolume", "ipyleaflet", "ipyevents", "ipycanvas", "ipydatagrid", "qgrid", "itkwidgets", "jupyter_bokeh", "anywidget"}
    assert front_end & imported and not (imported & extensions), sorted(imported)


def test_what_the_notebooks_say_about_defaults_is_the_config_default():
    """Issue 19: notebook 04 said "one checkpoint per epoch" while a run keeps its newest 2."""
    from edlib.model.config import TrainConfig

    fields = TrainConfig.model_fields
    keep, every = fields["keep_last_n_checkpoints"].default, fields["save_every_n_epochs"].default
    text = {p.stem[:2]: "\n".join(c.source for c in nbformat.read(p, as_version=4).cells) for p in NOTEBOOKS}
    assert "checkpoints, one per epoch" not in text["04"] and "there is one per\nepoch" not in text["04"]
    assert f"`keep_last_n_checkpoints: {keep}`" in text["04"] and f"`save_every_n_epochs: {every}`" in text["04"]
    assert f"the newest {keep} are kept" in text["03"]
