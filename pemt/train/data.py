"""Streaming training loader over WebDataset shards, deterministic and resumable mid-epoch.

The stream is infinite (epoch after epoch); the trainer stops after a number of steps, so every
DDP rank runs the same number of steps whatever the shard sizes. For epoch ``e``:

1. the shard list is shuffled with ``(seed, e)``;
2. it is split over ``slots = world_size * num_workers`` (rank-major): by shard when there are
   at least as many shards as slots, otherwise by sample (sample ``i`` goes to slot
   ``i % slots``), so a small dataset still feeds every worker of every rank;
3. each slot passes its samples through a shuffle buffer seeded with ``(seed, e, slot)``;
4. each sample is decoded in the worker by :mod:`pemt.media` (the preprocessing serving uses)
   and one window is kept: a random one (``(seed, e, slot, position)``) for training, the first
   for evaluation. A sample that fails to decode is skipped and counted, never a crash.
   With ``decode_cache_bytes`` each worker keeps decoded windows (keyed by shard, sample and
   window) up to its share of that many bytes and reuses them in later epochs: a small dataset
   trained for many epochs is decoded once. The batches are the same with or without it;
5. ``batch_size`` decoded windows make a batch (:func:`pemt.media.batch_windows` arrays as
   tensors, plus ``label``, ``key`` lists);
6. with ``views=True`` (``pemt train --recipe robust``) the worker also edits every window twice
   (:func:`pemt.edits.views`, seeded with ``(seed, e, slot, position)``; ``view_scales``
   scales each view's edit probabilities): the batch's arrays are the first view and
   ``frames_b``, ``audio_b``, ``visual_mask_b``, ``audio_mask_b`` the second, for the
   augmentation-consistency objective.

Resuming: :meth:`ShardLoader.state_dict` holds, per worker slot, the epoch and the number of
samples that left its shuffle buffer and went into emitted batches, plus the batch count. A new
loader built with that state replays each slot's stream without decoding up to its position
and rotates the worker order (DataLoader serves workers round-robin), so the next batch is
exactly the batch an uninterrupted run would have produced next.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pemt.config import MediaConfig
from pemt.train.shards import expand_urls, iter_samples

__all__ = ["LoaderState", "ShardLoader", "ShardStream", "decode_sample", "iter_eval_batches"]

_MEDIA_KEYS = (
    "mp4",
    "m4v",
    "mov",
    "mkv",
    "webm",
    "avi",
    "mpg",
    "mpeg",
    "ts",
    "flv",
    "wmv",
    "3gp",
    "ogv",
)
LoaderState = dict[str, Any]


def _media_bytes(sample: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    meta = json.loads(sample["json"]) if sample.get("json") else {}
    ext = meta.get("ext")
    if ext and ext in sample:
        return sample[ext], meta
    for k in _MEDIA_KEYS:
        if k in sample:
            return sample[k], meta
    raise ValueError(f"sample {sample.get('__key__')} holds no media member")


def decode_sample(
    sample: dict[str, Any],
    media_cfg: MediaConfig,
    rng: np.random.Generator | None,
    decoder: str | None = None,
    *,
    index: int | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Decode one shard sample into one :class:`pemt.media.Window` and its metadata.

    ``rng`` picks a random window start (one-segment stride) for training; None takes the first
    window (evaluation); ``index`` overrides both with a window the caller chose.
    ``decoder``: ``auto`` | ``cpu`` | ``nvdec`` (None: ``$PEMT_DECODER``;
    NVDEC frames come back as numpy). Raises MediaError (a ValueError) when the media is bad.
    """
    from pemt.media import iter_windows

    data, meta = _media_bytes(sample)
    stride = None if media_cfg.layout == "spread" else media_cfg.segment_seconds
    if index is None:
        index = _window_index(sample, media_cfg, rng, meta)
    chosen = None
    for w in iter_windows(bytes(data), media_cfg, stride_s=stride, decoder=decoder):
        chosen = w
        if w.index >= index:
            break
    if chosen is None:
        raise ValueError(f"sample {sample.get('__key__')}: no window decoded")
    return chosen, meta


