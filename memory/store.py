"""The memory store: versioned, per-user memories over a Qdrant engine.

Every read and write names the user. A memory is a chain of versions (a lineage): UPDATE
writes a new version and marks the old one `superseded`, DELETE marks `deleted`, so no
text is ever destroyed until the explicit `forget`. Only `active` versions are searched.
Time runs by what the user said: an UPDATE or DELETE from a statement older than the
memory's current version (history ingested out of order) never replaces or deletes it;
the older text joins the memory's history instead (`_keep_newer`).

Writes are safe when several processes share one Qdrant server: every change of a version
is a conditional write on its `revision` (`engram.memory.versions`: it applies only if nobody
changed the version since it was read), and a writer that loses re-reads and tries again
(`_retrying`). Per-process locks
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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from functools import partial
from typing import TypeVar

from langchain_core.embeddings import Embeddings
from qdrant_client import QdrantClient

from engram.memory.engines.base import SHARED, Agents, Engine, TimeRange, Where
from engram.memory.engines.qdrant_server import ServerEngine
from engram.memory.keywords import query_keywords
from engram.memory.payload import (
    Stored,
    clean_category,
    clean_memory_text,
    normalize_text,
    record_from_point,
    stored_from_point,
    stored_point,
    text_hash,
)
from engram.memory.profile import (
    MAX_LINE_CHARS,
    ProfileVersions,
    current_pins,
    fit,
    grounded,
    pinned_lines,
    profile_key,
    shown_chars,
)
from engram.memory.retrieval import (
    MAX_CANDIDATES,
    OVERFETCH,
    Fused,
    Retrieval,
    fuse,
    keyword_scores,
    searches,
)
from engram.memory.versions import (
    Conflict,
    Validity,
    Versions,
    canonical_uuid,
    new_version,
    now_utc,
)
from engram.state.context import ALL_AGENTS, AgentScope, validate_agent_id, validate_user_id
from engram.state.contracts import (
    AppliedOp,
    MemoryEvent,
    MemoryRecord,
    MemoryStatus,
    OpName,
    Outcome,
    Profile,
    ProfileLine,
    RejectedOp,
    Source,
)
from engram.state.errors import (
    EmbeddingDimensionError,
    InvalidInputError,
    MemoryNotFoundError,
    StoreConflictError,
)

__all__ = [
    "ApplyReport",
    "MemoryStore",
    "PlannedOp",
    "ProfileReport",
    "clean_category",
    "clean_memory_text",
    "normalize_text",
    "text_hash",
]

PAGE = 1000
# Writes of one user in one process take one of a fixed set of locks (users share
# stripes): memory stays bounded however many users a server has seen.
LOCK_STRIPES = 64
WRITE_ATTEMPTS = 20  # conditional writes lost to concurrent writers before giving up
RECENT_VECTORS = 256  # document vectors kept between a turn's search and its writes
ERASED = "the user's memories were erased (forget) while this write was being prepared"
READ_ATTEMPTS = 3  # searches whose winners changed while being read, before settling
Written = TypeVar("Written")


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
    valid_from: date | None = None
    valid_until: date | None = None  # None on an UPDATE: the memory's own is kept


@dataclass
class ApplyReport:
    applied: list[AppliedOp] = field(default_factory=list)
    rejected: list[RejectedOp] = field(default_factory=list)


@dataclass
class ProfileReport:
    """What `save_profile` did: the version written (None: nothing changed), the lines
    refused and why, and those left out by the size bound."""

    profile: Profile | None = None
    refused: list[RejectedOp] = field(default_factory=list)
    left_out: list[ProfileLine] = field(default_factory=list)


class MemoryStore:
    """Per-user versioned memories. Pass an engine (`engines.edge.EdgeEngine`,
    `engines.qdrant_server.ServerEngine`) or a `QdrantClient` (wrapped in a `ServerEngine`).

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
        profile_chars: int = 800,
        ttl_days: Mapping[str, int] | None = None,
        private_agents: Iterable[str] = (),
        on_progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        if isinstance(engine, QdrantClient):
            engine = ServerEngine(engine, collection, embeddings)
        self.engine: Engine = engine
        self.embeddings = embeddings
        self.dims = dims if dims is not None else len(embeddings.embed_query("dimension probe"))
        self.embedding_id = f"{embedding_id}:{self.dims}"
        self.retrieval = retrieval or Retrieval()
        # Signs exported vectors and ids: an import reuses a vector only if this key signed
        # it for exactly that text, and a file's ids only if it signed them for the importing
        # user (`transfer.ids_mac`). Without a persistent key, only this process's exports
        # verify.
        self.vector_key = vector_key or os.urandom(32)
        self._locks = [threading.RLock() for _ in range(LOCK_STRIPES)]
        # Marks this store's writes: a claim it made is dead once a writer of this store
        # holds the user's lock again (the claiming thread held it and finished or died).
        self.writer_id = uuid.uuid4().hex
        self.versions = Versions(self.engine, self.writer_id)
        self.profiles = ProfileVersions(self.engine, self.versions, self.dims)
        self.profile_chars = profile_chars  # the profile's size bound (ENGRAM_PROFILE_CHARS)
        # Days a memory of these categories stays true after it was last said, unless
        # said otherwise (ENGRAM_TTL): restating it renews it (`_validity`).
        self.ttl_days = {clean_category(name): days for name, days in (ttl_days or {}).items()}
        # Agents whose new memories are their own (ENGRAM_PRIVATE_AGENTS); every other agent's
        # new memories are shared by all the user's agents (`home`).
        self.private_agents = frozenset(validate_agent_id(a) for a in private_agents)
        # Erasures per user (`forget`): a write prepared before one (its embeddings are made
        # outside the user's lock) must not land after it.
        self._erasures: dict[str, int] = {}
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
        self.engine.ensure_indexes()  # e.g. `valid_until`, newer than the collection
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

    def home(self, agent_id: str | None) -> str | None:
        """Where the new memories of a run as `agent_id` go: the agent's own when it is a
        private agent, else the user's shared memories (None)."""
        return agent_id if agent_id in self.private_agents else None

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
        valid_on: date | None = None,
        as_of: datetime | None = None,
        agent_id: str | None = None,
        embedding: list[float] | None = None,
    ) -> list[MemoryRecord]:
        """The user's `k` active memories most relevant to `query`, best first; with
        `min_score`, only those that score at least that (the relevance floor); with
        `observed`, only those the user said within that time range; with `valid_on`, only
        those still true that day (not past their `valid_until`). With `as_of`, among what
        the store held as true at that moment instead (`held_at`): nothing is changed. Searched
        as `agent_id`: the shared memories and that agent's own (none: the shared only).
        `embedding`: `embed_query(query)`, when the caller has it already, so a caller
        searching twice for one message does not embed it twice."""
        if embedding is not None and len(embedding) != self.dims:
            raise ValueError(
                f"embedding has {len(embedding)} dimensions; this store's have {self.dims}"
            )
        user_id = require_user_id(user_id)
        where = Where(
            user_id=user_id,
            status="active",
            category=category,
            observed=observed,
            valid_on=valid_on,
            agents=seen_by(agent_id),
        )
        dense = [self.embed_query(query) if embedding is None else embedding]
        if as_of is None:
            return self._search(where, [query], dense, k, min_score)[0]
        held = {
            r.id: r
            for r in self.held_at(user_id, as_of, agent_id=agent_id)
            if category in (None, r.category)
        }
        if not held:
            return []
        where = replace(where, status=None, ids=list(held), valid_on=None)
        found = self._search(where, [query], dense, k, min_score)[0]
        return [held[r.id].model_copy(update={"score": r.score}) for r in found]

    def embed_query(self, query: str) -> list[float]:
        """`query`'s vector as `search` embeds it (pass it back as `embedding`)."""
        return self.embeddings.embed_query(query)

    def search_many(
        self,
        user_id: str,
        queries: list[str],
        k: int = 5,
        category: str | None = None,
        *,
        min_score: float | None = None,
        observed: TimeRange | None = None,
        agent_id: str | None = None,
    ) -> list[list[MemoryRecord]]:
        """`search` for several texts that read like memories (a turn's new facts), in one
        embedding call and one batch of engine queries. They are embedded as documents, and
        the vectors are kept a while: writing those texts next (`apply`) embeds nothing."""
        user_id = require_user_id(user_id)
        if not queries:
            return []
        dense = self._document_vectors(queries)
        where = Where(
            user_id=user_id,
            status="active",
            category=category,
            observed=observed,
            agents=seen_by(agent_id),
        )
        return self._search(where, queries, dense, k, min_score)

    def _search(
        self,
        where: Where,
        queries: list[str],
        dense: list[list[float]],
        k: int,
        min_score: float | None,
    ) -> list[list[MemoryRecord]]:
        user_id = where.user_id
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
            if where.status != "active":  # an as-of search: versions as they were
                shown = {r.id for r in records}
                break
            shown = self.versions.without_replaced(user_id, records)
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

        Each search first asks for `OVERFETCH` x `room` hits; a text whose best `room` are
        not certain from those (`Fused.exact`: a memory below both cuts could outrank them)
        is searched again four times deeper, up to `MAX_CANDIDATES`, so the ranking is the
        same whatever `k` was asked. Payloads are a good part of a search's cost and only
        the few best hits need them, so the searches return scores only (keyword hits
        rescored by dense similarity in the engine, dense hits scored by keywords), and the
        winners' payloads are read by id afterwards. A winner that no longer matches
        `where` when read changed meanwhile (an update retired it, say, and its successor
        came too late for the search): the ranking is stale, None, and the caller searches
        again; the `last` try drops such versions instead.
        """
        keywords = [query_keywords(text) for text in queries]
        fused: dict[int, Fused] = {}
        limit = room * OVERFETCH
        while len(fused) < len(queries):
            todo = [i for i in range(len(queries)) if i not in fused]
            plans = [
                searches(where, dense[i], keywords[i], limit, self.retrieval, lean=True)
                for i in todo
            ]
            results = iter(self.engine.query([q for plan in plans for q in plan]))
            hits = [[next(results) for _ in plan] for plan in plans]
            scoring = {
                index: query
                for index, found in zip(todo, hits, strict=True)
                if (query := keyword_scores(where, keywords[index], found, limit)) is not None
            }
            scored = self.engine.query(list(scoring.values())) if scoring else []  # rarely needed
            scores = dict(zip(scoring, scored, strict=True))
            for index, found in zip(todo, hits, strict=True):
                ranked = fuse(found, room, limit, self.retrieval, scores.get(index, []))
                if ranked.exact or limit >= MAX_CANDIDATES:
                    fused[index] = ranked
            limit = min(limit * 4, MAX_CANDIDATES)
        rows = [fused[i].ranked for i in range(len(queries))]
        winners = list(dict.fromkeys(p.id for row in rows for p, _ in row))
        read = [record_from_point(p) for p in self.engine.retrieve(winners)]
        # Status (and scope, moved by `move`) is all a search filters on that a version's
        # changes can touch.
        current = {
            r.id: r
            for r in read
            if r.user_id == where.user_id
            and where.status in (None, r.status)
            and (where.agents is None or where.agents.admits(r.agent_id))
        }
        if len(current) < len(winners) and not last:
            return None
        return [[(current[p.id], score) for p, score in row if p.id in current] for row in rows]

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

    def get(self, user_id: str, memory_id: str, *, agent_id: AgentScope = None) -> MemoryRecord:
        """One version by id; another user's id, or another agent's private one (as seen
        by `agent_id`), is reported exactly like a missing one."""
        return self.versions.get(require_user_id(user_id), memory_id, seen_by(agent_id)).record

    def memories(
        self,
        user_id: str,
        *,
        status: MemoryStatus | None = "active",
        category: str | None = None,
        as_of: datetime | None = None,
        created_after: datetime | None = None,
        agent_id: AgentScope = None,
    ) -> list[MemoryRecord]:
        """The user's memories (all pages, no cap), oldest first; `status=None` for all;
        `created_after`: only versions written since. With `as_of`: what the store held as
        true at that moment (`held_at`). As `agent_id` sees them: the shared ones and that
        agent's own (None: the shared only; `ALL_AGENTS`: every agent's too)."""
        user_id = require_user_id(user_id)
        if as_of is not None:
            held = self.held_at(user_id, as_of, agent_id=agent_id)
            return [r for r in held if category in (None, r.category)]
        where = Where(
            user_id=user_id,
            status=status,
            category=category,
            created_after=created_after,
            agents=seen_by(agent_id),
        )
        records = [record_from_point(p) for p in self.engine.scroll(where)]
        if len(self.versions.without_replaced(user_id, records)) != len(records):
            records = [record_from_point(p) for p in self.engine.scroll(where)]  # repaired
        return sorted(records, key=lambda r: (r.created_at, r.id))

    def held_at(
        self, user_id: str, moment: datetime, *, agent_id: AgentScope = None
    ) -> list[MemoryRecord]:
        """The versions the store held as true at `moment`, oldest first: written by then,
        active then (their events replayed up to it: superseded, deleted, restored), and
        not past their `valid_until` on that day. What the chatbot knew when it said
        something; a read only. A forgotten user's past is gone with them. Scopes are
        today's (a memory moved between agents is read where it is now)."""
        if moment.tzinfo is None:
            raise InvalidInputError("an as-of time needs its UTC offset (e.g. ...+00:00)")
        user_id = require_user_id(user_id)
        where = Where(user_id=user_id, agents=seen_by(agent_id))
        records = [record_from_point(p) for p in self.engine.scroll(where)]
        held = [
            as_it_was(r, moment)
            for r in records
            if status_at(r, moment) == "active" and not r.is_past(moment.date())
        ]
        return sorted(held, key=lambda r: (r.created_at, r.id))

    def count(
        self, user_id: str, *, status: MemoryStatus | None = None, agent_id: AgentScope = None
    ) -> int:
        where = Where(user_id=require_user_id(user_id), status=status, agents=seen_by(agent_id))
        return self.engine.count(where)

    def history(
        self, user_id: str, memory_id: str, *, agent_id: AgentScope = None
    ) -> list[MemoryRecord]:
        """Every version of the memory that `memory_id` belongs to, oldest first (a memory's
        versions share its scope)."""
        user_id = require_user_id(user_id)
        seen = seen_by(agent_id)
        lineage = self.versions.get(user_id, memory_id, seen).record.lineage_id
        points = self.engine.scroll(Where(user_id=user_id, lineage_ids=[lineage], agents=seen))
        return sorted((record_from_point(p) for p in points), key=lambda r: (r.created_at, r.id))

    def export_records(
        self, user_id: str, *, agent_id: AgentScope = None
    ) -> Iterator[tuple[MemoryRecord, list[float]]]:
        """Every version of every memory of the user `agent_id` sees (see `memories`), with
        its vector, oldest first."""
        where = Where(user_id=require_user_id(user_id), agents=seen_by(agent_id))
        points = self.engine.scroll(where, with_dense=True)
        rows = [(record_from_point(p), p.dense or []) for p in points]
        yield from sorted(rows, key=lambda row: (row[0].created_at, row[0].id))

    def vector_mac(self, text: str, vector: list[float]) -> str:
        """Binds a vector to its text and embedding backend (see `vector_key`)."""
        message = b"\0".join(
            [self.embedding_id.encode(), text.encode(), struct.pack(f"<{len(vector)}f", *vector)]
        )
        return hmac.new(self.vector_key, message, hashlib.sha256).hexdigest()

    # -- writes --------------------------------------------------------------------------

    def add(
        self,
        user_id: str,
        text: str,
        category: str | None = None,
        *,
        observed_at: datetime | None = None,
        source: Source | None = None,
        valid_from: date | None = None,
        valid_until: date | None = None,
        agent_id: str | None = None,
    ) -> AppliedOp:
        """Add a memory (true from `valid_from` until `valid_until` when given) as `agent_id`
        (into its own memories if it is a private agent, `home`); an exact duplicate of an
        active one it sees is a no-op (idempotent)."""
        op = PlannedOp(
            "ADD",
            text=text,
            category=category,
            observed_at=observed_at,
            source=source or Source(actor="api"),
            valid_from=valid_from,
            valid_until=valid_until,
        )
        return self._apply_single(user_id, op, agent_id)

    def update(
        self,
        user_id: str,
        memory_id: str,
        text: str,
        category: str | None = None,
        *,
        source: Source | None = None,
        agent_id: AgentScope = None,
    ) -> AppliedOp:
        """Write a new version of the memory (the old one stays in its history); it must
        be one `agent_id` sees, and the new version stays in its scope."""
        op = PlannedOp(
            "UPDATE",
            target_id=memory_id,
            text=text,
            category=category,
            source=source or Source(actor="api"),
        )
        return self._apply_single(user_id, op, agent_id)

    def delete(
        self,
        user_id: str,
        memory_id: str,
        *,
        source: Source | None = None,
        agent_id: AgentScope = None,
    ) -> AppliedOp:
        """Mark a memory `agent_id` sees deleted; it stays restorable until `forget`."""
        op = PlannedOp("DELETE", target_id=memory_id, source=source or Source(actor="api"))
        return self._apply_single(user_id, op, agent_id)

    def restore(
        self,
        user_id: str,
        memory_id: str,
        *,
        source: Source | None = None,
        agent_id: AgentScope = None,
    ) -> AppliedOp:
        """Make a deleted or superseded version (one `agent_id` sees) the active one of
        its memory again."""
        op = PlannedOp("NOOP", target_id=memory_id, source=source or Source(actor="api"))
        user_id = require_user_id(user_id)
        seen = seen_by(agent_id)
        with self.write_lock(user_id):
            return self._retrying(lambda: self._restore(user_id, op, seen))

    def apply(
        self, user_id: str, ops: Iterable[PlannedOp], *, agent_id: str | None = None
    ) -> ApplyReport:
        """Apply operations for one user, as `agent_id` (a run's agent, or None).

        An operation that cannot be applied (unknown id, another user's id or another
        agent's private one, empty text) is reported in `rejected` and the others still
        apply. A target changed by a concurrent turn is followed to its newest version, so
        neither change is lost. New memories go where `home` says.
        """
        user_id = require_user_id(user_id)
        seen_by(agent_id)  # a bad agent id is the caller's error, raised
        ops = [_as_agent(op, agent_id) for op in ops]
        report = ApplyReport()
        erasures = self._erasures.get(user_id, 0)
        vectors = self._embed_ops(ops)  # before the lock: may be a slow network call
        with self.write_lock(user_id):
            if self._erasures.get(user_id, 0) != erasures:
                report.rejected += [
                    RejectedOp(op=op.op, ref=op.ref, text=op.text, reason=ERASED) for op in ops
                ]
                return report
            for op in ops:
                try:
                    applied = self._retrying(
                        partial(self._apply_one, user_id, op, vectors, agent_id)
                    )
                    report.applied.append(
                        applied.model_copy(update={"detail": applied.detail or op.detail})
                    )
                except (MemoryNotFoundError, InvalidInputError) as error:
                    report.rejected.append(
                        RejectedOp(op=op.op, ref=op.ref, text=op.text, reason=str(error))
                    )
        return report

    def erasure_mark(self, user_id: str) -> int:
        """How many times this process erased the user (`forget`): a write prepared outside
        the user's lock checks it did not change meanwhile."""
        return self._erasures.get(user_id, 0)

    def forget(self, user_id: str, *, agent_id: str | None = None) -> int:
        """Erase every version of every memory of the user, every agent's included, and
        their profile. With `agent_id`: only that agent's own memories (the shared ones,
        and the profile built from them, stay). Returns how many versions were erased."""
        user_id = require_user_id(user_id)  # " alice" is alice: her profile goes too
        if agent_id is None:
            where = Where(user_id=user_id)
            erased = [where, Where(user_id=profile_key(user_id))]
        else:
            where = Where(user_id=user_id, agents=Agents.only(require_agent_id(agent_id)))
            erased = [where]
        with self.write_lock(user_id):
            self._erasures[user_id] = self._erasures.get(user_id, 0) + 1
            total = self.engine.count(where)
            for gone in erased:
                self.engine.delete(gone)
            left = sum(self.engine.count(gone) for gone in erased)
        if left:
            raise RuntimeError(f"forget left {left} memories of {user_id!r}; run it again")
        return total

    def move(
        self,
        user_id: str,
        memory_id: str,
        to_agent: str | None,
        *,
        agent_id: AgentScope = ALL_AGENTS,
        source: Source | None = None,
    ) -> AppliedOp:
        """Move a memory, every version of it, into `to_agent`'s own memories, or (None)
        into the user's shared ones. `agent_id`: whom the memory must be visible to now
        (a server passes the caller's agent; the operator's default reaches any). An
        identical memory already active there absorbs it, as an UPDATE would."""
        user_id = require_user_id(user_id)
        to = None if to_agent is None else require_agent_id(to_agent)
        seen = seen_by(agent_id)

        def attempt() -> AppliedOp:
            record = self.versions.head(user_id, memory_id, seen).record
            lineage = Where(user_id=user_id, lineage_ids=[record.lineage_id])
            versions = [stored_from_point(p) for p in self.engine.scroll(lineage)]
            if seen is not None and not all(seen.admits(v.record.agent_id) for v in versions):
                # an earlier move into another agent's scope was interrupted: only someone
                # who sees the whole memory may finish or undo it
                raise MemoryNotFoundError(f"no memory {memory_id!r} for user {user_id!r}")
            todo = [v for v in versions if v.record.agent_id != to]
            if not todo:
                return AppliedOp(
                    op="UPDATE", memory_id=record.id, text=record.text, result="unchanged"
                )
            # The head moves first: until the move is finished (by trying it again, if it
            # was interrupted), the current text is where it is going, and the versions
            # left behind are what their old scope has seen already.
            for version in sorted(todo, key=lambda v: v.record.id != record.id):
                update: dict[str, object] = {"agent_id": to}
                if version.record.id == record.id:
                    event = MemoryEvent(
                        op="MOVE",
                        at=now_utc(),
                        source=source or Source(actor="api"),
                        detail=f"from {_scope_name(record.agent_id)} to {_scope_name(to)}",
                    )
                    update["events"] = [*version.record.events, event]
                self.versions.write(version, version.record.model_copy(update=update))
            kept = (
                self.versions.settle_duplicates(user_id, record.text, to)
                if record.status == "active"
                else None
            )
            if kept is not None and kept.id != record.id:
                return AppliedOp(op="UPDATE", memory_id=kept.id, text=kept.text, result="merged")
            return AppliedOp(op="UPDATE", memory_id=record.id, text=record.text, result="moved")

        with self.write_lock(user_id):
            return self._retrying(attempt)

    def _apply_single(self, user_id: str, op: PlannedOp, agent_id: AgentScope) -> AppliedOp:
        """One operation for API callers: errors are raised, not reported."""
        user_id = require_user_id(user_id)
        seen_by(agent_id)  # a bad agent id is the caller's error, raised
        op = _as_agent(op, agent_id)
        erasures = self._erasures.get(user_id, 0)
        vectors = self._embed_ops([op])
        with self.write_lock(user_id):
            if self._erasures.get(user_id, 0) != erasures:
                raise InvalidInputError(ERASED)
            return self._retrying(lambda: self._apply_one(user_id, op, vectors, agent_id))

    def _retrying(self, attempt: Callable[[], Written]) -> Written:
        """Run an operation until its conditional writes win (each try reads afresh)."""
        for tries in range(WRITE_ATTEMPTS):
            try:
                return attempt()
            except Conflict:
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

    def _apply_one(
        self,
        user_id: str,
        op: PlannedOp,
        vectors: dict[str, list[float]],
        agent_id: AgentScope,
    ) -> AppliedOp:
        """One operation as `agent_id`: it reads and changes only memories that agent sees;
        an ADD goes to its `home`, an UPDATE stays in its target's scope."""
        at = now_utc()
        seen = seen_by(agent_id)
        if op.op == "NOOP":
            return self._restated(user_id, op, at, seen, agent_id)
        if op.op == "ADD":
            if agent_id is ALL_AGENTS:
                raise InvalidInputError("a new memory is added as one agent, or as none")
            return self._add(user_id, op, at, vectors, self.home(agent_id), seen)
        if op.target_id is None:
            raise InvalidInputError(f"{op.op} needs the id of an existing memory")
        # Never past the end of this memory's own versions: a version merged into another
        # memory links to it, and an operation must not change a memory it was not shown.
        head = self.versions.head(user_id, op.target_id, seen)
        record = head.record
        op = self._discreet(op, record, agent_id)
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
            self.versions.change(head, "deleted", MemoryEvent(op="DELETE", at=at, source=op.source))
            return AppliedOp(
                op="DELETE", ref=op.ref, memory_id=record.id, text=record.text, result="deleted"
            )
        # UPDATE
        text = clean_memory_text(op.text)
        category = clean_category(op.category or record.category)
        if record.status != "active":
            # Deleted, or merged into another memory, meanwhile: keep what the user just
            # said as a new memory (with the old one's category) and touch nothing else.
            added = self._add(
                user_id, replace(op, category=category), at, vectors, record.agent_id, seen
            )
            gone = f"merged into {merged_into}" if merged_into else "deleted"
            return added.model_copy(
                update={"op": "UPDATE", "detail": f"its target was {gone} meanwhile"}
            )
        validity = self._validity(op, category, op.observed_at or at, record)
        unchanged = text_hash(text) == text_hash(record.text) and category == record.category
        if unchanged and validity == (record.valid_from, record.valid_until):
            return AppliedOp(
                op="UPDATE", ref=op.ref, memory_id=record.id, text=record.text, result="unchanged"
            )
        if _older(op, record):
            return self._keep_newer(head, op, text, category, at, vectors)
        duplicate = (
            None
            if unchanged
            else self.versions.active_duplicate(user_id, text, Agents.only(record.agent_id))
        )
        if duplicate is not None and duplicate.id != record.id:
            event = MemoryEvent(
                op="SUPERSEDED", at=at, source=op.source, detail=f"merged into {duplicate.id}"
            )
            self.versions.change(head, "superseded", event, superseded_by=duplicate.id)
            return AppliedOp(
                op="UPDATE",
                ref=op.ref,
                memory_id=duplicate.id,
                text=duplicate.text,
                result="merged",
            )
        new_id = self.versions.replace(
            head,
            text,
            category,
            vectors[text] if text in vectors else self.versions.vector(record.id),
            at=at,
            operation="UPDATE",
            source=op.source,
            observed_at=op.observed_at or at,
            validity=validity,
            detail=_validity_change(record, validity) if unchanged else None,
        )
        return AppliedOp(op="UPDATE", ref=op.ref, memory_id=new_id, text=text, result="updated")

    def _validity(
        self, op: PlannedOp, category: str, observed: datetime, previous: MemoryRecord | None
    ) -> Validity:
        """A new version's validity. What the operation says comes first. A version with
        its predecessor's text (an UPDATE that only dates it) keeps the dates it does not
        give; a new text does not (an end said of "User is in Tokyo until Friday" is not
        one of "User lives in Tokyo"). Without an end, a category with a time to live ends
        that many days after the fact starts or is said, whichever is later. An inherited
        end before a new start (a closed fact reopened) is dropped."""
        same_text = previous is not None and text_hash(op.text or "") == text_hash(previous.text)
        start = op.valid_from or (previous.valid_from if previous and same_text else None)
        end = op.valid_until
        inherited = end is None and previous is not None and same_text
        if inherited:
            assert previous is not None
            end = previous.valid_until
        ttl = self.ttl_days.get(category)
        if end is None and ttl is not None and not inherited:
            end = self._ttl_end(observed.date(), start, ttl)
        if start is not None and end is not None and end < start:
            if inherited:
                end = None
            else:
                raise InvalidInputError(f"valid until {end} is before valid from {start}")
        return start, end

    @staticmethod
    def _ttl_end(said: date, start: date | None, ttl: int) -> date:
        return max(said, start or said) + timedelta(days=ttl)

    def _ttl_ended(self, record: MemoryRecord) -> bool:
        """Whether the memory's end came from its category's time to live (not from the
        user or by hand): only such an end is renewed when the fact is said again."""
        ttl = self.ttl_days.get(record.category)
        if ttl is None or record.valid_until is None:
            return False
        return record.valid_until == self._ttl_end(
            record.observed_at.date(), record.valid_from, ttl
        )

    def _discreet(self, op: PlannedOp, record: MemoryRecord, agent_id: AgentScope) -> PlannedOp:
        """The operation as a change of `record` records it: a private agent's change of a
        shared memory names no agent, thread or message, so the shared history does not
        tell other agents that (or when) the user raised it with that agent."""
        if record.agent_id is not None or agent_id not in self.private_agents:
            return op
        return replace(op, source=Source(actor=op.source.actor))

    def _restated(
        self,
        user_id: str,
        op: PlannedOp,
        at: datetime,
        seen: Agents | None,
        agent_id: AgentScope = None,
    ) -> AppliedOp:
        """A NOOP: the fact is already known. It may still date the memory, or renew it
        (`_said_again`); nothing else changes."""
        unchanged = AppliedOp(op="NOOP", ref=op.ref, memory_id=op.target_id, result="unchanged")
        if op.target_id is None:
            return unchanged
        record = self.versions.head(user_id, op.target_id, seen).record
        if record.status != "active":
            return unchanged
        op = self._discreet(op, record, agent_id)
        return self._said_again(user_id, replace(op, text=record.text), at, record)

    def _renewal(self, record: MemoryRecord, said: datetime) -> date | None:
        """The later end a memory gets when said again at `said`, or None."""
        ttl = self.ttl_days.get(record.category)
        if ttl is None or record.status != "active" or not self._ttl_ended(record):
            return None
        renewed = self._ttl_end(said.date(), record.valid_from, ttl)
        assert record.valid_until is not None  # `_ttl_ended`
        return renewed if renewed > record.valid_until else None

    def _said_again(
        self, user_id: str, op: PlannedOp, at: datetime, duplicate: MemoryRecord
    ) -> AppliedOp:
        """A fact the user's memory already holds, said again (an ADD of the same text, or a
        NOOP): the memory takes the dates the user gave now ("User is in Tokyo until the
        20th"); without any, an end that came from its category's time to live is renewed
        (an end the user gave, or one cleared by hand, stays). A statement older than the
        memory changes nothing."""
        kept: Outcome = "duplicate" if op.op == "ADD" else "unchanged"
        found = AppliedOp(
            op=op.op, ref=op.ref, memory_id=duplicate.id, text=duplicate.text, result=kept
        )
        if _older(op, duplicate):
            return found
        validity: Validity | None = None
        if op.valid_from is not None or op.valid_until is not None:
            validity = self._validity(op, duplicate.category, op.observed_at or at, duplicate)
        elif op.observed_at is not None and (renewed := self._renewal(duplicate, op.observed_at)):
            validity = (duplicate.valid_from, renewed)
        if validity is None or validity == (duplicate.valid_from, duplicate.valid_until):
            return found
        head = self.versions.head(user_id, duplicate.id, Agents.only(duplicate.agent_id))
        new_id = self._redate(head, op, at, validity)
        detail = f"said again: true until {validity[1]}" if validity[1] else "said again, dated"
        return found.model_copy(update={"memory_id": new_id, "result": "updated", "detail": detail})

    def _redate(self, head: Stored, op: PlannedOp, at: datetime, validity: Validity) -> str:
        """A new version of `head` with the same text and `validity` (said again at the
        operation's time, when it has one)."""
        record = head.record
        return self.versions.replace(
            head,
            record.text,
            record.category,
            self.versions.vector(record.id),
            at=at,
            operation="UPDATE",
            source=op.source,
            observed_at=op.observed_at or record.observed_at,
            validity=validity,
            detail=_validity_change(record, validity),
        )

    def set_validity(
        self,
        user_id: str,
        memory_id: str,
        valid_from: date | None,
        valid_until: date | None,
        *,
        source: Source | None = None,
        agent_id: AgentScope = None,
    ) -> AppliedOp:
        """Set (or, with None, clear) when a memory `agent_id` sees is true, by hand: a new
        version with the same text, the old one kept in its history."""
        user_id = require_user_id(user_id)
        seen = seen_by(agent_id)
        if valid_from is not None and valid_until is not None and valid_until < valid_from:
            raise InvalidInputError(f"valid until {valid_until} is before valid from {valid_from}")

        def attempt() -> AppliedOp:
            head = self.versions.head(user_id, memory_id, seen)
            record = head.record
            if record.status != "active":
                raise InvalidInputError(f"memory {record.id} is {record.status}; restore it first")
            if (record.valid_from, record.valid_until) == (valid_from, valid_until):
                return AppliedOp(
                    op="UPDATE", memory_id=record.id, text=record.text, result="unchanged"
                )
            new_id = self.versions.replace(
                head,
                record.text,
                record.category,
                self.versions.vector(record.id),
                at=now_utc(),
                operation="UPDATE",
                source=source or Source(actor="api"),
                observed_at=record.observed_at,
                validity=(valid_from, valid_until),
                detail=_validity_change(record, (valid_from, valid_until)),
            )
            return AppliedOp(op="UPDATE", memory_id=new_id, text=record.text, result="updated")

        with self.write_lock(user_id):
            return self._retrying(attempt)

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
            version = new_version(
                record.user_id,
                text,
                category,
                at=at,
                operation="UPDATE",
                source=op.source,
                observed_at=op.observed_at,
                lineage_id=record.lineage_id,
                detail=detail,
                validity=(op.valid_from, op.valid_until),
                agent_id=record.agent_id,
            )
            self.versions.insert(
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
        self,
        user_id: str,
        op: PlannedOp,
        at: datetime,
        vectors: dict[str, list[float]],
        home: str | None,
        seen: Agents | None,
    ) -> AppliedOp:
        """A new memory in `home`'s scope (an agent's own, or shared: None), unless one
        the writer sees (`seen`) already holds the text."""
        text = clean_memory_text(op.text)
        duplicate = self.versions.active_duplicate(user_id, text, seen)
        if duplicate is not None:  # `home` is the writer when it is a private agent
            return self._said_again(user_id, self._discreet(op, duplicate, home), at, duplicate)
        category = clean_category(op.category)
        record = new_version(
            user_id,
            text,
            category,
            at=at,
            operation="ADD",
            source=op.source,
            observed_at=op.observed_at or at,
            validity=self._validity(op, category, op.observed_at or at, None),
            agent_id=home,
        )
        self.versions.insert(record, vectors[text])
        # another writer may have added it too
        kept = self.versions.settle_duplicates(user_id, text, home) or record
        if kept.id != record.id:
            return AppliedOp(
                op="ADD", ref=op.ref, memory_id=kept.id, text=kept.text, result="duplicate"
            )
        return AppliedOp(op="ADD", ref=op.ref, memory_id=record.id, text=text, result="added")

    def _restore(self, user_id: str, op: PlannedOp, seen: Agents | None) -> AppliedOp:
        assert op.target_id is not None
        version = self.versions.get(user_id, op.target_id, seen).record
        self.versions.repair(user_id, [version.id], writer=True)
        version = self.versions.get(user_id, op.target_id).record
        head = self.versions.head(user_id, version.id, seen)
        if version.id == head.record.id and version.status == "active":
            return AppliedOp(
                op="RESTORE", memory_id=version.id, text=version.text, result="already active"
            )
        scope = Agents.only(version.agent_id)
        duplicate = self.versions.active_duplicate(user_id, version.text, scope)
        redating = (  # the same text with other dates: restoring brings the dates back
            duplicate is not None
            and duplicate.id == head.record.id
            and (duplicate.valid_from, duplicate.valid_until)
            != (version.valid_from, version.valid_until)
        )
        if duplicate is not None and not redating:  # it would be a second, identical memory
            return AppliedOp(
                op="RESTORE",
                memory_id=duplicate.id,
                text=duplicate.text,
                result="already active",
                detail=f"as {duplicate.id}",
            )
        at = now_utc()
        if version.id == head.record.id:  # deleted, or merged into another memory
            self.versions.change(head, "active", MemoryEvent(op="RESTORE", at=at, source=op.source))
            self.versions.settle_duplicates(user_id, version.text, version.agent_id)
            return AppliedOp(
                op="RESTORE", memory_id=version.id, text=version.text, result="restored"
            )
        new_id = self.versions.replace(
            head,
            version.text,
            version.category,
            self.versions.vector(version.id),  # the version's own vector: no embedding call
            at=at,
            operation="RESTORE",
            source=op.source,
            observed_at=version.observed_at,
            detail=f"restored from {version.id}",
            validity=(version.valid_from, version.valid_until),
        )
        return AppliedOp(op="RESTORE", memory_id=new_id, text=version.text, result="restored")

    # -- profile -------------------------------------------------------------------------

    def profile(self, user_id: str, *, as_stored: bool = False, on: date | None = None) -> Profile:
        """The user's profile as the chatbot sees it on day `on` (default: today, UTC): the
        lines whose memories are all still active and true, with the pinned memories,
        within the size bound (`memory.profile.grounded`). `as_stored`: the current version
        as written, lines awaiting revision included."""
        user_id = require_user_id(user_id)
        stored = self.profiles.current(user_id)
        if as_stored:
            return stored
        line_ids = {i for line in stored.lines for i in line.memory_ids}
        active = self.active(user_id, line_ids, on=on)
        pins_now = self.pins_now(user_id, stored.pinned, on=on)
        return grounded(stored, active, pins_now, self.profile_chars)

    def pins_now(
        self, user_id: str, pinned: Iterable[str], *, on: date | None = None
    ) -> dict[str, MemoryRecord]:
        """Pin id -> its memory's current version, still true on day `on` (default today,
        UTC): a pin follows its memory's updates; a deleted or past one is left out."""
        today = on or now_utc().date()
        current = self.current_versions(user_id, pinned)
        return {pin: record for pin, record in current.items() if not record.is_past(today)}

    def profile_history(self, user_id: str) -> list[Profile]:
        """Every version of the user's profile, oldest first, each with what made it."""
        return self.profiles.history(require_user_id(user_id))

    def active(
        self, user_id: str, memory_ids: Iterable[str], *, on: date | None = None
    ) -> dict[str, MemoryRecord]:
        """Those of `memory_ids` that are active memories of the user and still true on day
        `on` (default: today, UTC; a past memory is kept, not current), by id."""
        today = on or now_utc().date()
        stored = self.versions.get_many(require_user_id(user_id), list(memory_ids), SHARED)
        return {
            s.record.id: s.record
            for s in stored
            if s.record.status == "active" and not s.record.is_past(today)
        }

    def current_versions(self, user_id: str, memory_ids: Iterable[str]) -> dict[str, MemoryRecord]:
        """For each id, the active version of its memory now: itself, or the version an
        update replaced it with. Ids of deleted, merged-away or unknown memories are left
        out. (A profile line resting on a memory that changed is shown the new text.)"""
        user_id = require_user_id(user_id)
        found: dict[str, MemoryRecord] = {}
        for memory_id in dict.fromkeys(memory_ids):
            try:
                head = self.versions.head(user_id, memory_id, SHARED).record
            except MemoryNotFoundError:
                continue
            if head.status == "active":
                found[memory_id] = head
        return found

    def save_profile(
        self,
        user_id: str,
        lines: Sequence[ProfileLine],
        *,
        source: Source,
        detail: str | None = None,
        erasures: int | None = None,
        on: date | None = None,
    ) -> ProfileReport:
        """Write `lines` as the user's profile (its pins stay). A line must rest on active
        memories of this user: one that rests on none, or on an unknown, another user's,
        superseded, deleted or past memory, is refused with the reason. Lines about pinned
        memories come first; what passes the size bound is left out. Checked under the
        user's write lock, so a line cannot rest on a memory a concurrent write retired.
        `erasures` (`erasure_mark`, taken when the lines were being prepared): a `forget`
        since then refuses them all, so no profile outlives it. Nothing is written when
        nothing changed; an empty profile is written (it records when it was considered).
        `on`: the user's date the memories must be true on (default: today, UTC)."""
        user_id = require_user_id(user_id)

        def attempt() -> ProfileReport:
            if erasures is not None and self.erasure_mark(user_id) != erasures:
                refused = [
                    RejectedOp(op="PROFILE", text=line.text, reason=ERASED) for line in lines
                ]
                return ProfileReport(refused=refused)
            current = self.profiles.current(user_id)
            active = self.active(user_id, {i for line in lines for i in line.memory_ids}, on=on)
            pins_now = self.pins_now(user_id, current.pinned, on=on)
            pins, pinned = current_pins(current.pinned, pins_now)
            report = ProfileReport()
            accepted: list[ProfileLine] = []
            for line in lines:
                reason = _unsupported(line, active)
                if reason is None:
                    accepted.append(
                        ProfileLine(
                            text=" ".join(line.text.split()),
                            memory_ids=list(dict.fromkeys(line.memory_ids)),
                        )
                    )
                else:
                    report.refused.append(RejectedOp(op="PROFILE", text=line.text, reason=reason))
            stated = {i for line in accepted for i in line.memory_ids}
            # Pinned memories no line states are shown in their own words (`grounded`):
            # they take their room here, but are not stored as lines, so unpinning one
            # takes it out. Pins are stored as their memories' current versions.
            shown = pinned_lines([i for i in pins if i not in stated], pinned)
            kept, report.left_out = fit(shown + accepted, pins, self.profile_chars)
            kept = [line for line in kept if line not in shown]
            # Even an empty version is written: it records when the profile was last
            # considered (`nodes.update_profile` counts new memories since then).
            report.profile = self.profiles.write(
                user_id,
                kept,
                pins,
                at=now_utc(),
                operation="UPDATE",
                source=source,
                based_on=current.version_id,
                detail=detail,
            )
            return report

        with self.write_lock(user_id):
            return self._retrying(attempt)

    def pin(
        self,
        user_id: str,
        memory_id: str,
        *,
        source: Source | None = None,
        agent_id: AgentScope = None,
    ) -> Profile:
        """Pin an active shared memory (one `agent_id` sees): it always appears in the
        profile, in its own words unless a line states it. The pinned memories together
        must fit the size bound."""
        user_id = require_user_id(user_id)
        record = self.get(user_id, memory_id, agent_id=agent_id)
        if record.agent_id is not None:  # the profile is every agent's: shared memories only
            raise InvalidInputError(
                f"memory {record.id} is agent {record.agent_id!r}'s own; only shared memories "
                "are in the profile, which every agent of the user sees"
            )
        if record.status != "active":
            raise InvalidInputError(
                f"memory {record.id} is {record.status}; pin its current version "
                f"(`engram memories history {record.id}`)"
            )

        def attempt() -> Profile:
            current = self.profiles.current(user_id)
            pins, pinned = current_pins(current.pinned, self.pins_now(user_id, current.pinned))
            if record.id in pinned:
                return self.profile(user_id)
            pins.append(record.id)
            texts = [*pinned.values(), record]
            if sum(shown_chars(r.text) for r in texts) > self.profile_chars:
                raise InvalidInputError(
                    f"the pinned memories would not fit the profile's {self.profile_chars} "
                    "characters (ENGRAM_PROFILE_CHARS); unpin one first"
                )
            self.profiles.write(
                user_id,
                current.lines,
                pins,
                at=now_utc(),
                operation="UPDATE",
                source=source or Source(actor="api"),
                based_on=current.version_id,
                detail=f"pinned {record.id}",
            )
            return self.profile(user_id)

        with self.write_lock(user_id):
            return self._retrying(attempt)

    def unpin(self, user_id: str, memory_id: str, *, source: Source | None = None) -> Profile:
        """Unpin a memory: it stays in the profile only while a line rests on it."""
        user_id = require_user_id(user_id)

        wanted = canonical_uuid(memory_id) or memory_id

        def attempt() -> Profile:
            current = self.profiles.current(user_id)
            now = self.current_versions(user_id, current.pinned)
            # the pin itself, or the memory it pins as it is now (a pin follows updates)
            kept = [i for i in current.pinned if wanted not in (i, now[i].id if i in now else i)]
            if len(kept) == len(current.pinned):
                raise MemoryNotFoundError(
                    f"memory {_short(memory_id)} is not pinned for {user_id!r}"
                )
            self.profiles.write(
                user_id,
                current.lines,
                kept,
                at=now_utc(),
                operation="UPDATE",
                source=source or Source(actor="api"),
                based_on=current.version_id,
                detail=f"unpinned {wanted}",
            )
            return self.profile(user_id)

        with self.write_lock(user_id):
            return self._retrying(attempt)

    def restore_profile(
        self, user_id: str, version_id: str, *, source: Source | None = None
    ) -> Profile:
        """Make an earlier version of the profile the current one, exactly as it was (a line
        whose memories changed since stays out of the chatbot's view until the next update,
        as `profile` says)."""
        user_id = require_user_id(user_id)

        def attempt() -> Profile:
            old = self.profiles.version(user_id, version_id)
            self.profiles.write(
                user_id,
                old.lines,
                old.pinned,
                at=now_utc(),
                operation="RESTORE",
                source=source or Source(actor="api"),
                based_on=self.profiles.current(user_id).version_id,
                detail=f"restored from {old.version_id}",
            )
            return self.profiles.current(user_id)

        with self.write_lock(user_id):
            return self._retrying(attempt)


