"""Typed media errors. Each has a stable ``code`` (the server returns it) and a message that
says what is wrong and what to do about it."""

from __future__ import annotations

__all__ = [
    "CorruptMediaError",
    "DecodeTimeoutError",
    "EmptyMediaError",
    "LimitError",
    "MediaError",
    "MissingModalityError",
    "NoStreamError",
    "NotMediaError",
]


class MediaError(ValueError):
    """Bad media input. ``code`` is a stable machine-readable reason."""

    code: str = "media_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    def __reduce__(self):  # keep ``code`` across pickling (process pools)
        return (_rebuild, (type(self), str(self), self.code))


def _rebuild(cls: type[MediaError], message: str, code: str) -> MediaError:
    err = cls.__new__(cls)
    MediaError.__init__(err, message, code=code)
    return err


class NotMediaError(MediaError):
    """Not an audio or video file at all (text, an image, random bytes)."""

    code = "not_media"


class NoStreamError(MediaError):
    """A media container without any audio or video stream that can be decoded."""

    code = "no_stream"


class EmptyMediaError(MediaError):
    """Zero bytes, or streams that hold no frames or samples (zero duration)."""

    code = "empty"


class CorruptMediaError(MediaError):
    """A media file whose data cannot be decoded (damaged or truncated)."""

    code = "corrupt"


class LimitError(MediaError):
    """Over a :class:`~pemt.media.DecodeLimits` bound: ``too_long``, ``too_large`` or
    ``resolution``."""

    code = "too_large"
    CODES = ("too_long", "too_large", "resolution")

    def __init__(self, message: str, *, code: str = "too_large") -> None:
        assert code in self.CODES, code
        super().__init__(message, code=code)


class DecodeTimeoutError(MediaError):
    """Decoding took longer than ``DecodeLimits.time_budget_s``."""

    code = "timeout"


class MissingModalityError(MediaError):
    """``require_audio`` / ``require_video`` was set and the file lacks that stream:
    ``missing_audio`` or ``missing_video``."""

    code = "missing_audio"
    CODES = ("missing_audio", "missing_video")

    def __init__(self, message: str, *, code: str = "missing_audio") -> None:
        assert code in self.CODES, code
        super().__init__(message, code=code)
