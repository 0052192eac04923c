"""`engram memories ...`: inspect and manage what is remembered."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Annotated

import typer
from langgraph.types import Command
from rich import box
from rich.table import Table

from engram.apps.cli.common import (
    Agent,
    AllAgents,
    AsJson,
    User,
    agent_option,
    agent_scope,
    compiled_graph,
    conversations,
    memories_app,
    open_store,
    out,
    print_memory_update,
    require_agent,
    scope_text,
    thread_config,
    thread_id_for,
    user_threads,
)
from engram.apps.cli.remote import Memories, RemoteMemories, server_token
from engram.memory.store import require_user_id
from engram.memory.timeframe import as_of_moment
from engram.settings import Settings, get_settings
from engram.state.context import ALL_AGENTS, AgentScope
from engram.state.contracts import AppliedOp, MemoryRecord, MemoryStatus, Source
from engram.state.errors import InvalidInputError, MemoryNotFoundError
from engram.state.graph_state import TURN_RESET

Server = Annotated[
    str | None,
    typer.Option(
        "--server",
        envvar="ENGRAM_SERVER",
        help="A running Engram server's URL (e.g. while langgraph dev holds the store).",
    ),
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="ENGRAM_TOKEN",
        help="Token for --server (default: minted from the secret).",
    ),
]
AsOf = Annotated[
    str | None,
    typer.Option(
        "--as-of",
        help="What was held as true then: a day (2026-03-01, its end in UTC) or an ISO "
        "time with its UTC offset (2026-03-01T12:00:00+00:00). Changes nothing.",
    ),
]


def open_memories(
    user_id: str, server: str | None, token: str | None, agent: AgentScope = None
) -> Memories:
    """The embedded (or QDRANT_URL) store, or a running server's /memories as `agent`
    (a token minted here may act as it; a given one must allow it)."""
    if server is None:
        return open_store()
    if agent is ALL_AGENTS:  # `agent_scope` refuses it first; a scope a server never gives
        raise InvalidInputError("--all-agents reads the local store only; leave out --server")
    return RemoteMemories(server, server_token(token, user_id, get_settings(), agent), agent)


def cli_source(agent: AgentScope) -> Source:
    """The provenance of a change made here: the CLI, as the agent it acted as."""
    return Source(actor="cli", agent_id=agent if isinstance(agent, str) else None)


def titled(title: str, scope: AgentScope) -> str:
    """A table's title with whose memories it shows, unless the shared ones only."""
    return title if scope is None else f"{title} ({scope_text(scope)})"


def _print_records(
    store: Memories,
    user_id: str,
    records: Sequence[MemoryRecord],
    as_json: bool,
    title: str,
    today: date | None = None,
    scope: AgentScope = None,
) -> None:
    """A table of memories, with ids told apart among those `scope` sees. The `true` column
    shows validity dates when any memory has them; a memory whose `valid_until` has passed
    (by `today`, default the current day in UTC) is marked `(past)` there and dimmed. The
    `agent` column shows whose own a memory is (`shared`) when any is an agent's."""
    if as_json:
        out.print_json(json.dumps([r.model_dump(mode="json") for r in records]))
        return
    if not records:
        out.print(f"{title}: none")
        return
    today = today or datetime.now(UTC).date()
    short = short_ids(store, user_id, scope)
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("id", no_wrap=True)  # a prefix every command accepts
    show_agent = any(r.agent_id is not None for r in records)
    if show_agent:
        table.add_column("agent", max_width=14)
    show_status = any(r.status != "active" for r in records)
    show_validity = any(r.valid_from or r.valid_until for r in records)
    show_score = any(r.score is not None for r in records)
    if show_status:
        table.add_column("status", no_wrap=True)
    table.add_column("said", no_wrap=True)
    if show_validity:
        table.add_column("true", min_width=10)  # wraps to "until" over its date when narrow
    table.add_column("category", max_width=14)
    # The text takes what is left and wraps by words; narrower beside dates, so that a
    # table with every column still fits 80 columns.
    table.add_column("text", ratio=1, min_width=12 if show_validity else 20)
    if show_score:
        table.add_column("score", no_wrap=True)
    for r in records:
        past = r.status == "active" and r.is_past(today)
        row = [short.get(r.id, r.id)]
        if show_agent:
            row.append(agent_text(r))
        if show_status:
            row.append(r.status)
        row.append(f"{r.observed_at:%Y-%m-%d}")
        if show_validity:
            row.append(validity_text(r) + (" (past)" if past else ""))
        row += [r.category, r.text]
        if show_score:
            row.append(f"{r.score:.2f}" if r.score is not None else "")
        table.add_row(*row, style="dim" if past else None)
    out.print(table)


