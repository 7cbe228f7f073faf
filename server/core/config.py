"""Service settings: environment variables with the prefix ``PEMT_`` (pydantic-settings).

Bad values stop start-up with one message naming the variable and what is allowed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["Settings", "SettingsError", "load_settings"]


class SettingsError(ValueError):
    """The environment holds a value the service cannot start with."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PEMT_", extra="ignore", frozen=True)

    backend: Literal["onnx", "triton"] = "onnx"
    triton_url: str = "127.0.0.1:8001"
    triton_timeout_s: float = Field(30.0, gt=0)
    triton_retries: int = Field(3, ge=0, le=20)
    # a model repository (model_repository/), one model's folder in it, or a model.onnx file
    model_path: Path = Path("model_repository")
    model_name: str = Field("pemt", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # variant (name or JSON path) used only when the model repository does not describe itself
    config_name: str | None = None
    max_batch: int = Field(8, ge=1, le=1024)
    data_dir: Path = Path("data")
    # keep each stored upload's source file (data_dir/media/) and serve it at
    # GET /clips/{id}/media (HTTP ranges) for the search page's preview; false: keep nothing
    # new, the route answers 404, and files kept earlier stay on disk until their clip is deleted
    keep_media: bool = True
    index_type: Literal["flat", "ivf", "hnsw"] = "flat"
    # faiss: FAISS + SQLite in data_dir/index (one process per data_dir); milvus: a Milvus
    # collection that any number of API replicas share (server/index/milvus.py)
    index_backend: Literal["faiss", "milvus"] = "faiss"
    milvus_uri: str = "http://127.0.0.1:19530"
    milvus_token: str = ""
    milvus_db: str = ""
    milvus_collection: str = Field("pemt", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
    # the vector index of each modality (IP metric): HNSW, IVF_FLAT, FLAT, AUTOINDEX, GPU_CAGRA...
    milvus_index_type: str = Field("HNSW", pattern=r"^[A-Z_0-9]{1,32}$")
    milvus_index_params: dict[str, Any] = {"M": 16, "efConstruction": 200}
    milvus_search_params: dict[str, Any] = {"ef": 64}
    milvus_timeout_s: float = Field(30.0, gt=0)
    # kept source videos (and, with Milvus, thumbnails): default data_dir/media; with several
    # replicas, a directory every replica mounts
    media_dir: Path | None = None
    max_upload_bytes: int = Field(512 * 1024 * 1024, gt=0)
    # a request body (upload or JSON) is read before it takes a job slot; it fails with 408
    # when no byte arrives for upload_idle_timeout_s, or when, after that long, it arrives
    # slower on average than upload_min_rate bytes/s (0: no minimum rate)
    upload_idle_timeout_s: float = Field(30.0, gt=0, le=3600)
    upload_min_rate: int = Field(16 * 1024, ge=0)
    # the data directory is "full" below this many free bytes: /readyz answers 503 and an
    # upload that would leave less is refused with 507 before it is read
    min_free_bytes: int = Field(64 * 1024 * 1024, ge=0)
    max_duration_s: float = Field(3600.0, gt=0)
    max_pixels: int = Field(3840 * 2160, gt=0)
    decode_timeout_s: float = Field(120.0, gt=0)
    # the work one upload may cause: windows embedded per request (a one-hour clip at the
    # default stride of half a 30-s window gives 240); more is refused with 413
    max_windows_per_request: int = Field(256, ge=1, le=100_000)
    # the smallest stride a client may ask for, seconds (rounded up to whole segments);
    # unset: a quarter of the request's window. A smaller stride is refused with 400
    min_stride_s: float | None = Field(None, gt=0)
    # the longest one video frame may stand for missing ones (a timestamp jump between frames,
    # or a last frame's duration); a longer jump is damage (422 corrupt), a longer last frame
    # is cut there (the rest of the window's video is masked)
    max_gap_s: float = Field(5.0, gt=0, le=3600)
    require_audio: bool = False
    require_video: bool = False
    # uploads to the synchronous routes (/embed, /search, /classify) longer than this are 413
    # (too_long), pointing to POST /jobs; a job takes up to max_duration_s
    embed_max_duration_s: float = Field(600.0, gt=0)
    # background jobs (POST /jobs; server.core.jobs): folders whose files a job may read by
    # path (os.pathsep-separated, like PATH; empty: jobs take uploads only), how many jobs run
    # at once (each holds one of max_concurrent_jobs slots while it decodes), how many may be
    # unfinished (queued or running; more is 429), the decode time and windows one job may
    # use, and how many finished jobs GET /jobs remembers
    job_roots: Annotated[tuple[Path, ...], NoDecode] = ()
    job_workers: int = Field(1, ge=1, le=64)
    job_queue: int = Field(16, ge=1, le=10_000)
    job_decode_timeout_s: float = Field(7200.0, gt=0)
    job_max_windows: int = Field(20_000, ge=1, le=1_000_000)
    jobs_kept: int = Field(1000, ge=1)
    api_keys: Annotated[tuple[str, ...], NoDecode] = ()
    max_concurrent_jobs: int = Field(2, ge=1, le=256)
    # how long a job may wait for a free slot before the answer is 429 with Retry-After
    queue_wait_s: float = Field(0.0, ge=0)
    retry_after_s: int = Field(2, ge=1)
    decode_workers: int = Field(2, ge=1, le=64)
    # video decoder of the decode children (PEMT_DECODER): auto = NVDEC where a GPU and
    # PyNvVideoCodec allow, else PyAV; nvdec refuses to start without them; cpu = PyAV
    decoder: Literal["auto", "cpu", "nvdec"] = "auto"
    default_k: int = Field(10, ge=1, le=1000)
    max_k: int = Field(1000, ge=1)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, v: Any) -> Any:
        if isinstance(v, str):
            return tuple(k.strip() for k in v.split(",") if k.strip())
        return v

    @field_validator("job_roots", mode="before")
    @classmethod
    def _split_roots(cls, v: Any) -> Any:
        if isinstance(v, str):
            return tuple(Path(p) for p in v.split(os.pathsep) if p.strip())
        return v

    @field_validator("job_roots")
    @classmethod
    def _absolute_roots(cls, v: tuple[Path, ...]) -> tuple[Path, ...]:
        for root in v:
            if not root.is_absolute() or not root.is_dir():
                raise ValueError(f"{str(root)!r} is not an absolute path to an existing folder")
        return v

    @field_validator("triton_url")
    @classmethod
    def _host_port(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(
                f"expected host:port for Triton's gRPC endpoint, e.g. 127.0.0.1:8001, got {v!r}"
            )
        return v

    @property
    def media_path(self) -> Path:
        return self.media_dir if self.media_dir is not None else self.data_dir / "media"

    def public(self) -> dict[str, Any]:
        """Settings safe to show in /info (no API keys, no Milvus token)."""
        d = self.model_dump(mode="json", exclude={"api_keys", "milvus_token"})
        d["api_keys"] = len(self.api_keys)
        d["milvus_token"] = bool(self.milvus_token)
        return d


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment (plus ``overrides``); a bad value raises SettingsError."""
    try:
        return Settings(**overrides)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            name = "PEMT_" + "_".join(str(p) for p in err["loc"]).upper()
            lines.append(f"{name}={err.get('input')!r}: {err['msg']}")
        raise SettingsError("invalid settings: " + "; ".join(lines)) from None
