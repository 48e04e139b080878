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
from dataclasses import dataclass
from pathlib import Path

import torch

from edlib.data.caption_explain import item_training_caption
from edlib.data.images import ImageReadError
from edlib.data.types import ScanResult
from edlib.model.models import Conditioning, encode_images, encode_prompts
from edlib.model.offload import offloaded_modules, on_device, park_on_cpu
from edlib.model.transfer import host_tensor, upload_stack
from edlib.train.caches import DeviceStore, LatentCache
from edlib.train.prefetch import (
    PixelPrefetcher,
    decode,
    decode_workers,
    load_pixels_uint8,
    plan_decoding,
    to_unit_range,
)


def load_pixels(path: str | Path, size: tuple[int, int], flip: bool) -> torch.Tensor:
    """The image at `path` as a (3, height, width) float tensor in [-1, 1], fitted to
    `size` = (width, height) by scale-to-cover and center crop."""
    return to_unit_range(load_pixels_uint8(path, size, flip))


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
    return torch.tensor([time_id_row(scan.items[i], batch.bucket) for i in batch.items], dtype=torch.float32)


def time_id_row(item, bucket: tuple[int, int]) -> tuple[int, ...]:
    """One sample's SDXL time ids (see `micro_conditioning`); `bucket` is (width, height)."""
    top, left = crop_top_left((item.width, item.height), bucket)
    return item.height, item.width, top, left, bucket[1], bucket[0]


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
    # `item_training_caption` is also what `edlib caption` explains: one function, no drift.
    return [
        item_training_caption(scan, item_index, random.Random(sample_seed(seed, batch.epoch, batch.index, slot)), config)
        for slot, item_index in zip(batch.slots, batch.items)
    ]


def sample_loss_scales(scan: ScanResult, batch: LocalBatch) -> list[float]:
    """Each sample's loss multiplier: its folder's `loss_scale.txt`, or its own .yaml
    sidecar's (`BatchEncoder.loss_scale` puts them on the device)."""
    return [scan.item_settings(i).loss_scale for i in batch.items]


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


