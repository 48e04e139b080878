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

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

PLATFORMS = ("colab", "runpod", "local")
COLAB_DRIVE = Path("/content/drive")
COLAB_CONTENT = Path("/content")
RUNPOD_WORKSPACE = Path("/workspace")
FOLDER_NAME = "edlib"  # the folder edlib's data and runs go into on Drive / the workspace

# The distribution (what pip installs); the import name and the command are `edlib`.
DISTRIBUTION = "edlib-sd-trainer"

# The versions this release of edlib was tested with. A newer minor release of these
# libraries is where breaking changes come from (renamed arguments, moved classes), so a
# mismatch is reported with the exact pin to go back to. The minimum versions come from the
# package metadata (pyproject.toml's dependencies).
# They are requirements/ci.txt's pins (a test keeps the two equal); huggingface_hub and
# tokenizers move under transformers and diffusers, ipywidgets and plotly draw the panels.
TESTED_VERSIONS = {
    "torch": "2.13.0",
    "diffusers": "0.42.1",
    "transformers": "5.23.0",
    "tokenizers": "0.23.3",
    "huggingface_hub": "2.4.0",
    "accelerate": "1.15.0",
    "peft": "0.21.2",
    "safetensors": "0.8.0",
    "ipywidgets": "8.1.9",
    "plotly": "7.1.0",
}
# Pins never installed for the user: hosted images ship a torch built for their CUDA
# (replacing it costs minutes and often breaks the GPU build), and Colab's front end is built
# for its own ipywidgets 7.7.1 (installing 8 has broken Colab's widgets before).
NOT_PINNED_ON_INSTALL = ("torch", "ipywidgets")
# Versions that are fine as they are, whatever the tested pin: the panels use only widgets
# that ipywidgets 7.7.1 (Colab) and 8 (RunPod, JupyterLab) both have.
SUPPORTED_AS_INSTALLED = {"ipywidgets": SpecifierSet(">=7.7.1")}


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
        if (drive / "MyDrive").is_dir() and Path(folder).resolve().is_relative_to(drive.resolve()):
            return f"Colab with Google Drive mounted: data and runs go to {folder} and survive the session."
        return (
            f"Colab without Google Drive: data and runs go to {folder} and are LOST when the session "
            "ends. Keep them on Drive: MOUNT_DRIVE = True and WORK_FOLDER empty (or a folder under /content/drive)."
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
    """edlib's own runtime dependencies, from the installed package metadata (from
    pyproject.toml when edlib runs from a source folder that pip did not install)."""
    try:
        texts = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        texts = _source_project()["dependencies"]
    requirements = [Requirement(text) for text in texts]
    # Extras ([notebook], [dev], [gpu]) are optional: only unconditional dependencies count.
    return [r for r in requirements if r.marker is None]


def _source_project() -> dict:
    """The [project] table of the pyproject.toml beside this edlib package."""
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    try:
        import tomllib  # Python 3.11+
    except ImportError:
        tomllib = None
    if tomllib is None or not pyproject.is_file():
        raise metadata.PackageNotFoundError(f"{DISTRIBUTION} is not installed (pip install {DISTRIBUTION})")
    return tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]


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
        if name in SUPPORTED_AS_INSTALLED and SUPPORTED_AS_INSTALLED[name].contains(version):
            messages.append(EnvMessage("ok", name, f"{name} {found}"))
        elif not spec.contains(version, prereleases=True):
            messages.append(
                EnvMessage(
                    "error",
                    name,
                    f"{name} {found} is too old: edlib needs {name}{spec}. Fix: {advice}",
                )
            )
        elif pin and Version(pin).release[:2] != version.release[:2]:
            newer = version > Version(pin)
            if name in NOT_PINNED_ON_INSTALL:  # the platform's build matches its CUDA: keep it
                fix = f"keep this build unless a cell fails with an error from {name}"
            else:
                fix = f"if a cell fails with an error from {name}, run: {advice} (then restart the runtime)"
            messages.append(
                EnvMessage(
                    "warning",
                    name,
                    f"{name} {found} is {'newer' if newer else 'older'} than {pin}, the version edlib was tested "
                    f"with; {fix}",
                )
            )
        else:
            messages.append(EnvMessage("ok", name, f"{name} {found}"))
    return messages