def agent_text(record: MemoryRecord) -> str:
    """Whose a memory is: an agent's own (its id), or `shared` by every agent of the user."""
    return record.agent_id if record.agent_id is not None else "shared"


def validity_text(record: MemoryRecord) -> str:
    """When a memory is true, in words: "from D", "until D", "D to D", or "" (always)."""
    start, end = record.valid_from, record.valid_until
    if start and end:
        return f"{start} to {end}"
    if start:
        return f"from {start}"
    return f"until {end}" if end else ""


def short_ids(
    store: Memories, user_id: str, scope: AgentScope = None, minimum: int = 8
) -> dict[str, str]:
    """The shortest prefix (at least `minimum` characters) that tells each of the user's
    versions that `scope` sees apart from all the others."""
    ids = sorted(r.id for r in store.memories(user_id, status=None, agent_id=scope))
    short: dict[str, str] = {}
    for index, memory_id in enumerate(ids):
        neighbours = ids[max(index - 1, 0) : index] + ids[index + 1 : index + 2]
        shared = max((_common_prefix(memory_id, other) for other in neighbours), default=0)
        short[memory_id] = memory_id[: max(minimum, shared + 1)]
    return short


def resolve_id(store: Memories, user_id: str, given: str, scope: AgentScope = None) -> str:
    """A full id from what the user typed: a whole id, or a prefix unique among the
    user's versions that `scope` sees (another user's ids, or another agent's, are never
    matched, nor hinted at)."""
    wanted = given.strip().casefold()
    if len(wanted) == 36:
        return wanted
    if len(wanted) < 4:
        raise InvalidInputError(f"memory id {given!r} is too short; give at least 4 characters")
    seen = store.memories(user_id, status=None, agent_id=scope)
    matches = [r.id for r in seen if r.id.startswith(wanted)]
    if not matches:
        raise MemoryNotFoundError(f"no memory {given!r} for user {user_id!r}")
    if len(matches) > 1:
        raise InvalidInputError(
            f"memory id {given!r} matches {len(matches)} memories; give more characters"
        )
    return matches[0]


def _common_prefix(a: str, b: str) -> int:
    length = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        length += 1
    return length


@memories_app.command("list")
def list_memories(
    user: User,
    include_all: Annotated[
        bool, typer.Option("--all", help="Include superseded and deleted.")
    ] = False,
    category: Annotated[str | None, typer.Option(help="Only this category.")] = None,
    as_of: AsOf = None,
    agent: Agent = None,
    all_agents: AllAgents = False,
    as_json: AsJson = False,
    server: Server = None,
    token: Token = None,
) -> None:
    """List a user's active memories (all of them, no cap); past ones are marked."""
    scope = agent_scope(agent, all_agents, server)
    moment = as_of_moment(as_of) if as_of is not None else None
    if moment is not None and include_all:
        raise InvalidInputError("--as-of lists what was active then; leave out --all")
    store = open_memories(user, server, token, scope)
    status: MemoryStatus | None = None if include_all else "active"
    records = store.memories(user, status=status, category=category, as_of=moment, agent_id=scope)
    title = f"memories of {user}" + (f" as of {moment.isoformat()}" if moment else "")
    today = moment.date() if moment else None
    _print_records(store, user, records, as_json, titled(title, scope), today, scope)


@memories_app.command("search")
def search_memories(
    query: str,
    user: User,
    k: Annotated[int, typer.Option("-k", min=1, max=50, help="How many.")] = 5,
    as_of: AsOf = None,
    agent: Agent = None,
    as_json: AsJson = False,
    server: Server = None,
    token: Token = None,
) -> None:
    """The user's active memories nearest to QUERY; past ones are marked."""
    scope = require_agent(agent)
    moment = as_of_moment(as_of) if as_of is not None else None
    store = open_memories(user, server, token, scope)
    records = store.search(user, query, k=k, as_of=moment, agent_id=scope)
    title = f"memories of {user} for {query!r}" + (f" as of {moment.isoformat()}" if moment else "")
    today = moment.date() if moment else None
    _print_records(store, user, records, as_json, titled(title, scope), today, scope)