# -- helpers -------------------------------------------------------------------------------


def require_user_id(user_id: str) -> str:
    """The run context's rule for user ids, as an `InvalidInputError`."""
    try:
        return validate_user_id(user_id)
    except ValueError as error:
        raise InvalidInputError(str(error)) from None


def require_agent_id(agent_id: str) -> str:
    """The run context's rule for agent ids, as an `InvalidInputError`."""
    try:
        return validate_agent_id(agent_id)
    except ValueError as error:
        raise InvalidInputError(str(error)) from None


def seen_by(agent_id: AgentScope) -> Agents | None:
    """What a caller acting as `agent_id` sees: the user's shared memories and that agent's
    own; no agent, the shared ones only; `ALL_AGENTS` (the operator), every scope."""
    if agent_id is ALL_AGENTS:
        return None
    if agent_id is None:
        return SHARED
    if not isinstance(agent_id, str):
        raise InvalidInputError(f"agent_id must be a string, not {type(agent_id).__name__}")
    return Agents(require_agent_id(agent_id))


def _as_agent(op: PlannedOp, agent_id: AgentScope) -> PlannedOp:
    """The operation with the agent it was made as in its source (provenance)."""
    if not isinstance(agent_id, str) or op.source.agent_id == agent_id:
        return op
    return replace(op, source=op.source.model_copy(update={"agent_id": agent_id}))


