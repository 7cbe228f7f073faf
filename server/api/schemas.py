"""Request and response bodies. Every number and collection a request carries is bounded here;
JSON bodies and multipart forms validate through the same models (``server.api.forms``), so a
mistake gets the same answer in either form."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from server.core.ids import (
    CLIP_ID_REGEX,
    ID_REGEX,
    MAX_ID_LENGTH,
    validate_clip_id,
    validate_id,
)

Modality = Literal["fused", "audio", "visual"]
# /search only: "best" scores an item by its best stream (server.core.best)
SearchModality = Literal["fused", "audio", "visual", "best"]
SEARCH_MODALITY_HELP = (
    "fused, audio or visual: search with that vector; best: score each item by the highest "
    "similarity over the vectors it shares with the query (finds copies edited in one stream "
    "only; needs an upload or an id, not a vector)"
)

MAX_K = 1000  # also PEMT_MAX_K's ceiling
MAX_FILTER_KEYS = 32
MAX_KEY_CHARS = 128
MAX_VALUE_CHARS = 1024
MAX_VECTOR_DIM = 8192
MAX_SECONDS = 86_400.0  # window / stride: the service checks them against the model and limits
MAX_OFFSET = 1_000_000_000  # GET /clips paging


def _id_rule(pattern: str, description: str) -> dict[str, Any]:
    """An id field checked by ``server.core.ids`` (``fullmatch``), documented by ``pattern``."""
    return {"pattern": pattern, "maxLength": MAX_ID_LENGTH, "description": description}


ItemId = Annotated[
    str,
    AfterValidator(validate_id),
    Field(
        json_schema_extra=_id_rule(
            ID_REGEX, "an item id, or a clip id for the whole clip (windows: '{clip}#w{i}')"
        )
    ),
]
ClipIdField = Annotated[
    str,
    AfterValidator(validate_clip_id),
    Field(
        json_schema_extra=_id_rule(
            CLIP_ID_REGEX, "clip id: 1-128 of A-Z a-z 0-9 . _ : -, first a letter or digit"
        )
    ),
]
MetadataKey = Annotated[str, Field(min_length=1, max_length=MAX_KEY_CHARS)]
FilterValue = (
    Annotated[str, Field(max_length=MAX_VALUE_CHARS)]
    | Annotated[int, Field(ge=-(2**53 - 1), le=2**53 - 1)]  # exact in JSON and float64
    | Annotated[float, Field(allow_inf_nan=False)]
    | bool
    | None
)
Filter = Annotated[
    dict[MetadataKey, FilterValue],
    Field(
        max_length=MAX_FILTER_KEYS,
        description=f"metadata key -> value, all must match (at most {MAX_FILTER_KEYS} keys)",
    ),
]
Seconds = Annotated[float, Field(gt=0, le=MAX_SECONDS, allow_inf_nan=False)]


# --- requests ---------------------------------------------------------------------------------


class _Options(BaseModel):
    """What every query takes, as JSON or as form fields (each route adds its ``modality``:
    /search also takes ``best``, /classify does not)."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(10, ge=1, le=MAX_K, description="how many results (at most PEMT_MAX_K)")
    filter: Filter | None = None


class _Query(_Options):
    id: ItemId | None = Field(
        None, description="a stored item or clip id (every window of its clip is left out)"
    )
    vector: (
        Annotated[
            list[Annotated[float, Field(allow_inf_nan=False)]],
            Field(min_length=1, max_length=MAX_VECTOR_DIM),
        ]
        | None
    ) = Field(None, description="a query vector of the model's dimension (normalized here)")

    @model_validator(mode="after")
    def _one_query(self) -> _Query:
        if (self.id is None) == (self.vector is None):
            raise ValueError(
                "send exactly one of 'id' or 'vector' (or a multipart upload in 'file')"
            )
        return self


LabelKey = Annotated[
    str,
    Field(min_length=1, max_length=64, description="the metadata key that holds labels"),
]


class SearchRequest(_Query):
    modality: SearchModality = Field("fused", description=SEARCH_MODALITY_HELP)


class ClassifyRequest(_Query):
    modality: Modality = "fused"
    label_key: LabelKey = "label"


class _UploadOptions(_Options):
    """What every upload query takes besides ``file`` (``filter`` as JSON text)."""

    window: Seconds | None = Field(None, description="seconds of content per window")
    stride: Seconds | None = Field(None, description="seconds between window starts")


class SearchForm(_UploadOptions):
    """``/search`` multipart fields besides ``file``."""

    modality: SearchModality = Field("fused", description=SEARCH_MODALITY_HELP)


