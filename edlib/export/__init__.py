"""Exports users load elsewhere (DESIGN.md "Output formats").

A full fine-tune goes out as a diffusers folder (:func:`export_diffusers`) and as one
``.safetensors`` file in the original Stable Diffusion key layout (:func:`export_single_file`)
for AUTOMATIC1111, ComfyUI and diffusers' ``from_single_file``.
"""

from edlib.export.diffusers_folder import export_diffusers
from edlib.export.single_file import export_single_file

__all__ = ["export_diffusers", "export_single_file"]