def _window_index(
    sample: dict[str, Any],
    media_cfg: MediaConfig,
    rng: np.random.Generator | None,
    meta: dict[str, Any] | None = None,
) -> int:
    """Which window of the sample to keep: a random one (one-segment stride) for training, the
    first for evaluation and for the spread layout (one window per video)."""
    if rng is None or media_cfg.layout == "spread":
        return 0
    if meta is None:
        meta = json.loads(sample["json"]) if sample.get("json") else {}
    duration = float(meta.get("duration") or 0.0)
    n = max(1, math.floor((duration - media_cfg.window_seconds) / media_cfg.segment_seconds) + 1)
    return int(rng.integers(n))


VIEW_KEYS = ("frames", "audio", "visual_mask", "audio_mask")


def _collate(
    windows: list[Any],
    metas: list[dict[str, Any]],
    keys: list[str],
    media_cfg: MediaConfig,
    views_rng: np.random.Generator | None = None,
    view_scales: tuple[float, float] = (1.0, 1.0),
) -> dict[str, Any]:
    from pemt.media import batch_windows

    arrays = batch_windows(windows, media_cfg)
    if views_rng is not None:  # two edited views of every window (pemt.edits)
        from pemt.edits import views

        rows = list(zip(*(arrays[k] for k in VIEW_KEYS), strict=True))
        pairs = views(rows, views_rng, media_cfg, view_scales)
        for j, suffix in enumerate(("", "_b")):
            arrays[f"frames{suffix}"] = np.stack([p[j].frames for p in pairs])
            arrays[f"audio{suffix}"] = np.stack([p[j].audio for p in pairs])
            arrays[f"visual_mask{suffix}"] = np.stack([p[j].visual_mask for p in pairs])
            arrays[f"audio_mask{suffix}"] = np.stack([p[j].audio_mask for p in pairs])
    batch: dict[str, Any] = {
        k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()
    }
    batch["label"] = [m.get("label") for m in metas]
    batch["key"] = keys
    return batch


def _seed(*parts: int) -> np.random.Generator:
    return np.random.default_rng([int(p) & 0xFFFFFFFF for p in parts])