@memories_app.command("show")
def show_memory(
    memory_id: str,
    user: User,
    agent: Agent = None,
    all_agents: AllAgents = False,
    as_json: AsJson = False,
    server: Server = None,
    token: Token = None,
) -> None:
    """One memory version with its provenance and audit trail."""
    scope = agent_scope(agent, all_agents, server)
    store = open_memories(user, server, token, scope)
    record = store.get(user, resolve_id(store, user, memory_id, scope), agent_id=scope)
    if as_json:
        out.print_json(record.model_dump_json())
        return
    for name in (
        "id",
        "text",
        "category",
        "status",
        "observed_at",
        "created_at",
        "updated_at",
        "lineage_id",
        "supersedes",
        "superseded_by",
    ):
        out.print(f"{name:>14}: {getattr(record, name)}")
    if record.agent_id is not None:
        out.print(f"{'agent':>14}: {record.agent_id} (its own; other agents do not see it)")
    if record.valid_from or record.valid_until:
        past = " (past: no longer true)" if record.is_past(datetime.now(UTC).date()) else ""
        out.print(f"{'true':>14}: {validity_text(record)}{past}")
    out.print(f"{'source':>14}: {_source_text(record.source)}")
    for event in record.events:
        out.print(
            f"{'event':>14}: {event.at:%Y-%m-%d %H:%M:%S} {event.op} "
            f"{_source_text(event.source)} {event.detail or ''}".rstrip()
        )


def _source_text(source: Source) -> str:
    parts = [f"by {source.actor}"]
    if source.agent_id:
        parts.append(f"as agent {source.agent_id}")
    if source.thread_id:
        parts.append(f"thread {source.thread_id}")
    if source.message_ids:
        parts.append("messages " + ",".join(source.message_ids))
    return " ".join(parts)


@memories_app.command("validity")
def set_memory_validity(
    memory_id: str,
    user: User,
    valid_from: Annotated[
        str | None,
        typer.Option("--from", help="The first day it is true (YYYY-MM-DD); none: open."),
    ] = None,
    valid_until: Annotated[
        str | None,
        typer.Option("--until", help="The last day it is true (YYYY-MM-DD); none: no end."),
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="True always again.")] = False,
    agent: Agent = None,
    as_json: AsJson = False,
    server: Server = None,
    token: Token = None,
) -> None:
    """Set when a memory is true (a new version; the old one stays in the history). An end
    not given is kept as it is. Past its last day, a memory is kept but not recalled as
    current."""
    scope = require_agent(agent)
    if clear and (valid_from is not None or valid_until is not None):
        raise InvalidInputError("--clear clears both dates; leave out --from and --until")
    if not clear and valid_from is None and valid_until is None:
        raise InvalidInputError("give --from, --until (a day, YYYY-MM-DD) or --clear")
    store = open_memories(user, server, token, scope)
    memory_id = resolve_id(store, user, memory_id, scope)
    versions = store.history(user, memory_id, agent_id=scope)
    current = next((v for v in reversed(versions) if v.status == "active"), versions[-1])
    start = None if clear else _day("--from", valid_from, current.valid_from)
    end = None if clear else _day("--until", valid_until, current.valid_until)
    result = store.set_validity(
        user, memory_id, start, end, source=cli_source(scope), agent_id=scope
    )
    _print_applied(result, as_json)
    if not as_json:
        shown = validity_text(current.model_copy(update={"valid_from": start, "valid_until": end}))
        out.print(f"true: {shown or 'always'}")


def _day(option: str, given: str | None, kept: date | None) -> date | None:
    """A day option's value: the day, None for `none`, `kept` when not given."""
    if given is None:
        return kept
    if given.strip().casefold() == "none":
        return None
    try:
        return date.fromisoformat(given.strip())
    except ValueError:
        raise InvalidInputError(f"{option} {given!r}: give a day as YYYY-MM-DD, or none") from None


@memories_app.command("delete")
def delete_memory(
    memory_id: str,
    user: User,
    agent: Agent = None,
    as_json: AsJson = False,
    server: Server = None,
    token: Token = None,
) -> None:
    """Mark a memory deleted (restorable with `restore`; `engram forget` erases)."""
    scope = require_agent(agent)
    store = open_memories(user, server, token, scope)
    memory_id = resolve_id(store, user, memory_id, scope)
    _print_applied(store.delete(user, memory_id, source=cli_source(scope), agent_id=scope), as_json)


