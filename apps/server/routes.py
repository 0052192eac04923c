"""`/memories`: the authenticated user's memories over HTTP, in the LangGraph server itself
(`"http": {"app": "engram.apps.server.routes:app", "enable_custom_route_auth": true}`).

LangGraph's auth middleware verifies the token before any route runs; every route acts for
that user only (`request.scope["user"]`), so another user's memory id answers 404 exactly
like a missing one. The store is the process's shared one (`engram.clients.default_store`,
the graphs use it too); its calls block, so they run in threads, never on the event loop.
`?as_of=` on the list and search routes reads what the store held as true at a past moment;
`PUT /memories/{id}/validity` sets when a memory is true. `/memories/profile` is the user's
profile (the lasting core facts the chatbot always has, each line resting on memories): read
it, its versions, restore one, pin and unpin memories.
Every route takes `?agent=`: the agent the caller acts as, which its token must allow (the
agents claim). It sees the user's shared memories and that agent's own; without it, the
shared ones only. Another agent's memory id answers 404 like a missing one.
`PUT /memories/{id}/agent` moves a memory between the shared ones and the caller's agent's.
Errors are JSON `{"detail": ...}` naming the problem: 400 malformed import file, 403 not
allowed, 404 no such memory, 409 concurrent writers (retry), 413 import too large, 422
invalid input.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable
from datetime import date, datetime
from enum import Enum
from functools import partial
from typing import Annotated, Any, Literal, NamedTuple, TypeVar
from urllib.parse import quote

import httpx
from fastapi import Body, Depends, FastAPI, Query, Request, Response, status
from fastapi.responses import JSONResponse, StreamingResponse
from langgraph_sdk import get_client
from langgraph_sdk.auth import is_studio_user
from langgraph_sdk.client import LangGraphClient
from pydantic import AwareDatetime, BaseModel, Field
from starlette.datastructures import Headers
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engram.apps.server.auth import OWNER, OWNER_USER, StudioOriginGuard
from engram.apps.server.mcp import McpEndpoint
from engram.clients import default_store
from engram.identity import acting_agent, check_agent, on_aegra, user_id_of
from engram.memory.conversations import forget_conversations, user_prefixes
from engram.memory.store import MemoryStore
from engram.memory.timeframe import as_of_moment
from engram.memory.transfer import ImportReport, export_jsonl, import_jsonl
from engram.settings import get_settings
from engram.state.context import MAX_USER_ID_CHARS, validate_agent_id, validate_user_id
from engram.state.contracts import AppliedOp, MemoryRecord, MemoryStatus, Profile, Source
from engram.state.errors import (
    AccessDeniedError,
    EngramError,
    ImportFormatError,
    InvalidInputError,
    MemoryNotFoundError,
    StoreConflictError,
)

MAX_PAGE = 500
THREAD_PAGE = 100
STORE_PAGE = 100
T = TypeVar("T")


class MemoryPage(BaseModel):
    items: list[MemoryRecord]
    total: int = Field(description="Memories matching the filters, over all pages.")
    next_offset: int | None = Field(description="Pass as `offset` for the next page.")


class Validity(BaseModel):
    valid_from: date | None = Field(
        default=None, description="The first day it is true; null: from when it was said."
    )
    valid_until: date | None = Field(
        default=None, description="The last day it is true; null: no end."
    )


class NewMemory(Validity):
    text: str = Field(description="The fact, stored as written (no LLM involved).")
    category: str | None = Field(default=None, description="Default: other.")
    observed_at: AwareDatetime | None = Field(
        default=None, description="When the user said it (default: now)."
    )


class Move(BaseModel):
    agent_id: str | None = Field(
        description="The agent whose own memory it becomes (the one you act as, `agent`), "
        "or null: shared, seen by every agent of yours.",
        max_length=MAX_USER_ID_CHARS,
    )


class MemoryChange(BaseModel):
    text: str = Field(description="The memory's complete new text.")
    category: str | None = Field(default=None, description="Default: unchanged.")


AsOf = Annotated[
    str | None,
    Query(
        description="What the store held as true at this moment: an ISO time with its UTC "
        "offset, or a day (YYYY-MM-DD: the end of that day, UTC). Reads only.",
        examples=["2026-03-01T12:00:00+00:00", "2026-03-01"],
    ),
]


class ForgetRequest(BaseModel):
    confirm: Literal[True] = Field(description="Must be true: forgetting cannot be undone.")


class ForgetReport(BaseModel):
    user_id: str
    memories: int = Field(description="Memory versions erased.")
    threads: int = Field(description="Threads of the user deleted on this server.")
    crons: int = Field(default=0, description="Scheduled runs of the user deleted.")
    messages: int = Field(
        default=0, description="Conversation messages erased from the server's store."
    )


class ServerForget(NamedTuple):
    """What forgetting erased on the LangGraph server itself (beside the memory store)."""

    threads: int
    crons: int
    messages: int


def current_user(request: Request) -> str:
    """The authenticated user (LangGraph's auth middleware ran before this route); Studio's
    user is resolved like everywhere else (`user_id_of`)."""
    user = request.scope.get("user")
    if user is None or not (is_studio_user(user) or getattr(user, "is_authenticated", False)):
        raise AccessDeniedError(
            "no authenticated user: this route needs custom route auth on "
            '(langgraph.json: "http": {"enable_custom_route_auth": true})'
        )
    return user_id_of(user)


User = Annotated[str, Depends(current_user)]


def current_agent(
    request: Request,
    agent: Annotated[
        str | None,
        Query(
            max_length=MAX_USER_ID_CHARS,
            description="The agent you act as (your token's agents claim must allow it): "
            "the shared memories and that agent's own. Left out: the shared ones only.",
            examples=["travel"],
        ),
    ] = None,
) -> str | None:
    """The agent this request acts as, if its token allows it (LangGraph keeps the token's
    agents as the authenticated user's permissions); the client's word alone is never
    enough. Without `?agent=`, the agent of the request's `X-Engram-Agent` header (checked
    when it was authenticated), so one client acts as one agent everywhere."""
    user = request.scope.get("user")
    acting = acting_agent(user)
    if agent is None:
        return acting
    if acting is not None and agent != acting:
        raise AccessDeniedError(
            f"agent {agent!r} differs from the X-Engram-Agent header's {acting!r}"
        )
    try:
        agent = validate_agent_id(validate_user_id(agent, name="agent"))
    except ValueError as error:
        raise InvalidInputError(str(error)) from None
    check_agent(user, agent)
    return agent


Agent = Annotated[str | None, Depends(current_agent)]
# The profile is every agent's (shared memories only): its routes just check the agent.
AGENT_ALLOWED = Depends(current_agent)
API_SOURCE = Source(actor="api")

# Routes are declared on the app itself: LangGraph wraps each of the app's routes in its auth
# middleware, which needs plain routes (FastAPI's include_router adds lazy wrappers).
# No docs or schema routes of its own: LangGraph serves /docs and /openapi.json, with
# these routes merged in. Aegra serves this app itself, its own routes added to it: there
# the app's schema and docs are the server's.
mcp = McpEndpoint()  # its MCP session manager runs for the app's lifespan
app = FastAPI(
    title="Engram",
    description="Long-term, per-user memory; `/memories` acts for the token's user only.",
    openapi_url="/openapi.json" if on_aegra() else None,
    docs_url="/docs" if on_aegra() else None,
    redoc_url=None,
    lifespan=mcp.lifespan,
)
# Memory tools for MCP clients (engram.apps.server.mcp). LangGraph matches this app's routes
# before its own, so this takes over its built-in /mcp; the route takes every method (one
# limited to POST would leave GET and DELETE to LangGraph's).
app.router.routes.append(Route("/mcp", endpoint=mcp, include_in_schema=False))
app.add_middleware(StudioOriginGuard)


class MemoriesBodyLimit:
    """A `/memories` request body is read up to ENGRAM_MAX_BODY_BYTES and refused with 413
    beyond it, before any route parses it: a JSON body was otherwise read whole first
    (three parallel 200 MB bodies took the server from 2.9 to 4.0 GB before a 422). The
    import route keeps its own, larger bound (ENGRAM_MAX_IMPORT_BYTES, `_bounded_body`).
    Other routes (LangGraph's own) are passed through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", "")).rstrip("/")
        if scope["type"] != "http" or not path.startswith("/memories") or path.endswith("/import"):
            await self.app(scope, receive, send)
            return
        limit = get_settings().max_body_bytes
        declared = Headers(scope=scope).get("content-length")
        too_large = JSONResponse(
            {"detail": f"the body is over {limit} bytes (ENGRAM_MAX_BODY_BYTES)"},
            status_code=status.HTTP_413_CONTENT_TOO_LARGE,
        )
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await too_large(scope, receive, send)
                return
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


app.add_middleware(MemoriesBodyLimit)
TAGS: list[str | Enum] = ["memories"]
PROFILE_TAGS: list[str | Enum] = ["profile"]


async def off_loop(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(partial(call, *args, **kwargs))


async def store() -> MemoryStore:
    return await asyncio.to_thread(default_store)


@app.get("/memories", tags=TAGS, response_model=MemoryPage, summary="List your memories")
async def list_memories(
    user: User,
    status_: Annotated[
        Literal["active", "superseded", "deleted", "all"],
        Query(alias="status", description="Which versions; `all` for every status."),
    ] = "active",
    category: str | None = None,
    observed_after: AwareDatetime | None = None,
    observed_before: AwareDatetime | None = None,
    created_after: AwareDatetime | None = None,
    created_before: AwareDatetime | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
    as_of: AsOf = None,
    agent: Agent = None,
) -> MemoryPage:
    """Oldest first. Date bounds are inclusive (`after` <= date <= `before`). With `as_of`,
    the versions that were active and still true then (`status` must stay `active`)."""
    chosen: MemoryStatus | None = None if status_ == "all" else status_
    moment = None if as_of is None else as_of_moment(as_of)
    if moment is not None and chosen != "active":
        raise InvalidInputError("as_of lists what was active then; leave status out")
    records = await off_loop(
        (await store()).memories,
        user,
        status=chosen,
        category=category,
        as_of=moment,
        agent_id=agent,
    )
    matching = [
        r
        for r in records
        if _within(r.observed_at, observed_after, observed_before)
        and _within(r.created_at, created_after, created_before)
    ]
    page = matching[offset : offset + limit]
    more = offset + len(page) < len(matching)
    return MemoryPage(
        items=page, total=len(matching), next_offset=offset + len(page) if more else None
    )


@app.get(
    "/memories/search", tags=TAGS, response_model=list[MemoryRecord], summary="Search your memories"
)
async def search_memories(
    user: User,
    query: Annotated[str, Query(min_length=1, max_length=8000)],
    k: Annotated[int, Query(ge=1, le=50)] = 5,
    category: str | None = None,
    as_of: AsOf = None,
    agent: Agent = None,
) -> list[MemoryRecord]:
    """Your active memories most relevant to `query`, best first, each with its score
    (past ones too: their `valid_until` says so). With `as_of`, among what the store held
    as true at that moment."""
    moment = None if as_of is None else as_of_moment(as_of)
    return await off_loop(
        (await store()).search, user, query, k, category, as_of=moment, agent_id=agent
    )


@app.get(
    "/memories/export",
    tags=TAGS,
    summary="Export your memories (JSON Lines)",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}}},
)
async def export_memories(user: User, agent: Agent = None) -> StreamingResponse:
    """Every version of every memory you see (as `agent`: the shared ones and its own), in
    `engram export`'s format (a header line, then one version per line, with vectors): what
    `POST /memories/import` and `engram import` read."""
    buffer = io.StringIO()
    await off_loop(export_jsonl, await store(), user, buffer, agent_id=agent)

    async def lines() -> AsyncIterator[str]:
        for line in io.StringIO(buffer.getvalue()):
            yield line

    filename = quote(f"engram-{user}.jsonl", safe="")
    return StreamingResponse(
        lines(),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{filename}"},
    )