class ShardStream(IterableDataset):
    """The per-worker stream of batches (see the module docstring). Use :class:`ShardLoader`."""

    def __init__(
        self,
        urls: list[str],
        media_cfg: MediaConfig,
        *,
        batch_size: int,
        seed: int,
        shuffle_buffer: int,
        rank: int,
        world_size: int,
        num_workers: int,
        train: bool,
        state: LoaderState | None,
        decoder: str | None = None,
        views: bool = False,
        view_scales: tuple[float, float] = (1.0, 1.0),
        decode_cache_bytes: int = 0,
    ) -> None:
        self.urls = urls
        self.views, self.view_scales = views, view_scales
        self.cache_budget = max(0, decode_cache_bytes) // max(1, num_workers)
        self._cache: dict[tuple[str, str, int], tuple[Any, dict[str, Any]]] = {}
        self._cache_used = 0
        self.media_cfg = media_cfg
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle_buffer = max(1, shuffle_buffer)
        self.rank, self.world_size = rank, world_size
        self.num_workers = max(1, num_workers)
        self.train = train
        self.decoder = decoder
        self.state = state

    # samples of one slot in one epoch, in shuffle-buffer output order, not decoded
    def _epoch_samples(self, epoch: int, slot: int, errors: list[str]) -> Iterator[dict[str, Any]]:
        slots = self.world_size * self.num_workers
        order = list(self.urls)
        if self.train:
            _seed(self.seed, epoch).shuffle(order)  # type: ignore[arg-type]
        by_shard = len(order) >= slots
        mine = order[slot::slots] if by_shard else order
        rng = _seed(self.seed, epoch, slot, 1)
        buffer: list[dict[str, Any]] = []
        i = -1
        for url in mine:
            for sample in iter_samples(url, errors):
                i += 1
                if not by_shard and i % slots != slot:
                    continue
                if not self.train:
                    yield sample
                    continue
                if len(buffer) < self.shuffle_buffer:
                    buffer.append(sample)
                    continue
                j = int(rng.integers(len(buffer)))
                buffer[j], sample = sample, buffer[j]
                yield sample
        rng.shuffle(buffer)  # type: ignore[arg-type]
        yield from buffer

    def _decode(
        self, sample: dict[str, Any], rng: np.random.Generator | None
    ) -> tuple[Any, dict[str, Any]]:
        """:func:`decode_sample`, through this worker's cache of decoded windows when it has a
        budget. The window index is drawn here from ``rng`` as decode_sample draws it, so a
        cached window is the one decoding would give."""
        if not self.cache_budget:
            return decode_sample(sample, self.media_cfg, rng, self.decoder)
        index = _window_index(sample, self.media_cfg, rng)
        key = (str(sample.get("__url__")), str(sample.get("__key__")), index)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        window, meta = decode_sample(sample, self.media_cfg, None, self.decoder, index=index)
        if not isinstance(window.frames, np.ndarray):
            return window, meta  # frames on a GPU (NVDEC) are not kept
        size = window.frames.nbytes + window.audio.nbytes + window.thumbnail.nbytes
        if self._cache_used + size <= self.cache_budget:  # fill, never evict: no churn when full
            self._cache[key] = (window, meta)
            self._cache_used += size
        return window, meta

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        physical = info.id if info is not None else 0
        rotation = int(self.state["batches"]) if self.state else 0
        logical = (physical + rotation) % self.num_workers
        slot = self.rank * self.num_workers + logical
        ws = dict(self.state["workers"][logical]) if self.state else {}
        epoch, start, bad = int(ws.get("epoch", 0)), int(ws.get("pos", 0)), int(ws.get("bad", 0))
        errors: list[str] = []
        windows: list[Any] = []
        metas: list[dict[str, Any]] = []
        keys: list[str] = []
        while True:
            pos = 0
            good_in_epoch = 0
            for sample in self._epoch_samples(epoch, slot, errors):
                pos += 1
                if pos <= start:
                    continue  # replay after a resume: already consumed
                rng = _seed(self.seed, epoch, slot, pos) if self.train else None
                try:
                    window, meta = self._decode(sample, rng)
                except Exception as e:  # MediaError or anything a broken file triggers
                    bad += 1
                    if bad <= 10:
                        print(f"pemt loader: skipped {sample.get('__key__')} "
                              f"({sample.get('__url__')}): {e}", file=sys.stderr)  # fmt: skip
                    continue
                good_in_epoch += 1
                windows.append(window)
                metas.append(meta)
                keys.append(f"{sample['__url__']}#{sample['__key__']}")
                if len(windows) == self.batch_size:
                    vrng = _seed(self.seed, epoch, slot, pos, 2) if self.views else None
                    batch = _collate(windows, metas, keys, self.media_cfg, vrng, self.view_scales)
                    batch["__worker__"] = logical
                    batch["__epoch__"], batch["__pos__"], batch["__bad__"] = epoch, pos, bad
                    batch["__errors__"] = len(errors)
                    windows, metas, keys = [], [], []
                    yield batch
            if good_in_epoch == 0 and start == 0:
                raise ValueError(
                    f"loader slot {slot} (rank {self.rank}, worker {logical}) got no decodable "
                    f"sample in a whole epoch ({bad} bad, shard errors: {errors[:3]}); "
                    "use fewer workers/ranks or check the shards with `pemt shards inspect`"
                )
            if not self.train:
                if windows:
                    batch = _collate(windows, metas, keys, self.media_cfg)
                    batch["__worker__"] = logical
                    batch["__epoch__"], batch["__pos__"], batch["__bad__"] = epoch, pos, bad
                    batch["__errors__"] = len(errors)
                    yield batch
                return
            epoch, start = epoch + 1, 0


