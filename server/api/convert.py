"""Index records -> response bodies."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from server.api import schemas


def thumbnail_url(item_id: str, has_thumbnail: bool) -> str | None:
    return f"/clips/{quote(item_id, safe='')}/thumbnail" if has_thumbnail else None


def hit(h: Any, modality: schemas.Modality | None = None) -> schemas.Hit:
    """An index hit as the API shows it; ``modality``: the vector that scored it (best)."""
    return schemas.Hit(
        id=h.id,
        score=float(h.score),
        start=h.start,
        end=h.end,
        clip_id=h.clip_id,
        metadata=h.metadata,
        thumbnail_url=thumbnail_url(h.id, h.has_thumbnail),
        modality=modality,
    )


def clip(item: Any, windows: list[str] | None = None) -> schemas.Clip:
    vectors = None
    if item.vectors is not None:
        vectors = {m: [float(x) for x in v] for m, v in item.vectors.items()}
    return schemas.Clip(
        id=item.id,
        clip_id=item.clip_id,
        start=item.start,
        end=item.end,
        metadata=item.metadata,
        modalities=list(item.modalities),
        thumbnail_url=thumbnail_url(item.id, item.has_thumbnail),
        created_at=item.created_at,
        updated_at=item.updated_at,
        vectors=vectors,
        windows=windows,
    )
