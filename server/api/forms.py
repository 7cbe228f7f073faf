"""Request bodies into request models: JSON bodies and the text fields of multipart forms go
through the same pydantic models (``server.api.schemas``), so the same mistake gets the same
status and code in either form (400, the code from ``server.api.errors.FIELD_CODES``)."""

from __future__ import annotations

from typing import Any, TypeVar

import pydantic_core
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from server.api.errors import FIELD_CODES, validation_message
from server.core.errors import InvalidRequest, UnsupportedType
from server.core.uploads import ReadLimits, read_body

__all__ = ["MAX_JSON_BYTES", "parse_form", "read_json"]

M = TypeVar("M", bound=BaseModel)

MAX_JSON_BYTES = 4 * 1024 * 1024


def _validate(model: type[M], data: Any, *, json_text: bool = False) -> M:
    try:
        if json_text:
            return model.model_validate_json(data)
        return model.model_validate(data)
    except ValidationError as e:
        code, msg = validation_message(e.errors())
        raise InvalidRequest(msg, code=code) from None


def parse_form(fields: dict[str, str], model: type[M], json_fields: tuple[str, ...] = ()) -> M:
    """A multipart form's text fields as ``model``. An empty field counts as absent; the
    fields named in ``json_fields`` hold JSON text."""
    data: dict[str, Any] = {name: raw for name, raw in fields.items() if raw.strip()}
    for name in json_fields:
        if name in data:
            try:
                data[name] = pydantic_core.from_json(data[name])
            except ValueError as e:
                raise InvalidRequest(
                    f"form field {name!r} is not valid JSON ({e}); send a JSON object",
                    code=FIELD_CODES.get(name, "invalid_request"),
                ) from None
    return _validate(model, data)


async def read_json(
    request: Request, model: type[M], limits: ReadLimits, max_bytes: int = MAX_JSON_BYTES
) -> M:
    """An ``application/json`` body as ``model`` (at most ``max_bytes``); read with ``limits``
    (408 when slow)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise UnsupportedType(
            "send application/json with 'id' or 'vector', or multipart/form-data with 'file'; "
            f"got {ctype or 'no content type'!r}"
        )
    body = await read_body(request, max_bytes, limits)
    return _validate(model, body, json_text=True)
