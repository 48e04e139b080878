"""Notebook set-up logic: which platform, where files go, and whether the installed versions
are the ones edlib was tested with. Machines are described by arguments (environment
variables, loaded modules, folders, versions), so no test patches anything."""

from pathlib import Path

import pytest
from packaging.requirements import Requirement

from edlib.environment import (
    TESTED_VERSIONS,
    check_environment,
    check_gpu,
    check_install,
    check_loaded,
    check_pins,
    check_python,
    check_versions,
    default_base_model,
    describe_install,
    detect_platform,
    edlib_requirements,
    format_messages,
    has_native_bf16,
    install_origin,
    installed_versions,
    pinned_requirements,
    where_text,
    work_dir,
)

REQUIREMENTS = [Requirement("diffusers>=0.30"), Requirement("torch>=2.1")]
TESTED = {"diffusers": "0.42.1", "torch": "2.13.0"}


def test_colab_is_detected_by_its_module_or_its_variable(tmp_path):
    missing = tmp_path / "no-workspace"
    assert detect_platform({}, {"google.colab": object()}, missing) == "colab"
    assert detect_platform({"COLAB_RELEASE_TAG": "release-colab_20260101"}, {}, missing) == "colab"


def test_runpod_is_detected_by_its_variable_or_the_workspace_volume(tmp_path):
    assert detect_platform({"RUNPOD_POD_ID": "abc123"}, {}, tmp_path / "no-workspace") == "runpod"
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    assert detect_platform({}, {}, workspace) == "runpod"


def test_anything_else_is_local(tmp_path):
    assert detect_platform({"HOME": "/home/me"}, {"numpy": object()}, tmp_path / "no-workspace") == "local"


def test_colab_work_dir_is_on_drive_when_mounted_else_lost_with_the_session(tmp_path):
    drive, content = tmp_path / "drive", tmp_path / "content"
    assert work_dir("colab", drive=drive, content=content) == content / "edlib"
    assert "LOST" in where_text("colab", content / "edlib", drive=drive)
    (drive / "MyDrive").mkdir(parents=True)
    assert work_dir("colab", drive=drive, content=content) == drive / "MyDrive" / "edlib"
    assert "survive" in where_text("colab", drive / "MyDrive" / "edlib", drive=drive)
    # A folder chosen off Drive is lost even with Drive mounted.
    assert "LOST" in where_text("colab", content / "mine", drive=drive)


def test_runpod_and_local_work_dirs(tmp_path):
    assert work_dir("runpod", workspace=tmp_path / "workspace") == tmp_path / "workspace" / "edlib"
    assert "/workspace volume" in where_text("runpod", tmp_path)
    assert work_dir("local", cwd=tmp_path) == tmp_path
    assert work_dir("local") == Path.cwd()


def test_unknown_platform_is_an_error_naming_the_choices():
    with pytest.raises(ValueError, match="'kaggle'.*colab, runpod, local"):
        work_dir("kaggle")


def test_tested_versions_are_ok():
    messages = check_versions({"diffusers": "0.42.1", "torch": "2.13.0+cu121"}, REQUIREMENTS, TESTED)
    assert [(m.level, m.package) for m in messages] == [
        ("ok", "diffusers"),
        ("ok", "torch"),
    ]
    # A patch release of the tested minor version is no rot.
    assert check_versions({"diffusers": "0.42.7", "torch": "2.13.1"}, REQUIREMENTS, TESTED)[0].level == "ok"


def test_a_missing_package_is_an_error_with_the_pin_to_install():
    [diffusers, torch] = check_versions({"diffusers": None, "torch": "2.13.0"}, REQUIREMENTS, TESTED)
    assert diffusers.level == "error"
    assert "diffusers is not installed" in diffusers.text and "pip install diffusers==0.42.1" in diffusers.text
    assert torch.level == "ok"


def test_a_version_below_the_minimum_is_an_error():
    [diffusers, _] = check_versions({"diffusers": "0.27.2", "torch": "2.13.0"}, REQUIREMENTS, TESTED)
    assert diffusers.level == "error"
    assert "diffusers 0.27.2 is too old" in diffusers.text and "diffusers>=0.30" in diffusers.text


