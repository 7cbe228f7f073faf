"""Python SDK for the PEMT service: ``PemtClient`` (sync) and ``AsyncPemtClient`` (async).

Both sit on httpx, take an optional ``transport`` (tests, proxies, ASGI apps), retry on 429/503
(honouring ``Retry-After``) and on refused connections, return typed dataclasses, and close
through a context manager::

    with PemtClient("http://127.0.0.1:8000", api_key="...") as client:
        res = client.embed("clip.mp4", id="clip1", metadata={"label": "dog"})
        hits = client.search(file="query.mp4", k=5).results

Errors from the service raise :class:`PemtError` with its ``status``, ``code`` and ``message``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import quote

import httpx

__all__ = [
    "AsyncPemtClient",
    "Classification",
    "Clip",
    "ClipPage",
    "EmbedItem",
    "EmbedResult",
    "Hit",
    "PemtClient",
    "PemtError",
    "SearchResult",
]

FileLike = str | os.PathLike[str] | bytes | IO[bytes]
Modality = Literal["fused", "audio", "visual"]
_RETRY_STATUS = (429, 503)
_CONTENT_TYPES = {
    ".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm",
    ".mkv": "video/x-matroska", ".avi": "video/x-msvideo", ".mpg": "video/mpeg", ".mpeg": "video/mpeg",
    ".m4a": "audio/mp4", ".mp3": "audio/mpeg", ".wav": "audio/wav", ".ogg": "audio/ogg",
}  # fmt: skip


class PemtError(Exception):
    """The service answered with an error (or could not be reached)."""

    def __init__(
        self, status: int, code: str, message: str, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}" if status else f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True)
class EmbedItem:
    id: str
    clip_id: str
    window: int
    start: float
    end: float
    embedding: list[float]
    has_audio: bool
    has_video: bool


@dataclass(frozen=True)
class EmbedResult:
    items: list[EmbedItem]
    stored: bool
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return [i.id for i in self.items]


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    start: float | None = None
    end: float | None = None
    clip_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    thumbnail_url: str | None = None


@dataclass(frozen=True)
class SearchResult:
    results: list[Hit]
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return [h.id for h in self.results]


@dataclass(frozen=True)
class Classification:
    label: str | None
    scores: dict[str, float]
    neighbors: list[Hit]
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Clip:
    id: str
    clip_id: str | None = None
    start: float | None = None
    end: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    modalities: list[str] = field(default_factory=list)
    thumbnail_url: str | None = None
    created_at: float | None = None
    updated_at: float | None = None
    vectors: dict[str, list[float]] | None = None


@dataclass(frozen=True)
class ClipPage:
    items: list[Clip]
    total: int
    offset: int
    limit: int


# --- shared request building / response parsing ------------------------------------------------


def _hit(d: Mapping[str, Any]) -> Hit:
    return Hit(
        id=d["id"],
        score=float(d["score"]),
        start=d.get("start"),
        end=d.get("end"),
        clip_id=d.get("clip_id"),
        metadata=dict(d.get("metadata") or {}),
        thumbnail_url=d.get("thumbnail_url"),
    )


def _clip(d: Mapping[str, Any]) -> Clip:
    known = Clip.__dataclass_fields__
    return Clip(**{k: v for k, v in d.items() if k in known})


def _parse_embed(d: Mapping[str, Any]) -> EmbedResult:
    known = EmbedItem.__dataclass_fields__
    items = [EmbedItem(**{k: v for k, v in i.items() if k in known}) for i in d["items"]]
    return EmbedResult(
        items=items, stored=bool(d.get("stored", True)), timings_ms=d.get("timings_ms", {})
    )


def _parse_search(d: Mapping[str, Any]) -> SearchResult:
    return SearchResult([_hit(h) for h in d["results"]], d.get("timings_ms", {}))


def _parse_classify(d: Mapping[str, Any]) -> Classification:
    return Classification(
        d.get("label"),
        dict(d.get("scores") or {}),
        [_hit(h) for h in d["neighbors"]],
        d.get("timings_ms", {}),
    )


def _parse_page(d: Mapping[str, Any]) -> ClipPage:
    return ClipPage(
        [_clip(c) for c in d["items"]], int(d["total"]), int(d["offset"]), int(d["limit"])
    )


def _path_id(item_id: str) -> str:
    if not isinstance(item_id, str) or not item_id:
        raise ValueError(f"id must be a non-empty string, got {item_id!r}")
    return quote(item_id, safe="")


def _fields(**kw: Any) -> dict[str, str]:
    out = {}
    for k, v in kw.items():
        if v is None:
            continue
        if isinstance(v, bool):
            out[k] = "true" if v else "false"
        elif isinstance(v, Mapping):
            out[k] = json.dumps(dict(v))
        else:
            out[k] = str(v)
    return out


class _Upload:
    """A file to send, re-readable for retries."""

    def __init__(self, file: FileLike, filename: str | None, content_type: str | None) -> None:
        self.file = file
        if isinstance(file, str | os.PathLike):
            p = Path(file)
            if not p.is_file():
                raise FileNotFoundError(f"no such file: {p}")
            self.filename = filename or p.name
        else:
            self.filename = filename or getattr(file, "name", None) or "upload.bin"
            self.filename = os.path.basename(str(self.filename))
        suffix = Path(self.filename).suffix.lower()
        self.content_type = content_type or _CONTENT_TYPES.get(suffix, "application/octet-stream")
        self._start = file.tell() if hasattr(file, "tell") and not isinstance(file, bytes) else 0

    def open(self) -> tuple[str, Any, str]:
        f = self.file
        if isinstance(f, bytes):
            return (self.filename, f, self.content_type)
        if isinstance(f, str | os.PathLike):
            return (self.filename, open(f, "rb"), self.content_type)  # noqa: SIM115 - closed by caller
        f.seek(self._start)
        return (self.filename, f, self.content_type)


def _error(resp: httpx.Response) -> PemtError:
    code, message = "http_error", resp.text[:500] or resp.reason_phrase
    try:
        err = resp.json().get("error") or {}
        code, message = err.get("code", code), err.get("message", message)
    except (ValueError, AttributeError):
        pass
    return PemtError(resp.status_code, code, message, _retry_after(resp))


def _retry_after(resp: httpx.Response) -> float | None:
    v = resp.headers.get("retry-after")
    if v is None:
        return None
    try:
        return max(0.0, float(v))
    except ValueError:
        return None


def _query(file: Any, id: str | None, vector: Sequence[float] | None) -> None:
    given = sum(x is not None for x in (file, id, vector))
    if given != 1:
        raise ValueError("pass exactly one of file=, id= or vector=")


class _Config:
    def __init__(
        self,
        url: str | None,
        api_key: str | None,
        timeout: float,
        retries: int,
        backoff: float,
        max_wait: float,
    ) -> None:
        url = url or os.environ.get("PEMT_URL") or "http://127.0.0.1:8000"
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("PEMT_API_KEY") or None
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_wait = max_wait

    def headers(self) -> dict[str, str]:
        h = {"User-Agent": "pemt-client/0.1"}
        if self.api_key:
            h["X-API-Key"] = self.api_key
        return h

    def delay(self, attempt: int, resp: httpx.Response | None) -> float:
        ra = _retry_after(resp) if resp is not None else None
        d = ra if ra is not None else self.backoff * (2**attempt)
        return min(d, self.max_wait)


# --- sync ---------------------------------------------------------------------------------------


class PemtClient:
    """Blocking client. ``url`` defaults to ``$PEMT_URL``, ``api_key`` to ``$PEMT_API_KEY``."""

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 300.0,
        retries: int = 4,
        backoff: float = 0.5,
        max_wait: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._cfg = _Config(url, api_key, timeout, retries, backoff, max_wait)
        self._http = httpx.Client(
            base_url=self._cfg.url,
            headers=self._cfg.headers(),
            timeout=timeout,
            transport=transport,
        )

    @property
    def url(self) -> str:
        return self._cfg.url

    def _request(
        self,
        method: str,
        path: str,
        *,
        upload: _Upload | None = None,
        data: dict[str, str] | None = None,
        **kw: Any,
    ) -> httpx.Response:
        attempt = 0
        while True:
            files = None
            opened = None
            if upload is not None:
                opened = upload.open()
                files = {"file": opened}
            resp: httpx.Response | None = None
            try:
                resp = self._http.request(method, path, files=files, data=data, **kw)
            except (httpx.ConnectError, httpx.RemoteProtocolError) as e:
                if attempt >= self._cfg.retries:
                    raise PemtError(0, "unreachable", f"{self._cfg.url}: {e}") from None
            finally:
                if opened is not None and isinstance(upload.file, str | os.PathLike):  # type: ignore[union-attr]
                    opened[1].close()
            if resp is not None:
                if resp.status_code < 400:
                    return resp
                if resp.status_code not in _RETRY_STATUS or attempt >= self._cfg.retries:
                    raise _error(resp)
            time.sleep(self._cfg.delay(attempt, resp))
            attempt += 1

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        return self._request(method, path, **kw).json()

    def embed(
        self,
        file: FileLike,
        *,
        id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        store: bool = True,
        window: float | None = None,
        stride: float | None = None,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> EmbedResult:
        """Embed a video (path, bytes or binary file); one item per window."""
        up = _Upload(file, filename, content_type)
        data = _fields(id=id, metadata=metadata, store=store, window=window, stride=stride)
        return _parse_embed(self._json("POST", "/embed", upload=up, data=data))

    def search(
        self,
        *,
        file: FileLike | None = None,
        id: str | None = None,
        vector: Sequence[float] | None = None,
        k: int = 10,
        filter: Mapping[str, Any] | None = None,
        modality: Modality = "fused",
    ) -> SearchResult:
        """Nearest stored items to an upload, a stored id (left out of the results) or a vector."""
        _query(file, id, vector)
        if file is not None:
            data = _fields(k=k, filter=filter, modality=modality)
            return _parse_search(
                self._json("POST", "/search", upload=_Upload(file, None, None), data=data)
            )
        body = {
            "id": id,
            "vector": list(map(float, vector)) if vector is not None else None,
            "k": k,
            "filter": dict(filter) if filter else None,
            "modality": modality,
        }
        return _parse_search(
            self._json("POST", "/search", json={k_: v for k_, v in body.items() if v is not None})
        )

    def classify(
        self,
        *,
        file: FileLike | None = None,
        id: str | None = None,
        vector: Sequence[float] | None = None,
        k: int = 10,
        label_key: str = "label",
        modality: Modality = "fused",
    ) -> Classification:
        """k-NN label vote for an upload, a stored id or a vector."""
        _query(file, id, vector)
        if file is not None:
            data = _fields(k=k, label_key=label_key, modality=modality)
            return _parse_classify(
                self._json("POST", "/classify", upload=_Upload(file, None, None), data=data)
            )
        body = {
            "id": id,
            "vector": list(map(float, vector)) if vector is not None else None,
            "k": k,
            "label_key": label_key,
            "modality": modality,
        }
        return _parse_classify(
            self._json("POST", "/classify", json={k_: v for k_, v in body.items() if v is not None})
        )

    def get(self, id: str, *, vectors: bool = False) -> Clip:
        return _clip(self._json("GET", f"/clips/{_path_id(id)}", params={"vectors": vectors}))

    def delete(self, id: str) -> int:
        """Delete an item, or every window of a clip id; returns how many were removed."""
        return int(self._json("DELETE", f"/clips/{_path_id(id)}")["deleted"])

    def list(self, offset: int = 0, limit: int = 100, *, clip_id: str | None = None) -> ClipPage:
        params: dict[str, Any] = {"offset": offset, "limit": limit}
        if clip_id:
            params["clip_id"] = clip_id
        return _parse_page(self._json("GET", "/clips", params=params))

    def iter_clips(self, page_size: int = 100) -> Iterator[Clip]:
        offset = 0
        while True:
            page = self.list(offset, page_size)
            yield from page.items
            offset += len(page.items)
            if not page.items or offset >= page.total:
                return

    def thumbnail(self, id: str) -> bytes:
        return self._request("GET", f"/clips/{_path_id(id)}/thumbnail").content

    def info(self) -> dict[str, Any]:
        return dict(self._json("GET", "/info"))

    def ready(self) -> bool:
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PemtClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- async --------------------------------------------------------------------------------------


class AsyncPemtClient:
    """The async twin of :class:`PemtClient` (same methods, awaitable)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 300.0,
        retries: int = 4,
        backoff: float = 0.5,
        max_wait: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._cfg = _Config(url, api_key, timeout, retries, backoff, max_wait)
        self._http = httpx.AsyncClient(
            base_url=self._cfg.url,
            headers=self._cfg.headers(),
            timeout=timeout,
            transport=transport,
        )

    @property
    def url(self) -> str:
        return self._cfg.url

    async def _request(
        self,
        method: str,
        path: str,
        *,
        upload: _Upload | None = None,
        data: dict[str, str] | None = None,
        **kw: Any,
    ) -> httpx.Response:
        attempt = 0
        while True:
            files = None
            content: bytes | None = None
            if upload is not None:
                name, f, ctype = upload.open()
                # read here: async httpx streams sync file objects poorly; uploads are bounded
                content = f if isinstance(f, bytes) else f.read()
                if isinstance(upload.file, str | os.PathLike):
                    f.close()
                files = {"file": (name, content, ctype)}
            resp: httpx.Response | None = None
            try:
                resp = await self._http.request(method, path, files=files, data=data, **kw)
            except (httpx.ConnectError, httpx.RemoteProtocolError) as e:
                if attempt >= self._cfg.retries:
                    raise PemtError(0, "unreachable", f"{self._cfg.url}: {e}") from None
            if resp is not None:
                if resp.status_code < 400:
                    return resp
                if resp.status_code not in _RETRY_STATUS or attempt >= self._cfg.retries:
                    raise _error(resp)
            await asyncio.sleep(self._cfg.delay(attempt, resp))
            attempt += 1

    async def _json(self, method: str, path: str, **kw: Any) -> Any:
        return (await self._request(method, path, **kw)).json()

    async def embed(
        self,
        file: FileLike,
        *,
        id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        store: bool = True,
        window: float | None = None,
        stride: float | None = None,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> EmbedResult:
        up = _Upload(file, filename, content_type)
        data = _fields(id=id, metadata=metadata, store=store, window=window, stride=stride)
        return _parse_embed(await self._json("POST", "/embed", upload=up, data=data))

    async def search(
        self,
        *,
        file: FileLike | None = None,
        id: str | None = None,
        vector: Sequence[float] | None = None,
        k: int = 10,
        filter: Mapping[str, Any] | None = None,
        modality: Modality = "fused",
    ) -> SearchResult:
        _query(file, id, vector)
        if file is not None:
            data = _fields(k=k, filter=filter, modality=modality)
            return _parse_search(
                await self._json("POST", "/search", upload=_Upload(file, None, None), data=data)
            )
        body = {
            "id": id,
            "vector": list(map(float, vector)) if vector is not None else None,
            "k": k,
            "filter": dict(filter) if filter else None,
            "modality": modality,
        }
        return _parse_search(
            await self._json(
                "POST", "/search", json={k_: v for k_, v in body.items() if v is not None}
            )
        )

    async def classify(
        self,
        *,
        file: FileLike | None = None,
        id: str | None = None,
        vector: Sequence[float] | None = None,
        k: int = 10,
        label_key: str = "label",
        modality: Modality = "fused",
    ) -> Classification:
        _query(file, id, vector)
        if file is not None:
            data = _fields(k=k, label_key=label_key, modality=modality)
            return _parse_classify(
                await self._json("POST", "/classify", upload=_Upload(file, None, None), data=data)
            )
        body = {
            "id": id,
            "vector": list(map(float, vector)) if vector is not None else None,
            "k": k,
            "label_key": label_key,
            "modality": modality,
        }
        return _parse_classify(
            await self._json(
                "POST", "/classify", json={k_: v for k_, v in body.items() if v is not None}
            )
        )

    async def get(self, id: str, *, vectors: bool = False) -> Clip:
        return _clip(await self._json("GET", f"/clips/{_path_id(id)}", params={"vectors": vectors}))

    async def delete(self, id: str) -> int:
        return int((await self._json("DELETE", f"/clips/{_path_id(id)}"))["deleted"])

    async def list(
        self, offset: int = 0, limit: int = 100, *, clip_id: str | None = None
    ) -> ClipPage:
        params: dict[str, Any] = {"offset": offset, "limit": limit}
        if clip_id:
            params["clip_id"] = clip_id
        return _parse_page(await self._json("GET", "/clips", params=params))

    async def iter_clips(self, page_size: int = 100) -> AsyncIterator[Clip]:
        offset = 0
        while True:
            page = await self.list(offset, page_size)
            for c in page.items:
                yield c
            offset += len(page.items)
            if not page.items or offset >= page.total:
                return

    async def thumbnail(self, id: str) -> bytes:
        return (await self._request("GET", f"/clips/{_path_id(id)}/thumbnail")).content

    async def info(self) -> dict[str, Any]:
        return dict(await self._json("GET", "/info"))

    async def ready(self) -> bool:
        try:
            return (await self._http.get("/readyz")).status_code == 200
        except httpx.HTTPError:
            return False

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncPemtClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