def check_python(version: tuple[int, int] | None = None, requires: str | None = None) -> EnvMessage:
    """Is this Python one edlib supports (`Requires-Python` of the installed package)?"""
    version = sys.version_info[:2] if version is None else version
    if requires is None:
        try:
            requires = metadata.metadata(DISTRIBUTION)["Requires-Python"]
        except metadata.PackageNotFoundError:
            requires = _source_project()["requires-python"]
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


def check_pins(
    installed: Mapping[str, str | None],
    tested: Mapping[str, str] = TESTED_VERSIONS,
    skip: tuple[str, ...] = NOT_PINNED_ON_INSTALL,
) -> list[EnvMessage]:
    """After the setup cell installed `pinned_requirements()`: every pinned library whose
    installed version is not exactly its pin, as an error naming both versions (pip can
    leave a preinstalled version in place, e.g. when another package holds it back). `skip`
    (torch) is not pinned on install and is left to `check_versions`."""
    messages = []
    for name, pin in tested.items():
        if name in skip:
            continue
        found = installed.get(name)
        try:
            same = found is not None and _release(Version(found)) == Version(pin)
        except InvalidVersion:
            same = False
        if not same:
            messages.append(
                EnvMessage(
                    "error",
                    name,
                    f"{name} is {found or 'not installed'}, but the setup cell pins {name}=={pin}: the pinned "
                    f"install did not take. Run: pip install {name}=={pin} (then restart the runtime)",
                )
            )
    return messages


def check_loaded(
    installed: Mapping[str, str | None],
    modules: Mapping[str, object] | None = None,
    names: tuple[str, ...] | list[str] = tuple(TESTED_VERSIONS),
) -> list[EnvMessage]:
    """Libraries this kernel imported before a newer (or older) version was installed: the
    kernel keeps running the old code until it restarts, the usual cause of baffling errors
    after a `pip install` in a notebook. One error per such library."""
    modules = sys.modules if modules is None else modules
    messages = []
    for name in names:
        module, found = modules.get(name.replace("-", "_")), installed.get(name)
        loaded = getattr(module, "__version__", None)
        if module is None or loaded is None or found is None:
            continue
        try:
            differs = _release(Version(str(loaded))) != _release(Version(found))
        except InvalidVersion:
            differs = str(loaded) != found
        if differs:
            messages.append(
                EnvMessage(
                    "error",
                    name,
                    f"{name} {loaded} is loaded in this kernel but {found} is installed: restart the runtime "
                    "(Colab: Runtime > Restart session; Jupyter: Kernel > Restart) and run the notebook again",
                )
            )
    return messages


