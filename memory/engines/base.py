"""The small interface the store's semantics run on, and what its two engines share.

An engine keeps points in one collection (one Qdrant Edge shard, or one collection on a
Qdrant server): each point has a dense vector, a keyword (sparse, BM25) vector and a
payload in langchain-qdrant's layout (`page_content` + `metadata`). Every read and write
names one user (`Where.user_id`); only migration and backfill walk the whole collection.
Conditional writes (`Where.revision`) let several processes share a server safely.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol

DENSE = "dense"
KEYWORDS = "keywords"
CONTENT_KEY = "page_content"  # langchain-qdrant's payload layout
METADATA_KEY = "metadata"

# Keyword indexes serve the filters every call makes; `user_id` is the tenant key, so
# each user's points are stored together. Datetime indexes serve date-range filters.
KEYWORD_FIELDS = ("status", "category", "lineage_id", "text_hash", "agent_id")
INTEGER_FIELDS = ("revision",)
DATETIME_FIELDS = ("created_at", "updated_at", "observed_at", "valid_until")


@dataclass(frozen=True)
class Sparse:
    indices: list[int]
    values: list[float]


@dataclass(frozen=True)
class TimeRange:
    """A span of time, `start` included and `end` excluded; either side may be open.
    Filters `observed_at` (when the user said it) through the datetime index."""

    start: datetime | None = None
    end: datetime | None = None

    def __post_init__(self) -> None:
        for moment in (self.start, self.end):
            if moment is not None and moment.tzinfo is None:
                raise ValueError("a time range needs timezone-aware datetimes")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"empty time range: {self.start} to {self.end}")

    def __contains__(self, moment: datetime) -> bool:
        return (self.start is None or moment >= self.start) and (
            self.end is None or moment < self.end
        )

    def bounds(self) -> tuple[str | None, str | None]:
        """ISO 8601 bounds (`gte`, `lt`), as both engines' range conditions take them."""
        return (
            self.start.isoformat() if self.start is not None else None,
            self.end.isoformat() if self.end is not None else None,
        )


@dataclass(frozen=True)
class Agents:
    """Which of a user's memories a filter admits by scope: the shared ones (no
    `agent_id`), and those private to `agent_id`. `Agents("travel")` is what the travel
    agent sees; `Agents.only("travel")` is the travel agent's own and nothing shared."""

    agent_id: str | None = None
    shared: bool = True

    def __post_init__(self) -> None:
        if not self.shared and self.agent_id is None:
            raise ValueError("a scope admits shared memories, an agent's, or both")

    @classmethod
    def only(cls, agent_id: str | None) -> Agents:
        """Exactly one scope: `agent_id`'s own memories, or the shared ones (None)."""
        return cls(agent_id, shared=agent_id is None)

    def admits(self, agent_id: str | None) -> bool:
        """Whether a memory of this scope (its `agent_id`) passes."""
        return (self.shared and agent_id is None) or (
            agent_id is not None and agent_id == self.agent_id
        )


SHARED = Agents()  # the user's shared memories only: what a run without an agent sees


def excluded_but(agent_id: str | None) -> list[str]:
    """The `except` list of the one condition a scope with the shared memories filters with:
    *not* (an agent is set and it is not `agent_id`). Shared memories have no agent (null,
    or no key at all in points from before agents), which no `except` condition matches, so
    they pass; so does `agent_id`'s own. No agent id is blank, so `[""]` leaves out every
    agent's. Measured faster than "no agent, or this one" as two conditions on Qdrant Edge
    (benchmarks/agent_scopes.py)."""
    return [agent_id if agent_id is not None else ""]


@dataclass(frozen=True)
class Where:
    """A filter both engines understand: always one user, the rest optional."""

    user_id: str
    ids: Sequence[str] | None = None
    status: str | None = None
    category: str | None = None
    lineage_ids: Sequence[str] | None = None
    text_hashes: Sequence[str] | None = None
    revision: int | None = None
    observed: TimeRange | None = None  # `observed_at` within this range
    # Only versions still true on this day: no `valid_until`, or one not before it.
    valid_on: date | None = None
    created_after: datetime | None = None  # `created_at` later than this
    # Whose memories by scope (None: every scope, for the store's own walks of a lineage
    # or a whole user; every read a caller asks for names one).
    agents: Agents | None = None

    def matches(self) -> dict[str, str | int | list[str]]:
        """The metadata fields to match, by name (ids are separate: they are not payload)."""
        fields: dict[str, str | int | list[str] | None] = {
            "user_id": self.user_id,
            "status": self.status,
            "category": self.category,
            "lineage_id": list(self.lineage_ids) if self.lineage_ids is not None else None,
            "text_hash": list(self.text_hashes) if self.text_hashes is not None else None,
            "revision": self.revision,
        }
        return {name: value for name, value in fields.items() if value is not None}


@dataclass
class Point:
    id: str
    payload: dict[str, Any]
    dense: list[float] | None = None
    keywords: Sparse | None = None
    score: float | None = None


@dataclass(frozen=True)
class Query:
    """One search: by the dense vector or by keywords (IDF over the user's own points).

    A keyword search with `rescore` returns the same hits scored by their dense similarity
    to `rescore` instead (fusion needs that score for the hits the dense search missed; the
    engine computes it, so no vector leaves it). Hits come with their payloads unless
    `lean`, for a caller that reads the payloads of the few best hits by id afterwards.
    """

    where: Where
    limit: int
    dense: list[float] | None = None
    keywords: Sparse | None = None
    lean: bool = False
    rescore: list[float] | None = None


class Engine(Protocol):
    """What the store needs from Qdrant; `engines.edge` and `engines.qdrant_server`
    implement it."""

    location: str  # for messages: a path or a URL

    def dims(self) -> int | None:
        """The dense size of the existing collection, or None when there is none yet."""

    def ensure_indexes(self) -> None:
        """Build the payload indexes a collection written by an earlier version lacks."""

    def create(self, dims: int) -> None:
        """Create the collection with both vectors and the payload indexes."""

    def has_keywords(self) -> bool:
        """Whether the collection has the keyword vector (older ones do not)."""

    def add_keywords(self) -> None:
        """Add the keyword vector to an existing collection (then backfill it)."""

    def upsert(self, points: Sequence[Point], *, insert_only: bool = False) -> None: ...

    def set_metadata(self, where: Where, metadata: dict[str, Any]) -> None:
        """Replace the metadata of the points `where` matches (a conditional write)."""

    def without_keywords(self) -> Iterator[Point]:
        """Points written before hybrid retrieval (no keyword vector), with their dense
        vector; the store rewrites them."""

    def count_without_keywords(self) -> int: ...

    def retrieve(self, ids: Sequence[str], *, with_dense: bool = False) -> list[Point]: ...

    def scroll(
        self, where: Where | None, *, with_dense: bool = False, with_keywords: bool = False
    ) -> Iterator[Point]:
        """Every matching point, page by page; `None` walks the whole collection."""

    def count(self, where: Where | None) -> int: ...

    def delete(self, where: Where) -> None: ...

    def delete_ids(self, ids: Sequence[str]) -> None: ...

    def query(self, queries: Sequence[Query]) -> list[list[Point]]:
        """Several searches in one round trip, best first (see `Query` for what each hit
        carries)."""

    def close(self) -> None: ...
