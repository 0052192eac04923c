"""update_profile: after maintain changed memories that may belong in the user's profile,
ONE DSPy call rewrites the profile from the user's memories; the store then refuses every
line that does not rest on the user's own active memories (`MemoryStore.save_profile`).

It costs nothing on turns that change nothing, and little on the others: the program runs
when a change touches a memory the profile rests on or pins (the profile must follow it),
for the user's first memory that may belong in a profile, and otherwise once
`PROFILE_BATCH` such changes have gathered since the last update (until then a new fact
is found by recall when a message is about it). Like the other memory steps it runs after
the answer, with their timeouts and retries; a failed call keeps the old profile and
leaves the update due, so the thread's next run tries again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from langgraph.graph import END
from langgraph.runtime import Runtime

from engram.clients import Clients
from engram.identity import run_context
from engram.memory.store import MemoryStore, ProfileReport, now_utc
from engram.nodes.common import endpoint_errors, with_error
from engram.nodes.programs import UpdateProfile, run_memory_step
from engram.state.context import EngramContext
from engram.state.contracts import (
    CHANGES,
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
            return {}
        context = run_context(runtime)
        changed = changed_memory_ids(state)
        pending = state.get("profile_pending", 0)

        def look() -> tuple[Profile, int]:  # one worker thread: opening the store blocks too
            store = clients.store()
            current = store.profile(context.user_id, as_stored=True)
            touched = changed & current.cited()
            fresh = store.active(context.user_id, changed - touched).values()
            may_belong = sum(m.category in PROFILE_CATEGORIES for m in fresh)
            if touched:
                return current, PROFILE_BATCH
            if current.version_id is None and may_belong:
                return current, PROFILE_BATCH
            return current, may_belong

        current, gathered = await asyncio.to_thread(look)
        pending += gathered
        if pending < PROFILE_BATCH:
            return {"profile_pending": pending}

        def inputs() -> tuple[list[CitedLine], list[MemoryRecord]]:
            return profile_inputs(clients.store(), context.user_id, current)

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
            return {"profile_pending": pending, "memory_error": with_error(state, str(error))}
        proposed, refused = cited_lines(list(prediction.lines or []), memories)
        thread = runtime.execution_info.thread_id if runtime.execution_info else None
        source = Source(thread_id=thread, actor="profile")

        def write() -> tuple[ProfileReport, Profile]:
            store = clients.store()
            with endpoint_errors("embedding model", clients.settings.openai_base_url):
                report = store.save_profile(
                    context.user_id, proposed, source=source, detail=_detail(changed)
                )
            return report, store.profile(context.user_id)

        try:
            report, profile = await asyncio.to_thread(write)
        except Exception as error:  # Qdrant down: the answer is out, the next run retries
            message = f"update_profile could not write: {error}"
            return {"profile_pending": pending, "memory_error": with_error(state, message)}
        refused += report.refused
        return {"profile_pending": 0, "profile": profile, "rejected": refused}

    return update_profile


async def route_after_memory_steps(state: EngramState) -> str:
    """Where a run whose memory steps stopped early goes: to `update_profile` when an update
    is still due (an earlier one failed), else to the end. A coroutine, like every route
    here (see `route_after_decide`)."""
    return "update_profile" if state.get("profile_pending", 0) >= PROFILE_BATCH else END


def changed_memory_ids(state: EngramState) -> set[str]:
    """The memories this run's operations changed: the versions written and the ones they
    replaced or deleted (through the candidates' small ids)."""
    by_ref = {c.ref: c.memory.id for c in state.get("candidates") or []}
    changed: set[str] = set()
    for applied in state.get("applied", []):
        if applied.result not in CHANGES:
            continue
        if applied.memory_id:
            changed.add(applied.memory_id)
        if applied.ref is not None and applied.ref in by_ref:
            changed.add(by_ref[applied.ref])
    return changed


def profile_inputs(
    store: MemoryStore, user_id: str, current: Profile
) -> tuple[list[CitedLine], list[MemoryRecord]]:
    """What the program sees: the current lines, citing by small ids the memories they rest
    on as those are now (a line about a memory since updated cites the new text; one about
    a deleted or no longer true memory cites nothing, for the program to drop), and the
    current memories to draw on:
    the profile's own first, then pinned ones, then the newest in profile categories, then
    the newest others, `PROFILE_MEMORIES` in all."""
    today = now_utc().date()
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


def _detail(changed: set[str]) -> str:
    if not changed:
        return "retried an update that failed before"
    return f"after changes to {len(changed)} memor{'y' if len(changed) == 1 else 'ies'}"
