"""Python SDK for the PEMT service: ``PemtClient`` (sync) and ``AsyncPemtClient`` (async).

Both sit on httpx and share one base class that builds every request and reads every answer
(httpx's own shape); the two subclasses only send. They take an optional ``transport`` (tests,
proxies), return typed dataclasses, and close through a context manager::

    with PemtClient("http://127.0.0.1:8080", api_key="...") as client:
        res = client.embed("clip.mp4", id="clip1", metadata={"label": "dog"})
        hits = client.search(file="query.mp4", k=5).results

``url`` defaults to ``$PEMT_URL``, else ``http://127.0.0.1:8080``: where ``docker compose up``
publishes the API (Triton holds 8000-8002). ``api_key`` defaults to ``$PEMT_API_KEY``.

Timeouts: ``connect_timeout`` (default 5 s) bounds opening a connection; ``read_timeout``
(default 300 s) bounds each wait for the answer (embedding a long video takes a while).

Retries: up to ``retries`` more attempts, with exponential backoff (``Retry-After`` honoured,
at most ``max_wait`` s), on 429 and 503, on a connection that could not be opened and on one
that broke before the answer. Every request is safe to repeat: an upload without ``id`` gets
an id generated here before the first attempt, so a retried ``embed`` replaces what an attempt
whose answer was lost stored, never duplicates it. A read timeout is not retried (the service
may still be working on the request).

Long videos go through background jobs: ``submit`` (an upload, or ``path=`` for a file under the
server's ``PEMT_JOB_ROOTS``) answers at once with a :class:`Job`; ``job`` reads its state,
``wait`` polls until it ends (``progress`` is called with each new state), ``jobs`` lists them
and ``cancel`` stops one. ``put_clip`` stores windows whose vectors were computed elsewhere
(the bulk indexer, ``clients/bulk``), after the service checked they come from its model.

Errors: every failure raises :class:`PemtError`. ``status`` is the HTTP status with the
service's ``code`` and ``message``, or 0 when no answer came, with ``code``:
``unreachable`` (no connection), ``disconnected`` (the connection broke before the answer),
``timeout`` (no answer within ``read_timeout``) or ``transport`` (any other HTTP failure).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import quote

import httpx

__all__ = [
    "DEFAULT_URL",
    "AsyncPemtClient",
    "Classification",
    "Clip",
    "ClipPage",
    "EmbedItem",
    "EmbedResult",
    "Hit",
    "Job",
    "JobPage",
    "JobProgress",
    "PemtClient",
    "PemtError",
    "SearchResult",
]

# The API's port in docker-compose.yml and the Dockerfile (Triton's HTTP port is 8000).
DEFAULT_URL = "http://127.0.0.1:8080"

FileLike = str | os.PathLike[str] | bytes | IO[bytes]
Modality = Literal["fused", "audio", "visual"]
# search only: "best" scores each item by its best shared vector (finds one-stream edits)
SearchModality = Literal["fused", "audio", "visual", "best"]
_RETRY_STATUS = (429, 503)
# the request did not reach the service, or the connection broke before any answer
_RETRY_ERRORS = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.RemoteProtocolError,
    httpx.ReadError,
)
_CONTENT_TYPES = {
    ".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm",
    ".mkv": "video/x-matroska", ".avi": "video/x-msvideo", ".mpg": "video/mpeg", ".mpeg": "video/mpeg",
    ".m4a": "audio/mp4", ".mp3": "audio/mpeg", ".wav": "audio/wav", ".ogg": "audio/ogg",
}  # fmt: skip


class PemtError(Exception):
    """The service answered with an error (``status`` > 0), or no answer came (``status`` 0;
    ``code`` is ``unreachable``, ``disconnected``, ``timeout`` or ``transport``)."""

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
    modality: str | None = None  # with modality="best": the vector that gave the score


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
    """One page of ``GET /clips``; ``next`` is the ``after`` of the following page (None: this
    page is the last)."""

    items: list[Clip]
    total: int
    offset: int
    limit: int
    next: str | None = None


@dataclass(frozen=True)
class JobProgress:
    seconds_done: float = 0.0
    seconds_total: float | None = None
    windows_done: int = 0
    windows_total: int | None = None
    fraction: float = 0.0


@dataclass(frozen=True)
class Job:
    """A background job (``POST /jobs``). ``error`` holds ``code`` and ``message`` once it
    failed or was cancelled; the clip is searchable once ``state`` is ``done``."""

    id: str
    state: str  # queued | running | done | failed | cancelled
    clip_id: str
    source: str = "upload"
    name: str | None = None
    progress: JobProgress = field(default_factory=JobProgress)
    error: dict[str, str] | None = None
    attempts: int = 0
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "cancelled")


@dataclass(frozen=True)
class JobPage:
    items: list[Job]
    total: int
    offset: int
    limit: int


# --- answers -------------------------------------------------------------------------------------


def _hit(d: Mapping[str, Any]) -> Hit:
    return Hit(
        id=d["id"],
        score=float(d["score"]),
        start=d.get("start"),
        end=d.get("end"),
        clip_id=d.get("clip_id"),
        metadata=dict(d.get("metadata") or {}),
        thumbnail_url=d.get("thumbnail_url"),
        modality=d.get("modality"),
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


def _parse_job(d: Mapping[str, Any]) -> Job:
    known = Job.__dataclass_fields__
    fields_ = {k: v for k, v in d.items() if k in known}
    progress = d.get("progress") or {}
    fields_["progress"] = JobProgress(
        **{k: v for k, v in progress.items() if k in JobProgress.__dataclass_fields__}
    )
    return Job(**fields_)


def _parse_jobs(d: Mapping[str, Any]) -> JobPage:
    return JobPage(
        [_parse_job(j) for j in d["items"]], int(d["total"]), int(d["offset"]), int(d["limit"])
    )


def _parse_page(d: Mapping[str, Any]) -> ClipPage:
    return ClipPage(
        [_clip(c) for c in d["items"]],
        int(d["total"]),
        int(d["offset"]),
        int(d["limit"]),
        d.get("next"),
    )


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


# --- requests ------------------------------------------------------------------------------------


def _window_body(w: Mapping[str, Any]) -> dict[str, Any]:
    """One window of ``put_clip``: vectors as lists of floats, the thumbnail as base64."""
    import base64

    out = {k: w[k] for k in ("window", "start", "end", "has_audio", "has_video")}
    out["vectors"] = {m: [float(x) for x in v] for m, v in w["vectors"].items()}
    thumb = w.get("thumbnail")
    if thumb:
        out["thumbnail"] = base64.b64encode(bytes(thumb)).decode("ascii")
    return out


def _path_id(item_id: str) -> str:
    if not isinstance(item_id, str) or not item_id:
        raise ValueError(f"id must be a non-empty string, got {item_id!r}")
    return quote(item_id, safe="")


def _fields(**kw: Any) -> dict[str, str]:
    """Multipart form fields: None left out, booleans as true/false, mappings as JSON."""
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

    @contextlib.contextmanager
    def stream(self) -> Iterator[tuple[str, Any, str]]:
        """(filename, bytes or a file positioned at the start, content type); a file opened
        from a path is closed afterwards."""
        f = self.file
        if isinstance(f, bytes):
            yield (self.filename, f, self.content_type)
        elif isinstance(f, str | os.PathLike):
            with open(f, "rb") as opened:
                yield (self.filename, opened, self.content_type)
        else:
            f.seek(self._start)
            yield (self.filename, f, self.content_type)

    def read(self) -> bytes:
        """The whole file (async httpx streams sync file objects poorly; uploads are bounded)."""
        with self.stream() as (_, f, _ctype):
            return f if isinstance(f, bytes) else f.read()


@dataclass(frozen=True)
class _Call:
    """One request, built once and sent as is on every attempt."""

    method: str
    path: str
    params: dict[str, Any] | None = None
    json: dict[str, Any] | None = None
    data: dict[str, str] | None = None
    upload: _Upload | None = None


def _query_body(
    id: str | None,
    vector: Sequence[float] | None,
    k: int,
    filter: Mapping[str, Any] | None,
    modality: str,
    **extra: Any,
) -> dict[str, Any]:
    body = {
        "id": id,
        "vector": [float(x) for x in vector] if vector is not None else None,
        "k": k,
        "filter": dict(filter) if filter else None,
        "modality": modality,
        **extra,
    }
    return {key: v for key, v in body.items() if v is not None}


class _BaseClient:
    """Settings, request building, retry rules and error mapping shared by both clients."""

    def __init__(
        self,
        url: str | None,
        api_key: str | None,
        connect_timeout: float,
        read_timeout: float,
        retries: int,
        backoff: float,
        max_wait: float,
    ) -> None:
        url = url or os.environ.get("PEMT_URL") or DEFAULT_URL
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        for name, value in (("connect_timeout", connect_timeout), ("read_timeout", read_timeout)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {value!r}")
        self._url = url.rstrip("/")
        self._api_key = api_key if api_key is not None else os.environ.get("PEMT_API_KEY") or None
        # read/write/pool waits: read_timeout; opening a connection: connect_timeout
        self._timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
        self._retries = retries
        self._backoff = backoff
        self._max_wait = max_wait

    @property
    def url(self) -> str:
        return self._url

    def _headers(self) -> dict[str, str]:
        h = {"User-Agent": "pemt-client/0.1"}
        if self._api_key:
            h["X-API-Key"] = self._api_key
        return h

    # --- one builder per route ---------------------------------------------------------------

    def _embed_call(
        self,
        file: FileLike,
        id: str | None,
        metadata: Mapping[str, Any] | None,
        store: bool,
        window: float | None,
        stride: float | None,
        filename: str | None,
        content_type: str | None,
    ) -> _Call:
        upload = _Upload(file, filename, content_type)
        clip_id = id if id is not None else uuid.uuid4().hex  # fixed before the first attempt
        data = _fields(id=clip_id, metadata=metadata, store=store, window=window, stride=stride)
        return _Call("POST", "/embed", data=data, upload=upload)

    def _query_call(
        self,
        path: str,
        file: FileLike | None,
        id: str | None,
        vector: Sequence[float] | None,
        k: int,
        filter: Mapping[str, Any] | None,
        modality: str,
        window: float | None,
        stride: float | None,
        **extra: Any,
    ) -> _Call:
        """POST /search or /classify: a multipart upload, or JSON with an id or a vector."""
        if sum(x is not None for x in (file, id, vector)) != 1:
            raise ValueError("pass exactly one of file=, id= or vector=")
        if file is not None:
            data = _fields(
                k=k, filter=filter, modality=modality, window=window, stride=stride, **extra
            )
            return _Call("POST", path, data=data, upload=_Upload(file, None, None))
        if window is not None or stride is not None:
            raise ValueError("window= and stride= apply to a file= query (it is embedded first)")
        return _Call("POST", path, json=_query_body(id, vector, k, filter, modality, **extra))

    def _search_call(
        self,
        file: FileLike | None,
        id: str | None,
        vector: Sequence[float] | None,
        k: int,
        filter: Mapping[str, Any] | None,
        modality: str,
        window: float | None,
        stride: float | None,
    ) -> _Call:
        return self._query_call("/search", file, id, vector, k, filter, modality, window, stride)

    def _classify_call(
        self,
        file: FileLike | None,
        id: str | None,
        vector: Sequence[float] | None,
        k: int,
        filter: Mapping[str, Any] | None,
        modality: str,
        label_key: str,
        window: float | None,
        stride: float | None,
    ) -> _Call:
        return self._query_call(
            "/classify", file, id, vector, k, filter, modality, window, stride, label_key=label_key
        )

    def _get_call(self, id: str, vectors: bool) -> _Call:
        return _Call("GET", f"/clips/{_path_id(id)}", params={"vectors": vectors})

    def _delete_call(self, id: str) -> _Call:
        return _Call("DELETE", f"/clips/{_path_id(id)}")

    def _list_call(self, offset: int, limit: int, clip_id: str | None, after: str | None) -> _Call:
        params: dict[str, Any] = {"offset": offset, "limit": limit}
        if clip_id:
            params["clip_id"] = clip_id
        if after is not None:
            params["after"] = after
        return _Call("GET", "/clips", params=params)

    def _thumbnail_call(self, id: str) -> _Call:
        return _Call("GET", f"/clips/{_path_id(id)}/thumbnail")

    def _media_call(self, id: str) -> _Call:
        return _Call("GET", f"/clips/{_path_id(id)}/media")

    def _info_call(self) -> _Call:
        return _Call("GET", "/info")

    def _submit_call(
        self,
        file: FileLike | None,
        path: str | None,
        id: str | None,
        metadata: Mapping[str, Any] | None,
        window: float | None,
        stride: float | None,
        filename: str | None,
        content_type: str | None,
    ) -> _Call:
        """POST /jobs: a multipart upload, or JSON naming a file on the server."""
        if (file is None) == (path is None):
            raise ValueError("pass exactly one of file= (an upload) or path= (a server-side file)")
        clip_id = id if id is not None else uuid.uuid4().hex  # fixed before the first attempt
        if path is not None:
            body = {"path": str(path), "id": clip_id, "metadata": metadata, "window": window,
                    "stride": stride}  # fmt: skip
            return _Call("POST", "/jobs", json={k: v for k, v in body.items() if v is not None})
        assert file is not None
        data = _fields(id=clip_id, metadata=metadata, window=window, stride=stride)
        return _Call("POST", "/jobs", data=data, upload=_Upload(file, filename, content_type))

    def _job_call(self, id: str) -> _Call:
        return _Call("GET", f"/jobs/{_path_id(id)}")

    def _jobs_call(self, offset: int, limit: int, state: str | None) -> _Call:
        params: dict[str, Any] = {"offset": offset, "limit": limit}
        if state:
            params["state"] = state
        return _Call("GET", "/jobs", params=params)

    def _cancel_call(self, id: str) -> _Call:
        return _Call("DELETE", f"/jobs/{_path_id(id)}")

    def _put_clip_call(
        self,
        id: str,
        windows: Sequence[Mapping[str, Any]],
        metadata: Mapping[str, Any] | None,
        model: Mapping[str, Any],
    ) -> _Call:
        """PUT /clips/{id}: windows embedded elsewhere (see ``put_clip``)."""
        body: dict[str, Any] = {"windows": [_window_body(w) for w in windows], "model": dict(model)}
        if metadata:
            body["metadata"] = dict(metadata)
        return _Call("PUT", f"/clips/{_path_id(id)}", json=body)

    def _wait_step(self, job: Job, poll: float, deadline: float | None) -> float:
        """Seconds to sleep before the next poll of an unfinished job; PemtError past the
        deadline."""
        if deadline is not None and time.monotonic() >= deadline:
            raise PemtError(
                0,
                "timeout",
                f"job {job.id} is still {job.state} ({job.progress.fraction:.0%}); it goes on "
                "on the server: wait for it again, or cancel it",
            )
        return poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic()))

    # --- retries and failures ----------------------------------------------------------------

    def _delay(self, attempt: int, resp: httpx.Response | None) -> float:
        ra = _retry_after(resp) if resp is not None else None
        d = ra if ra is not None else self._backoff * (2**attempt)
        return min(d, self._max_wait)

    def _outcome(
        self, call: _Call, attempt: int, resp: httpx.Response | None, error: Exception | None
    ) -> httpx.Response | float:
        """The answer to return, or seconds to wait before the next attempt; raises PemtError
        when there is nothing left to try."""
        if error is not None:
            if isinstance(error, _RETRY_ERRORS) and attempt < self._retries:
                return self._delay(attempt, None)
            raise self._failure(call, error, attempt + 1) from None
        assert resp is not None
        if resp.status_code < 400:
            return resp
        if resp.status_code not in _RETRY_STATUS or attempt >= self._retries:
            raise _error(resp)
        return self._delay(attempt, resp)

    def _failure(self, call: _Call, e: Exception, attempts: int) -> PemtError:
        what = f"{call.method} {self._url}{call.path}"
        tries = f"{attempts} attempt{'s' if attempts > 1 else ''}"
        if isinstance(e, httpx.ConnectError | httpx.ConnectTimeout):
            return PemtError(
                0,
                "unreachable",
                f"{what}: cannot connect ({str(e) or type(e).__name__}; {tries}); is the service "
                f"running there? Set the URL with --url or $PEMT_URL (default {DEFAULT_URL})",
            )
        if isinstance(e, httpx.TimeoutException):
            return PemtError(
                0,
                "timeout",
                f"{what}: no answer within read_timeout={self._timeout.read} s; the service may "
                "still be working on it: raise read_timeout (pemt-client --read-timeout)",
            )
        if isinstance(e, httpx.RemoteProtocolError | httpx.ReadError):
            return PemtError(
                0,
                "disconnected",
                f"{what}: the connection broke before the answer ({str(e) or type(e).__name__}; "
                f"{tries})",
            )
        return PemtError(0, "transport", f"{what}: {type(e).__name__}: {e}")


# --- sync ----------------------------------------------------------------------------------------


class PemtClient(_BaseClient):
    """Blocking client (see the module docstring for defaults, retries and errors)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 300.0,
        retries: int = 4,
        backoff: float = 0.5,
        max_wait: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(url, api_key, connect_timeout, read_timeout, retries, backoff, max_wait)
        self._http = httpx.Client(
            base_url=self._url, headers=self._headers(), timeout=self._timeout, transport=transport
        )

    def _send_once(self, call: _Call) -> httpx.Response:
        if call.upload is None:
            return self._http.request(
                call.method, call.path, params=call.params, json=call.json, data=call.data
            )
        with call.upload.stream() as file:
            return self._http.request(
                call.method, call.path, params=call.params, data=call.data, files={"file": file}
            )

    def _send(self, call: _Call) -> httpx.Response:
        attempt = 0
        while True:
            resp: httpx.Response | None = None
            error: Exception | None = None
            try:
                resp = self._send_once(call)
            except httpx.HTTPError as e:
                error = e
            outcome = self._outcome(call, attempt, resp, error)
            if isinstance(outcome, httpx.Response):
                return outcome
            time.sleep(outcome)
            attempt += 1

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
        """Embed a video (path, bytes or binary file); one item per window. Without ``id`` one
        is generated here (32 hex), so retries replace rather than duplicate."""
        call = self._embed_call(file, id, metadata, store, window, stride, filename, content_type)
        return _parse_embed(self._send(call).json())

    def search(
        self,
        *,
        file: FileLike | None = None,
        id: str | None = None,
        vector: Sequence[float] | None = None,
        k: int = 10,
        filter: Mapping[str, Any] | None = None,
        modality: SearchModality = "fused",
        window: float | None = None,
        stride: float | None = None,
    ) -> SearchResult:
        """Nearest stored items to an upload (``window``/``stride`` cut it like ``embed``), a
        stored id (its whole clip is left out of the results) or a vector. ``modality="best"``
        (an upload or an id) scores each item by its best shared vector and says which in
        ``Hit.modality``: it finds copies edited in the picture or the sound only."""
        call = self._search_call(file, id, vector, k, filter, modality, window, stride)
        return _parse_search(self._send(call).json())

    def classify(
        self,
        *,
        file: FileLike | None = None,
        id: str | None = None,
        vector: Sequence[float] | None = None,
        k: int = 10,
        filter: Mapping[str, Any] | None = None,
        modality: Modality = "fused",
        label_key: str = "label",
        window: float | None = None,
        stride: float | None = None,
    ) -> Classification:
        """k-NN vote on ``label_key`` among the neighbours (matching ``filter``) of an upload,
        a stored id or a vector."""
        call = self._classify_call(file, id, vector, k, filter, modality, label_key, window, stride)
        return _parse_classify(self._send(call).json())

    def get(self, id: str, *, vectors: bool = False) -> Clip:
        return _clip(self._send(self._get_call(id, vectors)).json())

    def delete(self, id: str) -> int:
        """Delete an item, or every window of a clip id; returns how many were removed."""
        return int(self._send(self._delete_call(id)).json()["deleted"])

    def list(
        self,
        offset: int = 0,
        limit: int = 100,
        *,
        clip_id: str | None = None,
        after: str | None = None,
    ) -> ClipPage:
        """Stored items in id order: after the cursor ``after`` (a page's ``next``; the way to
        walk everything) or from ``offset`` (small jumps); not both."""
        return _parse_page(self._send(self._list_call(offset, limit, clip_id, after)).json())

    def iter_clips(
        self, *, clip_id: str | None = None, page_size: int = 100, after: str | None = None
    ) -> Iterator[Clip]:
        """Every stored item (of one clip, with ``clip_id``; after the id ``after``, to resume a
        walk) in id order, page by page by cursor: each id once, equally fast at any depth;
        items written or deleted after the cursor during the walk show or vanish."""
        while True:
            page = self.list(0, page_size, clip_id=clip_id, after=after)
            yield from page.items
            if page.next is None:
                return
            after = page.next

    def thumbnail(self, id: str) -> bytes:
        """The window's middle frame as JPEG."""
        return self._send(self._thumbnail_call(id)).content

    def media(self, id: str) -> bytes:
        """The clip's source file as uploaded (when the service keeps it)."""
        return self._send(self._media_call(id)).content

    def info(self) -> dict[str, Any]:
        return dict(self._send(self._info_call()).json())

    def submit(
        self,
        file: FileLike | None = None,
        *,
        path: str | None = None,
        id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        window: float | None = None,
        stride: float | None = None,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> Job:
        """Queue a background job for a long video (an upload, or ``path`` of a file under the
        server's ``PEMT_JOB_ROOTS``); returns at once. Follow it with ``wait`` or ``job``."""
        call = self._submit_call(file, path, id, metadata, window, stride, filename, content_type)
        return _parse_job(self._send(call).json())

    def job(self, id: str) -> Job:
        return _parse_job(self._send(self._job_call(id)).json())

    def jobs(self, offset: int = 0, limit: int = 100, *, state: str | None = None) -> JobPage:
        return _parse_jobs(self._send(self._jobs_call(offset, limit, state)).json())

    def cancel(self, id: str) -> Job:
        """Cancel a queued or running job (nothing of it is stored); 409 once it ended."""
        return _parse_job(self._send(self._cancel_call(id)).json())

    def wait(
        self,
        id: str,
        *,
        poll: float = 1.0,
        timeout: float | None = None,
        progress: Callable[[Job], None] | None = None,
    ) -> Job:
        """Poll a job every ``poll`` s until it ends and return it (``state`` done, failed or
        cancelled: check it). ``progress`` gets every state read. Past ``timeout`` s:
        ``PemtError`` code ``timeout`` (the job goes on)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(id)
            if progress is not None:
                progress(job)
            if job.finished:
                return job
            time.sleep(self._wait_step(job, poll, deadline))

    def put_clip(
        self,
        id: str,
        windows: Sequence[Mapping[str, Any]],
        *,
        metadata: Mapping[str, Any] | None = None,
        model: Mapping[str, Any],
    ) -> builtins.list[str]:
        """Store a clip whose windows were embedded elsewhere, replacing any clip of that id.
        Each window: ``window`` (0..n-1), ``start``, ``end``, ``has_audio``, ``has_video``,
        ``vectors`` ({modality: D floats}; ``fused`` always) and ``thumbnail`` (JPEG bytes or
        None). ``model`` is the identity of the model that made them (``/info``'s
        ``model.identity``); another model is 409 ``model_mismatch``. Returns the item ids."""
        call = self._put_clip_call(id, windows, metadata, model)
        return list(self._send(call).json()["ids"])

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


# --- async ---------------------------------------------------------------------------------------


class AsyncPemtClient(_BaseClient):
    """The async twin of :class:`PemtClient` (same methods and arguments, awaitable)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 300.0,
        retries: int = 4,
        backoff: float = 0.5,
        max_wait: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(url, api_key, connect_timeout, read_timeout, retries, backoff, max_wait)
        self._http = httpx.AsyncClient(
            base_url=self._url, headers=self._headers(), timeout=self._timeout, transport=transport
        )

    async def _send_once(self, call: _Call) -> httpx.Response:
        files = None
        if call.upload is not None:
            u = call.upload
            files = {"file": (u.filename, u.read(), u.content_type)}
        return await self._http.request(
            call.method, call.path, params=call.params, json=call.json, data=call.data, files=files
        )

    async def _send(self, call: _Call) -> httpx.Response:
        attempt = 0
        while True:
            resp: httpx.Response | None = None
            error: Exception | None = None
            try:
                resp = await self._send_once(call)
            except httpx.HTTPError as e:
                error = e
            outcome = self._outcome(call, attempt, resp, error)
            if isinstance(outcome, httpx.Response):
                return outcome
            await asyncio.sleep(outcome)
            attempt += 1

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
        call = self._embed_call(file, id, metadata, store, window, stride, filename, content_type)
        return _parse_embed((await self._send(call)).json())

    async def search(
        self,
        *,
        file: FileLike | None = None,
        id: str | None = None,
        vector: Sequence[float] | None = None,
        k: int = 10,
        filter: Mapping[str, Any] | None = None,
        modality: SearchModality = "fused",
        window: float | None = None,
        stride: float | None = None,
    ) -> SearchResult:
        call = self._search_call(file, id, vector, k, filter, modality, window, stride)
        return _parse_search((await self._send(call)).json())

    async def classify(
        self,
        *,
        file: FileLike | None = None,
        id: str | None = None,
        vector: Sequence[float] | None = None,
        k: int = 10,
        filter: Mapping[str, Any] | None = None,
        modality: Modality = "fused",
        label_key: str = "label",
        window: float | None = None,
        stride: float | None = None,
    ) -> Classification:
        call = self._classify_call(file, id, vector, k, filter, modality, label_key, window, stride)
        return _parse_classify((await self._send(call)).json())

    async def get(self, id: str, *, vectors: bool = False) -> Clip:
        return _clip((await self._send(self._get_call(id, vectors))).json())

    async def delete(self, id: str) -> int:
        return int((await self._send(self._delete_call(id))).json()["deleted"])

    async def list(
        self,
        offset: int = 0,
        limit: int = 100,
        *,
        clip_id: str | None = None,
        after: str | None = None,
    ) -> ClipPage:
        call = self._list_call(offset, limit, clip_id, after)
        return _parse_page((await self._send(call)).json())

    async def iter_clips(
        self, *, clip_id: str | None = None, page_size: int = 100, after: str | None = None
    ) -> AsyncIterator[Clip]:
        while True:
            page = await self.list(0, page_size, clip_id=clip_id, after=after)
            for c in page.items:
                yield c
            if page.next is None:
                return
            after = page.next

    async def thumbnail(self, id: str) -> bytes:
        return (await self._send(self._thumbnail_call(id))).content

    async def media(self, id: str) -> bytes:
        return (await self._send(self._media_call(id))).content

    async def info(self) -> dict[str, Any]:
        return dict((await self._send(self._info_call())).json())

    async def submit(
        self,
        file: FileLike | None = None,
        *,
        path: str | None = None,
        id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        window: float | None = None,
        stride: float | None = None,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> Job:
        call = self._submit_call(file, path, id, metadata, window, stride, filename, content_type)
        return _parse_job((await self._send(call)).json())

    async def job(self, id: str) -> Job:
        return _parse_job((await self._send(self._job_call(id))).json())

    async def jobs(self, offset: int = 0, limit: int = 100, *, state: str | None = None) -> JobPage:
        return _parse_jobs((await self._send(self._jobs_call(offset, limit, state))).json())

    async def cancel(self, id: str) -> Job:
        return _parse_job((await self._send(self._cancel_call(id))).json())

    async def wait(
        self,
        id: str,
        *,
        poll: float = 1.0,
        timeout: float | None = None,
        progress: Callable[[Job], None] | None = None,
    ) -> Job:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = await self.job(id)
            if progress is not None:
                progress(job)
            if job.finished:
                return job
            await asyncio.sleep(self._wait_step(job, poll, deadline))

    async def put_clip(
        self,
        id: str,
        windows: Sequence[Mapping[str, Any]],
        *,
        metadata: Mapping[str, Any] | None = None,
        model: Mapping[str, Any],
    ) -> builtins.list[str]:
        call = self._put_clip_call(id, windows, metadata, model)
        return list((await self._send(call)).json()["ids"])

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
