"""Silence the dependency messages that are known to be harmless, and only those.

In a notebook every log line of a dependency lands in red under the cell, and a newcomer
reads red as failure. These are printed on every import or model load on Colab and CPU
machines and mean nothing for edlib:

- torchao loads its optional C++/CUDA kernels at import and logs each one this machine
  cannot load (e.g. H100- or Blackwell-only kernels on another card, or a CPU build of
  torch), or that it skips them for an older torch. edlib uses torchao's optimizers, which
  do not need them; "Detected no triton" is the same for its int-matmul kernels.
- torch logs a deprecation for every Enum torchao registers as a pytree constant.
- diffusers logs "Unable to import `torchao` Tensor objects" when a torchao build lacks
  classes that only loading torchao-quantised checkpoints needs.
- transformers says a CLIP/SigLIP image processor "requires torchvision" and falls back to
  the PIL one; edlib never uses image processors.
- diffusers warns that modules "should be kept in float32: []" when a model is cast with
  `.to(dtype)`: with the empty list there is nothing kept, so nothing to warn about.

Each filter sits on the one logger that emits the message and matches that message's
text, so every other warning and error of these libraries still shows. `install()` runs
when edlib is imported, before the libraries are: filters on a logger apply from the
moment they are added, whether or not the library has created its logger yet.
"""

from __future__ import annotations

import logging
import re

# (logger name, pattern matched against the record's unformatted message)
KNOWN_HARMLESS = (
    ("torchao", re.compile(r"Failed to load \S*torchao/_C\S*\.so: ")),
    ("torchao", re.compile(r"Skipping import of cpp extensions due to incompatible torch version")),
    ("torchao.kernel.intmm", re.compile(r"Detected no triton, on systems without Triton")),
    ("torch.utils._pytree", re.compile(r"is an Enum subclass and is now natively supported by torch\.compile")),
    (
        "diffusers.quantizers.torchao.torchao_quantizer",
        re.compile(r"Unable to import `torchao` Tensor objects"),
    ),
    ("transformers.utils.import_utils", re.compile(r"`\w+ImageProcessor` requires torchvision \(not installed\)")),
    ("diffusers.models.modeling_utils", re.compile(r"that should be kept in float32: \[\]\.")),
)


class _DropMatching(logging.Filter):
    """Drops the records whose message (before %-formatting) matches `pattern`."""

    def __init__(self, pattern: re.Pattern):
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(str(record.msg))


def install(known: tuple = KNOWN_HARMLESS) -> None:
    """Add the filters (once per logger and pattern, so calling it again adds nothing)."""
    for name, pattern in known:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMatching) and f.pattern == pattern for f in logger.filters):
            logger.addFilter(_DropMatching(pattern))
