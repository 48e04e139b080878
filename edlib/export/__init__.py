"""Exports users load elsewhere (DESIGN.md "Output formats").

A full fine-tune goes out as a diffusers folder (:func:`export_diffusers`) and as one
``.safetensors`` file in the original Stable Diffusion key layout (:func:`export_single_file`)
for AUTOMATIC1111, ComfyUI and diffusers' ``from_single_file``. A LoRA run goes out as a
kohya-style LoRA file (:func:`export_kohya_lora`), a textual-inversion run as A1111
embeddings (:func:`export_a1111_embeddings`), a hypernetwork run as an A1111 hypernetwork `.pt`
(:func:`export_a1111_hypernetwork`). :func:`export_run` picks by the run's method.
"""

from edlib.export.a1111_embedding import export_a1111_embeddings
from edlib.export.a1111_hypernetwork import export_a1111_hypernetwork
from edlib.export.diffusers_folder import export_diffusers
from edlib.export.kohya_lora import export_kohya_lora
from edlib.export.single_file import export_single_file

__all__ = [
    "export_a1111_embeddings",
    "export_a1111_hypernetwork",
    "export_diffusers",
    "export_kohya_lora",
    "export_run",
    "export_single_file",
]


def __getattr__(name: str):
    # export_run loads runs through edlib.train, which imports the exporters: import lazily.
    if name == "export_run":
        from edlib.export.run import export_run

        return export_run
    raise AttributeError(name)
