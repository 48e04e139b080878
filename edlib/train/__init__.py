"""Training: the resumable loop, its hooks (sampling, loss tracking, validation, exports),
the run folder and the in-process run handle. What a model is and how its weights train
(config, methods, optimizers, checkpoints) is the layer below, `edlib.model`.

    from edlib.train import TrainConfig, load_config, train, start

    summary = train(load_config("train.yaml"))            # blocking (what the CLI runs)
    handle = start(load_config("train.yaml"))              # background thread (notebooks)
    handle.wait()

Names are imported on first use, so `from edlib.train import TrainConfig` (the CLI's argument
checks, the notebook form) does not pay for importing torch, diffusers and accelerate.
"""

from importlib import import_module

_EXPORTS = {
    "TrainConfig": "edlib.model.config",
    "load_config": "edlib.model.config_files",
    "train": "edlib.train.loop",
    "RunSummary": "edlib.train.loop",
    "start": "edlib.train.handle",
    "RunHandle": "edlib.train.handle",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'edlib.train' has no attribute {name!r}")
