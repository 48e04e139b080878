"""Which EveryDream2 features a data root uses, counted during a scan, for its summary.

A user moving from EveryDream2 checks here that edlib saw what they set up: captions from
which files, folder captions, weighted tags, per-image settings, setting files. docs/DESIGN.md
("EveryDream2 file -> what edlib does") says what edlib does with each.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


def _n(count: int, one: str, many: str | None = None) -> str:
    return f"{count} {one if count == 1 else (many or one + 's')}"


@dataclass
class Ed2Use:
    """Counts of EveryDream2 features seen in one scan (`lines()` words them)."""

    text_captions: int = 0  # images with a .txt or .caption file
    yaml_captions: int = 0  # images with a .yaml or .yml sidecar
    merged: int = 0  # images with both kinds, merged
    name_captions: int = 0  # images captioned by file name
    caption_key: int = 0  # sidecars with a `caption:` key
    weighted: int = 0  # images whose tags have different weights
    repeated: int = 0  # captions whose repeated tags were dropped
    max_length: int = 0  # images with a max_caption_length
    image_settings: Counter = field(default_factory=Counter)  # key -> images
    folder_captions: list[str] = field(default_factory=list)  # local/global yaml files with caption keys
    yaml_settings: Counter = field(default_factory=Counter)  # key -> local/global yaml files
    setting_files: Counter = field(default_factory=Counter)  # file name -> folders
    unused: Counter = field(default_factory=Counter)  # key -> files (rating, ...)

    def lines(self) -> list[str]:
        out = []
        if self.text_captions:
            out.append(f".txt/.caption captions (comma-separated: main prompt, tags): {_n(self.text_captions, 'image')}")
        if self.yaml_captions:
            out.append(f".yaml sidecar captions: {_n(self.yaml_captions, 'image')}")
        if self.merged:
            out.append(f"text and .yaml captions of one image merged: {_n(self.merged, 'image')}")
        if self.name_captions:
            out.append(f"file-name captions: {_n(self.name_captions, 'image')}")
        if self.caption_key:
            out.append(f"'caption:' key in sidecars: {_n(self.caption_key, 'file')}")
        if self.weighted:
            out.append(f"weighted tags: {_n(self.weighted, 'image')}")
        if self.repeated:
            out.append(f"repeated tags dropped: {_n(self.repeated, 'caption')}")
        if self.max_length:
            out.append(f"max_caption_length: {_n(self.max_length, 'image')}")
        if self.image_settings:
            keys = ", ".join(f"{k} ({_n(c, 'image')})" for k, c in sorted(self.image_settings.items()))
            out.append(f"per-image settings in .yaml sidecars: {keys}")
        if self.folder_captions:
            shown = ", ".join(self.folder_captions[:5]) + (" ..." if len(self.folder_captions) > 5 else "")
            out.append(f"folder captions (main_prompt/tags/caption in local.yaml or global.yaml): {shown}")
        if self.yaml_settings:
            keys = ", ".join(f"{k} ({_n(c, 'file')})" for k, c in sorted(self.yaml_settings.items()))
            out.append(f"settings in local.yaml/global.yaml: {keys}")
        if self.setting_files:
            names = ", ".join(f"{k} ({_n(c, 'folder')})" for k, c in sorted(self.setting_files.items()))
            out.append(f"setting files: {names}")
        if self.unused:
            keys = ", ".join(f"{k} ({_n(c, 'file')})" for k, c in sorted(self.unused.items()))
            out.append(f"keys edlib does not use: {keys}")
        return out