@app.post(
    "/memories/import",
    tags=TAGS,
    response_model=ImportReport,
    summary="Import an export as your memories",
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/x-ndjson": {}}},
    },
)
async def import_memories(user: User, request: Request, agent: Agent = None) -> ImportReport:
    """The body is an export (JSON Lines). All or nothing; always imported as you (an export
    of another user id gets fresh ids); memories you already have are kept as they are.
    Each memory keeps its scope: a file holding another agent's memory than `agent`'s
    imports nothing (400)."""
    body = await _bounded_body(request, get_settings().max_import_bytes)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ImportFormatError(f"the body is not UTF-8 text: {error.reason}") from None
    return await off_loop(
        import_jsonl,
        await store(),
        io.StringIO(text),
        as_user=user,
        agent_id=agent,
        on_progress=None,
    )


@app.post(
    "/memories/forget", tags=TAGS, response_model=ForgetReport, summary="Erase all your memories"
)
async def forget(
    user: User,
    confirmation: Annotated[ForgetRequest, Body()],
    request: Request,
    agent: Agent = None,
) -> ForgetReport:
    """Erases every version of every memory of yours (every agent's), your profile, deletes
    your threads and scheduled runs on this server, and erases your conversations' older
    messages from its store. With `agent`: only that agent's own memories (the shared ones,
    the profile and the conversations stay). It cannot be undone: export first if in doubt."""
    if agent is not None:
        erased = await off_loop((await store()).forget, user, agent_id=agent)
        return ForgetReport(user_id=user, memories=erased, threads=0)
    if on_aegra():
        on_server = await _forget_on_aegra(user, request)
    else:
        on_server = await _forget_on_server(user)
    erased = await off_loop((await store()).forget, user)
    return ForgetReport(user_id=user, memories=erased, **on_server._asdict())


