"""The text conditioning of SD3/SD3.5 and FLUX.1, as their diffusers pipelines compute it.

- **FLUX.1**: CLIP-L's pooled output ``(B, 768)`` (the projection of the end-of-text token,
  ``pooler_output``) and T5's last hidden states ``(B, L, 4096)``; ``L`` is the T5 sequence
  length (`Models.max_sequence_length`), padded to that length (``FluxPipeline.encode_prompt``).
- **SD3/SD3.5**: CLIP-L and CLIP-G read one layer before their last (SDXL's choice), joined
  along the features (768 + 1280) and zero-padded to T5's width, then T5's hidden states appended
  along the sequence: ``(B, 77 + L, 4096)``; the two projected pooled outputs joined ``(B, 2048)``
  (``StableDiffusion3Pipeline.encode_prompt``). An SD3 loaded without T5 gets zeros in its
  place, as the pipeline does.

``clip_skip`` counts as for SDXL: 1 is the standard layer, 2 one deeper. FLUX reads only CLIP's
pooled output, which no layer choice changes, so it must be 1 there.
"""

from __future__ import annotations

import torch

from edlib.model.bundle import Conditioning, Models, tokenize


def encode_t5(tokenizer, encoder, captions: list[str], length: int) -> torch.Tensor:
    """T5's last hidden states ``(B, length, width)``, padded and truncated to ``length`` tokens."""
    return encoder(tokenize(tokenizer, captions, encoder.device, length))[0]


def encode_flow_prompts(models: Models, captions: list[str], clip_skip: int = 1) -> Conditioning:
    """The `Conditioning` (hidden states and pooled embedding) of captions for SD3 or FLUX."""
    if models.family == "flux":
        if clip_skip != 1:
            raise ValueError("clip_skip: FLUX reads CLIP's pooled output only, which clip_skip does not change; set it to 1")
        encoder = models.text_encoder
        pooled = encoder(tokenize(models.tokenizer, captions, encoder.device)).pooler_output
        hidden = encode_t5(models.tokenizer_2, models.text_encoder_2, captions, models.max_sequence_length)
        return Conditioning(hidden, pooled)
    return _encode_sd3(models, captions, clip_skip)


def _encode_sd3(models: Models, captions: list[str], clip_skip: int) -> Conditioning:
    hidden, pooled = [], []
    for tokenizer, encoder in ((models.tokenizer, models.text_encoder), (models.tokenizer_2, models.text_encoder_2)):
        layers = encoder.config.num_hidden_layers
        if not 1 <= clip_skip <= layers - 1:
            raise ValueError(f"clip_skip: {clip_skip} is out of range for a text encoder with {layers} layers (1..{layers - 1})")
        output = encoder(tokenize(tokenizer, captions, encoder.device), output_hidden_states=True)
        hidden.append(output.hidden_states[-(clip_skip + 1)])
        pooled.append(output.text_embeds)
    dtype = torch.promote_types(hidden[0].dtype, hidden[1].dtype)
    clip = torch.cat([h.to(dtype) for h in hidden], dim=-1)
    length = models.max_sequence_length
    if models.text_encoder_3 is None:
        width = models.unet.config.joint_attention_dim
        t5 = torch.zeros(len(captions), length, width, device=clip.device, dtype=dtype)
    else:
        t5 = encode_t5(models.tokenizer_3, models.text_encoder_3, captions, length)
    dtype = torch.promote_types(dtype, t5.dtype)
    clip = torch.nn.functional.pad(clip.to(dtype), (0, t5.shape[-1] - clip.shape[-1]))
    return Conditioning(torch.cat([clip, t5.to(dtype).to(clip.device)], dim=-2), torch.cat([p.to(dtype) for p in pooled], dim=-1))
