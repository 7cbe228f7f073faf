"""The one id model of the service.

- An **item** is one stored window. A **clip** is one uploaded video: all items sharing its
  ``clip_id``. A clip that gives one window is stored as one item under the clip id itself; a
  longer one as ``"{clip}#w{i}"`` (``i`` = window index).
- An id in any route names an item (exact match first) or else a clip. Routes that act on one
  thing act on the item, or, for a clip id, on the whole clip (``GET`` summarises it, ``DELETE``
  removes every window, ``/media`` serves its source, an id query searches with it).
- Ids: 1-128 characters from ``A-Z a-z 0-9 . _ : # -``, starting with a letter or digit. A clip
  id (what ``/embed`` takes) has no ``#``.

The patterns have no anchors: match with ``fullmatch`` (``re``'s ``$`` also matches before a
trailing newline, which let ``"abc\\n"`` through). ``ID_REGEX`` / ``CLIP_ID_REGEX`` are the same
rules anchored for JSON Schema (ECMA-262, where ``$`` is the end of the string).
"""

from __future__ import annotations

import re

__all__ = [
    "CLIP_ID_PATTERN",
    "CLIP_ID_REGEX",
    "ID_PATTERN",
    "ID_REGEX",
    "MAX_ID_LENGTH",
    "validate_clip_id",
    "validate_id",
    "window_id",
]

MAX_ID_LENGTH = 128
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:#-]{0,127}")
CLIP_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
ID_REGEX = "^" + ID_PATTERN.pattern + "$"
CLIP_ID_REGEX = "^" + CLIP_ID_PATTERN.pattern + "$"


def validate_id(value: object, what: str = "id") -> str:
    """Return ``value`` if it is a valid item or clip id, else raise ``ValueError`` saying the
    rule."""
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise ValueError(
            f"invalid {what} {_shown(value)}: use 1-{MAX_ID_LENGTH} characters from "
            "A-Z a-z 0-9 . _ : # -, starting with a letter or digit"
        )
    return value


def validate_clip_id(value: object, what: str = "id") -> str:
    """Like ``validate_id``, and without ``#`` (reserved for window ids)."""
    validate_id(value, what)
    assert isinstance(value, str)
    if "#" in value:
        raise ValueError(
            f"{what} {_shown(value)} must not contain '#': window ids are '{{id}}#w{{i}}'"
        )
    return value


def window_id(clip_id: str, index: int, windows: int) -> str:
    """The item id of window ``index`` of a clip that gave ``windows`` windows."""
    return f"{clip_id}#w{index}" if windows > 1 else clip_id


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
