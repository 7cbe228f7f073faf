"""Request and response bodies (JSON). Multipart forms are described in routes' openapi_extra."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Modality = Literal["fused", "audio", "visual"]
Scalar = str | int | float | bool | None


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


class _Query(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(
        None, description="a stored item id (every window of its clip is left out)"
    )
    vector: list[float] | None = Field(None, description="a query vector (normalized here)")
    k: int = Field(10, ge=1, le=1000)
    filter: dict[str, Scalar] | None = Field(
        None, description="metadata key -> value, all must match"
    )
    modality: Modality = "fused"

    @model_validator(mode="after")
    def _one_query(self) -> _Query:
        if (self.id is None) == (self.vector is None):
            raise ValueError(
                "send exactly one of 'id' or 'vector' (or a multipart upload in 'file')"
            )
        return self


class SearchRequest(_Query):
    pass


class ClassifyRequest(_Query):
    label_key: str = Field(
        "label", min_length=1, max_length=64, description="the metadata key that holds labels"
    )


class Hit(BaseModel):
    id: str
    score: float
    start: float | None = None
    end: float | None = None
    clip_id: str | None = None
    metadata: dict[str, Any] = {}
    thumbnail_url: str | None = None


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


class ClipPage(BaseModel):
    items: list[Clip]
    total: int
    offset: int
    limit: int


class Deleted(BaseModel):
    id: str
    deleted: int = Field(description="items removed (an item, or every window of a clip)")


def multipart_body(fields: dict[str, dict[str, Any]]) -> dict[str, Any]:
    props = {
        "file": {"type": "string", "format": "binary", "description": "the video (or audio) file"}
    }
    props.update(fields)
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": props, "required": ["file"]}
                }
            },
        }
    }


def multipart_or_json(fields: dict[str, dict[str, Any]], model: type[BaseModel]) -> dict[str, Any]:
    body = multipart_body(fields)
    body["requestBody"]["content"]["application/json"] = {"schema": model.model_json_schema()}
    return body