@memories_app.command("history")
def memory_history(
    memory_id: str,
    user: User,
    agent: Agent = None,
    all_agents: AllAgents = False,
    as_json: AsJson = False,
    server: Server = None,
    token: Token = None,
) -> None:
    """Every version of a memory: text, status, when, and which operation caused it."""
    scope = agent_scope(agent, all_agents, server)
    store = open_memories(user, server, token, scope)
    versions = store.history(user, resolve_id(store, user, memory_id, scope), agent_id=scope)
    if as_json:
        out.print_json(json.dumps([v.model_dump(mode="json") for v in versions]))
        return
    short = short_ids(store, user, scope)
    owner = versions[-1].agent_id  # a memory's versions share its scope
    title = f"history of {memory_id}" + (f" (agent {owner}'s own)" if owner else "")
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("version", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("text", ratio=1, min_width=16)
    table.add_column("events", ratio=1, min_width=16)
    for v in versions:
        events = "\n".join(
            f"{e.at:%Y-%m-%d %H:%M} {e.op} {_source_text(e.source)}"
            + (f" ({e.detail})" if e.detail else "")
            for e in v.events
        )
        table.add_row(short.get(v.id, v.id), v.status, v.text, events)
    out.print(table)


@memories_app.command("restore")
def restore_memory(
    memory_id: str,
    user: User,
    agent: Agent = None,
    as_json: AsJson = False,
    server: Server = None,
    token: Token = None,
) -> None:
    """Bring back a deleted or superseded version as the active one."""
    scope = require_agent(agent)
    store = open_memories(user, server, token, scope)
    memory_id = resolve_id(store, user, memory_id, scope)
    _print_applied(
        store.restore(user, memory_id, source=cli_source(scope), agent_id=scope), as_json
    )


SHARED = "shared"  # `--to shared`: the memories every agent of the user sees


@memories_app.command("move")
def move_memory(
    memory_id: str,
    user: User,
    to: Annotated[
        str,
        typer.Option(
            "--to", help="`shared` (every agent of the user sees it) or an agent (its own)."
        ),
    ],
    agent: Annotated[
        str | None,
        typer.Option(
            "--agent",
            help="Act as this agent: the memory must be one it sees (default: any, locally).",
        ),
    ] = None,
    as_json: AsJson = False,
    server: Server = None,
    token: Token = None,
) -> None:
    """Move a memory, every version of it, into the shared memories or an agent's own. An
    identical memory already there absorbs it (merged)."""
    acting = require_agent(agent)
    destination = None if to.strip() == SHARED else agent_option(to, "--to")
    # Locally the operator reaches any memory; a server, only what `--agent` sees.
    scope: AgentScope = acting if acting is not None or server is not None else ALL_AGENTS
    store = open_memories(user, server, token, acting)
    memory_id = resolve_id(store, user, memory_id, scope)
    result = store.move(user, memory_id, destination, agent_id=scope, source=cli_source(acting))
    if as_json:
        out.print_json(result.model_dump_json())
        return
    where = SHARED if destination is None else f"agent {destination}"
    how = {"moved": f"to {where}", "unchanged": f"already {where}", "merged": f"into {where}"}
    said = how.get(result.result, where)
    out.print(f"{result.result} ({said}): {result.memory_id} {result.text or ''}")


def _print_applied(result: AppliedOp, as_json: bool) -> None:
    if as_json:
        out.print_json(result.model_dump_json())
    else:
        detail = f" ({result.detail})" if result.detail else ""
        out.print(f"{result.result}{detail}: {result.memory_id} {result.text or ''}")


@memories_app.command("retry")
def retry_memory_steps(
    user: User,
    thread: Annotated[
        str | None, typer.Option("--thread", "-t", help="Only this conversation.")
    ] = None,
    agent: Annotated[
        str | None,
        typer.Option("--agent", help="Only this agent's conversations (`engram chat --agent`)."),
    ] = None,
) -> None:
    """Apply facts that earlier turns extracted but could not store (endpoint failures),
    each conversation as the agent it chats as."""
    settings = get_settings()
    settings.llm_credentials()
    user_id = require_user_id(user)
    asyncio.run(_retry(settings, user_id, thread, require_agent(agent)))


async def _retry(settings: Settings, user_id: str, thread: str | None, agent: str | None) -> None:
    async with conversations(settings) as saver:
        graph = compiled_graph(settings, saver)
        thread_ids = (
            [thread_id_for(user_id, thread, agent)]
            if thread
            else await user_threads(saver, user_id)
        )
        pending = 0
        for thread_id in thread_ids:
            config = thread_config(user_id, thread_id)
            values = (await graph.aget_state(config)).values
            # A thread keeps the agent of its first turn (none for threads from before).
            thread_agent = values.get("agent_id")
            if agent is not None and thread_agent != agent:
                continue
            if not (values.get("facts") or values.get("unextracted")):
                continue
            pending += 1
            # Straight to extract with save=False: it only redoes the carried-over work,
            # then retrieve_similar and maintain apply it.
            result = await graph.ainvoke(
                Command(update={**TURN_RESET, "save": False}, goto="extract"),
                config,
                context={"user_id": user_id, "agent_id": thread_agent},
            )
            out.print(f"{thread_id}:")
            print_memory_update(result)
            if not result.get("memory_error") and not result.get("applied"):
                out.print("nothing left to apply")
        if not pending:
            whose = user_id if agent is None else f"{user_id} as agent {agent}"
            out.print(f"nothing to retry for {whose}")
