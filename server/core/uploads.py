"""Multipart uploads streamed to a temp file in data_dir, size-limited while streaming.

Starlette's form parser spools a whole file before the route sees it and knows no size limit;
this parser writes chunks as they arrive and stops at ``max_bytes`` (413). The file's name on
disk is random; nothing from the request reaches a path.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from server.core.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

__all__ = ["Upload", "is_multipart", "receive_upload"]

MAX_FIELD_BYTES = 64 * 1024
MAX_FIELDS = 32
# after the limit is hit, read (and drop) at most this much more so the client sees the 413
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
                BadRequest("a multipart part lacks Content-Disposition: form-data; name=...")
            )
            return
        self.name = name.decode("utf-8", "replace")
        filename = opts.get(b"filename")
        self.is_file = filename is not None
        if not self.is_file:
            if len(self.upload.fields) >= MAX_FIELDS:
                self._fail(BadRequest(f"too many form fields (at most {MAX_FIELDS})"))
            return
        if self.name != self.file_field:
            self._fail(
                BadRequest(
                    f"unexpected file field {self.name!r}; send the video as {self.file_field!r}"
                )
            )
            return
        if self.upload.path is not None:
            self._fail(BadRequest(f"send exactly one file in field {self.file_field!r}"))
            return
        ctype = (
            self.headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        )
        if ctype not in ACCEPTED_EXACT and not ctype.startswith(ACCEPTED_TYPES):
            self._fail(
                UnsupportedMediaType(
                    f"file content type {ctype!r} is not a video; send video/* (e.g. video/mp4) or "
                    "application/octet-stream"
                )
            )
            return
        self.upload.filename = filename.decode("utf-8", "replace")[:255] if filename else None
        self.upload.content_type = ctype or None
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name_on_disk = tempfile.mkstemp(prefix="upload-", suffix=".bin", dir=self.tmp_dir)
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
            self.fh.write(data[start:end])
        elif not self.is_file:
            self.value += data[start:end]
            if len(self.value) > MAX_FIELD_BYTES:
                self._fail(BadRequest(f"form field {self.name!r} exceeds {MAX_FIELD_BYTES} bytes"))

    def on_part_end(self) -> None:
        if self.error is not None:
            return
        if self.is_file and self.fh is not None:
            self.fh.close()
            self.fh = None
        elif self.name is not None and not self.is_file:
            try:
                self.upload.fields[self.name] = self.value.decode("utf-8")
            except UnicodeDecodeError:
                self._fail(BadRequest(f"form field {self.name!r} is not UTF-8 text"))

    def _fail(self, e: Exception) -> None:
        if self.error is None:
            self.error = e

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None


@contextlib.asynccontextmanager
async def receive_upload(
    request: Request,
    tmp_dir: Path,
    max_bytes: int,
    file_field: str = "file",
    require_file: bool = True,
) -> AsyncIterator[Upload]:
    """Stream a multipart body; yields the Upload and deletes its temp file afterwards."""
    ctype, opts = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data":
        raise UnsupportedMediaType(
            f"expected multipart/form-data with the video in field {file_field!r}, "
            f"got {ctype.decode('latin-1') or 'no content type'!r}"
        )
    boundary = opts.get(b"boundary")
    if not boundary:
        raise BadRequest("multipart/form-data without a boundary")
    limit_msg = f"upload exceeds the limit of {max_bytes} bytes; send a smaller or shorter file"
    declared = request.headers.get("content-length")
    if (
        declared
        and declared.isdigit()
        and int(declared) > max_bytes + MAX_FIELDS * MAX_FIELD_BYTES + DRAIN_BYTES
    ):
        raise PayloadTooLarge(limit_msg)
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
    parser = MultipartParser(boundary, callbacks)
    t0 = time.perf_counter()
    drained = 0
    try:
        try:
            async for chunk in request.stream():
                if state.too_large or state.error is not None:
                    drained += len(chunk)  # let the client finish sending, then answer
                    if drained > DRAIN_BYTES:
                        break
                    continue
                parser.write(chunk)
            if not state.too_large and state.error is None:
                parser.finalize()
        except Exception as e:
            if state.error is None and not state.too_large:
                state.error = BadRequest(
                    f"malformed multipart body ({e}); send multipart/form-data"
                )
        finally:
            state.close()
        if state.too_large:
            raise PayloadTooLarge(limit_msg)
        if state.error is not None:
            raise state.error
        if require_file and state.upload.path is None:
            raise BadRequest(f"no file in the form; send the video in field {file_field!r}")
        state.upload.seconds = time.perf_counter() - t0
        yield state.upload
    finally:
        if state.upload.path is not None:
            with contextlib.suppress(OSError):
                state.upload.path.unlink()


async def drain(request: Request, limit: int = DRAIN_BYTES) -> None:
    """Read and drop up to ``limit`` bytes of the body, so an early error reaches the client."""
    n = 0
    with contextlib.suppress(Exception):
        async for chunk in request.stream():
            n += len(chunk)
            if n > limit:
                break
