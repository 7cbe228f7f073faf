"""The service's own errors: a stable machine-readable ``code`` and a message that says what to
do. Nothing here knows HTTP; ``server.api.errors`` is the one place that maps these classes to
status codes and headers.

Rule of thumb for which class to raise: the request is wrong (a field, an id, the body's
shape) -> ``InvalidRequest``; the request is fine but its content cannot be used (a media file
that does not decode, a stored item without the asked modality) -> ``MediaRejected`` /
``Unprocessable``; the service cannot take it now -> ``Busy`` / ``NotReady`` / ``StorageFull``.
"""

from __future__ import annotations

import errno
import sqlite3

__all__ = [
    "Busy",
    "Conflict",
    "Forbidden",
    "InvalidRequest",
    "MediaRejected",
    "NotFound",
    "NotReady",
    "RangeNotSatisfiable",
    "ServiceError",
    "StorageFull",
    "TooLarge",
    "Unauthorized",
    "Unprocessable",
    "UnsupportedType",
    "UploadTimeout",
    "is_storage_full",
]


class ServiceError(Exception):
    """Base class. ``code`` is stable (clients branch on it); ``retry_after_s`` is set when
    trying again later can succeed."""

    code: str = "error"
    retry_after_s: int | None = None

    def __init__(
        self, message: str, *, code: str | None = None, retry_after_s: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if retry_after_s is not None:
            self.retry_after_s = retry_after_s


class InvalidRequest(ServiceError):
    """A field, an id or the body itself is wrong; the message names the fix."""

    code = "invalid_request"


class Unauthorized(ServiceError):
    code = "unauthorized"


class Forbidden(ServiceError):
    """The request names something the service may not touch (a path outside the allow-list)."""

    code = "forbidden"


class NotFound(ServiceError):
    code = "not_found"


class Conflict(ServiceError):
    """The request contradicts the service's state (vectors from another model, a finished
    job); the message says what differs."""

    code = "conflict"


class UploadTimeout(ServiceError):
    """The client stopped sending the body, or sent it slower than the minimum rate."""

    code = "upload_timeout"


class TooLarge(ServiceError):
    code = "too_large"


class UnsupportedType(ServiceError):
    """The body (or the uploaded file) has a content type the route does not take."""

    code = "unsupported_media_type"


class RangeNotSatisfiable(ServiceError):
    """A byte range outside a file of ``size`` bytes."""

    code = "range_not_satisfiable"

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size


class MediaRejected(ServiceError):
    """The upload does not decode; ``code`` is pemt.media's stable reason (``not_media``,
    ``corrupt``, ``too_long``, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


class Unprocessable(ServiceError):
    """A well-formed request whose content cannot be used (e.g. an item without the asked
    modality, an upload with no usable signal)."""

    code = "unprocessable"


class Busy(ServiceError):
    code = "busy"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, retry_after_s=retry_after_s)


class NotReady(ServiceError):
    code = "not_ready"


class StorageFull(ServiceError):
    """The data directory has no room: nothing was stored, what was stored before is intact."""

    code = "storage_full"
    retry_after_s = 60


_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def is_storage_full(exc: BaseException) -> bool:
    """True for the ways a full disk surfaces: ``OSError`` ENOSPC / EDQUOT / EFBIG, and
    SQLite's SQLITE_FULL ("database or disk is full")."""
    if isinstance(exc, OSError):
        return exc.errno in _FULL_ERRNOS
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or (
            "disk is full" in str(exc)
        )
    return False
