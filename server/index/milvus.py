"""The Milvus backend: one Milvus collection that any number of API processes share.

Same semantics as the FAISS store (``base.py``), on Milvus (standalone or cluster in
production; ``milvus-lite server`` in the tests), through pymilvus's ``MilvusClient``.

Collection (one row per item; created on first start, checked on every start):

    id VARCHAR(128) primary key | clip_id VARCHAR ("" = none) | start, end DOUBLE (nullable)
    metadata JSON | tags VARCHAR | has_thumbnail BOOL | created_at, updated_at DOUBLE
    vec_<modality> FLOAT_VECTOR(D) and has_<modality> BOOL, one pair per modality

- Vectors are stored L2-normalized and searched with the ``IP`` metric (= cosine, as FAISS).
  An item without a modality stores a zero vector there and ``has_<m> = false``; every
  search of a modality filters on ``has_<m>``, so it never comes back.
- Filters: each top-level scalar metadata value is indexed as an opaque tag, a hash of
  ``[key, canonical JSON value]`` (``types.canonical_value``: ``"1"``, ``1`` and ``true``
  differ, ``1.0 == 1``), plus a presence tag ``[key]`` for non-null values (what ``classify``
  asks of its label key), stored as one string ``|t1|t2|...|``. A filter is ``tags like
  "%|t|%"`` per condition, ANDed, and Milvus applies it inside the vector search (no
  over-fetch). Exclusions are ``not (id in [...])``. Hashing keeps the match exact whatever
  the JSON type rules of the server are. (A string rather than an ARRAY field: milvus-lite
  evaluates ``like`` vectorized and array functions row by row, 16 vs 520 ms a search over
  20k rows; Milvus 2.6 can index ``like`` with an NGRAM index.) At most ``MAX_TAGS // 2``
  scalar metadata values per item.
- Thumbnails are files in a directory every replica shares (the media volume):
  ``<dir>/<id as a file name>.jpg``, written (fsynced, renamed) before the rows that say
  ``has_thumbnail``, removed after the rows that no longer do.
- The model that writes the collection is its property ``pemt.model`` (``model_identity``).

Durability and consistency. A write is acknowledged when Milvus's ``upsert``/``delete``
returns: Milvus acknowledges a write once it is in its write-ahead log (the message storage:
Woodpecker, Pulsar or Kafka in production; for milvus-lite, its WAL file, written to the OS
before it answers, so it survives kill -9 of any process, not power loss of its host). No
``flush`` per write: flush seals growing segments into object storage, Milvus rate-limits it,
and it adds nothing to durability once the log has the write. Reads (search, query, count)
use consistency level ``Strong``: they wait until every write acknowledged before them is
visible, so a clip embedded through one replica is found through any other at once, and the
replace-then-delete of a clip's windows (``store_clip``) sees its own writes. (``Bounded``
would be faster and can miss writes of the last seconds; ``Session`` guarantees read-your-
writes only within one client, one replica.)

Costs. ``list`` pages in id order through pymilvus's query iterator (Milvus queries have no
ORDER BY; the iterator walks primary keys in order): a page after a cursor (``after``) is one
query of ``limit`` rows at any depth; a page at ``offset`` walks ``offset`` ids first. ``count``
is a ``count(*)`` query (of one clip: filtered by ``clip_id``, on its INVERTED index).
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Collection, Generator, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ._vote import vote
from .base import IndexMissingError, IndexUnavailableError
from .types import (
    DEFAULT_MODALITIES,
    MAX_K,
    Classification,
    Hit,
    Item,
    Record,
    as_vector,
    check_page,
    prepare_record,
    validate_filter,
    validate_id,
)

__all__ = ["MilvusIndex", "tag"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class _NoMvccNotice(logging.Filter):
    """milvus-lite answers no MVCC timestamp; pymilvus's query iterator then warns on every
    call and uses the client's clock, which is what we want (reads are Strong anyway)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "failed to get mvccTs" not in record.getMessage()


logging.getLogger("pymilvus.client.iterator.query_iterator").addFilter(_NoMvccNotice())

SCHEMA_VERSION = "1"
MAX_ID = 128
TAG_LEN = 32
MAX_TAGS = 65535 // (TAG_LEN + 1) - 1  # what fits a VARCHAR of Milvus's largest size
CONSISTENCY = "Strong"
_ROW_FIELDS = [
    "id", "clip_id", "start", "end", "metadata", "has_thumbnail", "created_at", "updated_at",
]  # fmt: skip
_PAGE = 10_000


