"""A fresh Colab/RunPod-like runtime, for real: edlib's wheel built by `python -m build`,
a new virtual environment outside the repository that holds only what such a runtime
brings (torch 2.13 from this machine's disk, since a plain torch requirement would pull a
multi-GB CUDA build; Colab's ipywidgets 7.7.1; a Jupyter kernel), then notebook 00 run from
a folder outside the clone, its own setup cell installing the wheel (EDLIB_SOURCE) with the
newest dependency versions edlib's ranges allow from the package index (no
requirements/ci.txt). The same environment then trains a LoRA with a text-encoder rate and
a full fine-tune, and builds every panel with ipywidgets 7.

Slow (a few minutes: the dependencies are downloaded or taken from pip's cache), and
grouped so that pytest-xdist runs both tests in one worker against one environment."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from packaging.version import Version

from edlib import __version__
from edlib.environment import edlib_requirements

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
RUNTIME_PACKAGES = ["torch==2.13.0", "ipywidgets==7.7.1", "ipykernel", "nbclient", "nbformat"]
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("fresh_runtime")]


def _run(command: list, *, cwd: Path | None = None, env: dict | None = None, timeout: int = 900) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise AssertionError(f"{' '.join(map(str, command))} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def _clean_env(**extra: str) -> dict:
    """This machine's environment without anything that points at the repository or the
    test venv (PYTHONPATH, VIRTUAL_ENV), so the runtime sees only what it installed."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "EDLIB_WORK", "PYTEST_XDIST_WORKER")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PIP_DISABLE_PIP_VERSION_CHECK="1", **extra)
    return env


def _build_wheel(out: Path) -> Path:
    """`python -m build --wheel` from a copy of the source (the build writes build/ and
    *.egg-info next to the sources; the checkout stays as it is)."""
    source = out / "source"
    # Outputs of make demo, make test and earlier builds sit at the top of the checkout only;
    # a pattern matched at every depth would also drop the package's own edlib/demo/.
    top_level = {".git", ".venv", "artifacts", "build", "dist", "demo", "runs", ".whl"}

    def ignore(folder: str, names: list[str]) -> set[str]:
        at_top = Path(folder) == REPO
        return {n for n in names if (at_top and n in top_level) or n == "__pycache__" or n.endswith(".egg-info")}

    shutil.copytree(REPO, source, ignore=ignore)
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out / "dist"), str(source)], env=_clean_env())
    [wheel] = (out / "dist").glob("edlib_sd_trainer-*.whl")
    return wheel


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    """The fresh runtime after notebook 00 ran in it: paths and the executed notebook."""
    base = tmp_path_factory.mktemp("fresh-runtime")
    wheel = _build_wheel(base)
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "-q", *RUNTIME_PACKAGES], env=_clean_env())
    content = base / "content"  # like Colab's /content: the notebook runs here, far from the clone
    content.mkdir()
    config_home = base / "config"
    env = _clean_env(EDLIB_SOURCE=str(wheel), EDLIB_QUICK="1", XDG_CONFIG_HOME=str(config_home))
    out = base / "00_executed.ipynb"
    notebook = REPO / "notebooks" / "00_quickstart.ipynb"
    try:
        _run([str(python), str(HERE / "run_notebook.py"), str(notebook), str(out)], cwd=content, env=env, timeout=1500)
    except AssertionError:
        if out.is_file():  # the failing cell's traceback is in the saved notebook
            errors = [o for c in nbformat.read(out, as_version=4).cells for o in c.get("outputs", []) if o.output_type == "error"]
            raise AssertionError("\n".join(f"{e.ename}: {e.evalue}\n" + "\n".join(e.traceback) for e in errors)) from None
        raise
    yield {"wheel": wheel, "python": python, "content": content, "config": config_home, "notebook": out, "base": base}
    # The environment is about 1.9 GB; a CI machine's disk can be nearly full, so it goes as
    # soon as this module's tests are done (a failing test's traceback holds what matters).
    shutil.rmtree(base, ignore_errors=True)


def _outputs(notebook: Path) -> list[tuple[int, dict]]:
    nb = nbformat.read(notebook, as_version=4)
    return [(i, o) for i, cell in enumerate(nb.cells) if cell.cell_type == "code" for o in cell.get("outputs", [])]


