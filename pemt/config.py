"""Model and preprocessing configuration. Torch-free: the server reads it too.

Named variants are data: ``pemt/configs/<name>.json``. Adding a variant touches no code.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "SHARING_MODES",
    "MediaConfig",
    "ModelConfig",
    "available_configs",
    "get_config",
    "load_config",
]

SHARING_MODES = ("none", "layers", "layers+partial", "full")


@dataclass(frozen=True)
class MediaConfig:
    """How a video becomes model input. Shared by training and serving (pemt.media)."""

    fps: int = 16  # frames per second fed to the visual CNN
    segment_seconds: float = 1.0  # one token per segment
    num_segments: int = 30  # segments per window (30 -> a 30-s clip)
    image_size: int = 112  # short side resized to this, then centre crop
    sample_rate: int = 44100  # mono audio
    n_fft: int = 1472
    hop_length: int = 736
    n_mels: int = 80
    mean: float = 0.45  # pixel normalization, applied inside the model graph
    std: float = 0.225

    def __post_init__(self) -> None:
        if self.fps <= 0 or self.num_segments <= 0 or self.image_size <= 0:
            raise ValueError(f"fps, num_segments and image_size must be positive, got {self}")
        if self.n_fft > self.audio_samples_per_segment:
            raise ValueError(
                f"n_fft={self.n_fft} exceeds one segment of audio "
                f"({self.audio_samples_per_segment} samples); lower n_fft or raise sample_rate"
            )
        if self.frames_per_segment != self.fps * self.segment_seconds:
            raise ValueError("fps * segment_seconds must be a whole number of frames")

    @property
    def frames_per_segment(self) -> int:
        return round(self.fps * self.segment_seconds)

    @property
    def audio_samples_per_segment(self) -> int:
        return round(self.sample_rate * self.segment_seconds)

    @property
    def audio_frames_per_segment(self) -> int:
        """STFT frames per segment (no centre padding): 1 + (samples - n_fft) // hop."""
        return 1 + (self.audio_samples_per_segment - self.n_fft) // self.hop_length

    @property
    def window_seconds(self) -> float:
        return self.num_segments * self.segment_seconds


@dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of the whole model. Frozen: a checkpoint stores exactly this."""

    name: str = "custom"
    media: MediaConfig = field(default_factory=MediaConfig)
    # visual CNN: 3D ResNet-50 (bottleneck), pooled output = visual_width * 32
    visual_width: int = 64
    visual_blocks: tuple[int, ...] = (3, 4, 6, 3)
    # audio CNN: 2D ResNet-50 (bottleneck) on log-mel, pooled output = audio_width * 32
    audio_width: int = 32
    audio_blocks: tuple[int, ...] = (3, 4, 6, 3)
    # transformers (visual, audio, multimodal)
    hidden: int = 768
    heads: int = 12
    layers: int = 6
    ffn: int = 3072
    dropout: float = 0.1
    sharing: str = "full"  # one of SHARING_MODES
    rank: int = 128  # private low rank, used by sharing="full"

    def __post_init__(self) -> None:
        if self.sharing not in SHARING_MODES:
            raise ValueError(f"sharing={self.sharing!r} is not one of {list(SHARING_MODES)}")
        if self.hidden % self.heads:
            raise ValueError(f"hidden={self.hidden} must be divisible by heads={self.heads}")
        if self.sharing == "full" and not 0 < self.rank <= self.hidden:
            raise ValueError(f"rank={self.rank} must be in 1..hidden={self.hidden}")
        if len(self.visual_blocks) != 4 or len(self.audio_blocks) != 4:
            raise ValueError("visual_blocks and audio_blocks need four stages, e.g. [3, 4, 6, 3]")

    @property
    def visual_dim(self) -> int:
        return self.visual_width * 32

    @property
    def audio_dim(self) -> int:
        return self.audio_width * 32

    @property
    def embed_dim(self) -> int:
        return self.hidden

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with ``changes``; ``media`` may be a dict of MediaConfig fields to change."""
        media = changes.pop("media", None)
        if isinstance(media, dict):
            changes["media"] = replace(self.media, **media)
        elif media is not None:
            changes["media"] = media
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["visual_blocks"] = list(self.visual_blocks)
        d["audio_blocks"] = list(self.audio_blocks)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(
                f"unknown model config keys {sorted(unknown)}; valid keys: {sorted(known)}"
            )
        d = dict(d)
        media = d.pop("media", {}) or {}
        mknown = {f.name for f in fields(MediaConfig)}
        if set(media) - mknown:
            raise ValueError(
                f"unknown media config keys {sorted(set(media) - mknown)}; valid keys: {sorted(mknown)}"
            )
        for k in ("visual_blocks", "audio_blocks"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(media=MediaConfig(**media), **d)


def available_configs() -> list[str]:
    return sorted(
        p.name[: -len(".json")]
        for p in resources.files("pemt.configs").iterdir()
        if p.name.endswith(".json")
    )


def get_config(name: str, **overrides: Any) -> ModelConfig:
    """A registered variant (``paper``, ``small``, ``tiny``), optionally with fields changed."""
    path = resources.files("pemt.configs") / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"config {name!r} not found; available configs = {available_configs()}")
    cfg = ModelConfig.from_dict(json.loads(path.read_text()))
    return cfg.replace(**overrides) if overrides else cfg


def load_config(name_or_path: str | Path) -> ModelConfig:
    """A variant name or a path to a JSON file with ModelConfig fields."""
    p = Path(name_or_path)
    if p.suffix == ".json" and p.is_file():
        return ModelConfig.from_dict(json.loads(p.read_text()))
    return get_config(str(name_or_path))