class ClassifyForm(_UploadOptions):
    """``/classify`` multipart fields besides ``file``."""

    modality: Modality = "fused"
    label_key: LabelKey = "label"


class EmbedForm(BaseModel):
    """``/embed`` multipart fields besides ``file`` (``metadata`` as JSON text)."""

    model_config = ConfigDict(extra="forbid")

    id: ClipIdField | None = Field(None, description="generated (32 hex) when omitted")
    metadata: dict[MetadataKey, Any] | None = Field(
        None,
        description="JSON object stored with every window (at most 64 KiB; not the keys the "
        "service sets: clip_id, window, has_audio, has_video)",
    )
    store: bool = Field(True, description="add the windows to the index")
    window: Seconds | None = Field(
        None, description="seconds of real content per window, whole segments, <= the model's"
    )
    stride: Seconds | None = Field(
        None, description="seconds between window starts, whole segments (default: half)"
    )


class JobForm(BaseModel):
    """``POST /jobs`` multipart fields besides ``file`` (``metadata`` as JSON text)."""

    model_config = ConfigDict(extra="forbid")

    id: ClipIdField | None = Field(None, description="clip id; generated (32 hex) when omitted")
    metadata: dict[MetadataKey, Any] | None = Field(
        None, description="JSON object stored with every window (as /embed)"
    )
    window: Seconds | None = Field(None, description="seconds of content per window (as /embed)")
    stride: Seconds | None = Field(None, description="seconds between window starts (as /embed)")


class JobRequest(JobForm):
    """``POST /jobs`` JSON body: a file on the server, under one of ``PEMT_JOB_ROOTS``."""

    path: str = Field(
        min_length=1,
        max_length=4096,
        description="absolute path of a file under one of the server's PEMT_JOB_ROOTS "
        "(symlinks are resolved first; anything outside is 403)",
    )


Vector = Annotated[
    list[Annotated[float, Field(allow_inf_nan=False)]],
    Field(min_length=1, max_length=MAX_VECTOR_DIM),
]
MAX_PUT_WINDOWS = 100_000  # also bounded by PEMT_JOB_MAX_WINDOWS and the body size


class PutWindow(BaseModel):
    """One window of ``PUT /clips/{id}``: what ``/embed`` would have computed for it."""

    model_config = ConfigDict(extra="forbid")

    window: int = Field(ge=0, lt=MAX_PUT_WINDOWS, description="0..n-1, each once")
    start: float = Field(ge=0, le=MAX_SECONDS * 10, allow_inf_nan=False)
    end: float = Field(ge=0, le=MAX_SECONDS * 10, allow_inf_nan=False)
    has_audio: bool
    has_video: bool
    vectors: dict[Modality, Vector] = Field(
        description="modality -> D floats (normalized here): 'fused' always, 'audio' exactly "
        "when has_audio, 'visual' exactly when has_video"
    )
    thumbnail: str | None = Field(
        None, max_length=1_400_000, description="the window's JPEG thumbnail, base64"
    )


class ModelRef(BaseModel):
    """The model that made the vectors (``GET /info``: ``model.identity``)."""

    model_config = ConfigDict(extra="forbid")

    embed_dim: int = Field(ge=1, le=MAX_VECTOR_DIM)
    config_sha256: str = Field(pattern="^[0-9a-f]{64}$")
    weights_sha256: str | None = Field(None, max_length=80)
    name: str | None = Field(None, max_length=64)
    version: str | None = Field(None, max_length=128)


class PutClipRequest(BaseModel):
    """``PUT /clips/{id}`` JSON: a whole clip's windows, embedded elsewhere (the bulk indexer),
    stored at once in place of any clip of that id."""

    model_config = ConfigDict(extra="forbid")

    windows: list[PutWindow] = Field(min_length=1, max_length=MAX_PUT_WINDOWS)
    metadata: dict[MetadataKey, Any] | None = Field(
        None, description="JSON object stored with every window (as /embed)"
    )
    model: ModelRef


# --- responses --------------------------------------------------------------------------------


class ClipStored(BaseModel):
    clip_id: str
    ids: list[str] = Field(description="the stored items' ids, by window")


class JobProgress(BaseModel):
    seconds_done: float = Field(description="the end of the last window embedded and committed")
    seconds_total: float | None = Field(description="the file's duration, once known")
    windows_done: int
    windows_total: int | None = Field(
        description="estimated from the duration while running; exact once every window is in"
    )
    fraction: float = Field(description="0..1")


