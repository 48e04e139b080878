"""edlib: fine-tune Stable Diffusion on your own folders of images, EveryDream-style.

The library is split the way the work is: `edlib.data` (scan a data root, balance it,
plan epochs), `edlib.train` (config, models, the resumable loop), `edlib.sample`,
`edlib.export`, and `edlib.widgets` for the notebooks. The CLI (`edlib ...`) and the
notebooks call the same functions.
"""

__version__ = "0.1.0"

from edlib import quiet as _quiet

_quiet.install()  # drop dependency log lines known to be harmless (edlib/quiet.py lists them)
