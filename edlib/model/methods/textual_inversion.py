"""Textual inversion: learn new words for the text encoder, and nothing else.

Each placeholder (say ``<ohwx>`` with 3 vectors) becomes new tokens ``<ohwx> <ohwx>_1
<ohwx>_2`` (the naming diffusers' ``load_textual_inversion`` and its pipelines use), added to
the tokenizer, with new rows in the text encoder's embedding matrix initialised from the
embedding of an init word ("person", "style", ...). Captions name the placeholder once;
`TextualInversion.prepare_captions` spells it out as all its vectors (`spell_out`), and edlib's
sampling pipelines do the same from the tokenizer's added tokens (`vector_tokens`), so a
prompt means at sampling time what a caption meant in training.

Only the new rows train, through peft's trainable tokens: the rows live in a separate small
parameter (the only one in the optimizer), and the embedding layer swaps them in when it runs.
Every other weight, including the rest of the embedding matrix, is never handed to the
optimizer, so weight decay or momentum cannot touch it: it stays bit-identical. A checkpoint
holds just the new rows, one tensor ``[num_vectors, dim]`` per placeholder (SDXL: per
placeholder and text encoder, see `TextualInversion`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edlib.model.methods.base import Method

CHECKPOINT_FILE = "embeddings"


class Placeholder(BaseModel):
    """One new word to learn (an entry of the config's `placeholder_tokens`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token: str = Field(description="The new word as written in captions, e.g. `<ohwx>`; must be new to the tokenizer.")
    init_word: str = Field(description="A word (or a few) close to the concept, e.g. `person`; starts the new vectors.")
    num_vectors: int = Field(1, ge=1, description="Embedding vectors for the word: more can hold more detail (1-8).")

    @field_validator("token", "init_word")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("token")
    @classmethod
    def _one_word(cls, value: str) -> str:
        if any(character.isspace() for character in value):
            raise ValueError(f"{value!r} contains whitespace; a placeholder is one word like <ohwx>")
        return value

    @field_validator("token")
    @classmethod
    def _lower_case(cls, value: str) -> str:
        # CLIP's tokenizer lowercases every prompt before it looks for added tokens, and hands
        # them back lowercased; diffusers' pipelines then look the lowercased word up among the
        # added tokens to spell out a multi-vector embedding, and would never find <OhWx>.
        if value != value.lower():
            raise ValueError(
                f"{value!r} has capital letters; CLIP's tokenizer reads prompts in lower case, so write "
                f"the placeholder as {value.lower()!r} (prompts may still use any case)"
            )
        return value

    @property
    def tokens(self) -> list[str]:
        """The tokenizer tokens of its vectors: ``token, token_1, ..., token_{n-1}``."""
        return [self.token] + [f"{self.token}_{i}" for i in range(1, self.num_vectors)]


def spell_out(text: str, vectors: Mapping[str, Sequence[str]]) -> str:
    """``text`` with each multi-vector placeholder written as all its vector tokens
    (``vectors``: placeholder -> its tokens, as `Placeholder.tokens`): ``<ohwx>`` -> ``<ohwx>
    <ohwx>_1 <ohwx>_2``.

    Matched in any case, as CLIP's tokenizer matches added tokens (``<OHWX>`` is ``<ohwx>``
    to it); a placeholder already spelled out stays as it is, so spelling out twice changes
    nothing (diffusers' own ``maybe_convert_prompt`` misses the first and doubles the second).
    """
    for token, tokens in vectors.items():
        if len(tokens) < 2:
            continue
        spelled = " ".join(tokens)
        # At each position the spelled-out form is tried first, and replaced by itself.
        pattern = re.compile(rf"{re.escape(spelled)}|{re.escape(token)}(?!_\d)", re.IGNORECASE)
        text = pattern.sub(lambda _: spelled, text)
    return text


def vector_tokens(tokenizer) -> dict[str, list[str]]:
    """Multi-vector placeholders among a tokenizer's added tokens, by the naming edlib and
    diffusers' ``load_textual_inversion`` use (``<ohwx>``, ``<ohwx>_1``, ...): placeholder ->
    its tokens."""
    added = set(tokenizer.get_added_vocab())
    found = {}
    for token in added:
        tokens = [token]
        while f"{token}_{len(tokens)}" in added:
            tokens.append(f"{token}_{len(tokens)}")
        if len(tokens) > 1:
            found[token] = tokens
    return found


def placeholders(config) -> list[Placeholder]:
    """The config's `placeholder_tokens` (mappings or objects with the same fields), validated."""
    entries = []
    for index, entry in enumerate(config.placeholder_tokens):
        try:
            entries.append(Placeholder.model_validate(entry, from_attributes=True))
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors(include_url=False))
            raise ValueError(f"placeholder_tokens[{index}]: {problems} (got {entry!r})") from None
    if not entries:
        raise ValueError("placeholder_tokens: textual_inversion needs at least one, e.g. [{token: <ohwx>, init_word: person}]")
    names = [p.token for p in entries]
    if len(set(names)) != len(names):
        raise ValueError(f"placeholder_tokens: a token is given twice in {names}")
    return entries


