"""Pydantic contracts: what the LLM returns, what the store keeps, what a turn reports."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field

MemoryStatus = Literal["active", "superseded", "deleted"]
OpName = Literal["ADD", "UPDATE", "DELETE", "NOOP"]
EventName = Literal["ADD", "UPDATE", "DELETE", "RESTORE", "SUPERSEDED", "IMPORT", "MOVE"]


class Fact(BaseModel):
    """An atomic, self-contained statement about the user (DSPy extract output item), with
    the dates it holds between when the user said them (`valid_from`, `valid_until`)."""

    text: str
    category: str
    # Left out of what a model is shown when unset, so a lasting fact costs no prompt.
    valid_from: date | None = Field(
        default=None,
        description="The first day it is true, when said; else null.",
        exclude_if=lambda value: value is None,
    )
    valid_until: date | None = Field(
        default=None,
        description="The last day it is true, when said or implied; else null.",
        exclude_if=lambda value: value is None,
    )


class ObservedFact(Fact):
    """A fact with the provenance it needs until it is applied to the store."""

    observed_at: datetime
    thread_id: str | None = None
    message_ids: list[str] = Field(default_factory=list)


class MemoryOp(BaseModel):
    """One operation decided by the maintain step (DSPy maintain output item).

    `id` is the small integer the LLM was shown for an existing memory, never a point id.
    """

    op: OpName
    id: int | None = None
    text: str | None = None
    category: str | None = None
    valid_from: date | None = None
    valid_until: date | None = Field(
        default=None,
        description="The last day it is true: set it on an UPDATE of an old memory a new "
        "fact ends (with its own text), rather than deleting it.",
    )


class Source(BaseModel):
    """Where a memory version (or a change to it) came from."""

    thread_id: str | None = None
    message_ids: list[str] = Field(default_factory=list)
    actor: str = "chat"
    agent_id: str | None = Field(  # the agent the run acted as (None: no agent)
        default=None, exclude_if=lambda value: value is None
    )


class MemoryEvent(BaseModel):
    """One entry of a version's audit trail: what happened, when, and what caused it."""

    op: EventName
    at: datetime
    source: Source = Field(default_factory=Source)
    detail: str | None = None


class MemoryRecord(BaseModel):
    """One stored version of a memory, as the store returns it."""

    id: str
    user_id: str
    text: str
    category: str
    status: MemoryStatus
    created_at: datetime
    updated_at: datetime
    observed_at: datetime
    supersedes: str | None = None
    superseded_by: str | None = None
    source: Source = Field(default_factory=Source)
    lineage_id: str
    events: list[MemoryEvent] = Field(default_factory=list)
    score: float | None = None
    # When it is true for the user (None: from when it was said, with no end). A memory
    # whose `valid_until` has passed is past: kept, shown with its dates, not current.
    valid_from: date | None = None
    valid_until: date | None = None
    # Whose own memory it is: None is the user's shared memory, seen by every agent of the
    # user; an agent id, a memory only that agent sees (engram.memory.engines.base.Agents).
    agent_id: str | None = None

    def is_past(self, today: date) -> bool:
        return self.valid_until is not None and self.valid_until < today


class NumberedMemory(BaseModel):
    """An existing memory as the memory programs see it: a small integer id (never a
    point id) and the date the user said it. Passed as structured data, so a newline in
    its text cannot pose as another entry."""

    id: int
    text: str
    category: str
    said: date
    valid_from: date | None = Field(default=None, exclude_if=lambda value: value is None)
    valid_until: date | None = Field(default=None, exclude_if=lambda value: value is None)

    @classmethod
    def of(cls, id: int, memory: MemoryRecord) -> NumberedMemory:
        return cls(
            id=id,
            text=memory.text,
            category=memory.category,
            said=memory.observed_at.date(),
            valid_from=memory.valid_from,
            valid_until=memory.valid_until,
        )


class Candidate(BaseModel):
    """An existing memory shown to the maintain step under a small integer `ref`."""

    ref: int
    memory: MemoryRecord


Outcome = Literal[
    "added",
    "updated",
    "deleted",
    "restored",
    "moved",  # the store changed
    "duplicate",
    "merged",
    "unchanged",
    "already deleted",
    "already active",  # it did not
]
CHANGES: tuple[Outcome, ...] = ("added", "updated", "deleted", "restored", "moved")


class AppliedOp(BaseModel):
    """An operation that reached the store, with what it did (`memory_id`: the version
    that holds the result)."""

    op: OpName | Literal["RESTORE"]
    ref: int | None = None
    memory_id: str | None = None
    text: str | None = None
    result: Outcome
    detail: str | None = None


class RejectedOp(BaseModel):
    """An operation (or fact) that was refused, with the reason; never silently dropped."""

    op: str
    ref: int | None = None
    text: str | None = None
    reason: str


class ProfileLine(BaseModel):
    """One line of a user's profile and the memories (point ids) it rests on."""

    text: str
    memory_ids: list[str]


class Profile(BaseModel):
    """A user's profile: the lasting core facts always put in the chat prompt, each line
    resting on active memories. Versioned like a memory: `version_id` names this version,
    `events` say what made it (and, for an earlier version, what replaced it).
    `pinned`: memories that always appear in it."""

    user_id: str
    lines: list[ProfileLine] = Field(default_factory=list)
    pinned: list[str] = Field(default_factory=list)
    version_id: str | None = None  # None: the user has no profile yet
    status: MemoryStatus = "active"
    updated_at: datetime | None = None
    # When the profile program last looked at the memories for the current version (it
    # may have kept the lines as they were); None for an earlier version.
    considered_at: datetime | None = None
    events: list[MemoryEvent] = Field(default_factory=list)

    def cited(self) -> set[str]:
        """Every memory id the profile rests on or pins."""
        return {i for line in self.lines for i in line.memory_ids} | set(self.pinned)

    def chars(self) -> int:
        """The lines' characters as the prompt shows them ("- text", one per line)."""
        return sum(len(line.text) + 3 for line in self.lines)


class CitedLine(BaseModel):
    """A profile line as the profile program reads and writes it: the small integer ids
    of the memories it rests on, never point ids."""

    text: str
    memory_ids: list[int]


class Unextracted(BaseModel):
    """A user message whose fact extraction failed; the next turn or a retry tries again."""

    message_id: str
    observed_at: datetime
