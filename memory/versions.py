"""The version protocol under the store: how one version of a memory is read, changed and
replaced safely when several writers (threads, processes, server workers) share a Qdrant.

Every change of a version is a conditional write on its `revision`: it applies only if
nobody changed the version since it was read, else `Conflict` is raised and the caller
reads again and retries (`engram.memory.store.MemoryStore` does). An update claims the version it
replaces, writes the successor, then retires the old one (`Versions.replace`); whatever a
crash interrupts between those steps, readers and writers finish or undo
(`Versions.repair`). `engram.memory.store` holds the semantics built on this (ADD, UPDATE,
DELETE, RESTORE, duplicates, searches).
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

from engram.memory.engines.base import Agents, Engine, Where
from engram.memory.payload import (
    Stored,
    payload,
    record_from_point,
    stored_from_point,
    stored_point,
    text_hash,
)
from engram.state.contracts import EventName, MemoryEvent, MemoryRecord, MemoryStatus, Source
from engram.state.errors import MemoryNotFoundError

Validity = tuple[date | None, date | None]  # (valid_from, valid_until) of a version

# An update claims the version it replaces, then writes the successor. A claim whose
# successor never appeared within this time was left by a crash and is dropped.
CLAIM_LEASE = timedelta(seconds=30)


def now_utc() -> datetime:
    return datetime.now(UTC)


class Conflict(Exception):
    """A conditional write lost to a concurrent writer: read again and retry."""


class Versions:
    """Reads and conditional writes of single versions in `engine`, as writer `writer_id`
    (this process's store; tokens it writes start with it)."""

    def __init__(self, engine: Engine, writer_id: str) -> None:
        self.engine = engine
        self.writer_id = writer_id

    def get(self, user_id: str, memory_id: str, agents: Agents | None = None) -> Stored:
        """One version of the user's, within `agents`' scopes (None: any): another user's
        id, or another agent's private one, is reported exactly like a missing one."""
        found = self.get_many(user_id, [memory_id], agents)
        if not found:
            raise MemoryNotFoundError(f"no memory {memory_id!r} for user {user_id!r}")
        return found[0]

    def get_many(
        self, user_id: str, memory_ids: list[str], agents: Agents | None = None
    ) -> list[Stored]:
        ids = [canonical for i in memory_ids if (canonical := canonical_uuid(i))]
        stored = [stored_from_point(p) for p in self.engine.retrieve(ids)]
        return [
            s
            for s in stored
            if s.record.user_id == user_id and (agents is None or agents.admits(s.record.agent_id))
        ]

    def without_replaced(self, user_id: str, records: list[MemoryRecord]) -> set[str]:
        """Ids of these records that readers may show: not the old half of an update that
        a crash interrupted after its successor was written (that update is completed)."""
        pending = [r for r in records if r.status == "active" and r.superseded_by]
        if not pending:
            return {r.id for r in records}
        finished = self.repair(user_id, [r.id for r in pending], writer=False)
        return {r.id for r in records if r.id not in finished}

    def head(self, user_id: str, memory_id: str, agents: Agents | None = None) -> Stored:
        """The newest version of `memory_id`'s memory, following `superseded_by` links
        (finishing interrupted updates on the way); `memory_id` must be within `agents`'
        scopes (a memory's versions all share its scope).

        A link may lead into another memory (a merge); the walk stops there, so nothing
        done to this memory (update, delete, restore) ever reaches the one it merged into.
        It stops too at a version outside `agents` (a move between scopes interrupted
        half-way): what a caller may not see, it may not change either.
        """
        stored = self.get(user_id, memory_id, agents)
        seen = {stored.record.id}
        while True:
            if stored.record.status == "active" and stored.record.superseded_by:
                self.repair(user_id, [stored.record.id], writer=True)
                stored = self.get(user_id, stored.record.id)
                if stored.record.status == "active" and stored.record.superseded_by:
                    raise Conflict()  # another writer's update is in flight: wait for it
            successor_id = stored.record.superseded_by
            if not successor_id or successor_id in seen:
                return stored
            successors = self.get_many(user_id, [successor_id], agents)
            if not successors or successors[0].record.lineage_id != stored.record.lineage_id:
                return stored
            stored = successors[0]
            seen.add(stored.record.id)

    def active_duplicate(
        self, user_id: str, text: str, agents: Agents | None = None
    ) -> MemoryRecord | None:
        """The user's active memory with this text within `agents`' scopes (an indexed
        lookup), if any."""
        where = Where(
            user_id=user_id, status="active", text_hashes=[text_hash(text)], agents=agents
        )
        records = [record_from_point(p) for p in self.engine.scroll(where)]
        shown = self.without_replaced(user_id, records)
        return min(
            (r for r in records if r.id in shown), key=lambda r: (r.created_at, r.id), default=None
        )

    def settle_duplicates(
        self, user_id: str, text: str, agent_id: str | None
    ) -> MemoryRecord | None:
        """Keep one active copy of a text in one scope (`agent_id`'s own, or the shared
        memories): the oldest; later copies (written at the same time by another writer)
        are merged into it. Every writer picks the same one. None: no active copy is left
        (a concurrent writer retired or erased it meanwhile). A copy in another scope is
        another agent's business and stays."""
        where = Where(
            user_id=user_id,
            status="active",
            text_hashes=[text_hash(text)],
            agents=Agents.only(agent_id),
        )
        copies = sorted(
            (stored_from_point(p) for p in self.engine.scroll(where)),
            key=lambda s: (s.record.created_at, s.record.id),
        )
        if not copies:
            return None
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
                self.change(copy, "superseded", event, superseded_by=kept.id)
            except Conflict:
                continue  # changed meanwhile; whoever changed it settles it
        return kept

    def repair(self, user_id: str, ids: list[str], *, writer: bool) -> dict[str, str]:
        """Finish what an interrupted update left among these versions; old id -> new id.

        An active version linked to a successor that exists is marked superseded. A link
        to a successor that never appeared is dropped by a `writer` (who holds the user's
        lock) when the claim is dead: made by this process, or older than `CLAIM_LEASE`
        (younger, from another process: that update may still be in flight).
        """
        finished: dict[str, str] = {}
        stored = [
            s
            for s in self.get_many(user_id, ids)
            if s.record.status == "active" and s.record.superseded_by
        ]
        written = {
            s.record.id
            for s in self.get_many(user_id, [s.record.superseded_by or "" for s in stored])
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
                    self.change(version, "superseded", event, superseded_by=successor)
                    finished[version.record.id] = successor
                elif writer and self._dead(version):
                    self.write(version, version.record.model_copy(update={"superseded_by": None}))
            except Conflict:
                current = self.get_many(user_id, [version.record.id])
                if current and current[0].record.status == "superseded":
                    finished[version.record.id] = current[0].record.superseded_by or ""
        return finished

    def _dead(self, claimed: Stored) -> bool:
        """Whether an update's claim on this version can no longer complete (`repair`)."""
        if not claimed.pending_since or (claimed.writer or "").startswith(self.writer_id):
            return True
        try:
            return now_utc() - datetime.fromisoformat(claimed.pending_since) > CLAIM_LEASE
        except ValueError:
            return True

    def replace(
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
        validity: Validity = (None, None),
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
        claimed = self.write(
            head,
            record.model_copy(update={"superseded_by": new_id}),
            pending_since=at.isoformat(),
        )
        new = new_version(
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
            validity=validity,
            agent_id=record.agent_id,
        )
        self.insert(new, vector)
        event = MemoryEvent(op="SUPERSEDED", at=at, source=source)
        try:
            self.change(claimed, "superseded", event, superseded_by=new_id)
        except Conflict:  # a reader completed step 3 first, or the claim was taken away
            current = self.get(record.user_id, record.id).record
            if not (current.status == "superseded" and current.superseded_by == new_id):
                self.engine.delete_ids([new_id])  # never linked: withdraw it and retry
                raise
        self.settle_duplicates(record.user_id, text, record.agent_id)
        return new_id

    def insert(self, record: MemoryRecord, vector: list[float]) -> None:
        self.engine.upsert([stored_point(Stored(record), vector)], insert_only=True)

    def vector(self, memory_id: str) -> list[float]:
        return self.engine.retrieve([memory_id], with_dense=True)[0].dense or []

    def change(
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
        return self.write(stored, changed)

    def write(
        self, stored: Stored, record: MemoryRecord, *, pending_since: str | None = None
    ) -> Stored:
        """Change a version's metadata if nobody changed it since `stored` was read
        (its text and vector never change). Raises `Conflict` when another writer did."""
        token = f"{self.writer_id}:{uuid.uuid4().hex}"
        new = Stored(record, stored.revision + 1, token, pending_since)
        where = Where(user_id=record.user_id, ids=[record.id], revision=stored.revision)
        self.engine.set_metadata(where, payload(new)["metadata"])
        current = self.engine.retrieve([record.id])
        if not current or stored_from_point(current[0]).writer != token:
            raise Conflict()
        return new


def new_version(
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
    validity: Validity = (None, None),
    agent_id: str | None = None,
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
        valid_from=validity[0],
        valid_until=validity[1],
        agent_id=agent_id,
    )


def canonical_uuid(value: str) -> str | None:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return None
