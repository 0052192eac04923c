"""The memory store: versioned, per-user memories over a Qdrant engine.

Every read and write names the user. A memory is a chain of versions (a lineage): UPDATE
writes a new version and marks the old one `superseded`, DELETE marks `deleted`, so no
text is ever destroyed until the explicit `forget`. Only `active` versions are searched.
Time runs by what the user said: an UPDATE or DELETE from a statement older than the
memory's current version (history ingested out of order) never replaces or deletes it;
the older text joins the memory's history instead (`_keep_newer`).

Writes are safe when several processes share one Qdrant server: every change of a version
is a conditional write on its `revision` (it applies only if nobody changed the version
since it was read), and a writer that loses re-reads and tries again. Per-process locks
only spare writers of one user in one process that contention. Texts are embedded before
any lock is taken, so a slow embedding endpoint never holds up other users; the facts a
turn searched with are not embedded again when it writes them (`_document_vectors`).

Searches rank by scores, then read the winners by id (`_ranked`): a winner that changed in
between, or an update that finished meanwhile, makes the search run again (up to
`READ_ATTEMPTS` times), so a reader shows no retired version and finds the one that
replaced it.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import random
import struct
import threading
import time
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial

from langchain_core.embeddings import Embeddings
from qdrant_client import QdrantClient

from memory.engine import Engine, TimeRange, Where
from memory.keywords import query_keywords
from memory.payload import (
    Stored,
    clean_category,
    clean_memory_text,
    normalize_text,
    payload,
    record_from_point,
    stored_from_point,
    stored_point,
    text_hash,
)
from memory.retrieval import Retrieval, fuse, searches
from memory.server import ServerEngine
from state.context import validate_user_id
from state.contracts import (
    AppliedOp,
    EventName,
    MemoryEvent,
    MemoryRecord,
    MemoryStatus,
    OpName,
    RejectedOp,
    Source,
)
from state.errors import (
    EmbeddingDimensionError,
    InvalidInputError,
    MemoryNotFoundError,
    StoreConflictError,
)

__all__ = [
    "ApplyReport",
    "MemoryStore",
    "PlannedOp",
    "clean_category",
    "clean_memory_text",
    "normalize_text",
    "text_hash",
]

PAGE = 1000
# Writes of one user in one process take one of a fixed set of locks (users share
# stripes): memory stays bounded however many users a server has seen.
LOCK_STRIPES = 64
# An update claims the version it replaces, then writes the successor. A claim whose
# successor never appeared within this time was left by a crash and is dropped.
CLAIM_LEASE = timedelta(seconds=30)
WRITE_ATTEMPTS = 20  # conditional writes lost to concurrent writers before giving up
RECENT_VECTORS = 256  # document vectors kept between a turn's search and its writes
READ_ATTEMPTS = 3  # searches whose winners changed while being read, before settling


def now_utc() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class PlannedOp:
    """A validated operation ready for the store: targets are real point ids."""

    op: OpName
    ref: int | None = None
    target_id: str | None = None
    text: str | None = None
    category: str | None = None
    observed_at: datetime | None = None
    source: Source = field(default_factory=Source)
    detail: str | None = None  # why the operation exists, when not obvious


@dataclass
class ApplyReport:
    applied: list[AppliedOp] = field(default_factory=list)
    rejected: list[RejectedOp] = field(default_factory=list)


class _Conflict(Exception):
    """A conditional write lost to a concurrent writer: read again and retry."""


class MemoryStore:
    """Per-user versioned memories. Pass an engine (`memory.edge.EdgeEngine`,
    `memory.server.ServerEngine`) or a `QdrantClient` (wrapped in a `ServerEngine`).

    Methods are synchronous and thread-safe; async code calls them through
    `asyncio.to_thread` so the event loop never blocks on embeddings or Qdrant.
    """

    def __init__(
        self,
        engine: Engine | QdrantClient,
        embeddings: Embeddings,
        *,
        collection: str = "engram_memories",
        embedding_id: str = "custom",
        dims: int | None = None,
        vector_key: bytes | None = None,
        retrieval: Retrieval | None = None,
        on_progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        if isinstance(engine, QdrantClient):
            engine = ServerEngine(engine, collection, embeddings)
        self.engine: Engine = engine
        self.embeddings = embeddings
        self.dims = dims if dims is not None else len(embeddings.embed_query("dimension probe"))
        self.embedding_id = f"{embedding_id}:{self.dims}"
        self.retrieval = retrieval or Retrieval()
        # Signs exported vectors: an import reuses a vector only if this key signed it for
        # exactly that text. Without a persistent key, only this process's exports verify.
        self.vector_key = vector_key or os.urandom(32)
        self._locks = [threading.RLock() for _ in range(LOCK_STRIPES)]
        # Marks this store's writes: a claim it made is dead once a writer of this store
        # holds the user's lock again (the claiming thread held it and finished or died).
        self.writer_id = uuid.uuid4().hex
        self._recent: OrderedDict[str, list[float]] = OrderedDict()  # `_document_vectors`
        self._recent_lock = threading.Lock()
        self._open(on_progress)

    # -- setup -------------------------------------------------------------------------

    def _open(self, on_progress: Callable[[str, int, int], None] | None) -> None:
        existing = self.engine.dims()
        if existing is None:
            self.engine.create(self.dims)
            return
        if existing != self.dims:
            raise EmbeddingDimensionError(
                f"The memory store at {self.engine.location} holds {existing}-dimensional "
                f"vectors, but the embedding backend ({self.embedding_id}) makes "
                f"{self.dims}-dimensional ones. Use the embedding settings the memories "
                "were written with "
                "(ENGRAM_EMBEDDINGS, ENGRAM_EMBEDDING_MODEL, ENGRAM_EMBEDDING_DIMS), or set "
                "ENGRAM_COLLECTION to a new collection and move memories with "
                "`engram export` / `engram import` (which re-embeds)."
            )
        if not self.engine.has_keywords():  # written before hybrid retrieval
            self.engine.add_keywords()
        self._backfill_keywords(on_progress)

    def _backfill_keywords(self, on_progress: Callable[[str, int, int], None] | None) -> None:
        """Rewrite points written before hybrid retrieval: keyword vector and revision."""
        total = self.engine.count_without_keywords()
        done = 0
        while done < total:
            batch = list(itertools.islice(self.engine.without_keywords(), PAGE))
            if not batch:
                break
            self.engine.upsert([stored_point(stored_from_point(p), p.dense or []) for p in batch])
            done += len(batch)
            if on_progress:
                on_progress("adding keyword vectors", done, total)

    def write_lock(self, user_id: str) -> threading.RLock:
        """This process's lock for the user's writes (striped: users share a few)."""
        return self._locks[zlib.crc32(user_id.encode()) % LOCK_STRIPES]

    # -- reads ---------------------------------------------------------------------------

    def search(
        self,
        user_id: str,
        query: str,
        k: int = 5,
        category: str | None = None,
        *,
        min_score: float | None = None,
        observed: TimeRange | None = None,
    ) -> list[MemoryRecord]:
        """The user's `k` active memories most relevant to `query`, best first; with
        `min_score`, only those that score at least that (the relevance floor); with
        `observed`, only those the user said within that time range."""
        user_id = require_user_id(user_id)
        dense = [self.embeddings.embed_query(query)]
        return self._search(user_id, [query], dense, k, category, min_score, observed)[0]

    def search_many(
        self,
        user_id: str,
        queries: list[str],
        k: int = 5,
        category: str | None = None,
        *,
        min_score: float | None = None,
        observed: TimeRange | None = None,
    ) -> list[list[MemoryRecord]]:
        """`search` for several texts that read like memories (a turn's new facts), in one
        embedding call and one batch of engine queries. They are embedded as documents, and
        the vectors are kept a while: writing those texts next (`apply`) embeds nothing."""
        user_id = require_user_id(user_id)
        if not queries:
            return []
        dense = self._document_vectors(queries)
        return self._search(user_id, queries, dense, k, category, min_score, observed)

    def _search(
        self,
        user_id: str,
        queries: list[str],
        dense: list[list[float]],
        k: int,
        category: str | None,
        min_score: float | None,
        observed: TimeRange | None,
    ) -> list[list[MemoryRecord]]:
        where = Where(user_id=user_id, status="active", category=category, observed=observed)
        room = k + 2  # for versions hidden by an interrupted update
        ranked: list[list[tuple[MemoryRecord, float]]] = []
        shown: set[str] = set()
        for attempt in range(1, READ_ATTEMPTS + 1):
            last = attempt == READ_ATTEMPTS
            found = self._ranked(where, queries, dense, room, last=last)
            if found is None:
                continue  # a winner changed while it was read
            ranked = found
            records = [r for rows in ranked for r, _ in rows]
            shown = self._without_replaced(user_id, records)
            if last or shown == {r.id for r in records}:
                break  # else an update finished meanwhile, and its new version may rank
        return [
            [
                record.model_copy(update={"score": score})
                for record, score in rows
                if record.id in shown and (min_score is None or score >= min_score)
            ][:k]
            for rows in ranked
        ]

    def _ranked(
        self,
        where: Where,
        queries: list[str],
        dense: list[list[float]],
        room: int,
        *,
        last: bool,
    ) -> list[list[tuple[MemoryRecord, float]]] | None:
        """The `room` best versions `where` matches for each text, by fused score.

        Payloads are a good part of a search's cost and only the few best hits need them,
        so the searches return scores only (keyword hits rescored by dense similarity in the
        engine) in one round trip, and the winners' payloads are read by id in a second. A
        winner that no longer matches `where` when read changed meanwhile (an update retired
        it, say, and its successor came too late for the search): the ranking is stale,
        None, and the caller searches again; the `last` try drops such versions instead.
        """
        plans = [
            searches(where, vector, query_keywords(text), room, self.retrieval, lean=True)
            for text, vector in zip(queries, dense, strict=True)
        ]
        results = iter(self.engine.query([q for plan in plans for q in plan]))
        fused = []
        for plan in plans:  # dense, then keywords and their rescoring when hybrid
            dense_hits, *keyword_results = [next(results) for _ in plan]
            keyword_hits, rescored_hits = keyword_results or ([], [])
            fused.append(fuse(dense_hits, keyword_hits, rescored_hits, room, self.retrieval))
        winners = list(dict.fromkeys(p.id for row in fused for p, _ in row))
        read = [record_from_point(p) for p in self.engine.retrieve(winners)]
        # Status is all a search filters on that a version's changes can touch.
        current = {r.id: r for r in read if (r.user_id, r.status) == (where.user_id, where.status)}
        if len(current) < len(winners) and not last:
            return None
        return [[(current[p.id], score) for p, score in row if p.id in current] for row in fused]

    def _document_vectors(self, texts: list[str]) -> list[list[float]]:
        """The texts' document embeddings, reusing those made moments ago: a turn searches
        with its new facts (`search_many`), then writes them (`apply`). A text's vector
        depends on the text alone (one embedding backend per store), so a kept one is
        exactly what embedding it again would give."""
        with self._recent_lock:
            found = {t: self._recent[t] for t in texts if t in self._recent}
            for text in found:
                self._recent.move_to_end(text)
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            fresh = dict(zip(missing, self.embeddings.embed_documents(missing), strict=True))
            with self._recent_lock:
                self._recent.update(fresh)
                while len(self._recent) > RECENT_VECTORS:
                    self._recent.popitem(last=False)
            found.update(fresh)
        return [found[t] for t in texts]

    def get(self, user_id: str, memory_id: str) -> MemoryRecord:
        """One version by id; another user's id is reported exactly like a missing one."""
        return self._get(require_user_id(user_id), memory_id).record

    def memories(
        self, user_id: str, *, status: MemoryStatus | None = "active", category: str | None = None
    ) -> list[MemoryRecord]:
        """The user's memories (all pages, no cap), oldest first; `status=None` for all."""
        user_id = require_user_id(user_id)
        where = Where(user_id=user_id, status=status, category=category)
        records = [record_from_point(p) for p in self.engine.scroll(where)]
        if len(self._without_replaced(user_id, records)) != len(records):
            records = [record_from_point(p) for p in self.engine.scroll(where)]  # repaired
        return sorted(records, key=lambda r: (r.created_at, r.id))

    def count(self, user_id: str, *, status: MemoryStatus | None = None) -> int:
        return self.engine.count(Where(user_id=require_user_id(user_id), status=status))

    def history(self, user_id: str, memory_id: str) -> list[MemoryRecord]:
        """Every version of the memory that `memory_id` belongs to, oldest first."""
        user_id = require_user_id(user_id)
        lineage = self._get(user_id, memory_id).record.lineage_id
        points = self.engine.scroll(Where(user_id=user_id, lineage_ids=[lineage]))
        return sorted((record_from_point(p) for p in points), key=lambda r: (r.created_at, r.id))

    def export_records(self, user_id: str) -> Iterator[tuple[MemoryRecord, list[float]]]:
        """Every version of every memory of the user, with its vector, oldest first."""
        points = self.engine.scroll(Where(user_id=require_user_id(user_id)), with_dense=True)
        rows = [(record_from_point(p), p.dense or []) for p in points]
        yield from sorted(rows, key=lambda row: (row[0].created_at, row[0].id))

    def vector_mac(self, text: str, vector: list[float]) -> str:
        """Binds a vector to its text and embedding backend (see `vector_key`)."""
        message = b"\0".join(
            [self.embedding_id.encode(), text.encode(), struct.pack(f"<{len(vector)}f", *vector)]
        )
        return hmac.new(self.vector_key, message, hashlib.sha256).hexdigest()

    def _get(self, user_id: str, memory_id: str) -> Stored:
        found = self._get_many(user_id, [memory_id])
        if not found:
            raise MemoryNotFoundError(f"no memory {memory_id!r} for user {user_id!r}")
        return found[0]

    def _get_many(self, user_id: str, memory_ids: list[str]) -> list[Stored]:
        ids = [canonical for i in memory_ids if (canonical := _canonical_uuid(i))]
        stored = [stored_from_point(p) for p in self.engine.retrieve(ids)]
        return [s for s in stored if s.record.user_id == user_id]

    def _without_replaced(self, user_id: str, records: list[MemoryRecord]) -> set[str]:
        """Ids of these records that readers may show: not the old half of an update that
        a crash interrupted after its successor was written (that update is completed)."""
        pending = [r for r in records if r.status == "active" and r.superseded_by]
        if not pending:
            return {r.id for r in records}
        finished = self._repair(user_id, [r.id for r in pending], writer=False)
        return {r.id for r in records if r.id not in finished}

    # -- writes --------------------------------------------------------------------------

    def add(
        self,
        user_id: str,
        text: str,
        category: str | None = None,
        *,
        observed_at: datetime | None = None,
        source: Source | None = None,
    ) -> AppliedOp:
        """Add a memory; an exact duplicate of an active one is a no-op (idempotent)."""
        op = PlannedOp(
            "ADD",
            text=text,
            category=category,
            observed_at=observed_at,
            source=source or Source(actor="api"),
        )
        return self._apply_single(user_id, op)

    def update(
        self,
        user_id: str,
        memory_id: str,
        text: str,
        category: str | None = None,
        *,
        source: Source | None = None,
    ) -> AppliedOp:
        """Write a new version of the memory (the old one stays in its history)."""
        op = PlannedOp(
            "UPDATE",
            target_id=memory_id,
            text=text,
            category=category,
            source=source or Source(actor="api"),
        )
        return self._apply_single(user_id, op)

    def delete(self, user_id: str, memory_id: str, *, source: Source | None = None) -> AppliedOp:
        """Mark a memory deleted; it stays restorable until `forget`."""
        op = PlannedOp("DELETE", target_id=memory_id, source=source or Source(actor="api"))
        return self._apply_single(user_id, op)

    def restore(self, user_id: str, memory_id: str, *, source: Source | None = None) -> AppliedOp:
        """Make a deleted or superseded version the active one of its memory again."""
        op = PlannedOp("NOOP", target_id=memory_id, source=source or Source(actor="api"))
        user_id = require_user_id(user_id)
        with self.write_lock(user_id):
            return self._retrying(lambda: self._restore(user_id, op))

    def apply(self, user_id: str, ops: Iterable[PlannedOp]) -> ApplyReport:
        """Apply operations for one user.

        An operation that cannot be applied (unknown id, another user's id, empty text)
        is reported in `rejected` and the others still apply. A target changed by a
        concurrent turn is followed to its newest version, so neither change is lost.
        """
        user_id = require_user_id(user_id)
        ops = list(ops)
        report = ApplyReport()
        vectors = self._embed_ops(ops)  # before the lock: may be a slow network call
        with self.write_lock(user_id):
            for op in ops:
                try:
                    applied = self._retrying(partial(self._apply_one, user_id, op, vectors))
                    report.applied.append(
                        applied.model_copy(update={"detail": applied.detail or op.detail})
                    )
                except (MemoryNotFoundError, InvalidInputError) as error:
                    report.rejected.append(
                        RejectedOp(op=op.op, ref=op.ref, text=op.text, reason=str(error))
                    )
        return report

    def forget(self, user_id: str) -> int:
        """Erase every version of every memory of the user. Returns how many were erased."""
        where = Where(user_id=require_user_id(user_id))
        with self.write_lock(user_id):
            total = self.engine.count(where)
            self.engine.delete(where)
            left = self.engine.count(where)
        if left:
            raise RuntimeError(f"forget left {left} memories of {user_id!r}; run it again")
        return total

    def _apply_single(self, user_id: str, op: PlannedOp) -> AppliedOp:
        """One operation for API callers: errors are raised, not reported."""
        user_id = require_user_id(user_id)
        vectors = self._embed_ops([op])
        with self.write_lock(user_id):
            return self._retrying(lambda: self._apply_one(user_id, op, vectors))

    def _retrying(self, attempt: Callable[[], AppliedOp]) -> AppliedOp:
        """Run an operation until its conditional writes win (each try reads afresh)."""
        for tries in range(WRITE_ATTEMPTS):
            try:
                return attempt()
            except _Conflict:
                time.sleep(random.uniform(0.002, 0.01) * (tries + 1))
        raise StoreConflictError(
            "the memory kept changing under concurrent writers; try the operation again"
        )

    def _embed_ops(self, ops: list[PlannedOp]) -> dict[str, list[float]]:
        """Vectors for the texts these operations may write (invalid texts are left to
        `_apply_one` to reject), keyed by the cleaned text."""
        texts: dict[str, None] = {}
        for op in ops:
            if op.op in ("ADD", "UPDATE"):
                try:
                    texts[clean_memory_text(op.text)] = None
                except InvalidInputError:
                    continue
        if not texts:
            return {}
        return dict(zip(texts, self._document_vectors(list(texts)), strict=True))

    def _apply_one(self, user_id: str, op: PlannedOp, vectors: dict[str, list[float]]) -> AppliedOp:
        at = now_utc()
        if op.op == "NOOP":
            return AppliedOp(op="NOOP", ref=op.ref, memory_id=op.target_id, result="unchanged")
        if op.op == "ADD":
            return self._add(user_id, op, at, vectors)
        if op.target_id is None:
            raise InvalidInputError(f"{op.op} needs the id of an existing memory")
        # Never past the end of this memory's own versions: a version merged into another
        # memory links to it, and an operation must not change a memory it was not shown.
        head = self._head(user_id, op.target_id)
        record = head.record
        merged_into = record.superseded_by if record.status == "superseded" else None
        if op.op == "DELETE":
            if _older(op, record):
                return AppliedOp(
                    op="DELETE",
                    ref=op.ref,
                    memory_id=record.id,
                    text=record.text,
                    result="unchanged",
                    detail=_kept_newer(op, record),
                )
            if record.status == "deleted":
                return AppliedOp(
                    op="DELETE", ref=op.ref, memory_id=record.id, result="already deleted"
                )
            if merged_into:
                return AppliedOp(
                    op="DELETE",
                    ref=op.ref,
                    memory_id=record.id,
                    text=record.text,
                    result="unchanged",
                    detail=f"already merged into {merged_into}, which is left as it is",
                )
            self._change(head, "deleted", MemoryEvent(op="DELETE", at=at, source=op.source))
            return AppliedOp(
                op="DELETE", ref=op.ref, memory_id=record.id, text=record.text, result="deleted"
            )
        # UPDATE
        text = clean_memory_text(op.text)
        category = clean_category(op.category or record.category)
        if record.status != "active":
            # Deleted, or merged into another memory, meanwhile: keep what the user just
            # said as a new memory (with the old one's category) and touch nothing else.
            added = self._add(user_id, replace(op, category=category), at, vectors)
            gone = f"merged into {merged_into}" if merged_into else "deleted"
            return added.model_copy(
                update={"op": "UPDATE", "detail": f"its target was {gone} meanwhile"}
            )
        if text_hash(text) == text_hash(record.text) and category == record.category:
            return AppliedOp(
                op="UPDATE", ref=op.ref, memory_id=record.id, text=record.text, result="unchanged"
            )
        if _older(op, record):
            return self._keep_newer(head, op, text, category, at, vectors)
        duplicate = self._active_duplicate(user_id, text)
        if duplicate is not None and duplicate.id != record.id:
            event = MemoryEvent(
                op="SUPERSEDED", at=at, source=op.source, detail=f"merged into {duplicate.id}"
            )
            self._change(head, "superseded", event, superseded_by=duplicate.id)
            return AppliedOp(
                op="UPDATE",
                ref=op.ref,
                memory_id=duplicate.id,
                text=duplicate.text,
                result="merged",
            )
        new_id = self._replace(
            head,
            text,
            category,
            vectors[text],
            at=at,
            operation="UPDATE",
            source=op.source,
            observed_at=op.observed_at or at,
        )
        return AppliedOp(op="UPDATE", ref=op.ref, memory_id=new_id, text=text, result="updated")

    def _keep_newer(
        self,
        head: Stored,
        op: PlannedOp,
        text: str,
        category: str,
        at: datetime,
        vectors: dict[str, list[float]],
    ) -> AppliedOp:
        """An UPDATE from something the user said before the memory's current version
        (history ingested out of order): the newer version stays active and the older
        statement joins the memory's history as a superseded version pointing to it, so
        it is never lost and can be restored. Applying the same stale UPDATE again adds
        nothing."""
        record = head.record
        assert op.observed_at is not None  # `_older` checked it
        detail = _kept_newer(op, record)
        where = Where(
            user_id=record.user_id, lineage_ids=[record.lineage_id], text_hashes=[text_hash(text)]
        )
        known = [
            r
            for r in (record_from_point(p) for p in self.engine.scroll(where))
            if r.observed_at == op.observed_at
        ]
        if not known:
            version = self._new_version(
                record.user_id,
                text,
                category,
                at=at,
                operation="UPDATE",
                source=op.source,
                observed_at=op.observed_at,
                lineage_id=record.lineage_id,
                detail=detail,
            )
            self._insert(
                version.model_copy(update={"status": "superseded", "superseded_by": record.id}),
                vectors[text],
            )
        return AppliedOp(
            op="UPDATE",
            ref=op.ref,
            memory_id=record.id,
            text=record.text,
            result="unchanged",
            detail=detail,
        )

    def _add(
        self, user_id: str, op: PlannedOp, at: datetime, vectors: dict[str, list[float]]
    ) -> AppliedOp:
        text = clean_memory_text(op.text)
        duplicate = self._active_duplicate(user_id, text)
        if duplicate is not None:
            return AppliedOp(
                op="ADD",
                ref=op.ref,
                memory_id=duplicate.id,
                text=duplicate.text,
                result="duplicate",
            )
        record = self._new_version(
            user_id,
            text,
            clean_category(op.category),
            at=at,
            operation="ADD",
            source=op.source,
            observed_at=op.observed_at or at,
        )
        self._insert(record, vectors[text])
        kept = self._settle_duplicates(user_id, text)  # another writer may have added it too
        if kept.id != record.id:
            return AppliedOp(
                op="ADD", ref=op.ref, memory_id=kept.id, text=kept.text, result="duplicate"
            )
        return AppliedOp(op="ADD", ref=op.ref, memory_id=record.id, text=text, result="added")

    def _restore(self, user_id: str, op: PlannedOp) -> AppliedOp:
        assert op.target_id is not None
        version = self._get(user_id, op.target_id).record
        self._repair(user_id, [version.id], writer=True)
        version = self._get(user_id, op.target_id).record
        head = self._head(user_id, version.id)
        if version.id == head.record.id and version.status == "active":
            return AppliedOp(
                op="RESTORE", memory_id=version.id, text=version.text, result="already active"
            )
        duplicate = self._active_duplicate(user_id, version.text)
        if duplicate is not None:  # restoring would create a second, identical memory
            return AppliedOp(
                op="RESTORE",
                memory_id=duplicate.id,
                text=duplicate.text,
                result="already active",
                detail=f"as {duplicate.id}",
            )
        at = now_utc()
        if version.id == head.record.id:  # deleted, or merged into another memory
            self._change(head, "active", MemoryEvent(op="RESTORE", at=at, source=op.source))
            self._settle_duplicates(user_id, version.text)
            return AppliedOp(
                op="RESTORE", memory_id=version.id, text=version.text, result="restored"
            )
        new_id = self._replace(
            head,
            version.text,
            version.category,
            self._vector(version.id),  # the version's own vector: no embedding call
            at=at,
            operation="RESTORE",
            source=op.source,
            observed_at=version.observed_at,
            detail=f"restored from {version.id}",
        )
        return AppliedOp(op="RESTORE", memory_id=new_id, text=version.text, result="restored")

    # -- version plumbing ----------------------------------------------------------------

    def _head(self, user_id: str, memory_id: str) -> Stored:
        """The newest version of `memory_id`'s memory, following `superseded_by` links
        (finishing interrupted updates on the way).

        A link may lead into another memory (a merge); the walk stops there, so nothing
        done to this memory (update, delete, restore) ever reaches the one it merged into.
        """
        stored = self._get(user_id, memory_id)
        seen = {stored.record.id}
        while True:
            if stored.record.status == "active" and stored.record.superseded_by:
                self._repair(user_id, [stored.record.id], writer=True)
                stored = self._get(user_id, stored.record.id)
                if stored.record.status == "active" and stored.record.superseded_by:
                    raise _Conflict()  # another writer's update is in flight: wait for it
            successor_id = stored.record.superseded_by
            if not successor_id or successor_id in seen:
                return stored
            successors = self._get_many(user_id, [successor_id])
            if not successors or successors[0].record.lineage_id != stored.record.lineage_id:
                return stored
            stored = successors[0]
            seen.add(stored.record.id)

    def _active_duplicate(self, user_id: str, text: str) -> MemoryRecord | None:
        """The user's active memory with this text (an indexed lookup), if any."""
        where = Where(user_id=user_id, status="active", text_hashes=[text_hash(text)])
        records = [record_from_point(p) for p in self.engine.scroll(where)]
        shown = self._without_replaced(user_id, records)
        return min(
            (r for r in records if r.id in shown), key=lambda r: (r.created_at, r.id), default=None
        )

    def _settle_duplicates(self, user_id: str, text: str) -> MemoryRecord:
        """Keep one active copy of a text: the oldest; later copies (written at the same
        time by another writer) are merged into it. Every writer picks the same one."""
        where = Where(user_id=user_id, status="active", text_hashes=[text_hash(text)])
        copies = sorted(
            (stored_from_point(p) for p in self.engine.scroll(where)),
            key=lambda s: (s.record.created_at, s.record.id),
        )
        kept = copies[0].record
        for copy in copies[1:]:
            if copy.record.superseded_by:
                continue  # an update of it is in flight; its writer settles it
            event = MemoryEvent(
                op="SUPERSEDED",
                at=now_utc(),
                source=Source(actor="store"),
                detail=f"merged into {kept.id}: the same text was added concurrently",
            )
            try:
                self._change(copy, "superseded", event, superseded_by=kept.id)
            except _Conflict:
                continue  # changed meanwhile; whoever changed it settles it
        return kept

    def _repair(self, user_id: str, ids: list[str], *, writer: bool) -> dict[str, str]:
        """Finish what an interrupted update left among these versions; old id -> new id.

        An active version linked to a successor that exists is marked superseded. A link
        to a successor that never appeared is dropped by a `writer` (who holds the user's
        lock) when the claim is dead: made by this process, or older than `CLAIM_LEASE`
        (younger, from another process: that update may still be in flight).
        """
        finished: dict[str, str] = {}
        stored = [
            s
            for s in self._get_many(user_id, ids)
            if s.record.status == "active" and s.record.superseded_by
        ]
        written = {
            s.record.id
            for s in self._get_many(user_id, [s.record.superseded_by or "" for s in stored])
        }
        for version in stored:
            successor = version.record.superseded_by or ""
            try:
                if successor in written:
                    event = MemoryEvent(
                        op="SUPERSEDED",
                        at=now_utc(),
                        source=Source(actor="repair"),
                        detail="completed an interrupted update",
                    )
                    self._change(version, "superseded", event, superseded_by=successor)
                    finished[version.record.id] = successor
                elif writer and self._dead(version):
                    self._write(version, version.record.model_copy(update={"superseded_by": None}))
            except _Conflict:
                current = self._get_many(user_id, [version.record.id])
                if current and current[0].record.status == "superseded":
                    finished[version.record.id] = current[0].record.superseded_by or ""
        return finished

    def _dead(self, claimed: Stored) -> bool:
        """Whether an update's claim on this version can no longer complete (`_repair`)."""
        if not claimed.pending_since or (claimed.writer or "").startswith(self.writer_id):
            return True
        try:
            return now_utc() - datetime.fromisoformat(claimed.pending_since) > CLAIM_LEASE
        except ValueError:
            return True

    def _replace(
        self,
        head: Stored,
        text: str,
        category: str,
        vector: list[float],
        *,
        at: datetime,
        operation: EventName,
        source: Source,
        observed_at: datetime,
        detail: str | None = None,
    ) -> str:
        """Write a new version of `head`'s memory and retire `head`, safely against crashes
        and concurrent writers.

        1. `head` is claimed: a conditional write links it to the new id while it stays
        readable (a concurrent writer that changed `head` first wins; this one retries).
        2. The new version is written. 3. `head` is marked superseded. A crash after 1
        leaves a link to nothing (ignored, dropped after `CLAIM_LEASE`); after 2, both are
        active and every reader follows the link to the new one and completes step 3.
        """
        new_id = str(uuid.uuid4())
        record = head.record
        claimed = self._write(
            head,
            record.model_copy(update={"superseded_by": new_id}),
            pending_since=at.isoformat(),
        )
        new = self._new_version(
            record.user_id,
            text,
            category,
            at=at,
            operation=operation,
            source=source,
            observed_at=observed_at,
            lineage_id=record.lineage_id,
            supersedes=record.id,
            detail=detail,
            point_id=new_id,
        )
        self._insert(new, vector)
        event = MemoryEvent(op="SUPERSEDED", at=at, source=source)
        try:
            self._change(claimed, "superseded", event, superseded_by=new_id)
        except _Conflict:  # a reader completed step 3 first, or the claim was taken away
            current = self._get(record.user_id, record.id).record
            if not (current.status == "superseded" and current.superseded_by == new_id):
                self.engine.delete_ids([new_id])  # never linked: withdraw it and retry
                raise
        self._settle_duplicates(record.user_id, text)
        return new_id

    def _new_version(
        self,
        user_id: str,
        text: str,
        category: str,
        *,
        at: datetime,
        operation: EventName,
        source: Source,
        observed_at: datetime,
        lineage_id: str | None = None,
        supersedes: str | None = None,
        detail: str | None = None,
        point_id: str | None = None,
    ) -> MemoryRecord:
        new_id = point_id or str(uuid.uuid4())
        return MemoryRecord(
            id=new_id,
            user_id=user_id,
            text=text,
            category=category,
            status="active",
            created_at=at,
            updated_at=at,
            observed_at=observed_at,
            supersedes=supersedes,
            source=source,
            lineage_id=lineage_id or new_id,
            events=[MemoryEvent(op=operation, at=at, source=source, detail=detail)],
        )

    def _insert(self, record: MemoryRecord, vector: list[float]) -> None:
        self.engine.upsert([stored_point(Stored(record), vector)], insert_only=True)

    def _vector(self, memory_id: str) -> list[float]:
        return self.engine.retrieve([memory_id], with_dense=True)[0].dense or []

    def _change(
        self,
        stored: Stored,
        status: MemoryStatus,
        event: MemoryEvent,
        superseded_by: str | None = None,
    ) -> Stored:
        record = stored.record
        changed = record.model_copy(
            update={
                "status": status,
                "updated_at": event.at,
                "superseded_by": superseded_by if status == "superseded" else None,
                "events": [*record.events, event],
            }
        )
        return self._write(stored, changed)

    def _write(
        self, stored: Stored, record: MemoryRecord, *, pending_since: str | None = None
    ) -> Stored:
        """Change a version's metadata if nobody changed it since `stored` was read
        (its text and vector never change). Raises `_Conflict` when another writer did."""
        token = f"{self.writer_id}:{uuid.uuid4().hex}"
        new = Stored(record, stored.revision + 1, token, pending_since)
        where = Where(user_id=record.user_id, ids=[record.id], revision=stored.revision)
        self.engine.set_metadata(where, payload(new)["metadata"])
        current = self.engine.retrieve([record.id])
        if not current or stored_from_point(current[0]).writer != token:
            raise _Conflict()
        return new


# -- helpers -------------------------------------------------------------------------------


def require_user_id(user_id: str) -> str:
    """The run context's rule for user ids, as an `InvalidInputError`."""
    try:
        return validate_user_id(user_id)
    except ValueError as error:
        raise InvalidInputError(str(error)) from None


def _older(op: PlannedOp, record: MemoryRecord) -> bool:
    """Whether the operation comes from something said before the memory's current
    version: an older observation never overwrites or deletes a newer one."""
    return op.observed_at is not None and op.observed_at < record.observed_at


def _kept_newer(op: PlannedOp, record: MemoryRecord) -> str:
    said = op.observed_at.date().isoformat() if op.observed_at else "earlier"
    return (
        f"said {said}, before the current version (said "
        f"{record.observed_at.date().isoformat()}), which is kept"
    )


def _canonical_uuid(value: str) -> str | None:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return None
