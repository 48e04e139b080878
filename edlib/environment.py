"""Where a notebook runs and whether its packages are the ones edlib was tested with.

Colab, RunPod and a local JupyterLab differ in what matters to a newcomer: on Colab the
machine is wiped when the session ends, so data and runs belong on Google Drive; on RunPod
only `/workspace` survives a pod restart; locally the working folder is fine. And hosted
images change under a notebook ("environment rot"): a newer diffusers or transformers
than the one edlib was tested with is the usual reason a notebook that worked last month
fails today. The checks here turn that into a message that says what to install.

Every function takes what it inspects (environment variables, loaded modules, paths,
installed versions) as arguments with the real values as defaults, so callers and tests can
describe any machine without patching.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

PLATFORMS = ("colab", "runpod", "local")
COLAB_DRIVE = Path("/content/drive")
COLAB_CONTENT = Path("/content")
RUNPOD_WORKSPACE = Path("/workspace")
FOLDER_NAME = "edlib"  # the folder edlib's data and runs go into on Drive / the workspace

# The versions this release of edlib was tested with. A newer minor release of these
# libraries is where breaking changes come from (renamed arguments, moved classes), so a
# mismatch is reported with the exact pin to go back to. The minimum versions come from the
# package metadata (pyproject.toml's dependencies).
TESTED_VERSIONS = {
    "torch": "2.13.0",
    "diffusers": "0.42.1",
    "transformers": "5.23.0",
    "accelerate": "1.15.0",
    "peft": "0.21.2",
    "safetensors": "0.8.0",
}
# torch is the one pin never installed for the user: hosted images ship a torch built for
# their CUDA, and replacing it costs minutes and often breaks the GPU build.
NOT_PINNED_ON_INSTALL = ("torch",)


def detect_platform(
    environ: Mapping[str, str] | None = None,
    modules: Mapping[str, object] | None = None,
    workspace: Path = RUNPOD_WORKSPACE,
) -> str:
    """ "colab", "runpod" or "local".

    Colab: the `google.colab` module is loaded (it is in every Colab kernel) or Colab's
    `COLAB_RELEASE_TAG` is set. RunPod: a `RUNPOD_POD_ID` variable or a `/workspace` volume.
    """
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    if "google.colab" in modules or "COLAB_RELEASE_TAG" in environ:
        return "colab"
    if "RUNPOD_POD_ID" in environ or workspace.is_dir():
        return "runpod"
    return "local"


def work_dir(
    platform: str,
    *,
    drive: Path = COLAB_DRIVE,
    content: Path = COLAB_CONTENT,
    workspace: Path = RUNPOD_WORKSPACE,
    cwd: Path | None = None,
) -> Path:
    """The folder data roots, models and runs should live in on `platform`.

    Colab: `MyDrive/edlib` when Google Drive is mounted at `drive` (it survives the session),
    else `/content/edlib` (lost when the session ends). RunPod: `/workspace/edlib`, the
    volume that survives a pod restart. Local: the working folder.
    """
    if platform not in PLATFORMS:
        raise ValueError(f"platform: unknown value {platform!r}; allowed: {', '.join(PLATFORMS)}")
    if platform == "colab":
        my_drive = drive / "MyDrive"
        return (my_drive if my_drive.is_dir() else content) / FOLDER_NAME
    if platform == "runpod":
        return workspace / FOLDER_NAME
    return Path.cwd() if cwd is None else cwd


def where_text(platform: str, folder: Path, *, drive: Path = COLAB_DRIVE) -> str:
    """One sentence for the notebook: where things go on this machine and whether they last."""
    if platform == "colab":
        if (drive / "MyDrive").is_dir():
            return f"Colab with Google Drive mounted: data and runs go to {folder} and survive the session."
        return (
            f"Colab without Google Drive: data and runs go to {folder} and are LOST when the session "
            "ends. Mount Drive (next cell) to keep them."
        )
    if platform == "runpod":
        return f"RunPod: data and runs go to {folder} (the /workspace volume survives a pod restart)."
    return f"Local: data and runs go to {folder}."


@dataclass(frozen=True)
class EnvMessage:
    """One finding of the environment check. `level` is "ok", "warning" or "error"."""

    level: str
    package: str
    text: str


def installed_versions(packages: list[str] | tuple[str, ...]) -> dict[str, str | None]:
    """The installed version of each package (None when it is not installed)."""
    found: dict[str, str | None] = {}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def edlib_requirements() -> list[Requirement]:
    """edlib's own runtime dependencies, from the installed package metadata."""
    requirements = [Requirement(text) for text in metadata.requires("edlib") or []]
    # Extras ([notebook], [dev], [gpu]) are optional: only unconditional dependencies count.
    return [r for r in requirements if r.marker is None]


def _release(version: Version) -> Version:
    """The version without local build tags (torch's "2.13.0+cu121" is 2.13.0)."""
    return Version(version.base_version)