def test_environment_rot_is_a_warning_that_says_how_to_go_back():
    [diffusers, torch] = check_versions({"diffusers": "0.45.0", "torch": "2.11.0"}, REQUIREMENTS, TESTED)
    assert diffusers.level == "warning"
    assert "diffusers 0.45.0 is newer than 0.42.1" in diffusers.text
    assert "pip install diffusers==0.42.1" in diffusers.text
    assert torch.level == "warning" and "older than 2.13.0" in torch.text
    # torch is never pinned on install (a hosted build matches its CUDA): no pip line for it.
    assert "keep this build" in torch.text and "pip install torch" not in torch.text


def test_package_names_match_whatever_their_case():
    messages = check_versions(
        {"Diffusers": "0.42.1", "torch": "2.13.0"},
        [Requirement("Diffusers>=0.30")],
        TESTED,
    )
    assert [(m.level, m.package) for m in messages] == [
        ("ok", "diffusers"),
        ("ok", "torch"),
    ]


def test_an_unreadable_version_is_reported_not_raised():
    [diffusers, _] = check_versions({"diffusers": "weird", "torch": "2.13.0"}, REQUIREMENTS, TESTED)
    assert diffusers.level == "warning" and "'weird'" in diffusers.text


def test_python_version_against_requires_python():
    assert check_python((3, 11), ">=3.10").level == "ok"
    old = check_python((3, 8), ">=3.10")
    assert old.level == "error" and "Python 3.8 is not supported" in old.text and ">=3.10" in old.text


def test_missing_gpu_advice_depends_on_the_platform():
    assert check_gpu("colab", True).level == "ok"
    assert "Change runtime type" in check_gpu("colab", False).text
    assert "pod" in check_gpu("runpod", False).text
    assert check_gpu("local", False).level == "warning"


def test_format_puts_problems_first_and_summarises_the_rest():
    messages = check_versions({"diffusers": "0.45.0", "torch": None}, REQUIREMENTS, TESTED)
    text = format_messages(messages + [check_python((3, 11), ">=3.10")])
    lines = text.splitlines()
    assert lines[0].startswith("WARNING diffusers 0.45.0")
    assert lines[1].startswith("ERROR") and "torch is not installed" in lines[1]
    assert lines[2] == "ok: Python 3.11"
    assert format_messages([check_python((3, 11), ">=3.10")]).startswith("Environment looks good.")


def test_this_environment_passes_its_own_check():
    """The venv the tests run in is the one edlib is tested with: no errors, no rot."""
    messages = check_environment("local", cuda_available=True)
    assert [m.text for m in messages if m.level != "ok"] == []
    checked = {m.package for m in messages}
    assert {r.name.lower() for r in edlib_requirements()} <= checked
    assert set(TESTED_VERSIONS) <= checked and "python" in checked


def test_installed_versions_reads_metadata():
    found = installed_versions(["diffusers", "surely-not-a-package-edlib-needs"])
    assert found["diffusers"] == __import__("diffusers").__version__
    assert found["surely-not-a-package-edlib-needs"] is None


def test_pins_installed_on_colab_satisfy_edlibs_own_minimums_and_leave_torch_alone():
    pins = pinned_requirements()
    assert not any(pin.startswith("torch==") for pin in pins)
    minimums = {r.name.lower(): r.specifier for r in edlib_requirements()}
    for pin in pins:
        name, version = pin.split("==")
        assert version == TESTED_VERSIONS[name]
        assert minimums.get(name) is None or minimums[name].contains(version)


def test_tested_versions_are_the_ci_pins():
    """The notebooks pin what CI tests: requirements/ci.txt."""
    ci = Path(__file__).resolve().parents[1] / "requirements" / "ci.txt"
    pins = dict(
        line.split("==") for line in ci.read_text().splitlines() if "==" in line and not line.startswith("#")
    )
    pins = {name.lower().replace("-", "_"): version for name, version in pins.items()}
    assert {name: pins.get(name) for name in TESTED_VERSIONS} == TESTED_VERSIONS


def test_pins_that_did_not_take_are_errors_naming_both_versions():
    installed = {**TESTED_VERSIONS, "diffusers": "0.42.2", "plotly": None, "torch": "2.4.0+cu121"}
    messages = check_pins(installed)
    assert [m.package for m in messages] == ["diffusers", "plotly"]  # torch is never pinned on install
    assert all(m.level == "error" for m in messages)
    assert "diffusers is 0.42.2, but the setup cell pins diffusers==0.42.1" in messages[0].text
    assert "plotly is not installed" in messages[1].text and "pip install plotly==7.1.0" in messages[1].text
    assert check_pins({**TESTED_VERSIONS, "transformers": "5.23.0+local"}) == []


