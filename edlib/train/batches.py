"""From a scheduled batch (indices into the scan) to the tensors the UNet trains on.

Everything random here is drawn from generators seeded by (seed, epoch, batch index, slot),
never from global state, so a resumed run, a run with cached latents and a run split over
several processes all see the same caption, caption dropout, noise and timestep for a
given sample. (Latents are the VAE posterior mean, so they involve no draw at all.)

Images are fitted to their bucket by scaling to cover it (the shorter relative side fills
the bucket exactly) and center-cropping the overflow, so nothing is stretched and at most a
thin band of the longer side is lost; the bucket was chosen for its aspect ratio, so the
crop is small. Then the scheduled horizontal flip, then pixels normalised to [-1, 1].

SDXL is told each sample's real geometry (its micro-conditioning): the image's original size,
the top-left corner of that crop in bucket pixels, and the bucket as the target size, so it
learns what a crop looks like and samples uncropped at "crop 0, 0".
"""

from __future__ import annotations

import hashlib
import random
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from safetensors.torch import load_file, save_file

from edlib.data.captions import training_caption
from edlib.data.images import ImageReadError, load_rgb
from edlib.data.types import ScanResult
from edlib.model.models import Conditioning, encode_images, encode_prompts
from edlib.model.offload import offloaded_modules, on_device, park_on_cpu


def load_pixels(path: str | Path, size: tuple[int, int], flip: bool) -> torch.Tensor:
    """The image at `path` as a (3, height, width) float tensor in [-1, 1], fitted to
    `size` = (width, height) by scale-to-cover and center crop."""
    image = ImageOps.fit(load_rgb(path), size, method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))
    if flip:
        image = ImageOps.mirror(image)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def crop_top_left(original: tuple[int, int], bucket: tuple[int, int]) -> tuple[int, int]:
    """(top, left) in bucket pixels of the crop `load_pixels` takes from an image of size
    `original` = (width, height): the same centered box `ImageOps.fit` cuts, scaled to the
    bucket. A horizontal flip mirrors a centered crop onto itself, so it does not change this."""
    (width, height), (bucket_w, bucket_h) = original, bucket
    if width * bucket_h >= height * bucket_w:  # wider than the bucket: the sides are cut
        crop_w = height * bucket_w / bucket_h
        return 0, round((width - crop_w) / 2 * bucket_h / height)
    crop_h = width * bucket_h / bucket_w
    return round((height - crop_h) / 2 * bucket_w / width), 0


def micro_conditioning(scan: ScanResult, batch: LocalBatch) -> torch.Tensor:
    """(B, 6) SDXL time ids per sample: original height and width, crop top and left, and
    target (bucket) height and width, as SDXL's `_get_add_time_ids` orders them."""
    rows = []
    for i in batch.items:
        item = scan.items[i]
        top, left = crop_top_left((item.width, item.height), batch.bucket)
        rows.append((item.height, item.width, top, left, batch.bucket[1], batch.bucket[0]))
    return torch.tensor(rows, dtype=torch.float32)


def sample_seed(seed: int, epoch: int, batch_index: int, slot: int) -> int:
    """A 63-bit seed for one sample of one batch: its caption, noise and timestep."""
    digest = hashlib.sha256(f"edlib:{seed}:{epoch}:{batch_index}:{slot}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass(frozen=True)
class LocalBatch:
    """The part of a scheduled batch this process trains: `slots` are the positions in the
    full batch (they seed the per-sample randomness), `items` index `scan.items`."""

    epoch: int
    index: int
    bucket: tuple[int, int]
    slots: tuple[int, ...]
    items: tuple[int, ...]
    flips: tuple[bool, ...]


def local_batch(batch, epoch: int, process_index: int, num_processes: int) -> LocalBatch:
    """Process r of n takes slots [r*b, (r+1)*b) of a batch realised at n*b samples, so
    across processes every scheduled sample is trained exactly once."""
    per_process = len(batch.items) // num_processes
    start = process_index * per_process
    slots = tuple(range(start, start + per_process))
    return LocalBatch(
        epoch=epoch,
        index=batch.index,
        bucket=tuple(batch.bucket),
        slots=slots,
        items=tuple(batch.items[s] for s in slots),
        flips=tuple(bool(batch.flips[s]) for s in slots),
    )


def batch_captions(scan: ScanResult, batch: LocalBatch, config, seed: int) -> list[str]:
    """The caption each sample trains with: tag shuffling and conditional dropout follow
    the sample's settings (its folder's, or its own .yaml sidecar's), falling back to the
    run config."""
    captions = []
    for slot, item_index in zip(batch.slots, batch.items):
        item = scan.items[item_index]
        settings = scan.item_settings(item_index)
        dropout = config.caption_dropout if settings.cond_dropout is None else settings.cond_dropout
        rng = random.Random(sample_seed(seed, batch.epoch, batch.index, slot))
        captions.append(
            training_caption(
                item.caption,
                rng,
                shuffle_tags=config.shuffle_caption or settings.shuffle_tags,
                keep_tokens=config.keep_tokens,
                dropout=dropout,
            )
        )
    return captions


def batch_loss_scale(scan: ScanResult, batch: LocalBatch) -> torch.Tensor:
    """(B,) loss multipliers: each sample's `loss_scale` (its folder's `loss_scale.txt`, or
    its own .yaml sidecar's)."""
    scales = [scan.item_settings(i).loss_scale for i in batch.items]
    return torch.tensor(scales, dtype=torch.float32)


def sample_generators(seed: int, batch: LocalBatch, salt: str, device) -> list[torch.Generator]:
    """One generator per sample (`salt` separates streams for different uses), for draws
    (noise, timestep) that must not depend on batch composition or process count."""
    generators = []
    for slot in batch.slots:
        g = torch.Generator(device=device)
        g.manual_seed(sample_seed(seed, batch.epoch, batch.index, slot) ^ _salt(salt))
        generators.append(g)
    return generators


def _salt(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:7], "little")


