"""The graph's state: the conversation plus what the nodes hand each other in a turn, and
what a caller may send in and reads out."""

from __future__ import annotations

import operator
from typing import Annotated, Any

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
from langgraph.types import Overwrite
from typing_extensions import TypedDict

from engram.state.contracts import (
    AppliedOp,
    Candidate,
    MemoryRecord,
    ObservedFact,
    Profile,
    RejectedOp,
    Unextracted,
)


class ChatInput(TypedDict):
    """What a caller sends to the chat graph: the new user message (with optional
    `additional_kwargs={"sent_at": ISO 8601}`). Any other key is ignored, so a caller
    cannot hand the memory steps facts or candidates of its own."""

    messages: Annotated[list[AnyMessage], add_messages]


class MemoryRun(TypedDict):
    """Where a turn's memory steps run when they run in the background (on a LangGraph
    server): join it (`client.runs.join(thread_id, run_id)`) for their report."""

    thread_id: str
    run_id: str


class MemoryStepsOutput(TypedDict, total=False):
    """What the memory steps report, in a chat run and an ingest run alike: the facts
    extracted, what changed, what was refused and why, and work kept for a later turn after
    a failure (`facts`, `unextracted`, named in `memory_error`)."""

    user_id: str
    agent_id: str | None  # the thread's agent (stamped with its user by the first turn)
    save: bool | None
    extracted: list[ObservedFact]
    facts: list[ObservedFact]
    unextracted: list[Unextracted]
    applied: list[AppliedOp]
    rejected: Annotated[list[RejectedOp], operator.add]
    memory_error: str | None


class ChatOutput(MemoryStepsOutput, total=False):
    """What a chat run returns: the conversation's window and what was recalled for the
    answer, beside what the memory steps did (or, when they run in the background, where:
    `memory_run`)."""

    messages: Annotated[list[AnyMessage], add_messages]
    profile: Profile | None  # the user's profile as the answer's prompt held it
    recalled: list[MemoryRecord]
    memory_run: MemoryRun | None


class EngramState(ChatOutput, total=False):
    """`facts`, `unextracted` and `profile_due` outlive a turn on purpose: work the
    memory steps could not finish is carried to the next turn (or `engram memories retry`)
    instead of being lost.

    `rejected` adds up over the nodes of a turn (each node returns only its own); the
    turn's first step resets it with `Overwrite` (see `TURN_RESET`)."""

    candidates: list[Candidate] | None  # None: not retrieved this turn
    # A profile update failed on this thread: its next run retries it, even if it saves
    # nothing (`nodes.update_profile`).
    profile_due: bool


# Per-turn fields start empty each turn; `facts` and `unextracted` carry over on purpose.
# `rejected` has a reducer (nodes add to it), so its reset must bypass it: `Overwrite`.
TURN_RESET: dict[str, Any] = {
    "profile": None,
    "recalled": [],
    "save": None,
    "extracted": [],
    "candidates": None,
    "applied": [],
    "rejected": Overwrite([]),
    "memory_error": None,
    "memory_run": None,
}