@app.post(
    "/memories",
    tags=TAGS,
    response_model=AppliedOp,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": AppliedOp, "description": "Already remembered (duplicate)."}},
    summary="Store a fact directly",
)
async def create_memory(
    user: User, memory: NewMemory, response: Response, agent: Agent = None
) -> AppliedOp:
    """Stored as given, without any LLM: 201. An exact duplicate of an active memory
    changes nothing: 200 with `result: "duplicate"`. As a private agent
    (ENGRAM_PRIVATE_AGENTS), the agent's own; else shared."""
    applied = await off_loop(
        (await store()).add,
        user,
        memory.text,
        memory.category,
        observed_at=memory.observed_at,
        source=API_SOURCE,
        valid_from=memory.valid_from,
        valid_until=memory.valid_until,
        agent_id=agent,
    )
    if applied.result != "added":
        response.status_code = status.HTTP_200_OK
    return applied


# The profile's routes come before `/memories/{memory_id}`, which would take their paths.


@app.get(
    "/memories/profile",
    tags=PROFILE_TAGS,
    response_model=Profile,
    summary="Your profile",
    dependencies=[AGENT_ALLOWED],
)
async def get_profile(
    user: User,
    as_stored: Annotated[
        bool,
        Query(description="The current version as written, lines awaiting revision included."),
    ] = False,
) -> Profile:
    """What the chatbot knows of you always: the lines whose memories are all still active,
    each with the memory ids it rests on, and the pinned memories. `version_id` is null
    when there is no profile yet. Every agent sees the same profile (shared memories only)."""
    return await off_loop((await store()).profile, user, as_stored=as_stored)


