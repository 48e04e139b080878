"""Training methods behind one registry: `make_method(config)` gives the `Method` the
config's `method` key names. Each method lives in its own module beside this one:

    base.py                the interface the loop uses (`Method`)
    full.py                full fine-tune
    lora.py                LoRA / LoCon adapters (peft)
    textual_inversion.py   new words in the text encoder(s)
    hypernetwork.py        an AUTOMATIC1111 hypernetwork beside the frozen model

The config schema lists the same names (`edlib.model.config.METHODS`) without importing
torch; a test keeps the two in step.
"""

from __future__ import annotations

from edlib.model.methods.base import Method
from edlib.model.methods.full import FullFineTune
from edlib.model.methods.hypernetwork import HypernetworkMethod
from edlib.model.methods.lora import LoraMethod
from edlib.model.methods.textual_inversion import TextualInversion

METHODS: dict[str, type[Method]] = {
    "full": FullFineTune,
    "lora": LoraMethod,
    "textual_inversion": TextualInversion,
    "hypernetwork": HypernetworkMethod,
}


def make_method(config) -> Method:
    """The method the config asks for (`method`, default "full")."""
    name = getattr(config, "method", "full")
    if name not in METHODS:
        raise ValueError(f"method: unknown value {name!r}; allowed: {', '.join(METHODS)}")
    return METHODS[name](config)


__all__ = ["METHODS", "FullFineTune", "HypernetworkMethod", "LoraMethod", "Method", "TextualInversion", "make_method"]