class LatentCache:
    """Latents per (image, bucket, flip), so the VAE encodes each once.

    `mode` "memory" keeps CPU tensors in a dict; "disk" writes safetensors files to
    `directory`, reused by a resumed run (the key includes the file's size and mtime, so an
    edited image is encoded again). Latents are the VAE posterior mean (see
    `edlib.model.models.encode_images`), so cached and uncached training are identical.
    """

    def __init__(self, mode: str, directory: Path | None = None):
        self.mode = mode
        self.directory = directory
        self._memory: dict[str, torch.Tensor] = {}
        if mode == "disk":
            directory.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(path: Path, bucket: tuple[int, int], flip: bool) -> str:
        stat = path.stat()
        text = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{bucket[0]}x{bucket[1]}|{int(flip)}"
        return hashlib.sha1(text.encode()).hexdigest()

    def get(self, key: str) -> torch.Tensor | None:
        if self.mode == "memory":
            return self._memory.get(key)
        file = self.directory / f"{key}.safetensors"
        return load_file(str(file))["latents"] if file.exists() else None

    def put(self, key: str, latents: torch.Tensor) -> None:
        latents = latents.detach().to("cpu").contiguous()
        if self.mode == "memory":
            self._memory[key] = latents
        else:  # written under a temp name and renamed: a killed run never leaves half a file
            tmp = self.directory / f".{key}.tmp"
            save_file({"latents": latents}, str(tmp))
            tmp.replace(self.directory / f"{key}.safetensors")