@app.get(
    "/memories/profile/history",
    tags=PROFILE_TAGS,
    response_model=list[Profile],
    summary="Your profile's versions",
    dependencies=[AGENT_ALLOWED],
)
async def profile_history(user: User) -> list[Profile]:
    """Every version, oldest first, each as written, with the events that made (and
    replaced) it."""
    return await off_loop((await store()).profile_history, user)


@app.post(
    "/memories/profile/restore/{version_id}",
    tags=PROFILE_TAGS,
    response_model=Profile,
    summary="Restore a profile version",
    dependencies=[AGENT_ALLOWED],
)
async def restore_profile(user: User, version_id: str) -> Profile:
    """Makes an earlier version the current one (a new version, the same lines and pins);
    answers it as written (`GET /memories/profile` shows what the chatbot sees)."""
    return await off_loop((await store()).restore_profile, user, version_id, source=API_SOURCE)


@app.post(
    "/memories/profile/pins/{memory_id}",
    tags=PROFILE_TAGS,
    response_model=Profile,
    summary="Pin a memory to your profile",
)
async def pin_memory(user: User, memory_id: str, agent: Agent = None) -> Profile:
    """The active memory always appears in your profile; answers the profile. Only shared
    memories are pinned (an agent's own is 422): every agent sees the profile."""
    return await off_loop((await store()).pin, user, memory_id, source=API_SOURCE, agent_id=agent)


@app.delete(
    "/memories/profile/pins/{memory_id}",
    tags=PROFILE_TAGS,
    response_model=Profile,
    summary="Unpin a memory",
    dependencies=[AGENT_ALLOWED],
)
async def unpin_memory(user: User, memory_id: str) -> Profile:
    """The memory stays in your profile only while a line rests on it; answers the profile."""
    return await off_loop((await store()).unpin, user, memory_id, source=API_SOURCE)


