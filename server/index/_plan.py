"""Query planning for the FAISS store: how a filtered search is answered.

Filters are exact matches on top-level scalar metadata values, indexed in the ``tags`` table
(``name``, canonical value, key). A condition is ``(name, canonical value)``, or
``(name, None)``: the key is present with a non-null scalar value (what ``classify`` asks of
its label key).

The matches are counted first (an index lookup). A broad filter searches FAISS with an
over-fetch of 2 k n / matches + 16 hits and drops non-matching ones, growing the fetch until k
hits are found or the index is exhausted. A selective filter, one matching at most
``prefilter_max`` items (default 2,000) or fewer items than that over-fetch would read, is
answered exactly instead: the matching rows' vectors are read from SQLite and scored with
numpy (about 6 us a row here), which also finds matches an approximate index would miss.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .types import is_scalar, matches

__all__ = ["Condition", "condition_matches", "fetch_size", "prefilter", "tag_query"]

Condition = tuple[str, str | None]


def tag_query(conditions: list[Condition]) -> tuple[str, list[str]]:
    """SQL selecting the keys matching every condition, and its arguments."""
    parts, args = [], []
    for name, value in conditions:
        if value is None:
            parts.append("SELECT key FROM tags WHERE name=? AND value != 'null'")
            args.append(name)
        else:
            parts.append("SELECT key FROM tags WHERE name=? AND value=?")
            args += [name, value]
    return " INTERSECT ".join(parts), args


def condition_matches(metadata: Mapping[str, Any], conditions: list[Condition]) -> bool:
    """The Python side of ``tag_query`` (checked again on every row a search returns)."""
    for name, value in conditions:
        if value is None:
            if metadata.get(name) is None or not is_scalar(metadata[name]):
                return False
        elif not matches(metadata, [(name, value)]):
            return False
    return True


def fetch_size(k: int, n_total: int, n_match: int, filtered: bool) -> int:
    """How many FAISS hits to read for k results: k, or with a filter or exclusions the
    inverse selectivity times 2 k, plus 16."""
    if not filtered:
        return k
    return int(2 * k * max(1.0, n_total / max(n_match, 1))) + 16


def prefilter(prefilter_max: int, n_match: int, fetch: int) -> bool:
    """Answer exactly from the matching rows instead of over-fetching from FAISS?"""
    return bool(prefilter_max) and n_match <= max(prefilter_max, fetch)