class BatchEncoder:
    """Turns a `LocalBatch` into UNet inputs: latents (B, 4, h, w) and the `Conditioning`
    (text embeddings (B, 77, hidden); for SDXL also pooled embeddings and micro-conditioning),
    using the latent and text-embedding caches when configured.

    Text embeddings are cached by caption string, so the cache is exact even when a
    caption varies (dropout gives the empty caption, one more entry); the config refuses
    the cache when a text encoder trains or tags are shuffled.

    Tensors come out on `device` (default: the UNet's). Encoders kept in CPU memory between
    uses (`edlib.model.offload`) are brought there to encode what the caches miss.

    An image is read (decoded, or its cached latents looked up) by `read_inputs`, which
    reports an image it cannot read instead of raising, so training can put another image
    of the batch in its place (`edlib.train.unreadable`); `use_inputs` hands what was read
    to the next `encode` of that batch, so nothing is read twice.
    """

    def __init__(self, models, config, *, text_encoder_trains: bool, cache_dir: Path, prepare_captions=list, device=None):
        self.models = models
        self.device = torch.device(device) if device is not None else next(models.unet.parameters()).device
        self.offloaded = offloaded_modules(config, models)
        self.prepare_captions = prepare_captions
        self.config = config
        self.text_encoder_trains = text_encoder_trains
        mode = config.cache_latents
        self.latent_cache = None if mode == "no" else LatentCache(mode, cache_dir / "latents")
        self.text_cache: dict[str, Conditioning] | None = {} if config.cache_text_embeddings else None
        # SD3/FLUX embeddings hold T5's hundreds of tokens (FLUX: 512 x 4096 values a caption):
        # cached in CPU memory, in the encoder's dtype, and moved per batch.
        self._text_cache_device = torch.device("cpu") if models.flow_matching else self.device
        self._warm_pending = models.flow_matching and self.text_cache is not None
        self._ready: tuple[LocalBatch, list[torch.Tensor]] | None = None

    def encode(self, scan: ScanResult, batch: LocalBatch, seed: int) -> tuple[torch.Tensor, Conditioning]:
        # fp32 here: the frozen encoders may run in fp16/bf16, but noise, targets and the
        # loss are computed in fp32 (autocast lowers only the UNet's own matmuls).
        latents = self.latents(scan, batch).float()
        if self._warm_pending:
            self._warm_pending = False
            self.warm_text_cache(scan)
        cond = self.text_embeddings(self.prepare_captions(batch_captions(scan, batch, self.config, seed))).to(torch.float32)
        if self.models.is_sdxl:
            cond = cond.with_time_ids(micro_conditioning(scan, batch))
        return latents, cond

    def latents(self, scan: ScanResult, batch: LocalBatch) -> torch.Tensor:
        if self._ready is not None and self._ready[0] == batch:
            inputs, self._ready = self._ready[1], None
        else:
            read, errors = self.read_inputs(scan, batch, [(i, f) for i, f in zip(batch.items, batch.flips)])
            for error in errors:
                if error is not None:
                    raise error
            inputs = read
        if self.latent_cache is None:
            return encode_images(self.models, torch.stack(inputs)).to(self.device)
        return torch.stack([latents.to(self.device) for latents in inputs])

    def read_inputs(
        self, scan: ScanResult, batch: LocalBatch, samples: list[tuple[int, bool]]
    ) -> tuple[list[torch.Tensor | None], list[ImageReadError | None]]:
        """What `encode` needs of each (item, flip) in `samples`, in `batch`'s bucket: the
        pixels, or with a latent cache the latents (encoding what the cache misses). Where an
        image cannot be read: None, and the `ImageReadError` saying why."""
        inputs: list[torch.Tensor | None] = []
        errors: list[ImageReadError | None] = []
        with ExitStack() as stack:
            vae_moved = False

            def vae_on_device() -> None:  # the VAE comes to the device once per batch, if needed
                nonlocal vae_moved
                if not vae_moved:
                    stack.enter_context(self._on_device("vae"))
                    vae_moved = True

            for item, flip in samples:
                path = Path(scan.root) / scan.items[item].path
                try:
                    inputs.append(self._read_input(path, batch.bucket, flip, vae_on_device))
                    errors.append(None)
                except ImageReadError as error:
                    inputs.append(None)
                    errors.append(error)
                except OSError as error:  # stat() of the latent cache key: the file is gone
                    inputs.append(None)
                    gone = isinstance(error, FileNotFoundError)
                    why = "no such file (moved to the quarantine, renamed or deleted?)" if gone else error.strerror
                    errors.append(ImageReadError(path, why or str(error)))
        return inputs, errors

    def use_inputs(self, batch: LocalBatch, inputs: list[torch.Tensor]) -> None:
        """Inputs `read_inputs` returned for `batch` (possibly with substitutes): the next
        `encode` of that batch uses them instead of reading the images again."""
        self._ready = (batch, inputs)

    def _read_input(self, path: Path, bucket: tuple[int, int], flip: bool, vae_on_device) -> torch.Tensor:
        if self.latent_cache is None:
            return load_pixels(path, bucket, flip)
        key = self.latent_cache.key(path, bucket, flip)
        latents = self.latent_cache.get(key)
        if latents is None:
            vae_on_device()
            # One image at a time: the same latents whatever the batch.
            latents = encode_images(self.models, load_pixels(path, bucket, flip)[None])[0]
            self.latent_cache.put(key, latents)
        return latents

    def text_embeddings(self, captions: list[str]) -> Conditioning:
        clip_skip = self.config.clip_skip
        if self.text_encoder_trains:
            return encode_prompts(self.models, captions, clip_skip)
        with torch.no_grad():
            if self.text_cache is None:
                return encode_prompts(self.models, captions, clip_skip)
            missing = sorted({c for c in captions if c not in self.text_cache})
            if missing:
                with self._on_device(*self.models.text_encoder_names):
                    encoded = encode_prompts(self.models, missing, clip_skip).to(self._text_cache_device)
                for k, caption in enumerate(missing):
                    self.text_cache[caption] = encoded[k]
            return Conditioning.stack([self.text_cache[c] for c in captions]).to(self.device)

    def warm_text_cache(self, scan: ScanResult, chunk: int = 8) -> None:
        """SD3/FLUX: encode every caption of the data root (and the empty one dropout gives)
        before the first step, with the transformer parked in CPU memory meanwhile: T5-XXL
        (9.5 GB in bf16) and FLUX's transformer do not fit a 16-24 GB card together, and a
        cache miss in every batch of the first epoch would put them there together. Captions
        that only appear later (a folder's tag shuffling) are encoded when they do."""
        captions = sorted({item.caption.text() for item in scan.items} | {""})
        missing = [c for c in self.prepare_captions(captions) if c not in self.text_cache]
        if not missing:
            return
        with park_on_cpu(self.models.unet), self._on_device(*self.models.text_encoder_names), torch.no_grad():
            for start in range(0, len(missing), chunk):
                part = missing[start : start + chunk]
                encoded = encode_prompts(self.models, part, self.config.clip_skip).to(self._text_cache_device)
                for k, caption in enumerate(part):
                    self.text_cache[caption] = encoded[k]

    def _on_device(self, *names: str):
        """The named encoders on the training device for a cache miss, if they are offloaded."""
        return on_device(self.models, [name for name in names if name in self.offloaded], self.device)