@app.get(
    "/memories/{memory_id}", tags=TAGS, response_model=MemoryRecord, summary="One memory version"
)
async def get_memory(user: User, memory_id: str, agent: Agent = None) -> MemoryRecord:
    return await off_loop((await store()).get, user, memory_id, agent_id=agent)


@app.get(
    "/memories/{memory_id}/history",
    tags=TAGS,
    response_model=list[MemoryRecord],
    summary="A memory's versions",
)
async def memory_history(user: User, memory_id: str, agent: Agent = None) -> list[MemoryRecord]:
    """Every version of the memory, oldest first, each with its audit trail."""
    return await off_loop((await store()).history, user, memory_id, agent_id=agent)


@app.patch("/memories/{memory_id}", tags=TAGS, response_model=AppliedOp, summary="Change a memory")
async def update_memory(
    user: User, memory_id: str, change: MemoryChange, agent: Agent = None
) -> AppliedOp:
    """Writes a new version (in the memory's scope); the old one stays in the history
    (restorable)."""
    return await off_loop(
        (await store()).update,
        user,
        memory_id,
        change.text,
        change.category,
        source=API_SOURCE,
        agent_id=agent,
    )


@app.put(
    "/memories/{memory_id}/validity",
    tags=TAGS,
    response_model=AppliedOp,
    summary="Set when a memory is true",
)
async def set_validity(
    user: User, memory_id: str, validity: Validity, agent: Agent = None
) -> AppliedOp:
    """Sets both dates (null or left out: that end is open, so `{}` clears them). A new
    version with the same text; the old one stays in the history. 422 when `valid_until`
    is before `valid_from` or the memory is not active."""
    return await off_loop(
        (await store()).set_validity,
        user,
        memory_id,
        validity.valid_from,
        validity.valid_until,
        source=API_SOURCE,
        agent_id=agent,
    )


@app.delete("/memories/{memory_id}", tags=TAGS, response_model=AppliedOp, summary="Delete a memory")
async def delete_memory(user: User, memory_id: str, agent: Agent = None) -> AppliedOp:
    """Marks the memory deleted (restorable); `POST /memories/forget` erases."""
    return await off_loop(
        (await store()).delete, user, memory_id, source=API_SOURCE, agent_id=agent
    )


@app.post(
    "/memories/{memory_id}/restore",
    tags=TAGS,
    response_model=AppliedOp,
    summary="Restore a version",
)
async def restore_memory(user: User, memory_id: str, agent: Agent = None) -> AppliedOp:
    """Makes a deleted or superseded version the active one of its memory again."""
    return await off_loop(
        (await store()).restore, user, memory_id, source=API_SOURCE, agent_id=agent
    )


@app.put(
    "/memories/{memory_id}/agent",
    tags=TAGS,
    response_model=AppliedOp,
    summary="Move a memory between the shared ones and an agent's",
)
async def move_memory(user: User, memory_id: str, move: Move, agent: Agent = None) -> AppliedOp:
    """Every version of a memory you see as `agent` becomes that agent's own
    (`{"agent_id": "<agent>"}`) or shared (`{"agent_id": null}`). Moving into another
    agent's memories than `agent` is 403. `result`: `moved`, `unchanged` (already there),
    or `merged` (an identical memory there absorbed it: `memory_id` is that one)."""
    to = move.agent_id
    if to is not None:
        try:
            to = validate_agent_id(to)
        except ValueError as error:
            raise InvalidInputError(str(error)) from None
        if to != agent:
            raise AccessDeniedError(
                f"a memory moves only into the agent you act as; pass agent={to!r} "
                "(your token must allow it)"
            )
    return await off_loop(
        (await store()).move, user, memory_id, to, agent_id=agent, source=API_SOURCE
    )


def _within(at: datetime, after: datetime | None, before: datetime | None) -> bool:
    return (after is None or at >= after) and (before is None or at <= before)


async def _bounded_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 beyond `limit` bytes (before reading it all)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(limit)
        chunks.append(chunk)
    if size == 0:
        raise ImportFormatError("the body is empty; send an export (JSON Lines)")
    return b"".join(chunks)


