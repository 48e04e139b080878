"""edlib: fine-tune Stable Diffusion on your own folders of images, EveryDream-style.

The library is split in layers, each importing only those below it (tests/test_layers.py):

    edlib.data, edlib.world    scan a data root, balance it, plan epochs; the toy world (no torch)
    edlib.model                config, model loading, methods, optimizers, checkpoints
    edlib.train, .sample, .export   the resumable loop and its hooks; sampling; export formats
    edlib.widgets, edlib.cli, edlib.demo   notebook panels, the `edlib` command, the demo

The CLI (`edlib ...`) and the notebooks call the same functions.
"""

__version__ = "0.1.0"

from edlib import quiet as _quiet

_quiet.install()  # drop dependency log lines known to be harmless (edlib/quiet.py lists them)
