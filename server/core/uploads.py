"""Request bodies, read with time and size limits before any job slot is taken.

``body_chunks`` yields the body as it arrives and raises ``UploadTimeout`` when no byte comes
for ``idle_s`` seconds, or when, after that grace period, the body has arrived slower on average
than ``min_rate`` bytes/s (a client dribbling 2 bytes/s is cut off after about ``idle_s``).
``read_body`` collects a small body (JSON) that way; ``receive_upload`` streams a multipart
upload to a temp file in the data directory.

Starlette's form parser spools a whole file before the route sees it and knows no size limit;
``receive_upload`` writes chunks as they arrive and stops at ``max_bytes`` (``TooLarge``). The
file's name on disk is random; nothing from the request reaches a path. A full disk is
``StorageFull`` (refused up front when the declared length would leave less than ``min_free``
bytes, or when a write fails with ENOSPC); the partial file is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from server.core.errors import (
    InvalidRequest,
    StorageFull,
    TooLarge,
    UnsupportedType,
    UploadTimeout,
    is_storage_full,
)

__all__ = [
    "ReadLimits",
    "Upload",
    "body_chunks",
    "check_room",
    "free_bytes",
    "is_multipart",
    "read_body",
    "receive_upload",
]

MAX_FIELD_BYTES = 64 * 1024
MAX_FIELDS = 32
# after a limit is hit, read (and drop) at most this much more so the client sees the answer
DRAIN_BYTES = 16 * 1024 * 1024
ACCEPTED_TYPES = ("video/", "audio/")
ACCEPTED_EXACT = {
    "",
    "application/octet-stream",
    "application/mp4",
    "application/ogg",
    "application/x-matroska",
    "application/vnd.rn-realmedia",
}


@dataclass(frozen=True)
class ReadLimits:
    """How slowly a body may arrive: ``idle_s`` without a byte, and after that grace period
    ``min_rate`` bytes/s on average (0: no minimum rate)."""

    idle_s: float = 30.0
    min_rate: int = 16 * 1024


@dataclass
class Upload:
    path: Path | None = None
    filename: str | None = None
    content_type: str | None = None
    size: int = 0
    fields: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def is_multipart(request: Request) -> bool:
    ctype, _ = parse_options_header(request.headers.get("content-type", ""))
    return ctype == b"multipart/form-data"


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the file system holding ``path`` (or,
    while it does not exist, its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return int(shutil.disk_usage(path).free)


def check_room(path: Path, need: int, min_free: int) -> None:
    """Raise ``StorageFull`` unless ``need`` more bytes leave at least ``min_free`` free."""
    free = free_bytes(path)
    if free - need < min_free:
        raise StorageFull(
            f"the server's data directory has {free} bytes free, too little to take "
            f"{need} more bytes and keep {min_free} in reserve; nothing was stored, try again "
            "later (the operator must free space)"
        )


def _full(exc: BaseException) -> StorageFull:
    return StorageFull(
        f"the server's data directory is full ({exc.__class__.__name__}: "
        f"{getattr(exc, 'strerror', None) or exc}); nothing was stored, try again later "
        "(the operator must free space)"
    )


async def body_chunks(request: Request, limits: ReadLimits) -> AsyncIterator[bytes]:
    """The request body chunk by chunk, or ``UploadTimeout`` when it stalls or crawls."""
    stream = request.stream().__aiter__()
    loop = asyncio.get_running_loop()
    start = loop.time()
    received = 0
    while True:
        now = loop.time()
        wait = limits.idle_s
        if limits.min_rate:
            # the body may take idle_s, plus one second per min_rate bytes received
            wait = min(wait, start + limits.idle_s + received / limits.min_rate - now)
        try:
            if wait <= 0:
                raise TimeoutError
            chunk = await asyncio.wait_for(stream.__anext__(), wait)
        except StopAsyncIteration:
            return
        except ClientDisconnect:  # nobody reads the answer; a client error, not a server one
            raise InvalidRequest(
                f"the client disconnected after {received} bytes of the body",
                code="client_disconnected",
            ) from None
        except TimeoutError:
            elapsed = loop.time() - start
            raise UploadTimeout(
                f"the request body stopped arriving or came too slowly ({received} bytes in "
                f"{elapsed:.0f} s; the server waits {limits.idle_s:g} s for each part and "
                f"needs at least {limits.min_rate} bytes/s on average); send it again over a "
                "faster connection"
            ) from None
        received += len(chunk)
        yield chunk


async def read_body(request: Request, max_bytes: int, limits: ReadLimits) -> bytes:
    """A whole (small) body: ``TooLarge`` over ``max_bytes``, ``UploadTimeout`` when slow."""
    msg = f"the body is larger than {max_bytes} bytes; send less"
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise TooLarge(msg)
    body = bytearray()
    async for chunk in body_chunks(request, limits):
        body += chunk
        if len(body) > max_bytes:
            raise TooLarge(msg)
    return bytes(body)


class _State:
    def __init__(self, tmp_dir: Path, max_bytes: int, file_field: str) -> None:
        self.tmp_dir = tmp_dir
        self.max_bytes = max_bytes
        self.file_field = file_field
        self.upload = Upload()
        self.header_field = b""
        self.header_value = b""
        self.headers: dict[bytes, bytes] = {}
        self.name: str | None = None
        self.is_file = False
        self.value = bytearray()
        self.fh: IO[bytes] | None = None
        self.too_large = False
        self.error: Exception | None = None

    # --- parser callbacks ------------------------------------------------------------------
    def on_part_begin(self) -> None:
        self.headers, self.name, self.is_file, self.value = {}, None, False, bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[self.header_field.lower()] = self.header_value
        self.header_field, self.header_value = b"", b""

    def on_headers_finished(self) -> None:
        disp, opts = parse_options_header(self.headers.get(b"content-disposition", b""))
        name = opts.get(b"name")
        if disp != b"form-data" or name is None:
            self._fail(
                InvalidRequest("a multipart part lacks Content-Disposition: form-data; name=...")
            )
            return
        self.name = name.decode("utf-8", "replace")
        filename = opts.get(b"filename")
        self.is_file = filename is not None
        if not self.is_file:
            if len(self.upload.fields) >= MAX_FIELDS:
                self._fail(InvalidRequest(f"too many form fields (at most {MAX_FIELDS})"))
            return
        if self.name != self.file_field:
            self._fail(
                InvalidRequest(
                    f"unexpected file field {self.name!r}; send the video as {self.file_field!r}"
                )
            )
            return
        if self.upload.path is not None:
            self._fail(InvalidRequest(f"send exactly one file in field {self.file_field!r}"))
            return
        ctype = (
            self.headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        )
        if ctype not in ACCEPTED_EXACT and not ctype.startswith(ACCEPTED_TYPES):
            self._fail(
                UnsupportedType(
                    f"file content type {ctype!r} is not a video; send video/* (e.g. video/mp4) or "
                    "application/octet-stream"
                )
            )
            return
        self.upload.filename = filename.decode("utf-8", "replace")[:255] if filename else None
        self.upload.content_type = ctype or None
        try:
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            fd, name_on_disk = tempfile.mkstemp(prefix="upload-", suffix=".bin", dir=self.tmp_dir)
        except OSError as e:
            self._disk_error(e)
            return
        self.upload.path = Path(name_on_disk)
        self.fh = os.fdopen(fd, "wb")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.error is not None or self.too_large:
            return
        n = end - start
        if self.is_file and self.fh is not None:
            self.upload.size += n
            if self.upload.size > self.max_bytes:
                self.too_large = True
                return
            try:
                self.fh.write(data[start:end])
            except OSError as e:
                self._disk_error(e)
        elif not self.is_file:
            self.value += data[start:end]
            if len(self.value) > MAX_FIELD_BYTES:
                self._fail(
                    InvalidRequest(f"form field {self.name!r} exceeds {MAX_FIELD_BYTES} bytes")
                )

    def on_part_end(self) -> None:
        if self.error is not None:
            return
        if self.is_file and self.fh is not None:
            self.close()
        elif self.name is not None and not self.is_file:
            try:
                self.upload.fields[self.name] = self.value.decode("utf-8")
            except UnicodeDecodeError:
                self._fail(InvalidRequest(f"form field {self.name!r} is not UTF-8 text"))

    def _fail(self, e: Exception) -> None:
        if self.error is None:
            self.error = e

    def _disk_error(self, e: OSError) -> None:
        """A full disk is the client's answer (507); any other I/O error is the server's."""
        if not is_storage_full(e):
            raise e
        self._fail(_full(e))
        with contextlib.suppress(OSError):
            self.close()

    def close(self) -> None:
        fh, self.fh = self.fh, None
        if fh is not None:
            try:
                fh.close()  # flushes the last buffered bytes: the disk can fill here too
            except OSError as e:
                self._disk_error(e)


@contextlib.asynccontextmanager
async def receive_upload(
    request: Request,
    tmp_dir: Path,
    max_bytes: int,
    limits: ReadLimits,
    *,
    min_free: int = 0,
    file_field: str = "file",
    require_file: bool = True,
) -> AsyncIterator[Upload]:
    """Stream a multipart body; yields the Upload and deletes its temp file afterwards."""
    ctype, opts = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data":
        raise UnsupportedType(
            f"expected multipart/form-data with the video in field {file_field!r}, "
            f"got {ctype.decode('latin-1') or 'no content type'!r}"
        )
    boundary = opts.get(b"boundary")
    if not boundary:
        raise InvalidRequest("multipart/form-data without a boundary")
    limit_msg = f"upload exceeds the limit of {max_bytes} bytes; send a smaller or shorter file"
    declared = request.headers.get("content-length", "")
    need = int(declared) if declared.isdigit() else 0
    if need > max_bytes + MAX_FIELDS * MAX_FIELD_BYTES + DRAIN_BYTES:
        raise TooLarge(limit_msg)
    check_room(tmp_dir, min(need, max_bytes), min_free)
    state = _State(tmp_dir, max_bytes, file_field)
    callbacks: Any = {
        "on_part_begin": state.on_part_begin,
        "on_part_data": state.on_part_data,
        "on_part_end": state.on_part_end,
        "on_header_field": state.on_header_field,
        "on_header_value": state.on_header_value,
        "on_header_end": state.on_header_end,
        "on_headers_finished": state.on_headers_finished,
    }
    t0 = time.perf_counter()
    drained = 0
    try:
        try:
            parser = MultipartParser(boundary, callbacks)
            async for chunk in body_chunks(request, limits):
                if state.too_large or state.error is not None:
                    drained += len(chunk)  # let the client finish sending, then answer
                    if drained > DRAIN_BYTES:
                        break
                    continue
                parser.write(chunk)
            if not state.too_large and state.error is None:
                parser.finalize()
        except FormParserError as e:
            state._fail(InvalidRequest(f"malformed multipart body ({e}); send multipart/form-data"))
        finally:
            state.close()
        if state.too_large:
            raise TooLarge(limit_msg)
        if state.error is not None:
            raise state.error
        if require_file and state.upload.path is None:
            raise InvalidRequest(f"no file in the form; send the video in field {file_field!r}")
        state.upload.seconds = time.perf_counter() - t0
        yield state.upload
    finally:
        if state.upload.path is not None:
            with contextlib.suppress(OSError):
                state.upload.path.unlink()