async def _forget_on_server(user: str) -> ServerForget:
    """Delete the user's threads and crons (found by their owner stamp) and erase what the
    graphs keep for the user in the server's store (`engram.memory.conversations.user_prefixes`: the
    messages respond moved out of thread state, the ingest markers).

    Through the server's own in-process API: its loopback requests skip the auth handlers,
    which would otherwise scope every store namespace under the caller's id and hide the
    graphs' namespaces."""
    client = get_client(url=None)
    threads = crons = messages = 0
    # Every agent's threads carry the user (`OWNER_USER`); threads from before agents, the
    # user as their owner.
    for stamped in ({OWNER_USER: user}, {OWNER: user}):
        threads += await _delete_threads(client, stamped)
    for stamped in ({OWNER_USER: user}, {OWNER: user}):
        crons += await _delete_crons(client, stamped)
    for prefix in user_prefixes(user):
        while True:
            items = (await client.store.search_items(list(prefix), limit=STORE_PAGE))["items"]
            if not items:
                break
            for item in items:
                await client.store.delete_item(item["namespace"], key=item["key"])
                messages += "message" in item["value"]
    return ServerForget(threads, crons, messages)


async def _delete_threads(client: LangGraphClient, stamped: dict[str, str]) -> int:
    threads = 0
    while page := await client.threads.search(metadata=stamped, limit=THREAD_PAGE):
        for thread in page:
            # A run still going (a turn's memory steps in the background) would write
            # memories after the erase below: stop the queued ones, then the running one
            # (a write it prepared meanwhile is refused by the store's erase fence).
            for state in ("pending", "running"):
                for run in await client.runs.list(thread["thread_id"], status=state):
                    await client.runs.cancel(
                        thread["thread_id"], run["run_id"], wait=state == "running"
                    )
            await client.threads.delete(thread["thread_id"])
            threads += 1
    return threads


async def _delete_crons(client: LangGraphClient, stamped: dict[str, str]) -> int:
    crons = 0
    while scheduled := await client.crons.search(metadata=stamped, limit=THREAD_PAGE):
        for cron in scheduled:
            await client.crons.delete(cron["cron_id"])
            crons += 1
    return crons


async def _forget_on_aegra(user: str, request: Request) -> ServerForget:
    """`_forget_on_server` on Aegra, which has no in-process loopback client
    (`get_client(url=None)` is LangGraph's server only). Threads and crons are deleted
    through this server's own API, in process (the app this route belongs to, over ASGI),
    as the caller: Aegra and the auth handlers show each user only their own. The graphs'
    data for the user is erased straight from Aegra's store (the one the graphs are given;
    its store API would scope every namespace under the caller)."""
    from aegra_api.core.database import db_manager  # Aegra's own module (served by Aegra)

    headers = {"authorization": request.headers.get("authorization", "")}
    transport = httpx.ASGITransport(app=request.app)
    threads = crons = 0
    async with httpx.AsyncClient(
        transport=transport, base_url="http://aegra", headers=headers, timeout=60
    ) as http:
        client = LangGraphClient(http)
        while page := await client.threads.search(limit=THREAD_PAGE):
            for thread in page:
                await client.threads.delete(thread["thread_id"])
                threads += 1
        # Aegra keeps a cron's owner itself (the auth handlers' stamps are not stored).
        while scheduled := await client.crons.search(limit=THREAD_PAGE):
            for cron in scheduled:
                await client.crons.delete(cron["cron_id"])
                crons += 1
    messages = await forget_conversations(db_manager.get_store(), user)
    return ServerForget(threads, crons, messages)


class BodyTooLargeError(EngramError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the body is over {limit} bytes (ENGRAM_MAX_IMPORT_BYTES); split the import"
        )


ERROR_STATUS: dict[type[Exception], int] = {
    ImportFormatError: status.HTTP_400_BAD_REQUEST,
    AccessDeniedError: status.HTTP_403_FORBIDDEN,
    MemoryNotFoundError: status.HTTP_404_NOT_FOUND,
    StoreConflictError: status.HTTP_409_CONFLICT,
    BodyTooLargeError: status.HTTP_413_CONTENT_TOO_LARGE,
    InvalidInputError: status.HTTP_422_UNPROCESSABLE_CONTENT,
}


def _error_response(status_code: int) -> Callable[[Request, Exception], Any]:
    async def respond(request: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=status_code)

    return respond


for error_type, code in ERROR_STATUS.items():
    app.add_exception_handler(error_type, _error_response(code))