def check_environment(
    platform: str | None = None, *, cuda_available: bool | None = None, pinned: bool = False
) -> list[EnvMessage]:
    """Everything the notebooks check on this machine: Python, package versions against
    edlib's minimums and tested versions, libraries loaded at another version than the one
    installed, with `pinned` (the setup cell installed the pins) the exact pins, and a GPU."""
    import torch

    platform = detect_platform() if platform is None else platform
    requirements = edlib_requirements()
    names = [r.name for r in requirements] + [name for name in TESTED_VERSIONS]
    installed = installed_versions(names)
    cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
    return [
        check_python(),
        *check_loaded(installed),
        *(check_pins(installed) if pinned else []),
        *check_versions(installed, requirements),
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


class EnvironmentProblem(RuntimeError):
    """The install is not usable as it is; the message lists what to do."""


def check_install(pinned: bool, *, platform: str | None = None, installed_now: bool = False) -> None:
    """The setup cell's check, right after installing: raises `EnvironmentProblem` listing
    every error (a pin that did not take, a library loaded at an old version, one missing or
    too old), so "Run all" stops at the cause instead of failing later with a library's
    baffling error. Otherwise prints one line saying which edlib this is and where it came
    from (`installed_now`: the setup cell just installed it), plus any warnings (returns
    nothing, so a notebook cell ending with it shows only that)."""
    messages = [m for m in check_environment(platform, pinned=pinned, cuda_available=True) if m.package != "gpu"]
    errors = [m.text for m in messages if m.level == "error"]
    if errors:
        raise EnvironmentProblem("edlib's environment is not ready:\n- " + "\n- ".join(errors))
    from edlib import __version__

    warnings = [m.text for m in messages if m.level == "warning"]
    pins = "libraries at the pinned versions" if pinned else "library versions checked"
    done = "installed now" if installed_now else "was installed already"
    print(f"edlib {__version__} ({done}) {describe_install()}; {pins}" + "".join(f"\nWARNING {w}" for w in warnings))


def describe_install() -> str:
    """Where this edlib came from, in words: pip's record of the install, or the folder it
    is imported from when that is not what pip installed (a clone on PYTHONPATH)."""
    package_dir = Path(__file__).resolve().parent
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        dist = None
    direct_url = dist.read_text("direct_url.json") if dist else None
    if dist is None or not (direct_url or dist.read_text("INSTALLER")):  # none, or a build's egg-info
        return f"from the source folder {package_dir.parent} (not installed by pip)"
    record = json.loads(direct_url) if direct_url else {}
    if record.get("dir_info", {}).get("editable"):
        installed = Path(unquote(urlparse(record["url"]).path)) / "edlib"
    else:
        installed = Path(dist.locate_file("edlib"))
    if installed.resolve() != package_dir:
        return f"from the source folder {package_dir.parent} (pip's {DISTRIBUTION} is elsewhere)"
    return install_origin(direct_url)


def install_origin(direct_url: str | None) -> str:
    """pip's record of an install (PEP 610's direct_url.json, None for a package index) in
    words: a wheel file, a folder, a git commit, the index."""
    if not direct_url:
        return "from the package index (PyPI)"
    record = json.loads(direct_url)
    url = record["url"]
    path = unquote(urlparse(url).path) if url.startswith("file:") else url
    if "vcs_info" in record:
        return f"from git {url} at commit {record['vcs_info'].get('commit_id', '?')[:10]}"
    if "dir_info" in record:
        kind = "editable" if record["dir_info"].get("editable") else "copied"
        return f"from the local clone {path} ({kind})"
    return f"from the wheel {path}" if path.endswith(".whl") else f"from {path}"


def has_native_bf16(capability: tuple[int, int] | None = None) -> bool:
    """Whether the GPU computes in bf16 natively: compute capability 8.0 or newer (A100, L4,
    H100). A T4 (7.5) has none, yet `torch.cuda.is_bf16_supported()` says True there (it
    counts emulation) and bf16 training of a UNet then fails in cuDNN. `capability` defaults
    to the current GPU's; no GPU: False."""
    if capability is None:
        import torch

        if not torch.cuda.is_available():
            return False
        capability = torch.cuda.get_device_capability()
    return tuple(capability) >= (8, 0)


def default_base_model(folder: str | Path) -> Path:
    """The offline base model: edlib's bundled world model when this install has it, else a
    tiny Stable Diffusion model (random weights) written once to `folder/tiny-sd`. Both load
    through the same code path as a hub id or a downloaded model."""
    from edlib.model.tiny import build_tiny_pipeline
    from edlib.model.world import bundled_model_path

    try:
        return bundled_model_path()
    except FileNotFoundError:
        tiny = Path(folder) / "tiny-sd"
        if not (tiny / "model_index.json").is_file():
            build_tiny_pipeline(tiny)
        return tiny