class ShardLoader:
    """Batches from shards for one rank, with ``num_workers`` decoding processes.

    ``views=True`` adds two edited views of every window (module docstring, step 6).
    ``decode_cache_bytes``: decoded windows kept for later epochs, split over the workers
    (module docstring, step 4).

    ``iter(loader)`` streams forever (training) or one pass (``train=False``: shards in order,
    no shuffle, first window of each clip). ``state_dict()`` after any number of batches and a
    new ``ShardLoader(..., state=that)`` continues with exactly the next batch.
    """

    def __init__(
        self,
        shards: str | list[str],
        media_cfg: MediaConfig,
        *,
        batch_size: int,
        seed: int = 0,
        num_workers: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle_buffer: int = 256,
        train: bool = True,
        state: LoaderState | None = None,
        decoder: str | None = None,
        views: bool = False,
        view_scales: tuple[float, float] = (1.0, 1.0),
        decode_cache_bytes: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.urls = expand_urls(shards)
        self.media_cfg = media_cfg
        self.batch_size, self.seed = batch_size, seed
        self.num_workers, self.rank, self.world_size = num_workers, rank, world_size
        self.shuffle_buffer, self.train = shuffle_buffer, train
        from pemt.media import resolve_decoder

        self.decoder = resolve_decoder(decoder)  # checked here, not in every worker
        self.views, self.view_scales = views, (float(view_scales[0]), float(view_scales[1]))
        self.decode_cache_bytes = decode_cache_bytes
        slots = max(1, num_workers)
        if state is not None:
            if len(state["workers"]) != slots or state.get("world_size", 1) != world_size:
                raise ValueError(
                    f"loader state is for {len(state['workers'])} workers x world size "
                    f"{state.get('world_size')}; resume with the same --workers and world size"
                )
            self._state: LoaderState = {
                "batches": int(state["batches"]),
                "world_size": world_size,
                "seed": seed,
                "workers": [dict(w) for w in state["workers"]],
            }
        else:
            self._state = {
                "batches": 0,
                "world_size": world_size,
                "seed": seed,
                "workers": [{"epoch": 0, "pos": 0, "bad": 0, "errors": 0} for _ in range(slots)],
            }

    def state_dict(self) -> LoaderState:
        return {
            "batches": self._state["batches"],
            "world_size": self.world_size,
            "seed": self.seed,
            "workers": [dict(w) for w in self._state["workers"]],
        }

    @property
    def bad_samples(self) -> int:
        return sum(int(w["bad"]) for w in self._state["workers"])

    @property
    def shard_errors(self) -> int:
        return sum(int(w.get("errors", 0)) for w in self._state["workers"])

    @property
    def epoch(self) -> float:
        return min(int(w["epoch"]) for w in self._state["workers"])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        dataset = ShardStream(
            self.urls, self.media_cfg, batch_size=self.batch_size, seed=self.seed,
            shuffle_buffer=self.shuffle_buffer, rank=self.rank, world_size=self.world_size,
            num_workers=self.num_workers, train=self.train, decoder=self.decoder,
            state=self.state_dict() if self._state["batches"] else None, views=self.views,
            view_scales=self.view_scales, decode_cache_bytes=self.decode_cache_bytes,
        )  # fmt: skip
        loader = DataLoader(
            dataset,
            batch_size=None,
            num_workers=self.num_workers,
            # CUDA (NVDEC) cannot run in forked workers
            multiprocessing_context="spawn"
            if self.num_workers and self.decoder == "nvdec"
            else None,
            persistent_workers=False,
            prefetch_factor=2 if self.num_workers else None,
        )
        for batch in loader:
            w = int(batch.pop("__worker__"))
            self._state["workers"][w] = {
                "epoch": int(batch.pop("__epoch__")),
                "pos": int(batch.pop("__pos__")),
                "bad": int(batch.pop("__bad__")),
                "errors": int(batch.pop("__errors__")),
            }
            self._state["batches"] += 1
            yield batch


def iter_eval_batches(
    shards: str | list[str], media_cfg: MediaConfig, batch_size: int
) -> Iterator[dict[str, Any]]:
    """One ordered pass, first window per clip, bad samples skipped (evaluation, embedding)."""
    yield from ShardLoader(shards, media_cfg, batch_size=batch_size, train=False)
