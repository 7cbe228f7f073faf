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
    "LAYOUTS",
    "MEL_NORMS",
    "MEL_SCALES",
    "SHARING_MODES",
    "MediaConfig",
    "ModelConfig",
    "available_configs",
    "get_config",
    "load_config",
]

SHARING_MODES = ("none", "layers", "layers+partial", "full")
LAYOUTS = ("contiguous", "spread")
MEL_SCALES = ("htk", "slaney")
MEL_NORMS = ("none", "slaney")


@dataclass(frozen=True)
class MediaConfig:
    """How a video becomes model input. Shared by training and serving (pemt.media).

    A segment is ``frames_per_segment`` frames sampled at ``fps`` (``segment_seconds`` =
    frames / fps) plus the audio of the same span as one ``n_mels x audio_frames`` log-mel.
    A window is ``num_segments`` segments. ``layout`` says where the segments of a window lie:

    - ``contiguous``: back to back from the window start (a 30-s window = 15 segments of 2 s),
      long videos cut into overlapping windows. The product's default, and how the paper
      pretrains (30-s clips of 480 frames).
    - ``spread``: AVBERT's test-time rule: one window per video whose segments are spread
      evenly over the whole video (``pemt.media.spread_plan``).

    The log-mel follows torchaudio's ``MelSpectrogram`` defaults as AVBERT calls them: n_fft from
    the waveform length (``2 * (samples // audio_frames + 1)``), hop n_fft // 2, periodic Hann,
    centre reflect padding, power 2, ``mel_scale`` filters with ``mel_norm``, ``log(1e-6 + mel)``,
    cut or zero-padded to ``audio_frames`` frames.
    """

    fps: int = 16  # frames per second fed to the visual CNN
    frames_per_segment: int = 32  # frames per segment (even: the CNN pools F // 2 steps)
    num_segments: int = 15  # segments per window (15 x 2 s = a 30-s window)
    layout: str = "contiguous"  # one of LAYOUTS
    image_size: int = 128  # short side resized to this, then a centre crop of this side
    sample_rate: int = 44100  # mono audio
    n_mels: int = 80
    audio_frames: int = 128  # log-mel time frames per segment (AVBERT's AUDIO_TIME)
    mel_scale: str = "htk"  # one of MEL_SCALES (torchaudio's default: htk)
    mel_norm: str = "none"  # one of MEL_NORMS (torchaudio's default: none)
    mean: float = 0.45  # pixel normalization, applied inside the model graph
    std: float = 0.225

    def __post_init__(self) -> None:
        if min(self.fps, self.num_segments, self.image_size, self.n_mels) <= 0:
            raise ValueError(
                f"fps, num_segments, image_size and n_mels must be positive, got {self}"
            )
        if self.frames_per_segment < 2 or self.frames_per_segment % 2:
            raise ValueError(
                f"frames_per_segment={self.frames_per_segment} must be even and at least 2 "
                "(the visual CNN halves the frames and pools frames_per_segment // 2 steps)"
            )
        for name, value, valid in (
            ("layout", self.layout, LAYOUTS),
            ("mel_scale", self.mel_scale, MEL_SCALES),
            ("mel_norm", self.mel_norm, MEL_NORMS),
        ):
            if value not in valid:
                raise ValueError(f"{name}={value!r} is not one of {list(valid)}")
        if self.audio_frames < 2 or self.audio_samples_per_segment < 4 * self.audio_frames:
            raise ValueError(
                f"audio_frames={self.audio_frames} needs at least 2 and at most a quarter of the "
                f"{self.audio_samples_per_segment} samples of a segment; raise sample_rate or "
                "lower audio_frames"
            )
        if self.sample_rate // 2 <= 0:
            raise ValueError(f"sample_rate={self.sample_rate} is too low")

    @property
    def segment_seconds(self) -> float:
        return self.frames_per_segment / self.fps

    @property
    def window_seconds(self) -> float:
        return self.num_segments * self.segment_seconds

    @property
    def audio_samples_per_segment(self) -> int:
        """Samples of one segment: ``int(sample_rate * frames / fps)`` (AVBERT's waveform_size)."""
        return int(self.sample_rate * self.frames_per_segment / self.fps)

    @property
    def n_fft(self) -> int:
        """FFT size of a whole segment (a shorter waveform gets its own, see ``n_fft_for``)."""
        return self.n_fft_for(self.audio_samples_per_segment)

    @property
    def hop_length(self) -> int:
        return self.n_fft // 2

    def n_fft_for(self, samples: int) -> int:
        """AVBERT's rule: ``2 * (samples // audio_frames + 1)``, so that ``1 + samples // hop``
        (the centred STFT's frame count) is ``audio_frames`` for a whole segment."""
        return 2 * (samples // self.audio_frames + 1)

    @property
    def audio_frames_per_segment(self) -> int:
        return self.audio_frames


@dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of the whole model. Frozen: a checkpoint stores exactly this.

    The architecture is AVBERT's (``docs/ARCHITECTURE.md``); these fields size it.
    """

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
    # rows of each position table (AVBERT's MAX_POSITION_EMBEDDINGS: 22); position 0 is the start
    # token, so a window holds at most positions - 1 segments
    positions: int = 22

    def __post_init__(self) -> None:
        if self.sharing not in SHARING_MODES:
            raise ValueError(f"sharing={self.sharing!r} is not one of {list(SHARING_MODES)}")
        if self.hidden % self.heads:
            raise ValueError(f"hidden={self.hidden} must be divisible by heads={self.heads}")
        if self.sharing == "full" and not 0 < self.rank <= self.hidden:
            raise ValueError(f"rank={self.rank} must be in 1..hidden={self.hidden}")
        if len(self.visual_blocks) != 4 or len(self.audio_blocks) != 4:
            raise ValueError("visual_blocks and audio_blocks need four stages, e.g. [3, 4, 6, 3]")
        if self.positions < 1 + self.media.num_segments:
            raise ValueError(
                f"positions={self.positions} rows cannot hold a start token and "
                f"num_segments={self.media.num_segments} segments; set positions >= "
                f"{1 + self.media.num_segments} or use fewer segments"
            )

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
        if {"segment_seconds", "n_fft", "hop_length"} & set(media):
            raise ValueError(
                "this config was written by PEMT 0.1 (fixed n_fft/hop, one-second segments), "
                "whose model is not AVBERT's computation; retrain the checkpoint (pemt train) or "
                "import AVBERT's (pemt import avbert), then re-export it with export/build_engine.py"
            )
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