def _token_embedding(text_encoder) -> torch.nn.Module:
    """The token embedding layer (peft's wrapper once set up)."""
    return text_encoder.get_input_embeddings()


# Per text encoder: the tokenizer that feeds it and the checkpoint file of its new rows.
_ENCODERS = {"text_encoder": ("tokenizer", CHECKPOINT_FILE), "text_encoder_2": ("tokenizer_2", f"{CHECKPOINT_FILE}_2")}


class TextualInversion(Method):
    """Textual inversion of `placeholder_tokens`, trained at `text_encoder_lr` (the new
    embeddings are the only part of the text encoder that trains).

    SDXL reads a prompt with both its encoders, so each placeholder becomes the same new
    tokens in both tokenizers, with rows in both embedding matrices started from the same
    init word; the second encoder's rows train at `text_encoder_2_lr` (null: the same rate;
    0: they keep their initial vectors). This is the pair an SDXL embedding file holds
    (``clip_l``, ``clip_g``).
    """

    name = "textual_inversion"

    def trainable_module_names(self, models) -> set[str]:
        return set(self.text_encoder_lrs(models))

    def setup(self, models) -> None:
        from peft import TrainableTokensConfig, inject_adapter_in_model

        if self.config.text_encoder_lr <= 0:
            raise ValueError(
                "text_encoder_lr: textual_inversion trains the new embeddings at this rate; it is "
                f"{self.config.text_encoder_lr:g}; set it, e.g. to 5e-3"
            )
        for name in models.module_names:
            getattr(models, name).requires_grad_(False)
        # Every check before any change: a bad placeholder leaves both encoders untouched.
        initial = {name: self._initial_ids(getattr(models, _ENCODERS[name][0])) for name in models.text_encoder_names}
        trained = self.text_encoder_lrs(models)
        for name, placeholder_ids in initial.items():
            tokenizer, text_encoder = getattr(models, _ENCODERS[name][0]), getattr(models, name)
            for placeholder, _ in placeholder_ids:
                tokenizer.add_tokens(placeholder.tokens)
            # New rows at the end of the matrix; the existing rows are copied unchanged.
            old_rows = text_encoder.get_input_embeddings().weight
            text_encoder.resize_token_embeddings(len(tokenizer))
            weight = text_encoder.get_input_embeddings().weight
            with torch.no_grad():
                for placeholder, init_ids in placeholder_ids:
                    new_ids = tokenizer.convert_tokens_to_ids(placeholder.tokens)
                    weight[new_ids] = self._initial_vectors(old_rows, init_ids, placeholder.num_vectors)

            config = TrainableTokensConfig(target_modules=["token_embedding"], token_indices=self._new_ids(tokenizer))
            inject_adapter_in_model(config, text_encoder)
            for param in self._rows(models, encoder=name).values():
                param.requires_grad_(name in trained)

    def _initial_ids(self, tokenizer) -> list[tuple[Placeholder, list[int]]]:
        """Each placeholder with its init word's token ids in ``tokenizer``, checked to be new."""
        initial = []
        for placeholder in placeholders(self.config):
            taken = [token for token in placeholder.tokens if self._known(tokenizer, token)]
            if taken:
                raise ValueError(
                    f"placeholder_tokens: {taken[0]!r} is already a word of this model's tokenizer, and "
                    "would change its meaning in every caption; pick a word it does not know, e.g. <ohwx>"
                )
            init_ids = tokenizer(placeholder.init_word, add_special_tokens=False).input_ids
            if not init_ids:
                raise ValueError(f"placeholder_tokens: init_word {placeholder.init_word!r} gives no tokens")
            initial.append((placeholder, init_ids))
        return initial

    @staticmethod
    def _known(tokenizer, token: str) -> bool:
        """Whether ``token`` is a token, or a word the tokenizer reads as one token (``cat``
        is the token ``cat</w>``): an added token would take over every use of that word."""
        pieces = tokenizer.tokenize(token)
        return token in tokenizer.get_vocab() or (len(pieces) == 1 and pieces[0] in tokenizer.get_vocab())

    @staticmethod
    def _initial_vectors(rows: torch.Tensor, init_ids: list[int], num_vectors: int) -> torch.Tensor:
        """Vector i starts as the init word's token i when the word has exactly as many tokens
        as there are vectors; otherwise every vector starts as the mean of its tokens."""
        vectors = rows[init_ids].detach()
        if len(init_ids) != num_vectors:
            vectors = vectors.mean(dim=0, keepdim=True).expand(num_vectors, -1)
        return vectors.clone()

    def _new_ids(self, tokenizer) -> list[int]:
        return tokenizer.convert_tokens_to_ids([t for p in placeholders(self.config) for t in p.tokens])

    def _rows(self, models, unwrap=lambda m: m, encoder: str = "text_encoder") -> dict[str, torch.nn.Parameter]:
        """peft's parameter holding the new rows of ``encoder`` (one adapter: ``default``)."""
        layer = _token_embedding(unwrap(getattr(models, encoder)))
        if not hasattr(layer, "trainable_tokens_delta"):
            raise ValueError(f"textual_inversion: {encoder} has no new embeddings; call setup(models) first")
        return dict(layer.trainable_tokens_delta)

    def param_groups(self, models) -> list[dict[str, Any]]:
        return [
            {"name": _ENCODERS[name][1], "params": list(self._rows(models, encoder=name).values()), "lr": lr}
            for name, lr in self.text_encoder_lrs(models).items()
        ]

    def learned_embeddings(self, models, unwrap=lambda m: m, encoder: str = "text_encoder") -> dict[str, torch.Tensor]:
        """Placeholder token -> its trained vectors ``[num_vectors, dim]`` in ``encoder``
        (SDXL: "text_encoder" or "text_encoder_2"), as CPU copies."""
        (rows,) = self._rows(models, unwrap, encoder).values()
        rows = rows.detach().float().cpu()
        out, start = {}, 0
        for placeholder in placeholders(self.config):
            out[placeholder.token] = rows[start : start + placeholder.num_vectors].clone()
            start += placeholder.num_vectors
        return out

    def checkpoint_weights(self, models, unwrap=lambda m: m) -> dict[str, dict[str, torch.Tensor]]:
        """The new rows of every text encoder (also of one held at lr 0: they are tiny, and an
        export needs them), one file per encoder."""
        return {_ENCODERS[name][1]: self.learned_embeddings(models, unwrap, name) for name in models.text_encoder_names}

    def load_weights(self, models, weights: dict[str, dict[str, torch.Tensor]], unwrap=lambda m: m) -> None:
        files = {_ENCODERS[name][1]: name for name in models.text_encoder_names}
        if set(weights) != set(files):
            raise ValueError(
                f"checkpoint holds weights for {sorted(weights)} but textual_inversion of this model saves "
                f"{sorted(files)}: was it saved with another method or another model (SD vs SDXL)?"
            )
        for file_name, encoder in files.items():
            self._load_rows(models, weights[file_name], unwrap, encoder)

    def _load_rows(self, models, saved: dict[str, torch.Tensor], unwrap, encoder: str) -> None:
        wanted = self.learned_embeddings(models, unwrap, encoder)
        if set(saved) != set(wanted):
            raise ValueError(f"checkpoint has embeddings for {sorted(saved)}, placeholder_tokens asks for {sorted(wanted)}")
        (rows,) = self._rows(models, unwrap, encoder).values()
        start = 0
        with torch.no_grad():
            for token, current in wanted.items():
                if saved[token].shape != current.shape:
                    raise ValueError(
                        f"checkpoint: {token} has {saved[token].shape[0]} vectors of size {saved[token].shape[1]}, "
                        f"the config asks for {current.shape[0]} of size {current.shape[1]}"
                    )
                rows[start : start + len(current)] = saved[token].to(rows.device, rows.dtype)
                start += len(current)

    def prepare_captions(self, captions: list[str]) -> list[str]:
        """Spell each multi-vector placeholder as all its tokens (``<ohwx>`` -> ``<ohwx>
        <ohwx>_1 <ohwx>_2``, see `spell_out`), so every vector is in the prompt and trains."""
        vectors = {placeholder.token: placeholder.tokens for placeholder in placeholders(self.config)}
        return [spell_out(caption, vectors) for caption in captions]