class JobError(BaseModel):
    code: str
    message: str


class Job(BaseModel):
    id: str
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    clip_id: str = Field(description="the clip the job stores (searchable once state is done)")
    source: Literal["upload", "path"]
    name: str | None = Field(description="the upload's file name, or the path as given")
    progress: JobProgress
    error: JobError | None = None
    attempts: int = Field(description="how many times the job started (a restart resumes it)")
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None


class JobPage(BaseModel):
    items: list[Job]
    total: int
    offset: int
    limit: int


class EmbedItem(BaseModel):
    id: str
    clip_id: str
    window: int
    start: float
    end: float
    embedding: list[float]
    has_audio: bool
    has_video: bool


class EmbedResponse(BaseModel):
    items: list[EmbedItem]
    stored: bool
    timings_ms: dict[str, float] = Field(description="upload, decode, model, index, total")


class Hit(BaseModel):
    id: str
    score: float
    start: float | None = None
    end: float | None = None
    clip_id: str | None = None
    metadata: dict[str, Any] = {}
    thumbnail_url: str | None = None
    modality: Modality | None = Field(
        None, description="with modality best: the vector that gave the score; else null"
    )


class SearchResponse(BaseModel):
    results: list[Hit]
    timings_ms: dict[str, float] = {}


class ClassifyResponse(BaseModel):
    label: str | None
    scores: dict[str, float]
    neighbors: list[Hit]
    timings_ms: dict[str, float] = {}


class Clip(BaseModel):
    id: str
    clip_id: str | None = None
    start: float | None = None
    end: float | None = None
    metadata: dict[str, Any] = {}
    modalities: list[str] = []
    thumbnail_url: str | None = None
    created_at: float | None = None
    updated_at: float | None = None
    vectors: dict[str, list[float]] | None = None
    windows: list[str] | None = Field(
        None, description="for a clip id of several windows: their item ids"
    )


class ClipPage(BaseModel):
    items: list[Clip]
    total: int = Field(description="stored items (of the clip, with clip_id)")
    offset: int
    limit: int
    next: str | None = Field(
        description="the cursor of the following page (pass it as after=): this page's last "
        "id, or null when this page is the last"
    )


class Deleted(BaseModel):
    id: str
    deleted: int = Field(description="items removed (an item, or every window of a clip)")


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready"]
    backend: str
    count: int


# --- OpenAPI for request bodies (routes read them themselves) ---------------------------------


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A request model's JSON Schema, inline (request models nest no other models)."""
    schema = model.model_json_schema()
    if "$defs" in schema:
        raise TypeError(f"{model.__name__} nests models; inline schemas cannot hold them")
    return schema


def _form_field(prop: dict[str, Any]) -> dict[str, Any]:
    """A form field's schema: a form cannot send null, so an optional field is just absent."""
    branches = [b for b in prop.get("anyOf", []) if b.get("type") != "null"]
    if len(branches) == 1:
        extra = {k: v for k, v in prop.items() if k not in ("anyOf", "default")}
        prop = {**extra, **branches[0]}
        if prop.get("default", "") is None:
            del prop["default"]
    return prop


def _form_schema(model: type[BaseModel], json_fields: tuple[str, ...]) -> dict[str, Any]:
    """The multipart schema of a form model: ``file`` plus its fields, JSON ones as text."""
    props: dict[str, Any] = {
        "file": {"type": "string", "format": "binary", "description": "the video (or audio) file"}
    }
    for name, prop in json_schema(model).get("properties", {}).items():
        if name in json_fields:
            desc = prop.get("description") or next(
                (b["description"] for b in prop.get("anyOf", []) if "description" in b), "object"
            )
            props[name] = {"type": "string", "description": f"JSON text: {desc}"}
        else:
            props[name] = _form_field(prop)
    return {
        "type": "object",
        "properties": props,
        "required": ["file"],
        "additionalProperties": False,
    }


def multipart_body(form: type[BaseModel], json_fields: tuple[str, ...]) -> dict[str, Any]:
    """``openapi_extra`` for a route that takes a multipart upload."""
    return {
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": _form_schema(form, json_fields)}},
        }
    }


def multipart_or_json(
    form: type[BaseModel], json_model: type[BaseModel], json_fields: tuple[str, ...]
) -> dict[str, Any]:
    """``openapi_extra`` for a route that takes a multipart upload or a JSON body."""
    body = multipart_body(form, json_fields)
    body["requestBody"]["content"]["application/json"] = {"schema": json_schema(json_model)}
    return body
