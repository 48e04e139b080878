"""The notebooks' setup cell: where it installs edlib from, and that what it runs is the
library's own code (it carries a copy, since it runs before edlib is installed)."""

import ast
import os
from pathlib import Path

import pytest

from edlib import environment
from edlib.notebook_setup import DISTRIBUTION, WHEEL_GLOB, edlib_requirement, setup_cell_source

PYPROJECT = f'[project]\nname = "{DISTRIBUTION}"\nversion = "0.1.0"\n'


def _clone(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "pyproject.toml").write_text(PYPROJECT, encoding="utf-8")
    return folder


def _wheel(folder: Path, version: str, mtime: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"edlib_sd_trainer-{version}-py3-none-any.whl"
    wheel.write_bytes(b"PK")
    os.utime(wheel, (mtime, mtime))
    return wheel


def test_a_git_url_is_installed_as_edlib_with_its_notebook_extras(tmp_path):
    url = "git+https://github.com/someone/edlib@main"
    assert edlib_requirement(url, tmp_path, []) == f"edlib-sd-trainer[notebook] @ {url}"


def test_a_wheel_or_a_clone_becomes_a_file_url(tmp_path):
    wheel = _wheel(tmp_path / "drive", "0.1.0", 1)
    assert edlib_requirement(str(wheel), tmp_path, []) == f"edlib-sd-trainer[notebook] @ {wheel.as_uri()}"
    clone = _clone(tmp_path / "my clone")
    assert edlib_requirement(str(clone), tmp_path, []) == f"edlib-sd-trainer[notebook] @ {clone.as_uri()}"


def test_empty_source_takes_the_clone_the_notebook_is_in_or_one_just_below(tmp_path):
    clone = _clone(tmp_path / "edlib")
    (clone / "notebooks").mkdir()
    wheels = tmp_path / "wheels"
    _wheel(wheels, "0.1.0", 1)
    # Jupyter runs a notebook in its own folder: the clone is a parent.
    assert edlib_requirement("", clone / "notebooks", [wheels]).endswith(clone.as_uri())
    # Colab runs every notebook in /content, where `git clone` puts the clone one level down.
    assert edlib_requirement("", tmp_path, [wheels]).endswith(clone.as_uri())


def test_empty_source_without_a_clone_takes_the_newest_wheel(tmp_path):
    drive, workspace = tmp_path / "MyDrive" / "edlib", tmp_path / "workspace" / "edlib"
    _wheel(drive, "0.1.0", 100)
    newest = _wheel(workspace, "0.2.0", 200)
    cwd = tmp_path / "content"
    cwd.mkdir()
    assert edlib_requirement("", cwd, [drive, workspace, tmp_path / "missing"]).endswith(newest.as_uri())


def test_nothing_to_install_from_says_what_to_set(tmp_path):
    with pytest.raises(FileNotFoundError, match="Set EDLIB_SOURCE at the top of this cell") as error:
        edlib_requirement("", tmp_path, [tmp_path / "MyDrive" / "edlib"])
    assert WHEEL_GLOB in str(error.value) and str(tmp_path / "MyDrive" / "edlib") in str(error.value)
    not_a_clone = tmp_path / "photos"
    not_a_clone.mkdir()
    with pytest.raises(FileNotFoundError, match="photos is not a git URL, a wheel file or a folder holding an edlib clone"):
        edlib_requirement(str(not_a_clone), tmp_path, [])


def test_the_cell_carries_the_librarys_function_and_no_placeholder():
    source = setup_cell_source()
    tree = ast.parse(source)  # plain Python: no %pip magic, runs in any kernel
    defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert defined == {"edlib_requirement", "pip_install"}
    import inspect

    assert inspect.getsource(edlib_requirement) in source
    assert DISTRIBUTION == environment.DISTRIBUTION
    # The function runs before edlib exists: nothing from edlib, no module globals.
    function = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "edlib_requirement")
    imports = [n for n in ast.walk(function) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert all(getattr(n, "module", None) == "pathlib" for n in imports)


def test_the_distribution_name_is_the_one_in_pyproject():
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    assert f'name = "{DISTRIBUTION}"' in text