def test_the_wheel_holds_everything_a_run_needs(runtime):
    import zipfile

    names = set(zipfile.ZipFile(runtime["wheel"]).namelist())
    # Every source file and every file of the bundled world model (the offline base model).
    world = REPO / "edlib" / "model" / "world" / "pretrained"
    pretrained = {str(f.relative_to(REPO)) for f in world.rglob("*") if f.is_file()}
    assert "edlib/model/world/pretrained/unet/diffusion_pytorch_model.safetensors" in pretrained
    sources = {str(f.relative_to(REPO)) for f in (REPO / "edlib").rglob("*.py")}
    assert sources | pretrained <= names, sorted((sources | pretrained) - names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "edlib = edlib.cli:main" in zipfile.ZipFile(runtime["wheel"]).read(entry_points).decode()


def test_notebook_00_installs_the_wheel_runs_quietly_and_keeps_the_run_in_the_work_folder(runtime):
    outputs = _outputs(runtime["notebook"])
    assert not [o for _, o in outputs if o.output_type == "error"]
    # The setup cell says, in one line, which edlib it installed and from where.
    first_cell = min(i for i, _ in outputs)
    setup = "".join(o.get("text", "") for i, o in outputs if i == first_cell and o.output_type == "stream")
    first, *more = setup.splitlines()
    assert first == f"edlib {__version__} (installed now) from the wheel {runtime['wheel']}; library versions checked"
    # The newest allowed versions may be newer than the tested pins: said, with the way back.
    assert all(re.fullmatch(r"WARNING \S+ \S+ is newer than \S+, the version edlib was tested with; .*", m) for m in more), more
    # Quiet: nothing on stderr in any cell (dependency noise would show in red there).
    noise = [(i, o["text"]) for i, o in outputs if o.output_type == "stream" and o.name == "stderr"]
    assert noise == []
    # The plain train(...) call showed a live progress bar (a tqdm widget).
    bars = [o for _, o in outputs if o.get("data", {}).get("text/plain", "").startswith("training:")]
    assert bars and all("application/vnd.jupyter.widget-view+json" in o["data"] for o in bars)
    # The work folder (this folder, run locally) holds the data, the run and its exports.
    work = runtime["content"]
    run = work / "runs" / "quickstart"
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("step-")) == ["step-000004"]
    assert any((run / "exports").glob("*.safetensors")) and (work / "data" / "demo").is_dir()
    assert (runtime["config"] / "edlib" / "work-folder").read_text(encoding="utf-8").strip() == str(work)
    # edlib came from the wheel into the runtime, and Colab's ipywidgets 7 was left alone.
    where = _run([str(runtime["python"]), "-c", "import edlib, ipywidgets; print(edlib.__file__, ipywidgets.__version__)"], cwd=runtime["base"], env=_clean_env())
    edlib_file, widgets_version = where.split()
    assert edlib_file.startswith(str(runtime["base"] / "venv")) and widgets_version == "7.7.1"


def test_the_newest_allowed_dependencies_train_lora_with_a_text_encoder_and_full(runtime):
    folder = runtime["base"] / "train-check"
    folder.mkdir()
    report = json.loads(_run([str(runtime["python"]), str(HERE / "train_check.py"), str(folder)], cwd=folder, env=_clean_env()).splitlines()[-1])
    assert report["edlib_file"].startswith(str(runtime["base"] / "venv"))
    versions = report["versions"]
    bounds = {r.name: r.specifier for r in edlib_requirements()}
    for name in ("transformers", "peft", "diffusers", "accelerate"):
        assert bounds[name].contains(Version(versions[name])), (name, versions[name], bounds[name])
    assert Version(versions["torch"]).base_version == "2.13.0" and versions["ipywidgets"] == "7.7.1"
    for name in ("lora", "full"):
        run = report[name]
        assert run["step"] == 2 and run["loss"] == run["loss"], run  # not NaN
        assert run["base_model"] == "pretrained"  # the bundled model's folder name, not its path
    assert report["lora"]["exports"] == ["lora-step000002-lora.safetensors"]
    assert report["lora"]["ss_sd_model_name"] == "pretrained"
    assert report["full"]["exports"] == ["full-step000002.safetensors"]
    view = ["application/vnd.jupyter.widget-view+json", "text/plain"]
    names = ["DatasetPanel", "BalancePanel", "PreservationPanel", "TrainingPanel", "SamplingPanel"]
    assert report["panels"] == {name: view for name in names}
    print("fresh runtime versions:", versions)  # shown with -s: what the ranges resolved to today
