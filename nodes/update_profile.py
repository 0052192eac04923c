"""update_profile: when the user's memories have changed in ways that may belong in their
profile, ONE DSPy call rewrites it from their memories; the store then refuses every line
that does not rest on the user's own active memories (`MemoryStore.save_profile`).

It costs no model call on turns that change nothing, and few on the others. After a run's
memory steps changed memories, the program runs when

- the profile rests on (or pins) a memory that is no longer current (updated, deleted,
  past its validity): the profile must follow it;
- the user has no profile yet and has a current memory in a profile category;
- `PROFILE_BATCH` memories in profile categories were written since the profile was last
  considered (until then a new fact is found by recall when a message is about it).

All three are read from the store, not from the thread, so they hold for every caller (a
chat thread, a server's memory run, `Memory.add` without a checkpointer). Like the other
memory steps it runs after the answer, with their timeouts and retries; a failed call keeps
the old profile and marks the thread (`profile_due`), so its next run tries again even if
it saves nothing, and the store still says an update is due to every other caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any

from langgraph.graph import END
from langgraph.runtime import Runtime

from engram.clients import Clients
from engram.identity import run_context
from engram.memory.store import MemoryStore, ProfileReport
from engram.nodes.common import turn_date, with_error
from engram.nodes.programs import UpdateProfile, run_memory_step
from engram.state.context import EngramContext
from engram.state.contracts import (
    CitedLine,
    MemoryRecord,
    NumberedMemory,
    Profile,
    ProfileLine,
    RejectedOp,
    Source,
)
from engram.state.errors import MemoryStepError
from engram.state.graph_state import EngramState

# Changes of memories in these categories may belong in a profile (extract's categories
# but "other"); see the module doc for when they lead to an update.
PROFILE_CATEGORIES = frozenset(
    {"personal", "location", "work", "relationships", "health", "preferences", "plans"}
)
PROFILE_BATCH = 3
PROFILE_MEMORIES = 60  # memories shown to the program, the profile's own first


def make_update_profile(
    clients: Clients, program: UpdateProfile
) -> Callable[..., Awaitable[dict[str, Any]]]:
    async def update_profile(state: EngramState, runtime: Runtime[EngramContext]) -> dict[str, Any]:
        if clients.settings.profile == "off":
            return {"profile_due": False}
        context = run_context(runtime)
        today = turn_date(state.get("messages", []))  # the user's date, as recall's

        def look() -> tuple[Profile, str | None, int]:  # one worker thread: the store blocks
            store = clients.store()
            current = store.profile(context.user_id, as_stored=True)
            return (
                current,
                update_reason(store, context.user_id, current, today),
                store.erasure_mark(context.user_id),
            )

        current, reason, erasures = await asyncio.to_thread(look)
        if reason is None:
            return {"profile_due": False}

        def inputs() -> tuple[list[CitedLine], list[MemoryRecord]]:
            return profile_inputs(clients.store(), context.user_id, current, today)

        lines, memories = await asyncio.to_thread(inputs)
        try:
            prediction = await run_memory_step(
                "update_profile",
                program,
                clients,
                context,
                current_profile=lines,
                memories=[NumberedMemory.of(i, m) for i, m in enumerate(memories, 1)],
                max_chars=clients.settings.profile_chars,
            )
        except MemoryStepError as error:  # the old profile stays; the next run retries
            return {"profile_due": True, "memory_error": with_error(state, str(error))}
        answered = list(prediction.lines or [])
        proposed, refused = cited_lines(answered, memories)
        if answered and not proposed:  # every line cited ids it was not shown: a bad answer
            message = "update_profile: every line the model wrote cited unknown ids"
            return {
                "profile_due": True,
                "rejected": refused,
                "memory_error": with_error(state, f"{message}; the profile is kept"),
            }
        thread = runtime.execution_info.thread_id if runtime.execution_info else None
        source = Source(thread_id=thread, actor="profile")

        def write() -> tuple[ProfileReport, Profile]:
            store = clients.store()
            report = store.save_profile(
                context.user_id,
                proposed,
                source=source,
                detail=reason,
                erasures=erasures,
                on=today,
            )
            return report, store.profile(context.user_id, on=today)

        try:
            report, profile = await asyncio.to_thread(write)
        except Exception as error:  # Qdrant down: the answer is out, the next run retries
            message = f"update_profile could not write: {error}"
            return {"profile_due": True, "memory_error": with_error(state, message)}
        refused += report.refused
        return {"profile_due": False, "profile": profile, "rejected": refused}

    return update_profile


async def route_after_memory_steps(state: EngramState) -> str:
    """Where a run whose memory steps changed nothing goes: to `update_profile` when an
    update failed on this thread before (it is retried), else to the end. A coroutine, like
    every route here (see `route_after_decide`)."""
    return "update_profile" if state.get("profile_due") else END


def update_reason(store: MemoryStore, user_id: str, current: Profile, today: date) -> str | None:
    """Why the profile needs the program now (see the module doc), or None; `today`: the
    user's date (that of the turn's latest message)."""
    cited = current.cited()
    gone = cited - store.active(user_id, cited, on=today).keys()
    if gone:
        return f"{len(gone)} of the memories it rests on changed"
    since = store.memories(user_id, created_after=current.considered_at)
    fresh = [
        m
        for m in since
        if m.category in PROFILE_CATEGORIES and m.id not in cited and not m.is_past(today)
    ]
    if current.version_id is None and fresh:
        return "the first memories that may belong in it"
    if len(fresh) >= PROFILE_BATCH:
        return f"{len(fresh)} new memories that may belong in it"
    return None


def profile_inputs(
    store: MemoryStore, user_id: str, current: Profile, today: date
) -> tuple[list[CitedLine], list[MemoryRecord]]:
    """What the program sees: the current lines, citing by small ids the memories they rest
    on as those are now (a line about a memory since updated cites the new text; one about
    a deleted or no longer true memory cites nothing, for the program to drop), and the
    current memories to draw on:
    the profile's own first, then pinned ones, then the newest in profile categories, then
    the newest others, `PROFILE_MEMORIES` in all."""
    now = {
        i: m
        for i, m in store.current_versions(user_id, current.cited()).items()
        if not m.is_past(today)
    }
    own = [now[i] for i in [*(i for line in current.lines for i in line.memory_ids)] if i in now]
    pinned = [now[i] for i in current.pinned if i in now]
    current_memories = [m for m in store.memories(user_id) if not m.is_past(today)]
    newest = sorted(current_memories, key=lambda m: m.observed_at, reverse=True)
    core = [m for m in newest if m.category in PROFILE_CATEGORIES]
    rest = [m for m in newest if m.category not in PROFILE_CATEGORIES]
    shown = list({m.id: m for m in [*own, *pinned, *core, *rest]}.values())[:PROFILE_MEMORIES]
    small = {m.id: i for i, m in enumerate(shown, 1)}
    lines = [
        CitedLine(
            text=line.text,
            memory_ids=[
                small[now[i].id] for i in line.memory_ids if i in now and now[i].id in small
            ],
        )
        for line in current.lines
    ]
    return lines, shown


def cited_lines(
    lines: list[CitedLine], memories: list[MemoryRecord]
) -> tuple[list[ProfileLine], list[RejectedOp]]:
    """The program's lines with real memory ids. A line citing an id it was not shown is
    refused whole (it may state what that id was invented for); the store checks the
    rest again when it writes."""
    shown = f"ids 1-{len(memories)}" if memories else "no memories"
    proposed: list[ProfileLine] = []
    refused: list[RejectedOp] = []
    for line in lines:
        unknown = [i for i in line.memory_ids if not 1 <= i <= len(memories)]
        if unknown:
            reason = f"cites unknown id(s) {', '.join(map(str, unknown))}: it was shown {shown}"
            refused.append(RejectedOp(op="PROFILE", text=line.text, reason=reason))
            continue
        ids = [memories[i - 1].id for i in line.memory_ids]
        proposed.append(ProfileLine(text=line.text, memory_ids=ids))
    return proposed, refused
