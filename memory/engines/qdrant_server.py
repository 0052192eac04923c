"""The scale-out engine: a Qdrant server or cluster (`QDRANT_URL`), through qdrant-client
and langchain-qdrant.

The collection is laid out exactly as langchain-qdrant's `QdrantVectorStore` lays out a
hybrid collection (a named dense vector, a named sparse vector, `page_content` +
`metadata`), so `engine.vectors` is a working LangChain vector store over the same
memories (filter on `metadata.user_id` and `metadata.status`). qdrant-client's in-memory
mode (`QdrantClient(":memory:")`) runs this engine in tests; its client is not
thread-safe, so every call is serialized there, as a server serializes its own.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from langchain_core.embeddings import Embeddings
from langchain_qdrant import QdrantVectorStore, RetrievalMode
from qdrant_client import QdrantClient, models

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
from engram.memory.keywords import KeywordEmbeddings

PAGE = 1000


class ServerEngine:
    def __init__(self, client: QdrantClient, collection: str, embeddings: Embeddings) -> None:
        self.client = client
        self.collection = collection
        self.embeddings = embeddings
        self.location = _location(client, collection)
        local = type(getattr(client, "_client", None)).__name__ == "QdrantLocal"
        self._call_lock: AbstractContextManager[Any] = threading.RLock() if local else nullcontext()
        self._dense_name = DENSE

    # -- schema --------------------------------------------------------------------------

    def dims(self) -> int | None:
        with self._call_lock:
            if not self.client.collection_exists(self.collection):
                return None
            vectors = self.client.get_collection(self.collection).config.params.vectors
        if isinstance(vectors, models.VectorParams):  # written by an earlier Engram: unnamed
            self._dense_name = ""
            return vectors.size
        if isinstance(vectors, dict) and DENSE in vectors:
            return vectors[DENSE].size
        return None if vectors is None else -1  # not an Engram collection

    def create(self, dims: int) -> None:
        with self._call_lock:
            self.client.create_collection(
                self.collection,
                vectors_config={
                    DENSE: models.VectorParams(size=dims, distance=models.Distance.COSINE)
                },
                sparse_vectors_config={
                    KEYWORDS: models.SparseVectorParams(modifier=models.Modifier.IDF)
                },
            )
        self.ensure_indexes()

    def ensure_indexes(self) -> None:
        """The payload indexes a server needs; those the collection lacks (one written by
        an earlier version) are created, the others left alone. No-ops in local mode."""
        indexes: list[tuple[str, Any]] = [
            (
                "user_id",
                models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True),
            ),
            *[(name, models.PayloadSchemaType.KEYWORD) for name in KEYWORD_FIELDS],
            *[(name, models.PayloadSchemaType.INTEGER) for name in INTEGER_FIELDS],
            *[(name, models.PayloadSchemaType.DATETIME) for name in DATETIME_FIELDS],
        ]
        with self._call_lock, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # local mode warns that indexes are no-ops
            existing = self.client.get_collection(self.collection).payload_schema or {}
            for name, schema in indexes:
                if f"{METADATA_KEY}.{name}" not in existing:
                    self.client.create_payload_index(
                        self.collection, f"{METADATA_KEY}.{name}", schema
                    )

    def has_keywords(self) -> bool:
        with self._call_lock:
            sparse = self.client.get_collection(self.collection).config.params.sparse_vectors
        return bool(sparse and KEYWORDS in sparse)

    def add_keywords(self) -> None:
        with self._call_lock:
            self.client.create_vector_name(
                self.collection,
                KEYWORDS,
                models.SparseVectorNameConfig(
                    sparse=models.SparseVectorConfig(modifier=models.Modifier.IDF)
                ),
            )
        self.ensure_indexes()

    @property
    def vectors(self) -> QdrantVectorStore:
        """langchain-qdrant's view of the same collection (hybrid, same encoders)."""
        return QdrantVectorStore(
            client=self.client,
            collection_name=self.collection,
            embedding=self.embeddings,
            retrieval_mode=RetrievalMode.HYBRID,
            vector_name=self._dense_name,
            sparse_embedding=KeywordEmbeddings(),
            sparse_vector_name=KEYWORDS,
            validate_collection_config=False,
        )

    # -- writes --------------------------------------------------------------------------

    def upsert(self, points: Sequence[Point], *, insert_only: bool = False) -> None:
        mode = models.UpdateMode.INSERT_ONLY if insert_only else None
        for start in range(0, len(points), PAGE):
            batch = [self._struct(p) for p in points[start : start + PAGE]]
            with self._call_lock:
                self.client.upsert(self.collection, batch, wait=True, update_mode=mode)

    def set_metadata(self, where: Where, metadata: dict[str, Any]) -> None:
        with self._call_lock:
            self.client.set_payload(
                self.collection,
                payload={METADATA_KEY: metadata},
                points=models.FilterSelector(filter=_filter(where)),
                wait=True,
            )

    def delete(self, where: Where) -> None:
        with self._call_lock:
            self.client.delete(
                self.collection,
                points_selector=models.FilterSelector(filter=_filter(where)),
                wait=True,
            )

    def delete_ids(self, ids: Sequence[str]) -> None:
        if ids:
            with self._call_lock:
                self.client.delete(
                    self.collection,
                    points_selector=models.PointIdsList(points=list(ids)),
                    wait=True,
                )

    # -- reads ---------------------------------------------------------------------------

    def retrieve(self, ids: Sequence[str], *, with_dense: bool = False) -> list[Point]:
        if not ids:
            return []
        with self._call_lock:
            records = self.client.retrieve(
                self.collection,
                ids=list(ids),
                with_payload=True,
                with_vectors=[self._dense_name] if with_dense else False,
            )
        return [self._point(r) for r in records]

    def scroll(
        self, where: Where | None, *, with_dense: bool = False, with_keywords: bool = False
    ) -> Iterator[Point]:
        wanted = [
            name for name, on in ((self._dense_name, with_dense), (KEYWORDS, with_keywords)) if on
        ]
        offset: models.ExtendedPointId | None = None
        while True:
            with self._call_lock:
                records, offset = self.client.scroll(
                    self.collection,
                    scroll_filter=_filter(where) if where else None,
                    limit=PAGE,
                    offset=offset,
                    with_payload=True,
                    with_vectors=wanted or False,
                )
            yield from (self._point(r) for r in records)
            if offset is None:
                return

    def without_keywords(self) -> Iterator[Point]:
        flt = models.Filter(must_not=[models.HasVectorCondition(has_vector=KEYWORDS)])
        with self._call_lock:
            records, _ = self.client.scroll(
                self.collection,
                scroll_filter=flt,
                limit=PAGE,
                with_payload=True,
                with_vectors=True,
            )
        yield from (self._point(r) for r in records)

    def count_without_keywords(self) -> int:
        flt = models.Filter(must_not=[models.HasVectorCondition(has_vector=KEYWORDS)])
        with self._call_lock:
            return self.client.count(self.collection, count_filter=flt, exact=True).count

    def count(self, where: Where | None) -> int:
        with self._call_lock:
            return self.client.count(
                self.collection, count_filter=_filter(where) if where else None, exact=True
            ).count

    def query(self, queries: Sequence[Query]) -> list[list[Point]]:
        if not queries:
            return []
        with self._call_lock:
            responses = self.client.query_batch_points(
                self.collection, [self._request(q) for q in queries]
            )
        return [[self._point(hit, hit.score) for hit in r.points] for r in responses]

    def close(self) -> None:
        with self._call_lock:
            self.client.close()

    # -- mapping -------------------------------------------------------------------------

    def _request(self, query: Query) -> models.QueryRequest:
        flt = _filter(query.where)
        if query.keywords is not None:
            # IDF over the memories this search may see: another user's (or another agent's
            # private) words never weigh on hers.
            corpus = models.IdfCorpusParams(
                corpus=_filter(Where(user_id=query.where.user_id, agents=query.where.agents))
            )
            idf = models.SearchParams(idf=corpus)
            if query.rescore is not None:
                return models.QueryRequest(
                    prefetch=models.Prefetch(
                        query=_sparse(query.keywords),
                        using=KEYWORDS,
                        filter=flt,
                        limit=query.limit,
                        params=idf,
                    ),
                    query=query.rescore,
                    using=self._dense_name,
                    limit=query.limit,
                    with_payload=not query.lean,
                )
            return models.QueryRequest(
                query=_sparse(query.keywords),
                using=KEYWORDS,
                filter=flt,
                limit=query.limit,
                with_payload=not query.lean,
                params=idf,
            )
        return models.QueryRequest(
            query=query.dense,
            using=self._dense_name,
            filter=flt,
            limit=query.limit,
            with_payload=not query.lean,
        )

    def _struct(self, point: Point) -> models.PointStruct:
        vector: dict[str, Any] = {}
        if point.dense is not None:
            vector[self._dense_name] = point.dense
        if point.keywords is not None:
            vector[KEYWORDS] = _sparse(point.keywords)
        return models.PointStruct(id=point.id, vector=vector, payload=point.payload)

    def _point(self, record: Any, score: float | None = None) -> Point:
        vectors = record.vector
        if isinstance(vectors, list):  # an unnamed dense vector
            vectors = {"": vectors}
        vectors = vectors or {}
        dense = vectors.get(self._dense_name)
        sparse = vectors.get(KEYWORDS)
        return Point(
            id=str(record.id),
            payload=dict(record.payload or {}),
            dense=[float(x) for x in dense] if dense is not None else None,
            keywords=Sparse(list(sparse.indices), list(sparse.values)) if sparse else None,
            score=score,
        )