def _scope_name(agent_id: str | None) -> str:
    return "the shared memories" if agent_id is None else f"agent {agent_id!r}'s own"


def _short(text: str, limit: int = 80) -> str:
    """An id as an error message quotes it: bounded, whatever was sent."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _unsupported(line: ProfileLine, active: dict[str, MemoryRecord]) -> str | None:
    """Why a profile line cannot be written, or None when it rests on active memories."""
    text = " ".join(line.text.split())
    if not text:
        return "an empty line"
    if len(text) > MAX_LINE_CHARS:
        return f"a line over {MAX_LINE_CHARS} characters"
    if not line.memory_ids:
        return "the line rests on no memory"
    missing = [i for i in line.memory_ids if i not in active]
    if missing:
        return f"rests on {', '.join(missing)}: not an active memory of this user"
    return None


_STATUS_AFTER: dict[str, MemoryStatus] = {
    "SUPERSEDED": "superseded",
    "DELETE": "deleted",
    "RESTORE": "active",
}


def as_it_was(record: MemoryRecord, moment: datetime) -> MemoryRecord:
    """A version the store held at `moment`, as it was then: active, not yet replaced, with
    the events up to then."""
    events = [e for e in record.events if e.at <= moment]
    return record.model_copy(
        update={
            "status": "active",
            "superseded_by": None,
            "events": events,
            "updated_at": max((e.at for e in events), default=record.created_at),
        }
    )


def status_at(record: MemoryRecord, moment: datetime) -> MemoryStatus | None:
    """A version's status at `moment`, replaying its events (None: not written yet). The
    first event wrote the version; a version stored retired from the start (an older
    statement kept in a memory's history) never was active."""
    if record.created_at > moment:
        return None
    moves = [e for e in record.events[1:] if e.op in _STATUS_AFTER]
    if record.status != "active" and not moves:
        return record.status
    status: MemoryStatus = "active"
    for event in sorted(moves, key=lambda e: e.at):
        if event.at > moment:
            break
        status = _STATUS_AFTER[event.op]
    return status


def _validity_change(record: MemoryRecord, validity: Validity) -> str:
    def shown(span: Validity) -> str:
        start, end = span
        since = f"from {start}" if start else "from when said"
        return f"{since}, until {end}" if end else f"{since}, no end"

    before = shown((record.valid_from, record.valid_until))
    return f"true {shown(validity)} (was: {before})"


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
