"""Export textual inversion embeddings as AUTOMATIC1111-style ``.safetensors`` files.

One file per placeholder, holding one tensor ``emb_params`` of shape ``[num_vectors, dim]``:
the layout A1111 and ComfyUI read from an ``embeddings/`` folder, and that diffusers'
``load_textual_inversion(path, token=...)`` loads. A1111 and ComfyUI trigger an embedding by
its file name, so the file is named after the placeholder (characters that file systems
refuse, like the ``<>`` of ``<ohwx>``, are dropped); the placeholder itself is kept in the
metadata as ``name``.

SDXL embeddings hold the placeholder's vectors for each text encoder instead: ``clip_l``
(the first, CLIP ViT-L) and ``clip_g`` (the second, OpenCLIP ViT-bigG), the layout A1111 and
ComfyUI read for SDXL. diffusers loads each tensor into its encoder, as its docs show:
``load_textual_inversion(file["clip_l"], token=..., text_encoder=pipe.text_encoder,
tokenizer=pipe.tokenizer)`` and the same with ``clip_g``, ``text_encoder_2``, ``tokenizer_2``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from edlib import __version__
from edlib.export.single_file import DTYPES, write_safetensors_atomic

# Characters Windows (and so many users' UIs) refuse in file names.
_UNSAFE = re.compile(r'[<>:"/\\|?*\x00-\x1f]')


def embedding_file_name(token: str) -> str:
    """``<ohwx>`` -> ``ohwx.safetensors``: the name a user types in A1111 to use it."""
    stem = _UNSAFE.sub("", token).strip(" .")
    if not stem:
        raise ValueError(f"placeholder {token!r} has no characters usable in a file name; rename it, e.g. <ohwx>")
    return f"{stem}.safetensors"


def export_a1111_embedding(
    token: str,
    vectors: torch.Tensor,
    out_path: str | Path,
    *,
    dtype: str = "fp32",
    metadata: Mapping[str, Any] | None = None,
    vectors_g: torch.Tensor | None = None,
) -> Path:
    """Write one embedding (``vectors`` ``[num_vectors, dim]``) for ``token`` to ``out_path``;
    with ``vectors_g`` (SDXL's second encoder's vectors) an SDXL embedding of ``clip_l`` =
    ``vectors`` and ``clip_g`` = ``vectors_g``. Embeddings are tiny, so fp32 is the default.
    Returns ``out_path``."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype: unknown value {dtype!r}; allowed: {', '.join(DTYPES)}")
    named = {"emb_params": vectors} if vectors_g is None else {"clip_l": vectors, "clip_g": vectors_g}
    for tensor in named.values():
        if tensor.ndim != 2:
            raise ValueError(f"{token}: embedding vectors must be [num_vectors, dim], got shape {tuple(tensor.shape)}")
    if vectors_g is not None and len(vectors_g) != len(vectors):
        raise ValueError(f"{token}: {len(vectors)} clip_l vectors but {len(vectors_g)} clip_g vectors; they must pair up")
    out_path = Path(out_path)
    if out_path.suffix != ".safetensors":
        raise ValueError(f"{out_path}: an embedding export must end in .safetensors")
    info = {str(k): v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in (metadata or {}).items()}
    info.update(name=token, num_vectors=str(vectors.shape[0]), edlib_version=__version__)
    tensors = {key: value.detach().to("cpu", DTYPES[dtype], copy=True).contiguous() for key, value in named.items()}
    write_safetensors_atomic(tensors, out_path, info)
    return out_path


def export_a1111_embeddings(
    embeddings: Mapping[str, torch.Tensor],
    out_dir: str | Path,
    *,
    dtype: str = "fp32",
    metadata: Mapping[str, Any] | None = None,
    embeddings_g: Mapping[str, torch.Tensor] | None = None,
) -> list[Path]:
    """Write each placeholder's embedding (e.g. `TextualInversion.learned_embeddings`) into
    ``out_dir`` as ``<file name of the token>.safetensors``; with ``embeddings_g`` (the same
    placeholders' vectors in SDXL's second encoder) SDXL embeddings. Returns the paths written."""
    if embeddings_g is not None and set(embeddings_g) != set(embeddings):
        raise ValueError(f"SDXL embeddings: clip_l has {sorted(embeddings)}, clip_g has {sorted(embeddings_g)}")
    names = {token: embedding_file_name(token) for token in embeddings}
    clashes = [name for name in set(names.values()) if list(names.values()).count(name) > 1]
    if clashes:
        raise ValueError(f"placeholders {sorted(names)} give the same file name {clashes[0]}; make them differ in letters")
    out_dir = Path(out_dir)
    return [
        export_a1111_embedding(
            token,
            vectors,
            out_dir / names[token],
            dtype=dtype,
            metadata=metadata,
            vectors_g=None if embeddings_g is None else embeddings_g[token],
        )
        for token, vectors in embeddings.items()
    ]