def tag(name: str, value: str | None) -> str:
    """The tag of a condition: ``value`` a canonical JSON value, or None for 'present, not
    null'. A hash: fixed length, no quoting in expressions, exact (128 bits)."""
    key = json.dumps([name] if value is None else [name, value])
    return hashlib.sha256(key.encode()).hexdigest()[:TAG_LEN]


def _lit(value: str) -> str:
    """A string literal for a Milvus boolean expression."""
    return json.dumps(value)


def _vf(modality: str) -> str:
    return f"vec_{modality}"


def _has(modality: str) -> str:
    return f"has_{modality}"


_NOT_LOADED = 101  # Milvus's CollectionNotLoaded (e.g. milvus-lite after a restart)


def _unavailable(fn: Callable[..., T]) -> Callable[..., T]:
    """Turn pymilvus and gRPC failures into ``IndexUnavailableError`` (503 at the API). A
    collection that Milvus released (a restarted milvus-lite) is loaded again, once."""

    @functools.wraps(fn)
    def wrapper(self: MilvusIndex, *args: Any, **kwargs: Any) -> T:
        for attempt in (0, 1):
            try:
                return fn(self, *args, **kwargs)
            except (ValueError, KeyError, IndexMissingError):
                raise
            except Exception as exc:
                if type(exc).__module__.split(".")[0] not in ("pymilvus", "grpc"):
                    raise
                if attempt == 0 and getattr(exc, "code", None) == _NOT_LOADED:
                    with contextlib.suppress(Exception):
                        self._c().load_collection(self.collection, timeout=self.timeout_s)
                        continue
                raise IndexUnavailableError(
                    f"Milvus at {self.uri} (collection {self.collection!r}) failed: "
                    f"{' '.join(str(exc).split())[:300]}; retry, and check that Milvus is up"
                ) from None
        raise AssertionError("unreachable")

    return wrapper