class _Module:
    def __init__(self, version):
        self.__version__ = version


def test_a_library_loaded_before_another_version_was_installed_asks_for_a_restart():
    installed = {"transformers": "5.23.0", "diffusers": "0.42.1", "peft": "0.21.2"}
    modules = {"transformers": _Module("4.48.0"), "diffusers": _Module("0.42.1"), "os": object()}
    [message] = check_loaded(installed, modules)
    assert message.level == "error" and message.package == "transformers"
    assert "transformers 4.48.0 is loaded in this kernel but 5.23.0 is installed: restart the runtime" in message.text


def test_check_install_passes_here_and_the_check_with_pins_lists_each_difference(capsys):
    check_install(pinned=True)  # this venv has exactly the pins
    [line] = capsys.readouterr().out.splitlines()  # one line: which edlib, from where, the pins
    assert line.startswith("edlib 0.1.0 (was installed already) from ") and line.endswith("libraries at the pinned versions")
    check_install(pinned=False, installed_now=True)
    assert "(installed now)" in capsys.readouterr().out
    assert not [m for m in check_environment("local", cuda_available=True, pinned=True) if m.level != "ok"]


def test_default_base_model_is_a_loadable_model_written_once(tmp_path):
    from edlib.sample import load_pipeline

    model = default_base_model(tmp_path / "models")
    assert (model / "model_index.json").is_file()
    stamp = (model / "model_index.json").stat().st_mtime_ns
    assert default_base_model(tmp_path / "models") == model
    assert (model / "model_index.json").stat().st_mtime_ns == stamp  # not rebuilt
    pipeline = load_pipeline(model)
    assert pipeline.unet.config.sample_size * 2 ** (len(pipeline.vae.config.block_out_channels) - 1) == 64


def test_colabs_ipywidgets_7_is_fine_and_never_pinned_over():
    """Colab's front end is built for its ipywidgets 7.7.1; installing 8 has broken it."""
    [widgets] = check_versions({"ipywidgets": "7.7.1"}, [], {"ipywidgets": "8.1.9"})
    assert widgets.level == "ok"
    assert check_versions({"ipywidgets": "7.6.0"}, [], {"ipywidgets": "8.1.9"})[0].level == "warning"
    assert not any(pin.startswith(("ipywidgets==", "torch==")) for pin in pinned_requirements())


def test_a_t4_is_not_a_bf16_card():
    """torch says a T4 (compute capability 7.5) supports bf16 (emulated); cuDNN has no bf16
    convolutions there, so only 8.0 and newer count."""
    assert not has_native_bf16((7, 5))
    assert has_native_bf16((8, 0)) and has_native_bf16((8, 9)) and has_native_bf16((9, 0))
    import torch

    if not torch.cuda.is_available():
        assert has_native_bf16() is False


def test_where_an_install_came_from_in_words():
    assert install_origin(None) == "from the package index (PyPI)"
    wheel = '{"url": "file:///content/drive/MyDrive/edlib/edlib_sd_trainer-0.1.0-py3-none-any.whl", "archive_info": {}}'
    assert install_origin(wheel) == "from the wheel /content/drive/MyDrive/edlib/edlib_sd_trainer-0.1.0-py3-none-any.whl"
    clone = '{"url": "file:///workspace/my%20edlib", "dir_info": {"editable": true}}'
    assert install_origin(clone) == "from the local clone /workspace/my edlib (editable)"
    git = '{"url": "https://github.com/someone/edlib", "vcs_info": {"vcs": "git", "commit_id": "0123456789abcdef"}}'
    assert install_origin(git) == "from git https://github.com/someone/edlib at commit 0123456789"


def test_this_install_is_described_by_the_folder_it_is_imported_from():
    import edlib

    text = describe_install()
    assert text.startswith("from ")
    if "source folder" in text:  # a clone on PYTHONPATH, or pip's editable install elsewhere
        assert str(Path(edlib.__file__).resolve().parents[1]) in text