def check_versions(
    installed: Mapping[str, str | None],
    requirements: list[Requirement],
    tested: Mapping[str, str] = TESTED_VERSIONS,
) -> list[EnvMessage]:
    """Compare installed versions with edlib's minimums (errors) and the versions it was
    tested with (warnings when the major or minor version differs). One message per
    package in `requirements` or `tested`, in that order."""
    minimums = {r.name.lower(): r.specifier for r in requirements}
    names = list(dict.fromkeys([*minimums, *(name.lower() for name in tested)]))
    lowered = {name.lower(): version for name, version in installed.items()}
    tested_lower = {name.lower(): version for name, version in tested.items()}
    messages = []
    for name in names:
        spec = minimums.get(name, SpecifierSet())
        pin = tested_lower.get(name)
        advice = f"pip install {name}=={pin}" if pin else f"pip install '{name}{spec}'"
        found = lowered.get(name)
        if found is None:
            messages.append(EnvMessage("error", name, f"{name} is not installed; edlib needs it: {advice}"))
            continue
        try:
            version = _release(Version(found))
        except InvalidVersion:
            messages.append(
                EnvMessage(
                    "warning",
                    name,
                    f"{name} has a version edlib cannot read ({found!r})",
                )
            )
            continue
        if not spec.contains(version, prereleases=True):
            messages.append(
                EnvMessage(
                    "error",
                    name,
                    f"{name} {found} is too old: edlib needs {name}{spec}. Fix: {advice}",
                )
            )
        elif pin and Version(pin).release[:2] != version.release[:2]:
            newer = version > Version(pin)
            messages.append(
                EnvMessage(
                    "warning",
                    name,
                    f"{name} {found} is {'newer' if newer else 'older'} than {pin}, the version edlib was tested "
                    f"with. If a cell fails with an error from {name}, run: {advice} (then restart the runtime)",
                )
            )
        else:
            messages.append(EnvMessage("ok", name, f"{name} {found}"))
    return messages


def check_python(version: tuple[int, int] | None = None, requires: str | None = None) -> EnvMessage:
    """Is this Python one edlib supports (`Requires-Python` of the installed package)?"""
    version = sys.version_info[:2] if version is None else version
    requires = metadata.metadata("edlib")["Requires-Python"] if requires is None else requires
    text = f"{version[0]}.{version[1]}"
    if SpecifierSet(requires).contains(Version(text)):
        return EnvMessage("ok", "python", f"Python {text}")
    return EnvMessage(
        "error",
        "python",
        f"Python {text} is not supported: edlib needs Python {requires}",
    )


def check_gpu(platform: str, cuda_available: bool) -> EnvMessage:
    """Training real models needs a GPU; say how to get one where that is a setting."""
    if cuda_available:
        return EnvMessage("ok", "gpu", "CUDA GPU available")
    if platform == "colab":
        hint = "choose Runtime > Change runtime type > GPU, then run the notebook again"
    elif platform == "runpod":
        hint = "this pod has no visible GPU: check the pod's GPU and its CUDA image"
    else:
        hint = "training a real Stable Diffusion model needs one; the tiny demo model runs on the CPU"
    return EnvMessage("warning", "gpu", f"No CUDA GPU: {hint}")


def check_environment(platform: str | None = None, *, cuda_available: bool | None = None) -> list[EnvMessage]:
    """Everything the quickstart checks on this machine: Python, package versions, GPU."""
    import torch

    platform = detect_platform() if platform is None else platform
    requirements = edlib_requirements()
    names = [r.name for r in requirements] + [name for name in TESTED_VERSIONS]
    cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
    return [
        check_python(),
        *check_versions(installed_versions(names), requirements),
        check_gpu(platform, cuda),
    ]


def format_messages(messages: list[EnvMessage]) -> str:
    """The check as text: problems first, then a one-line summary of what is fine."""
    marks = {"error": "ERROR  ", "warning": "WARNING"}
    problems = [f"{marks[m.level]} {m.text}" for m in messages if m.level != "ok"]
    fine = [m.text for m in messages if m.level == "ok"]
    lines = problems + ([f"ok: {', '.join(fine)}"] if fine else [])
    if not problems:
        lines.insert(0, "Environment looks good.")
    return "\n".join(lines)


def pinned_requirements(tested: Mapping[str, str] = TESTED_VERSIONS) -> list[str]:
    """`name==version` for the tested libraries a notebook installs on a hosted runtime."""
    return [f"{name}=={version}" for name, version in tested.items() if name not in NOT_PINNED_ON_INSTALL]


def default_base_model(folder: str | Path) -> Path:
    """The offline base model: edlib's bundled world model when this install has it, else a
    tiny Stable Diffusion model (random weights) written once to `folder/tiny-sd`. Both load
    through the same code path as a hub id or a downloaded model."""
    from edlib.train.tiny import build_tiny_pipeline
    from edlib.world.model import bundled_model_path

    try:
        return bundled_model_path()
    except FileNotFoundError:
        tiny = Path(folder) / "tiny-sd"
        if not (tiny / "model_index.json").is_file():
            build_tiny_pipeline(tiny)
        return tiny
