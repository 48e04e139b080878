"""The data model shared by scanning, schedules, the preview and training.

A scan turns a data root (a folder tree) into a `ScanResult`: the folders that hold
images, each with its `FolderSettings` (multiply.txt, loss_scale.txt, ...), and one
`ImageItem` per readable image. Everything downstream (schedules, preview, balancing,
the trainer) works from a `ScanResult` and never touches the tree again, except the
trainer re-reading folder settings between epochs.

Paths inside these objects are relative to the data root, with POSIX separators, so a
schedule written on Windows reads the same on Linux and a run can move machines.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from fractions import Fraction
from functools import cached_property
from pathlib import Path

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".jfif"})
# Folder at the top of a data root where `edlib review --quarantine` moves images; scans
# skip it, so quarantined images leave training without being deleted.
QUARANTINE_DIR = "_quarantine"


@dataclass(frozen=True)
class Tag:
    """One tag of a caption: a comma-separated part after the main prompt, or an entry of
    an EveryDream2 `tags:` list; weight biases tag shuffling (heavier tags come first)."""

    text: str
    weight: float = 1.0


@dataclass(frozen=True)
class Caption:
    """A caption: an optional folder trigger, a main prompt and optional tags.

    `text()` is the caption as trained without shuffling: trigger first, then the main
    prompt, then the tags, joined by ", ". Shuffling (when enabled) moves tags only: the
    trigger and the main prompt stay in front (unless the run sets `keep_tokens: 0`).
    `max_length` is EveryDream2's `max_caption_length`: a weighted shuffle stops adding tags
    at about that many characters.
    """

    main_prompt: str
    tags: tuple[Tag, ...] = ()
    trigger: str | None = None
    max_length: int | None = None

    def text(self) -> str:
        parts = [self.trigger] if self.trigger else []
        if self.main_prompt:
            parts.append(self.main_prompt)
        parts.extend(t.text for t in self.tags)
        return ", ".join(parts)


@dataclass(frozen=True)
class FolderSettings:
    """Settings of one folder, applying to the images directly in it (never cascading),
    except values inherited from a `global.yaml` above it.

    `multiply` is exact (a Fraction parsed from the file's decimal text) so that
    0.1 x 10 images is exactly 1 image. `cond_dropout` None means "use the run config".
    `main_prompt`, `tags` and `max_caption_length` are the caption keys of local.yaml and
    global.yaml (EveryDream2's folder captions): they complete the captions of the folder's
    images (see `captions.compose_caption`). `exclude` is set by the folder's `exclude.txt`;
    `multiply` is then 0 (the effective multiplier), whatever multiply.txt says.
    """

    multiply: Fraction = Fraction(1)
    loss_scale: float = 1.0
    flip_p: float = 0.0
    cond_dropout: float | None = None
    shuffle_tags: bool = False
    batch_id: str | None = None
    trigger: str | None = None
    main_prompt: str | None = None
    tags: tuple[Tag, ...] = ()
    max_caption_length: int | None = None
    exclude: bool = False

    def with_(self, **changes) -> FolderSettings:
        return replace(self, **changes)


# Settings an image's own .yaml sidecar may set for that image (EveryDream2's per-image keys).
IMAGE_SETTING_KEYS = ("multiply", "loss_scale", "flip_p", "cond_dropout", "shuffle_tags", "batch_id")


@dataclass(frozen=True)
class ImageOwn:
    """What an image's own caption files (`img.txt`, `img.caption`, `img.yml`, `img.yaml`)
    say, merged as EveryDream2 merges them: the main prompt (None when none of them has
    one), tags, `max_caption_length`, and per-image settings (`IMAGE_SETTING_KEYS`, parsed
    and checked) that override the folder's for this image."""

    main_prompt: str | None = None
    tags: tuple[Tag, ...] = ()
    max_caption_length: int | None = None
    settings: tuple[tuple[str, object], ...] = ()


def with_image_settings(settings: FolderSettings, own: ImageOwn | None) -> FolderSettings:
    """A folder's settings with an image's own overrides applied. `shuffle_tags` is on
    when any file that applies to the image turns it on (EveryDream2's rule); every other
    key set by the image replaces the folder's value, except `multiply` in an excluded folder
    (exclude.txt wins over every multiplier)."""
    if own is None or not own.settings:
        return settings
    changes = dict(own.settings)
    if settings.exclude:
        changes.pop("multiply", None)
    if "shuffle_tags" in changes:
        changes["shuffle_tags"] = bool(changes["shuffle_tags"]) or settings.shuffle_tags
    return replace(settings, **changes)


@dataclass(frozen=True)
class ImageItem:
    """One training image. `width`/`height` are after EXIF orientation."""

    path: str  # relative to the data root, POSIX separators
    folder: str  # relative folder; "" is the data root itself
    width: int
    height: int
    caption: Caption  # the caption as trained: own files, folder keys and trigger combined
    own: ImageOwn | None = None  # what the image's own caption files say, None without any


@dataclass
class FolderInfo:
    """A folder that holds images, with its settings and where each came from."""

    path: str  # relative, POSIX; "" is the data root
    images: int
    settings: FolderSettings
    # setting name -> file it was read from (relative path), for logs and reports
    sources: dict[str, str] = field(default_factory=dict)


@dataclass
class ScanResult:
    """What a scan found. `items` are sorted by path; `folders` by path."""

    root: Path
    folders: list[FolderInfo]
    items: list[ImageItem]
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # (relative path, reason) of files that look like images but were skipped
    skipped: list[tuple[str, str]] = field(default_factory=list)
    # EveryDream2 features the root uses, in words (the scan summary lists them)
    everydream2: list[str] = field(default_factory=list)

    def folder(self, path: str) -> FolderInfo:
        try:
            return self._folders_by_path[path]
        except KeyError:
            raise KeyError(f"no folder {path!r} with images under {self.root}") from None

    @cached_property
    def _folders_by_path(self) -> dict[str, FolderInfo]:
        # Built once: a ScanResult is treated as immutable after a scan (a re-read makes a
        # new one), and the trainer looks folders up once per sample.
        return {f.path: f for f in self.folders}

    def item_settings(self, index: int) -> FolderSettings:
        """The settings that apply to image `index`: its folder's, with the image's own
        `.yaml` overrides (`with_image_settings`)."""
        item = self.items[index]
        return with_image_settings(self.folder(item.folder).settings, item.own)

    def expected_samples(self) -> dict[str, Fraction]:
        """Expected samples per epoch of each folder (path -> exact count): its multiplier
        times its images, with images that set their own multiply counted at theirs (0 in a
        folder excluded by exclude.txt)."""
        expected = {f.path: Fraction(0) for f in self.folders}
        for i, item in enumerate(self.items):
            expected[item.folder] += self.item_settings(i).multiply
        return expected

    @property
    def ok(self) -> bool:
        return not self.errors


class DataRootError(ValueError):
    """Bad input in a data root: the message names the file and what is wrong."""
