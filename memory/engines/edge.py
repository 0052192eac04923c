"""The embedded engine: Qdrant Edge, Qdrant's in-process engine, on disk.

One shard directory per collection. Only one process may open it (Edge locks its write-ahead
log); threads in that process share the one handle. Nothing here blocks for long except
`optimize()`, which the store never calls on a request path.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import qdrant_edge as edge

from engram.memory.engines.base import (
    CONTENT_KEY,
    DATETIME_FIELDS,
    DENSE,
    INTEGER_FIELDS,
    KEYWORD_FIELDS,
    KEYWORDS,
    METADATA_KEY,
    Point,
    Query,
    Sparse,
    Where,
    excluded_but,
)

PAGE = 1000
SCREEN_FACTOR = 2  # hits a status-screened search fetches, per hit asked (`EdgeEngine.query`)
# Threads one search may use. A search here scans one user's points (a few segments at most)
# and is sent from a worker thread the caller already pays for; handing it on to Edge's
# search pool costs more than sharing its work saves (benchmarks/README.md, "Settings chosen
# by measurement"). Given at every open (Edge writes it to the shard's config).
SEARCH_THREADS = 1
_SCREENED = edge.PayloadSelector.Include([f"{METADATA_KEY}.status", f"{METADATA_KEY}.valid_until"])


class StoreInUseError(RuntimeError):
    """Another process holds the shard."""


class EdgeEngine:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.location = str(path)
        self._shard: edge.EdgeShard | None = None
        self._lock = threading.Lock()  # guards opening and schema changes only
        if (path / "edge_config.json").exists():
            self._shard = _open(path, self.dims_on_disk())

    # -- schema --------------------------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        config: dict[str, Any] = json.loads((self.path / "edge_config.json").read_text())
        return config

    def dims(self) -> int | None:
        return None if self._shard is None else self.dims_on_disk()

    def dims_on_disk(self) -> int:
        size: int = self._config()["vectors"][DENSE]["size"]
        return size

    def create(self, dims: int) -> None:
        with self._lock:
            self.path.mkdir(parents=True, exist_ok=True)
            self._shard = edge.EdgeShard.create(str(self.path), _config(dims))
            self.ensure_indexes()

    def has_keywords(self) -> bool:
        return self._shard is not None and KEYWORDS in self._config().get("sparse_vectors", {})

    def add_keywords(self) -> None:
        """Edge shards are created with the keyword vector; this engine never lacks it."""
        if not self.has_keywords():
            raise RuntimeError(f"the Edge shard at {self.path} has no keyword vector")

    def ensure_indexes(self) -> None:
        """The payload indexes the store's filters use; those a shard written by an earlier
        version lacks are built (the others are left alone)."""
        existing = set(self.shard.info().payload_schema)

        def index(name: str, params: Any) -> None:
            if name not in existing:
                self.shard.update(edge.UpdateOperation.create_field_index(name, params))

        index(f"{METADATA_KEY}.user_id", edge.KeywordIndexParams(is_tenant=True))
        for name in KEYWORD_FIELDS:
            index(f"{METADATA_KEY}.{name}", edge.KeywordIndexParams())
        for name in INTEGER_FIELDS:
            index(f"{METADATA_KEY}.{name}", edge.IntegerIndexParams(lookup=True, range=False))
        for name in DATETIME_FIELDS:
            index(f"{METADATA_KEY}.{name}", edge.DatetimeIndexParams())

    @property
    def shard(self) -> edge.EdgeShard:
        if self._shard is None:
            raise RuntimeError("the Edge shard is not created yet")
        return self._shard

    # -- writes --------------------------------------------------------------------------

    def upsert(self, points: Sequence[Point], *, insert_only: bool = False) -> None:
        mode = edge.UpdateMode.InsertOnly if insert_only else None
        for start in range(0, len(points), PAGE):
            batch = [_edge_point(p) for p in points[start : start + PAGE]]
            self.shard.update(edge.UpdateOperation.upsert_points(batch, update_mode=mode))

    def set_metadata(self, where: Where, metadata: dict[str, Any]) -> None:
        self.shard.update(
            edge.UpdateOperation.set_payload_by_filter(_filter(where), {METADATA_KEY: metadata})
        )

    def delete(self, where: Where) -> None:
        self.shard.update(edge.UpdateOperation.delete_points_by_filter(_filter(where)))

    def delete_ids(self, ids: Sequence[str]) -> None:
        if ids:
            self.shard.update(edge.UpdateOperation.delete_points(list(ids)))

    # -- reads ---------------------------------------------------------------------------

    def retrieve(self, ids: Sequence[str], *, with_dense: bool = False) -> list[Point]:
        if not ids:
            return []
        records = self.shard.retrieve(
            list(ids), with_payload=True, with_vector=_vectors(with_dense)
        )
        return [_point(r) for r in records]

    def scroll(
        self, where: Where | None, *, with_dense: bool = False, with_keywords: bool = False
    ) -> Iterator[Point]:
        offset: Any = None
        wanted = [name for name, on in ((DENSE, with_dense), (KEYWORDS, with_keywords)) if on]
        while True:
            records, offset = self.shard.scroll(
                edge.ScrollRequest(
                    offset=offset,
                    limit=PAGE,
                    filter=_filter(where) if where else None,
                    with_payload=True,
                    with_vector=wanted or False,
                )
            )
            yield from (_point(r) for r in records)
            if offset is None:
                return

    def without_keywords(self) -> Iterator[Point]:
        """Edge shards are always written with keyword vectors; kept for the interface."""
        flt = edge.Filter(must_not=[edge.HasVectorCondition(KEYWORDS)])
        records, _ = self.shard.scroll(
            edge.ScrollRequest(limit=PAGE, filter=flt, with_payload=True, with_vector=[DENSE])
        )
        yield from (_point(r) for r in records)

    def count_without_keywords(self) -> int:
        flt = edge.Filter(must_not=[edge.HasVectorCondition(KEYWORDS)])
        return self.shard.count(edge.CountRequest(exact=True, filter=flt))

    def count(self, where: Where | None) -> int:
        return self.shard.count(
            edge.CountRequest(exact=True, filter=_filter(where) if where else None)
        )

    def query(self, queries: Sequence[Query]) -> list[list[Point]]:
        """The searches in one batch. A lean dense search filtered on status is sent
        without that condition (nor the validity day), for `SCREEN_FACTOR` times its hits
        with only their status and end of validity, and keeps the matching ones: Edge
        checks a second indexed condition point by point, slowly on points written since
        the shard was opened (their index entries lie scattered in memory: 2.4 against
        1.0 ms at a user's 10k points, caches cold; about equal once reopened). Ranked by
        the same score, the kept hits are exactly the best `limit` matches whenever that
        many are among them; otherwise (retired versions crowd the top) the search runs
        again as asked. (With whole payloads, twice the hits would cost more than the
        condition saves.)
        """
        if not queries:
            return []
        results = self.shard.query_batch(edge.QueryBatchRequest([_request(q) for q in queries]))
        found: list[list[Point]] = []
        again: list[int] = []
        for index, (query, hits) in enumerate(zip(queries, results, strict=True)):
            if not _screened(query):
                found.append([_point(hit, hit.score) for hit in hits])
                continue
            # Screened on the raw hits: only the kept ones are converted (ids cost a UUID each).
            kept = [
                h for h in hits if _passes(query.where, (h.payload or {}).get(METADATA_KEY, {}))
            ]
            if len(kept) < query.limit and len(hits) == query.limit * SCREEN_FACTOR:
                again.append(index)
            found.append([Point(str(h.id), {}, score=h.score) for h in kept[: query.limit]])
        if again:
            requests = [_request(queries[i], screen=False) for i in again]
            retried = self.shard.query_batch(edge.QueryBatchRequest(requests))
            for index, hits in zip(again, retried, strict=True):
                found[index] = [_point(hit, hit.score) for hit in hits]
        return found

    def close(self) -> None:
        with self._lock:
            if self._shard is not None:
                self._shard.close()
                self._shard = None


def _open(path: Path, dims: int) -> edge.EdgeShard:
    try:
        # The shard's own config, as created, with this version's search settings.
        return edge.EdgeShard.load(str(path), _config(dims))
    except Exception as error:
        if "WAL" in str(error) or "WouldBlock" in str(error):
            raise StoreInUseError(str(error)) from error
        raise


def _config(dims: int) -> edge.EdgeConfig:
    return edge.EdgeConfig(
        vectors={DENSE: edge.EdgeVectorParams(size=dims, distance=edge.Distance.Cosine)},
        sparse_vectors={KEYWORDS: edge.EdgeSparseVectorParams(modifier=edge.Modifier.Idf)},
        max_search_threads=SEARCH_THREADS,
    )


def _filter(where: Where) -> edge.Filter:
    must: list[Any] = []
    for name, value in where.matches().items():
        match = edge.MatchAny(value) if isinstance(value, list) else edge.MatchValue(value)
        must.append(edge.FieldCondition(key=f"{METADATA_KEY}.{name}", match=match))
    if where.ids is not None:
        must.append(edge.HasIdCondition(set(where.ids)))
    if where.observed is not None:
        start, end = where.observed.bounds()
        must.append(
            edge.FieldCondition(
                key=f"{METADATA_KEY}.observed_at", range=edge.RangeDateTime(gte=start, lt=end)
            )
        )
    if where.created_after is not None:
        must.append(
            edge.FieldCondition(
                key=f"{METADATA_KEY}.created_at",
                range=edge.RangeDateTime(gt=where.created_after.isoformat()),
            )
        )
    if where.valid_on is not None:
        key = f"{METADATA_KEY}.valid_until"
        open_ended = edge.IsEmptyCondition(key)
        not_ended = edge.FieldCondition(
            key=key, range=edge.RangeDateTime(gte=where.valid_on.isoformat())
        )
        must.append(edge.Filter(should=[open_ended, not_ended]))
    must_not: list[Any] = []
    if where.agents is not None:
        key = f"{METADATA_KEY}.agent_id"
        agent, shared = where.agents.agent_id, where.agents.shared
        if not shared:
            assert agent is not None  # `Agents` admits something
            must.append(edge.FieldCondition(key=key, match=edge.MatchValue(agent)))
        else:  # see `base.excluded_but`
            must_not.append(
                edge.FieldCondition(key=key, match=edge.MatchExcept(excluded_but(agent)))
            )
    return edge.Filter(must=must, must_not=must_not or None)


def _passes(where: Where, metadata: dict[str, Any]) -> bool:
    """Whether a screened hit meets the conditions left out of its search: the status,
    and the validity day (ISO dates compare as text)."""
    if metadata.get("status") != where.status:
        return False
    until = metadata.get("valid_until")
    return where.valid_on is None or until is None or until >= where.valid_on.isoformat()


def _screened(query: Query) -> bool:
    """Whether `EdgeEngine.query` leaves this search's status condition to itself."""
    return query.lean and query.dense is not None and query.where.status is not None


def _request(query: Query, *, screen: bool = True) -> edge.QueryRequest:
    if screen and _screened(query):
        assert query.dense is not None
        return edge.QueryRequest(
            limit=query.limit * SCREEN_FACTOR,
            query=edge.Query.Nearest(query.dense, using=DENSE),
            filter=_filter(replace(query.where, status=None, valid_on=None)),
            with_payload=_SCREENED,
        )
    flt = _filter(query.where)
    if query.keywords is not None:
        # IDF over the memories this search may see: another user's (or another agent's
        # private) words never weigh on hers.
        user_only = _filter(Where(user_id=query.where.user_id, agents=query.where.agents))
        by_keywords = edge.Query.Nearest(_sparse(query.keywords), using=KEYWORDS)
        idf = edge.SearchParams(idf=edge.IdfParams(corpus=user_only))
        if query.rescore is not None:
            return edge.QueryRequest(
                limit=query.limit,
                prefetches=[
                    edge.Prefetch(limit=query.limit, query=by_keywords, filter=flt, params=idf)
                ],
                query=edge.Query.Nearest(query.rescore, using=DENSE),
                with_payload=not query.lean,
            )
        return edge.QueryRequest(
            limit=query.limit,
            query=by_keywords,
            filter=flt,
            with_payload=not query.lean,
            params=idf,
        )
    assert query.dense is not None
    return edge.QueryRequest(
        limit=query.limit,
        query=edge.Query.Nearest(query.dense, using=DENSE),
        filter=flt,
        with_payload=not query.lean,
    )


def _vectors(with_dense: bool) -> list[str] | bool:
    return [DENSE] if with_dense else False


def _sparse(vector: Sparse) -> edge.SparseVector:
    return edge.SparseVector(indices=vector.indices, values=vector.values)


def _edge_point(point: Point) -> edge.Point:
    vector: dict[str, Any] = {}
    if point.dense is not None:
        vector[DENSE] = point.dense
    if point.keywords is not None:
        vector[KEYWORDS] = _sparse(point.keywords)
    return edge.Point(id=point.id, vector=vector, payload=point.payload)


def _point(record: Any, score: float | None = None) -> Point:
    # Each read of `vector` or `payload` converts it from Rust into fresh Python objects
    # (lists of floats, dicts): read each once, and keep what it gives without copying.
    vectors = record.vector
    if not isinstance(vectors, dict):
        vectors = {}
    dense = vectors.get(DENSE)
    sparse = vectors.get(KEYWORDS)
    return Point(
        id=str(record.id),
        payload=record.payload or {},
        dense=dense,
        keywords=Sparse(list(sparse.indices), list(sparse.values)) if sparse is not None else None,
        score=score,
    )


__all__ = ["CONTENT_KEY", "EdgeEngine", "StoreInUseError"]