def _filter(where: Where) -> models.Filter:
    must: list[models.Condition] = []
    for name, value in where.matches().items():
        match: models.Match = (
            models.MatchAny(any=value)
            if isinstance(value, list)
            else models.MatchValue(value=value)
        )
        must.append(models.FieldCondition(key=f"{METADATA_KEY}.{name}", match=match))
    if where.ids is not None:
        must.append(models.HasIdCondition(has_id=list(where.ids)))
    if where.observed is not None:
        observed = where.observed
        must.append(
            models.FieldCondition(
                key=f"{METADATA_KEY}.observed_at",
                range=models.DatetimeRange(gte=observed.start, lt=observed.end),
            )
        )
    if where.created_after is not None:
        must.append(
            models.FieldCondition(
                key=f"{METADATA_KEY}.created_at",
                range=models.DatetimeRange(gt=where.created_after),
            )
        )
    if where.valid_on is not None:
        key = f"{METADATA_KEY}.valid_until"
        open_ended = models.IsEmptyCondition(is_empty=models.PayloadField(key=key))
        not_ended = models.FieldCondition(
            key=key, range=models.DatetimeRange(gte=where.valid_on.isoformat())
        )
        must.append(models.Filter(should=[open_ended, not_ended]))
    must_not: list[models.Condition] = []
    if where.agents is not None:
        key = f"{METADATA_KEY}.agent_id"
        agent, shared = where.agents.agent_id, where.agents.shared
        if not shared:
            assert agent is not None  # `Agents` admits something
            must.append(models.FieldCondition(key=key, match=models.MatchValue(value=agent)))
        else:  # see `base.excluded_but`
            excluded = models.MatchExcept(**{"except": excluded_but(agent)})
            must_not.append(models.FieldCondition(key=key, match=excluded))
    return models.Filter(must=must, must_not=must_not or None)


def _sparse(vector: Sparse) -> models.SparseVector:
    return models.SparseVector(indices=vector.indices, values=vector.values)


def _location(client: QdrantClient, collection: str) -> str:
    inner = getattr(client, "_client", None)
    url = getattr(inner, "rest_uri", None) or getattr(inner, "location", None) or "local"
    return f"{url} (collection {collection})"


__all__ = ["CONTENT_KEY", "ServerEngine"]