class MilvusIndex:
    """A PEMT index in one Milvus collection (see the module docstring).

    Args:
        uri: Milvus endpoint, e.g. ``http://milvus:19530``.
        collection: collection name; created if missing (needs ``dim``) unless ``create=False``.
        dim: vector dimension D; checked against an existing collection.
        thumbnails: the shared directory for thumbnail files (created if missing).
        token: Milvus credentials (``user:password`` or an API key), "" for none.
        db_name: Milvus database ("" = default).
        index_type / index_params: the vector index of every modality (``HNSW`` with ``M``,
            ``efConstruction``; ``IVF_FLAT`` with ``nlist``; ``FLAT``; ``AUTOINDEX``; on a GPU
            Milvus ``GPU_CAGRA`` ...), metric ``IP``. Fixed at creation.
        search_params: per-search parameters (``ef`` for HNSW, ``nprobe`` for IVF).
        timeout_s: per-call timeout.

    Raises ``IndexUnavailableError`` when Milvus cannot be reached, ``IndexMissingError`` with
    ``create=False`` and no collection, ``ValueError`` for a collection of another shape.
    """

    backend = "milvus"

    def __init__(
        self,
        uri: str,
        collection: str = "pemt",
        dim: int | None = None,
        *,
        thumbnails: str | os.PathLike[str],
        modalities: Collection[str] = DEFAULT_MODALITIES,
        token: str = "",
        db_name: str = "",
        index_type: str = "HNSW",
        index_params: Mapping[str, Any] | None = None,
        search_params: Mapping[str, Any] | None = None,
        create: bool = True,
        normalize: bool = True,
        timeout_s: float = 30.0,
    ) -> None:
        self.uri = uri
        self.collection = collection
        self.thumbs = Path(thumbnails)
        self.index_type = index_type
        self.index_params = dict(index_params or {})
        self.search_params = dict(search_params or {})
        self.normalize = normalize
        self.timeout_s = timeout_s
        self._client: Any = None
        try:
            from pymilvus import MilvusClient

            self._client = MilvusClient(uri=uri, token=token, db_name=db_name, timeout=timeout_s)
        except Exception as exc:
            raise IndexUnavailableError(
                f"cannot reach Milvus at {uri}: {' '.join(str(exc).split())[:300]}. Start Milvus "
                "(or milvus-lite server) there, or set PEMT_MILVUS_URI to where it runs"
            ) from None
        try:
            self._open(dim, tuple(modalities), create)
        except BaseException:
            self.close()
            raise
        self._fields = _ROW_FIELDS + [_has(m) for m in self.modalities]
        self.thumbs.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ open / close

    @_unavailable
    def _open(self, dim: int | None, modalities: tuple[str, ...], create: bool) -> None:
        c = self._client
        if not c.has_collection(self.collection):
            if not create:
                raise IndexMissingError(
                    f"Milvus at {self.uri} has no collection {self.collection!r}"
                )
            if dim is None:
                raise ValueError(f"collection {self.collection!r} does not exist; pass dim=")
            try:
                self._create(dim, modalities)
            except Exception:
                if not c.has_collection(self.collection):
                    raise
                log.info("collection %r was created by another replica", self.collection)
        desc = c.describe_collection(self.collection)
        props = desc.get("properties") or {}
        vec = {f["name"][4:]: f for f in desc["fields"] if f["name"].startswith("vec_")}
        if props.get("pemt.schema") != SCHEMA_VERSION or not vec:
            raise ValueError(
                f"Milvus collection {self.collection!r} at {self.uri} is not a PEMT index (schema "
                f"{props.get('pemt.schema')!r}); choose another PEMT_MILVUS_COLLECTION"
            )
        self.modalities = tuple(json.loads(props.get("pemt.modalities", "[]")) or vec)
        self.dim = int(next(iter(vec.values()))["params"]["dim"])
        if dim is not None and dim != self.dim:
            raise ValueError(
                f"Milvus collection {self.collection!r} holds {self.dim}-d vectors, not dim={dim}"
            )
        if modalities != DEFAULT_MODALITIES and modalities != self.modalities:
            raise ValueError(f"collection has modalities {self.modalities}, not {modalities}")
        c.load_collection(self.collection)

    def _create(self, dim: int, modalities: tuple[str, ...]) -> None:
        from pymilvus import DataType, MilvusClient

        s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        s.add_field("id", DataType.VARCHAR, is_primary=True, max_length=MAX_ID)
        s.add_field("clip_id", DataType.VARCHAR, max_length=MAX_ID)
        s.add_field("start", DataType.DOUBLE, nullable=True)
        s.add_field("end", DataType.DOUBLE, nullable=True)
        s.add_field("metadata", DataType.JSON)
        s.add_field("tags", DataType.VARCHAR, max_length=65535)
        s.add_field("has_thumbnail", DataType.BOOL)
        s.add_field("created_at", DataType.DOUBLE)
        s.add_field("updated_at", DataType.DOUBLE)
        for m in modalities:
            s.add_field(_vf(m), DataType.FLOAT_VECTOR, dim=dim)
            s.add_field(_has(m), DataType.BOOL)
        ix = self._client.prepare_index_params()
        for m in modalities:
            ix.add_index(
                _vf(m), index_type=self.index_type, metric_type="IP", params=self.index_params
            )
        ix.add_index("clip_id", index_type="INVERTED")
        self._client.create_collection(
            self.collection,
            schema=s,
            index_params=ix,
            consistency_level=CONSISTENCY,
            properties={"pemt.schema": SCHEMA_VERSION, "pemt.modalities": json.dumps(modalities)},
        )
        log.info("created Milvus collection %r (%d-d, %s)", self.collection, dim, self.index_type)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    def __enter__(self) -> MilvusIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _c(self) -> Any:
        if self._client is None:
            raise ValueError("the index is closed")
        return self._client

    # ------------------------------------------------------------------ model identity

    @_unavailable
    def model_identity(self) -> dict[str, Any] | None:
        props = self._c().describe_collection(self.collection).get("properties") or {}
        text = props.get("pemt.model")
        return None if not text else dict(json.loads(text))

    @_unavailable
    def set_model_identity(self, identity: Mapping[str, Any]) -> None:
        text = json.dumps(dict(identity), sort_keys=True)
        self._c().alter_collection_properties(self.collection, properties={"pemt.model": text})

    # ------------------------------------------------------------------ thumbnails

    def _thumb_path(self, item_id: str) -> Path:
        from server.core.media import file_name

        return self.thumbs / (file_name(item_id) + ".jpg")

    def _write_thumb(self, item_id: str, data: bytes) -> None:
        path = self._thumb_path(item_id)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    # ------------------------------------------------------------------ writes

    def _query(
        self, expr: str, fields: list[str], limit: int | None = None
    ) -> list[dict[str, Any]]:
        kw: dict[str, Any] = {"limit": limit} if limit else {}
        rows = self._c().query(
            self.collection,
            filter=expr,
            output_fields=fields,
            consistency_level=CONSISTENCY,
            timeout=self.timeout_s,
            **kw,
        )
        return list(rows)

    @staticmethod
    def _in(ids: Iterable[str]) -> str:
        return f"id in [{', '.join(_lit(i) for i in ids)}]"

    @_unavailable
    def upsert_many(self, records: Iterable[Record]) -> builtins.list[str]:
        """Insert or replace items in one upsert call; durable when it returns (module
        docstring). A bad record raises ``ValueError`` before anything is written."""
        prepared = [
            prepare_record(r, self.modalities, self.dim, normalize=self.normalize) for r in records
        ]
        ids = [p["id"] for p in prepared]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate ids in one upsert_many call")
        if not prepared:
            return []
        rows = []
        for p in prepared:
            tags = [tag(n, v) for n, v in p["tags"]]
            tags += [tag(n, None) for n, v in p["tags"] if v != "null"]
            if len(tags) > MAX_TAGS:
                raise ValueError(
                    f"{p['id']}: metadata has {len(tags) // 2} scalar values; the Milvus index "
                    f"takes at most {MAX_TAGS // 2} per item"
                )
            rows.append(p | {"tags": "|" + "|".join(tags) + "|"})
        old = {
            r["id"]: r for r in self._query(self._in(ids), ["id", "created_at", "has_thumbnail"])
        }
        for p in prepared:  # files before the rows that point at them
            if p["thumbnail"] is not None:
                self._write_thumb(p["id"], p["thumbnail"])
        now = time.time()
        zero = [0.0] * self.dim
        data = [
            {
                "id": r["id"],
                "clip_id": r["clip_id"] or "",
                "start": r["start"],
                "end": r["end"],
                "metadata": json.loads(r["metadata"]),
                "tags": r["tags"],
                "has_thumbnail": r["thumbnail"] is not None,
                "created_at": float(old[r["id"]]["created_at"]) if r["id"] in old else now,
                "updated_at": now,
                **{
                    _vf(m): (r["vectors"][m].tolist() if m in r["vectors"] else zero)
                    for m in self.modalities
                },
                **{_has(m): m in r["vectors"] for m in self.modalities},
            }  # fmt: skip
            for r in rows
        ]
        self._c().upsert(self.collection, data, timeout=self.timeout_s)
        for r in rows:  # rows first, then the files they no longer use
            if r["thumbnail"] is None and old.get(r["id"], {}).get("has_thumbnail"):
                self._thumb_path(r["id"]).unlink(missing_ok=True)
        return ids

    def upsert(self, id: str, vectors: Mapping[str, Any], **kw: Any) -> str:
        return self.upsert_many([Record(id, vectors, **kw)])[0]

    @_unavailable
    def _delete_where(self, expr: str) -> int:
        rows = self._query(expr, ["id", "has_thumbnail"])
        if not rows:
            return 0
        self._c().delete(self.collection, ids=[r["id"] for r in rows], timeout=self.timeout_s)
        for r in rows:
            if r["has_thumbnail"]:
                self._thumb_path(r["id"]).unlink(missing_ok=True)
        return len(rows)

    def delete(self, id: str) -> bool:
        """Delete an item; durable when it returns. False if there was no such id."""
        return self._delete_where(f"id == {_lit(validate_id(id))}") > 0

    def delete_many(self, ids: Iterable[str]) -> int:
        wanted = sorted({validate_id(i) for i in ids})
        return sum(
            self._delete_where(self._in(wanted[lo : lo + 1000]))
            for lo in range(0, len(wanted), 1000)
        )

    def delete_clip(self, clip_id: str) -> int:
        return self._delete_where(f"clip_id == {_lit(validate_id(clip_id, 'clip_id'))}")

    # ------------------------------------------------------------------ reads

    def _item(self, row: Mapping[str, Any]) -> Item:
        return Item(
            id=row["id"], clip_id=row["clip_id"] or None, start=row["start"], end=row["end"],
            metadata=dict(row["metadata"] or {}),
            modalities=tuple(m for m in self.modalities if row[_has(m)]),
            has_thumbnail=bool(row["has_thumbnail"]), created_at=float(row["created_at"]),
            updated_at=float(row["updated_at"]),
        )  # fmt: skip

    @_unavailable
    def get(self, id: str, *, with_vectors: bool = False) -> Item | None:
        fields = self._fields + ([_vf(m) for m in self.modalities] if with_vectors else [])
        rows = self._query(f"id == {_lit(validate_id(id))}", fields, limit=1)
        if not rows:
            return None
        item = self._item(rows[0])
        if with_vectors:
            item.vectors = {
                m: np.asarray(rows[0][_vf(m)], dtype=np.float32) for m in item.modalities
            }
        return item

    @_unavailable
    def get_vector(self, id: str, modality: str = "fused") -> np.ndarray | None:
        self._check_modality(modality)
        rows = self._query(f"id == {_lit(validate_id(id))}", [_has(modality), _vf(modality)], 1)
        if not rows or not rows[0][_has(modality)]:
            return None
        return np.asarray(rows[0][_vf(modality)], dtype=np.float32)

    @_unavailable
    def thumbnail(self, id: str) -> bytes | None:
        rows = self._query(f"id == {_lit(validate_id(id))}", ["has_thumbnail"], limit=1)
        if not rows or not rows[0]["has_thumbnail"]:
            return None
        try:
            return self._thumb_path(id).read_bytes()
        except FileNotFoundError:  # deleted since
            return None

    def _walk(
        self, expr: str, fields: builtins.list[str], limit: int, batch: int = _PAGE
    ) -> Generator[builtins.list[dict[str, Any]], None, None]:
        """Rows matching ``expr`` in ascending id order, in batches, at most ``limit`` (-1: all).

        pymilvus's query iterator asks for ``id > <last id of the batch before>`` with a limit
        and the ``iterator`` flag, under which Milvus returns the *smallest* matching primary
        keys in ascending order (it merges segments by minimum PK; the iterator could not walk
        otherwise). A plain ``query`` with a limit promises no order, nor which rows it keeps:
        milvus-lite returns storage order there (its ``Collection.query`` sorts by PK only for
        iterator requests), so ``list`` never sorts a plain limited query."""
        it = self._c().query_iterator(
            self.collection,
            batch_size=batch,
            limit=limit,
            filter=expr,
            output_fields=fields,
            consistency_level=CONSISTENCY,
            timeout=self.timeout_s,
        )
        left = limit
        try:
            while left and (rows := it.next()):
                left -= len(rows)
                yield builtins.list(rows)
        finally:
            it.close()

    def _ids(self, expr: str) -> builtins.list[str]:
        return [r["id"] for rows in self._walk(expr, ["id"], -1) for r in rows]

    @_unavailable
    def list(
        self,
        offset: int = 0,
        limit: int = 100,
        *,
        clip_id: str | None = None,
        after: str | None = None,
    ) -> builtins.list[Item]:
        """Items ordered by id (byte order, as the FAISS store's SQLite), optionally only one
        clip's windows: the ``limit`` smallest ids greater than ``after``, or those after the
        first ``offset``; not both.

        Costs: ``after`` is one iterator query of ``limit`` rows (``id > after``), whatever the
        depth. Milvus has no ordered ``offset`` (a plain query's offset/limit window, at most
        16384 rows by default, is not in id order, see ``_walk``), so ``offset`` walks the ids
        up to ``offset`` (ids only, one batch in memory: O(offset)) and continues from the last
        one as with ``after``."""
        check_page(offset, limit, after)
        scope = f"clip_id == {_lit(validate_id(clip_id, 'clip_id'))}" if clip_id else ""
        if offset:
            for rows in self._walk(scope or 'id != ""', ["id"], offset, min(offset, _PAGE)):
                after = rows[-1]["id"]
            if after is None:  # nothing to skip: the page is past the end
                return []
        cursor = f"id > {_lit(after)}" if after is not None else ""
        expr = " and ".join(f"({e})" for e in (cursor, scope) if e) or 'id != ""'
        walk = self._walk(expr, self._fields, limit, limit)
        try:
            return [self._item(r) for r in next(walk, [])]
        finally:
            walk.close()

    @_unavailable
    def count(self, clip_id: str | None = None) -> int:
        """Number of items, or of one clip's windows: a ``count(*)`` query."""
        expr = f"clip_id == {_lit(validate_id(clip_id, 'clip_id'))}" if clip_id else ""
        rows = self._query(expr, ["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def __len__(self) -> int:
        return self.count()

    def __contains__(self, id: object) -> bool:
        return isinstance(id, str) and self.get(id) is not None

    # ------------------------------------------------------------------ search

    def _check_modality(self, modality: str) -> None:
        if modality not in self.modalities:
            raise ValueError(f"unknown modality {modality!r}; known: {list(self.modalities)}")

    def _expr(
        self, modality: str, conditions: Iterable[tuple[str, str | None]], exclude: Collection[str]
    ) -> str:
        parts = [f"{_has(modality)} == true"]
        parts += [f'tags like "%|{tag(n, v)}|%"' for n, v in conditions]
        if exclude:
            parts.append(f"not ({self._in(sorted(exclude))})")
        return " and ".join(parts)

    @_unavailable
    def _search(
        self, qs: np.ndarray, k: int, modality: str, expr: str
    ) -> builtins.list[builtins.list[Hit]]:
        if not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise ValueError(f"k must be an int in 1..{MAX_K}, got {k!r}")
        res = self._c().search(
            self.collection,
            data=[q.tolist() for q in qs],
            anns_field=_vf(modality),
            limit=k,
            filter=expr,
            output_fields=self._fields,
            search_params={"metric_type": "IP", "params": self.search_params},
            consistency_level=CONSISTENCY,
            timeout=self.timeout_s,
        )
        out = []
        for hits in res:
            row = []
            for h in hits:
                row.append(self._item(h["entity"] | {"id": h["id"]}).hit(h["distance"]))
            out.append(row)
        return out

    def search(
        self,
        vector: Any,
        k: int = 10,
        modality: str = "fused",
        filter: Mapping[str, Any] | None = None,
        *,
        exclude: Collection[str] = (),
    ) -> builtins.list[Hit]:
        """The k nearest items by inner product (cosine) in one modality, best first, among
        items matching ``filter`` and not in ``exclude``."""
        self._check_modality(modality)
        q = as_vector(vector, self.dim, "query vector", normalize=self.normalize)
        expr = self._expr(modality, validate_filter(filter), exclude)
        return self._search(q[None], k, modality, expr)[0]

    def search_batch(
        self, vectors: Any, k: int = 10, modality: str = "fused"
    ) -> builtins.list[builtins.list[Hit]]:
        """Nearest items for each row of an (n, D) array in one call (no filter)."""
        self._check_modality(modality)
        arr = np.asarray(vectors, dtype=np.float32)
        if arr.ndim != 2 or not len(arr):
            return []
        qs = np.stack([as_vector(v, self.dim, f"query {i}", normalize=self.normalize)
                       for i, v in enumerate(arr)])  # fmt: skip
        return self._search(qs, k, modality, self._expr(modality, [], ()))

    def search_by_id(
        self,
        id: str,
        k: int = 10,
        modality: str = "fused",
        filter: Mapping[str, Any] | None = None,
        *,
        exclude_same_clip: bool = False,
    ) -> builtins.list[Hit]:
        """Search with a stored item's vector, leaving the item out (and, if asked, its clip)."""
        item = self.get(id, with_vectors=True)
        if item is None or modality not in (item.vectors or {}):
            raise KeyError(f"no item {id!r} with a {modality!r} vector")
        skip = {id}
        if exclude_same_clip and item.clip_id:
            skip |= set(self._ids(f"clip_id == {_lit(item.clip_id)}"))
        assert item.vectors is not None
        return self.search(item.vectors[modality], k, modality, filter, exclude=skip)

    def classify(
        self,
        vector: Any,
        k: int = 10,
        modality: str = "fused",
        filter: Mapping[str, Any] | None = None,
        *,
        exclude: Collection[str] = (),
        label_key: str = "label",
    ) -> Classification:
        """k-NN vote (``_vote.py``) among items whose metadata has ``label_key``."""
        self._check_modality(modality)
        q = as_vector(vector, self.dim, "query vector", normalize=self.normalize)
        conditions = [*validate_filter(filter), (label_key, None)]
        neighbors = self._search(q[None], k, modality, self._expr(modality, conditions, exclude))
        return vote(neighbors[0], label_key)

    # ------------------------------------------------------------------ stats

    def stats(self) -> dict[str, Any]:
        """Counts and configuration, JSON-ready (for /info)."""
        return {
            "backend": self.backend,
            "collection": self.collection,
            "count": self.count(),
            "dim": self.dim,
            "modalities": list(self.modalities),
            "index_type": self.index_type,
            "index_params": self.index_params,
            "search_params": self.search_params,
            "consistency_level": CONSISTENCY,
        }