class BatchEncoder:
    """Turns a `LocalBatch` into UNet inputs: latents (B, 4, h, w) and the `Conditioning`
    (text embeddings (B, 77, hidden); for SDXL also pooled embeddings and micro-conditioning),
    using the latent and text-embedding caches when configured.

    Text embeddings are cached by caption string, so the cache is exact even when a
    caption varies (dropout gives the empty caption, one more entry); the config refuses
    the cache when a text encoder trains or tags are shuffled.

    Tensors come out on `device` (default: the UNet's), and a step that finds everything
    cached reads nothing from the host: cached tensors, SDXL's micro-conditioning and loss
    scales are kept on the device (`edlib.train.caches`), and images still to decode were
    decoded ahead by DataLoader workers (`start_epoch`, `edlib.train.prefetch`). Encoders kept
    in CPU memory between uses (`edlib.model.offload`) are brought to the device to encode
    what the caches miss, a batch at a time.

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
        self.store = DeviceStore(self.device)
        mode = config.cache_latents
        self.latent_cache = None if mode == "no" else LatentCache(mode, cache_dir / "latents", self.store)
        self.text_cache: dict[str, Conditioning] | None = {} if config.cache_text_embeddings else None
        self._constants: dict[tuple, torch.Tensor] = {}  # micro-conditioning rows and loss scales, on the device
        self._workers = decode_workers(self.device, config.decode_workers)
        self._prefetch: PixelPrefetcher | None = None
        # SD3/FLUX embeddings hold T5's hundreds of tokens (FLUX: 512 x 4096 values a caption):
        # kept in CPU memory (not pinned: a few GB of them would be), in the encoder's dtype,
        # and copied per batch without blocking; all encoded before the first step.
        self.text_store = DeviceStore(self.device, budget_bytes=0, pin=False) if models.flow_matching else self.store
        self._warm_pending = models.flow_matching and self.text_cache is not None
        self._ready: tuple[LocalBatch, list[torch.Tensor]] | None = None

    def start_epoch(self, scan: ScanResult, schedule, first_batch: int, local) -> None:
        """Start decoding, in workers, the images the epoch's batches from `first_batch` on
        will need (`local(batch)`: this process's part of a scheduled batch)."""
        self.close()
        cached = None if self.latent_cache is None else self.latent_cache.has
        jobs = plan_decoding(scan, schedule, first_batch, local, cached, LatentCache.key)
        if jobs:
            self._prefetch = PixelPrefetcher(jobs, self._workers)

    def close(self) -> None:
        if self._prefetch is not None:
            self._prefetch.close()
            self._prefetch = None

    def encode(self, scan: ScanResult, batch: LocalBatch, seed: int) -> tuple[torch.Tensor, Conditioning]:
        # fp32 here: the frozen encoders may run in fp16/bf16, but noise, targets and the
        # loss are computed in fp32 (autocast lowers only the UNet's own matmuls).
        latents = self.latents(scan, batch).float()
        if self._warm_pending:
            self._warm_pending = False
            self.warm_text_cache(scan)
        cond = self.text_embeddings(self.prepare_captions(batch_captions(scan, batch, self.config, seed))).to(torch.float32)
        if self.models.is_sdxl:
            cond = cond.with_time_ids(self.time_ids(scan, batch))
        return latents, cond

    def latents(self, scan: ScanResult, batch: LocalBatch) -> torch.Tensor:
        if self._ready is not None and self._ready[0] == batch:
            inputs, self._ready = self._ready[1], None
        else:
            inputs, errors = self.read_inputs(scan, batch, list(zip(batch.items, batch.flips)))
            for error in errors:
                if error is not None:
                    raise error
        if self.latent_cache is None:  # uint8 pixels in host memory
            pixels = to_unit_range(upload_stack(inputs, self.device))
            return encode_images(self.models, pixels).to(self.device)
        return torch.stack(inputs)  # latents, on the device

    def read_inputs(
        self, scan: ScanResult, batch: LocalBatch, samples: list[tuple[int, bool]]
    ) -> tuple[list[torch.Tensor | None], list[ImageReadError | None]]:
        """What `encode` needs of each (item, flip) in `samples`, in `batch`'s bucket: the
        pixels (uint8, in host memory), or with a latent cache the latents on the device
        (what the cache misses encoded as one batch). Where an image cannot be read: None, and
        the `ImageReadError` saying why."""
        paths = [str(Path(scan.root) / scan.items[item].path) for item, _ in samples]
        images = [(path, flip) for path, (_, flip) in zip(paths, samples)]
        if self.latent_cache is None:
            return self._decode(batch, images)
        keys, errors = [], []
        for path, flip in images:
            try:
                keys.append(LatentCache.key(Path(path), batch.bucket, flip))
                errors.append(None)
            except OSError as error:  # stat() of the latent cache key: the file is gone
                gone = isinstance(error, FileNotFoundError)
                why = "no such file (moved to the quarantine, renamed or deleted?)" if gone else error.strerror
                keys.append(None)
                errors.append(ImageReadError(path, why or str(error)))
        first: dict[str, tuple[str, bool]] = {}  # each key's first (path, flip)
        for key, image in zip(keys, images):
            if key is not None:
                first.setdefault(key, image)
        found = {key: self.latent_cache.get(key) for key in first}  # None: not cached yet
        unreadable: dict[str, ImageReadError] = {}
        missing = [key for key in first if found[key] is None]
        if missing:
            pixels, failed = self._decode(batch, [first[key] for key in missing])
            good = [(key, p) for key, p in zip(missing, pixels) if p is not None]
            if good:
                with self._on_device("vae"):
                    encoded = self._encode_batch(to_unit_range(upload_stack([p for _, p in good], self.device)), len(batch.items))
                for (key, _), latents in zip(good, encoded):
                    self.latent_cache.put(key, latents)
                    found[key] = latents.to(self.device)
            unreadable = {key: error for key, error in zip(missing, failed) if error is not None}
        inputs = [None if key is None else found[key] for key in keys]  # an unreadable image's stays None
        return inputs, [unreadable.get(key, error) for key, error in zip(keys, errors)]

    def use_inputs(self, batch: LocalBatch, inputs: list[torch.Tensor]) -> None:
        """Inputs `read_inputs` returned for `batch` (possibly with substitutes): the next
        `encode` of that batch uses them instead of reading the images again."""
        self._ready = (batch, inputs)

    def _decode(self, batch: LocalBatch, images: list[tuple[str, bool]]) -> tuple[list, list]:
        """uint8 pixels of `images` ((path, flip) each) in `batch`'s bucket, and the errors of
        those that cannot be read: decoded ahead by the prefetcher where it planned them, else
        here."""
        taken = self._prefetch.take(batch.index) if self._prefetch is not None else None
        ahead = {} if taken is None else dict(zip(taken[0].images, taken[1]))
        pixels, errors = [], []
        for path, flip in images:
            pixel, reason = ahead[path, flip] if (path, flip) in ahead else decode(path, batch.bucket, flip)
            pixels.append(pixel)
            errors.append(None if reason is None else ImageReadError(path, reason))
        return pixels, errors

    def _encode_batch(self, pixels: torch.Tensor, size: int) -> torch.Tensor:
        """Latents of `pixels`, encoded as one batch padded to `size` images: the VAE then
        always runs at the training batch's shape, so an image's latents are the same
        whichever batch it was first seen in (a resumed run re-encodes in other company),
        and the same as an uncached run's."""
        n = len(pixels)
        if n < size:
            pixels = torch.cat([pixels, pixels[:1].expand(size - n, *pixels.shape[1:])])
        return encode_images(self.models, pixels)[:n]

    def time_ids(self, scan: ScanResult, batch: LocalBatch) -> torch.Tensor:
        """SDXL's micro-conditioning (B, 6) on the device; each image's row is uploaded once."""
        rows = []
        for i in batch.items:
            row = time_id_row(scan.items[i], batch.bucket)
            key = ("time_ids", row)  # images of one size in one bucket share their row
            if key not in self._constants:
                self._constants[key] = host_tensor(row, self.device)
            rows.append(self._constants[key])
        return torch.stack(rows)

    def loss_scale(self, scan: ScanResult, batch: LocalBatch) -> torch.Tensor | None:
        """(B,) loss multipliers on the device: each sample's `loss_scale` (its folder's
        `loss_scale.txt`, or its own .yaml sidecar's); None when all are 1 (then nothing needs
        multiplying)."""
        scales = sample_loss_scales(scan, batch)
        if all(scale == 1.0 for scale in scales):
            return None
        for scale in scales:
            if ("loss_scale", scale) not in self._constants:
                self._constants["loss_scale", scale] = host_tensor(scale, self.device)
        return torch.stack([self._constants["loss_scale", scale] for scale in scales])

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
                    encoded = encode_prompts(self.models, missing, clip_skip)
                self._keep_text(missing, encoded)
            return Conditioning.stack([self._fetch(self.text_cache[c]) for c in captions])

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
                self._keep_text(part, encode_prompts(self.models, part, self.config.clip_skip))

    def _keep_text(self, captions: list[str], encoded: Conditioning) -> None:
        for k, caption in enumerate(captions):
            self.text_cache[caption] = Conditioning(*(None if t is None else self.text_store.keep(t[k]) for t in _fields(encoded)))

    def _fetch(self, cond: Conditioning) -> Conditioning:
        return Conditioning(*(None if t is None else self.text_store.fetch(t) for t in _fields(cond)))

    def _on_device(self, *names: str):
        """The named encoders on the training device for a cache miss, if they are offloaded."""
        return on_device(self.models, [name for name in names if name in self.offloaded], self.device)


def _fields(cond: Conditioning) -> tuple:
    return cond.hidden, cond.pooled, cond.time_ids
