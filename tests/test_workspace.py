"""One work folder for all notebooks: chosen once, found again, also after a disconnect.
Machines are described by arguments (environment, platform, folders); nothing is patched."""

import os
import time
from pathlib import Path

from edlib.workspace import ENV_VAR, choose_work_folder, config_dir, find_work_folder, latest_run


def test_the_config_folder_follows_xdg(tmp_path):
    assert config_dir({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "edlib"
    assert config_dir({}) == Path.home() / ".config" / "edlib"


def test_a_folder_chosen_in_00_is_found_by_the_other_notebooks(tmp_path):
    chosen = tmp_path / "my work"
    environ = {"XDG_CONFIG_HOME": str(tmp_path / "config")}
    assert choose_work_folder(chosen, platform="local", environ=environ) == chosen
    assert chosen.is_dir() and environ[ENV_VAR] == str(chosen)
    # Another notebook is another kernel: a fresh environment, the same home folder.
    later = {"XDG_CONFIG_HOME": str(tmp_path / "config")}
    assert find_work_folder(platform="local", environ=later) == (chosen, "the folder chosen in 00_quickstart")
    assert (tmp_path / "config" / "edlib" / "work-folder").read_text(encoding="utf-8").strip() == str(chosen)


def test_the_environment_variable_wins(tmp_path):
    environ = {"XDG_CONFIG_HOME": str(tmp_path / "config"), ENV_VAR: str(tmp_path / "ci")}
    choose_work_folder(tmp_path / "chosen", platform="local", environ=dict(environ, **{ENV_VAR: ""}))
    assert find_work_folder(platform="local", environ=environ) == (tmp_path / "ci", f"from {ENV_VAR}")


def test_without_a_choice_the_platform_default_is_used_and_created(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    environ = {"XDG_CONFIG_HOME": str(tmp_path / "config")}
    folder, how = find_work_folder(platform="local", environ=environ)
    assert folder == tmp_path and "default" in how
    # A remembered folder that was deleted since is not used.
    choose_work_folder(tmp_path / "gone", platform="local", environ=dict(environ))
    (tmp_path / "gone").rmdir()
    assert find_work_folder(platform="local", environ=dict(environ))[0] == tmp_path


def test_on_colab_the_choice_survives_a_new_runtime_on_drive(tmp_path):
    """A new Colab runtime has an empty home folder; Drive (mounted again) still holds the
    choice, next to the default work folder."""
    drive = tmp_path / "drive"
    (drive / "MyDrive").mkdir(parents=True)
    chosen = drive / "MyDrive" / "projects" / "cats"
    choose_work_folder(chosen, platform="colab", environ={"XDG_CONFIG_HOME": str(tmp_path / "home1")}, drive=drive)
    fresh = {"XDG_CONFIG_HOME": str(tmp_path / "home2")}
    assert find_work_folder(platform="colab", environ=fresh, drive=drive)[0] == chosen
    # With nothing chosen, Colab's default is MyDrive/edlib.
    drive2 = tmp_path / "drive2"
    (drive2 / "MyDrive").mkdir(parents=True)
    assert choose_work_folder(platform="colab", environ={"XDG_CONFIG_HOME": str(tmp_path / "h3")}, drive=drive2) == (
        drive2 / "MyDrive" / "edlib"
    )


def test_latest_run_is_the_one_saved_last(tmp_path):
    assert latest_run(tmp_path) is None
    for name, stamp in [("first", 100), ("second", 300), ("third", 200)]:
        step = tmp_path / "runs" / name / "checkpoints" / "step-000010"
        step.mkdir(parents=True)
        os.utime(step, (stamp, stamp))
    (tmp_path / "runs" / "empty" / "checkpoints" / ".tmp-step-000001").mkdir(parents=True)  # a killed save
    assert latest_run(tmp_path) == tmp_path / "runs" / "second"
    (tmp_path / "runs" / "third" / "checkpoints" / "step-000020").mkdir()
    os.utime(tmp_path / "runs" / "third" / "checkpoints" / "step-000020", (time.time(), time.time()))
    assert latest_run(tmp_path) == tmp_path / "runs" / "third"
