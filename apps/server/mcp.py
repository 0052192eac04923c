"""`/mcp`: the token's user's memories and profile as tools for agents (Claude Code, Cursor, any MCP
client), served by the LangGraph server itself through Engram's HTTP app (`routes.app`).

Why not LangGraph's built-in `/mcp`: it offers each graph as one tool whose input is the
graph's whole state (11 internal fields), whose answer is a Python repr of that state and
whose errors are bare exception names. These tools say what they do, take a few small
arguments and answer JSON (structured content, and the same JSON as text).

Taking over the path: langgraph_api 0.16.7 (`server.py`) routes the custom app's routes
before its own protected routes, where its `/mcp` lives, so the route at `/mcp` here answers
every method there; LangGraph's auth middleware wraps it like every custom route (no token:
401). Stateless, with JSON responses: any server process can answer any request.

Who the caller is: the token's user (`scope["user"]`; Studio's user by `user_id_of`), never
a tool argument: no tool has one and undeclared arguments are refused. Every tool takes an
optional `agent_id`, the agent the caller acts as, allowed only when the token's agents
claim lists it (kept as the user's permissions, `identity.check_agent`): it sees the shared
memories and that agent's own, never another agent's; left out, the shared ones only. The
memory tools call the store like `/memories` does, with that agent. `chat` and `remember`
with messages run the real graphs (the agent in the run's context) through the server's
in-process API, `get_client(url=None)`, which skips the auth middleware; a custom route
runs outside LangGraph's auth context, so a run started from here would have no user (its
thread unstamped, the run refused by `identity.authenticated_user`, which fails closed;
both checked by experiment). `as_caller` makes those requests inside the caller's auth
context, so LangGraph's auth handlers stamp, filter and check them exactly as the caller's
own SDK requests.

A refused call is a tool error whose text is one line naming the problem; another user's
memory or thread id, or another agent's private memory id, answers exactly like an unknown
one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal, Self, TypeVar
from uuid import UUID

import httpx
import mcp.types as types
from langgraph_sdk import Auth, get_client
from langgraph_sdk.auth import is_studio_user
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from starlette.authentication import AuthCredentials, BaseUser
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from engram import __version__
from engram.apps.server.auth import request_permissions, verifier
from engram.apps.server.tokens import TokenError
from engram.clients import default_store
from engram.identity import (
    ACTING_PERMISSION,
    AGENT_HEADER,
    acting_agent,
    check_agent,
    on_aegra,
    permissions_of,
    user_id_of,
)
from engram.memory.payload import MAX_MEMORY_CHARS
from engram.memory.store import MemoryStore
from engram.settings import get_settings
from engram.state.context import validate_agent_id
from engram.state.contracts import AppliedOp, MemoryRecord, Profile, Source
from engram.state.errors import (
    AccessDeniedError,
    ConfigurationError,
    EngramError,
    InvalidInputError,
)

log = logging.getLogger(__name__)

CHAT_GRAPH = "engram"  # the graphs' ids in langgraph.json
INGEST_GRAPH = "engram_ingest"
MCP_SOURCE = Source(actor="mcp")  # in each version's audit trail
MAX_MESSAGES = 100  # per `remember` call
MAX_QUERY_CHARS = 8000
MAX_PAGE = 200
MAX_ID_CHARS = 200
MAX_REASON_CHARS = 500
MAX_BODY_BYTES = 1 << 20  # a request over 1 MiB is refused (413) before it is parsed
INSTRUCTIONS = (
    "Long-term memory about the user this connection's token belongs to. Search it before "
    "answering anything personal; remember what the user says about themselves; forget "
    "what is no longer true (restorable). Acting as an agent (agent_id, if your token "
    "allows it), you see the user's shared memories and that agent's own, never another "
    "agent's; without one, the shared ones only."
)
T = TypeVar("T")


# -- arguments -------------------------------------------------------------------------------


def _agent_id(value: str | None) -> str | None:
    return None if value is None else validate_agent_id(value)


class Arguments(BaseModel):
    """Anything not declared is refused, so a client cannot even try to name a user.
    `agent_id` is checked against the token (`_call_tool`) before any tool runs."""

    model_config = ConfigDict(extra="forbid")

    agent_id: Annotated[str | None, AfterValidator(_agent_id)] = Field(
        default=None,
        description="The agent you act as (your token must allow it); left out: shared "
        "memories only.",
    )


class Said(BaseModel):  # one message of a conversation to remember
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: str = Field(min_length=1)
    id: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_ID_CHARS,
        description="Sent again, it is not ingested twice.",
    )
    sent_at: AwareDatetime | None = Field(default=None, description="When said (default: now).")


class RememberArgs(Arguments):
    text: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_MEMORY_CHARS,
        description="One fact, stored as written.",
    )
    category: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="With text: e.g. preferences, work.",
    )
    messages: list[Said] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_MESSAGES,
        description="Or a conversation to learn the user's facts from.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.text is None) == (self.messages is None):
            raise ValueError("give either text (one fact) or messages (a conversation)")
        if self.messages is not None and self.category is not None:
            raise ValueError("category goes with text; facts from messages are categorized")
        if self.messages is not None and not any(m.role == "user" for m in self.messages):
            raise ValueError("messages need a user message: facts come from what the user said")
        return self


class SearchArgs(Arguments):
    query: str = Field(
        min_length=1, max_length=MAX_QUERY_CHARS, description="What to look for, in words."
    )
    k: int = Field(default=5, ge=1, le=50, description="At most this many memories.")


class ListArgs(Arguments):
    status: Literal["active", "deleted"] = Field(
        default="active", description="deleted: forgotten memories, for restore_memory."
    )
    category: str | None = Field(default=None, min_length=1, max_length=64)
    limit: int = Field(default=50, ge=1, le=MAX_PAGE)
    offset: int = Field(default=0, ge=0)


class MemoryIdArgs(Arguments):
    id: str = Field(
        min_length=1, max_length=MAX_ID_CHARS, description="A memory id from another tool."
    )


class ValidityArgs(MemoryIdArgs):
    valid_from: date | None = Field(
        default=None, description="The first day it is true (YYYY-MM-DD); leave out: open."
    )
    valid_until: date | None = Field(
        default=None, description="The last day it is true (YYYY-MM-DD); leave out: no end."
    )


class ProfileArgs(Arguments):
    pass


class ChatArgs(Arguments):
    message: str = Field(min_length=1, description="What the user says.")
    thread_id: UUID | None = Field(
        default=None,
        description="Continue this conversation (from an earlier chat); leave out to start one.",
    )


# -- results ---------------------------------------------------------------------------------


class Memory(BaseModel):
    id: str
    text: str
    category: str
    observed_at: datetime = Field(description="When the user said it.")
    updated_at: datetime
    valid_from: date | None = Field(default=None, description="First day it is true.")
    valid_until: date | None = Field(default=None, description="Last day it is true.")
    past: bool | None = Field(default=None, description="Past valid_until: no longer true.")
    score: float | None = Field(default=None, description="Relevance (search only).")
    agent_id: str | None = Field(default=None, description="Absent: shared.")

    @classmethod
    def of(cls, record: MemoryRecord) -> Memory:
        past = record.is_past(datetime.now(UTC).date()) or None
        fields = record.model_dump(include=set(cls.model_fields))
        return cls.model_validate(fields | {"past": past})


class Found(BaseModel):
    memories: list[Memory] = Field(description="Best first.")


class Page(BaseModel):
    memories: list[Memory] = Field(description="Oldest first.")
    total: int
    next_offset: int | None = Field(default=None, description="Absent: last page.")


class Change(BaseModel):
    op: str
    id: str | None = Field(default=None, description="The memory it concerns.")
    text: str | None = None
    result: str
    detail: str | None = None

    @classmethod
    def of(cls, applied: AppliedOp | Mapping[str, Any]) -> Change:
        data = applied.model_dump() if isinstance(applied, AppliedOp) else dict(applied)
        return cls(
            op=str(data["op"]),
            id=data.get("memory_id"),
            text=data.get("text"),
            result=str(data["result"]),
            detail=data.get("detail"),
        )


class Refused(BaseModel):
    text: str | None = None
    reason: str


class Remembered(BaseModel):
    changes: list[Change] = Field(description="What changed in the memories, or why not.")
    refused: list[Refused] = Field(default_factory=list)
    problem: str | None = Field(default=None, description="Why some of it was not done.")


class ProfileLineView(BaseModel):
    text: str
    memory_ids: list[str] = Field(description="The memories it rests on.")


class ProfileView(BaseModel):
    lines: list[ProfileLineView] = Field(description="Lasting core facts, pinned ones first.")
    pinned: list[str] = Field(description="Memory ids that always appear.")
    version_id: str | None = Field(default=None, description="Absent: no profile yet.")
    updated_at: datetime | None = None

    @classmethod
    def of(cls, profile: Profile) -> ProfileView:
        return cls.model_validate(profile.model_dump(include=set(cls.model_fields)))


class Answer(BaseModel):
    answer: str
    thread_id: str = Field(description="Pass it to the next chat to continue.")


# -- who is calling --------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenUser:
    """A user this endpoint authenticated itself (on Aegra), with the agents its token
    allows as permissions, as the server's authenticate handler gives them."""

    identity: str
    permissions: tuple[str, ...] = ()
    is_authenticated: bool = True


@dataclass(frozen=True)
class Caller:
    """The authenticated user: its Engram id for the store, and LangGraph's user and
    credentials for runs made on its behalf."""

    user_id: str
    user: Any
    auth: Any

    @classmethod
    def of(cls, scope: Mapping[str, Any]) -> Caller:
        user = scope.get("user")
        if user is None or not (is_studio_user(user) or getattr(user, "is_authenticated", False)):
            raise AccessDeniedError(
                "no authenticated user: this route needs custom route auth on "
                '(langgraph.json: "http": {"enable_custom_route_auth": true})'
            )
        return cls(user_id_of(user), user, scope.get("auth"))

    def check_agent(self, agent_id: str | None) -> None:
        """Acting as `agent_id` needs the token's word (`AccessDeniedError` otherwise)."""
        check_agent(self.user, agent_id)


class ActingUser(BaseUser):
    """The caller's LangGraph user, acting as `agent_id` (the `X-Engram-Agent` header's
    part, `engram.identity.acting_agent`), so the threads and runs a tool makes are that
    agent's (`identity.owner_key`). The agent was checked against the token already."""

    def __init__(self, user: Any, agent_id: str | None) -> None:
        self.user = user
        kept = [p for p in permissions_of(user) if not p.startswith(ACTING_PERMISSION)]
        self.permissions = kept + ([f"{ACTING_PERMISSION}{agent_id}"] if agent_id else [])

    @property
    def identity(self) -> str:
        return str(self.user.identity)

    @property
    def is_authenticated(self) -> bool:
        return bool(getattr(self.user, "is_authenticated", True))

    @property
    def display_name(self) -> str:
        return str(getattr(self.user, "display_name", self.identity))

    def dict(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "is_authenticated": self.is_authenticated,
            "display_name": self.display_name,
            "permissions": self.permissions,
        }

    def __getitem__(self, key: str) -> Any:
        return self.dict()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.dict()


async def as_caller(
    caller: Caller, call: Callable[[], Awaitable[T]], agent_id: str | None = None
) -> T:
    """Run `call`'s requests to the server's in-process API as the caller, acting as
    `agent_id`.

    Inside LangGraph's auth context for the caller (`with_user`), the loopback request is
    authorized like the caller's own: threads are stamped with their owner, other users'
    (and other agents') threads are filtered out, the run carries the user its nodes check.
    The call runs in a task of its own, so that context ends with it."""
    if "langgraph_api.server" not in sys.modules:  # the app LangGraph's server runs
        raise ConfigurationError(
            "this tool runs graphs on a LangGraph server (langgraph dev or a deployment)"
        )
    from langgraph_api.utils import with_user

    user, auth = caller.user, caller.auth
    if not is_studio_user(user):
        user = ActingUser(user, agent_id)
        auth = AuthCredentials(user.permissions)

    async def scoped() -> T:
        async with with_user(user, auth):
            return await call()

    return await asyncio.create_task(scoped())


# -- the tools -------------------------------------------------------------------------------


class RunError(EngramError):
    """A graph run on the caller's behalf failed; the message is the run's own."""


async def _store() -> MemoryStore:
    return await asyncio.to_thread(default_store)


async def remember(caller: Caller, args: RememberArgs) -> Remembered:
    if args.text is not None:  # else messages (the arguments hold exactly one of them)
        store = await _store()
        applied = await asyncio.to_thread(
            store.add,
            caller.user_id,
            args.text,
            args.category,
            source=MCP_SOURCE,
            agent_id=args.agent_id,
        )
        return Remembered(changes=[Change.of(applied)])
    return await _ingest(caller, args.messages or [], args.agent_id)


async def search_memories(caller: Caller, args: SearchArgs) -> Found:
    store = await _store()
    records = await asyncio.to_thread(
        store.search, caller.user_id, args.query, args.k, agent_id=args.agent_id
    )
    return Found(memories=[Memory.of(r) for r in records])


async def list_memories(caller: Caller, args: ListArgs) -> Page:
    store = await _store()
    records = await asyncio.to_thread(
        store.memories,
        caller.user_id,
        status=args.status,
        category=args.category,
        agent_id=args.agent_id,
    )
    page = records[args.offset : args.offset + args.limit]
    end = args.offset + len(page)
    return Page(
        memories=[Memory.of(r) for r in page],
        total=len(records),
        next_offset=end if end < len(records) else None,
    )


async def forget_memory(caller: Caller, args: MemoryIdArgs) -> Change:
    store = await _store()
    return Change.of(
        await asyncio.to_thread(
            store.delete, caller.user_id, args.id, source=MCP_SOURCE, agent_id=args.agent_id
        )
    )


async def restore_memory(caller: Caller, args: MemoryIdArgs) -> Change:
    store = await _store()
    return Change.of(
        await asyncio.to_thread(
            store.restore, caller.user_id, args.id, source=MCP_SOURCE, agent_id=args.agent_id
        )
    )


async def set_validity(caller: Caller, args: ValidityArgs) -> Change:
    store = await _store()
    return Change.of(
        await asyncio.to_thread(
            store.set_validity,
            caller.user_id,
            args.id,
            args.valid_from,
            args.valid_until,
            source=MCP_SOURCE,
            agent_id=args.agent_id,
        )
    )


async def get_profile(caller: Caller, args: ProfileArgs) -> ProfileView:
    """The profile is built from shared memories only: every agent sees the same one."""
    store = await _store()
    return ProfileView.of(await asyncio.to_thread(store.profile, caller.user_id))


async def pin_memory(caller: Caller, args: MemoryIdArgs) -> ProfileView:
    store = await _store()
    return ProfileView.of(
        await asyncio.to_thread(
            store.pin, caller.user_id, args.id, source=MCP_SOURCE, agent_id=args.agent_id
        )
    )


async def unpin_memory(caller: Caller, args: MemoryIdArgs) -> ProfileView:
    """Only shared memories are pinned, so the agent changes nothing here."""
    store = await _store()
    return ProfileView.of(
        await asyncio.to_thread(store.unpin, caller.user_id, args.id, source=MCP_SOURCE)
    )


async def chat(caller: Caller, args: ChatArgs) -> Answer:
    """One turn of the chat graph on the caller's thread (a new one unless given); its
    memory steps run after it, as on any LangGraph server run."""
    limit = get_settings().max_message_chars
    if len(args.message) > limit:
        raise InvalidInputError(f"message is over {limit} characters (ENGRAM_MAX_MESSAGE_CHARS)")
    given = str(args.thread_id) if args.thread_id is not None else None
    said: dict[str, Any] = {"messages": [{"type": "human", "content": args.message}]}
    context = _run_context(args.agent_id)

    async def turn() -> Answer:
        async with get_client(url=None) as client:
            thread_id = given or str((await client.threads.create())["thread_id"])
            output = await client.runs.wait(
                thread_id,
                CHAT_GRAPH,
                input=said,
                context=context,
                raise_error=False,
            )
        return Answer(answer=_answer(_run_output(output)), thread_id=thread_id)

    try:
        return await as_caller(caller, turn, args.agent_id)
    except httpx.HTTPStatusError as error:
        if error.response.status_code != 404:
            raise
        # Unknown, or another user's: LangGraph's owner filter answers both alike.
        raise InvalidInputError(
            f"no thread {given!r}; leave thread_id out to start a new conversation"
        ) from None


async def _ingest(caller: Caller, messages: list[Said], agent_id: str | None) -> Remembered:
    """The ingest graph on the conversation, as a stateless run of the caller's (its
    memory steps: decide, extract, merge with the memories it touches)."""
    batch: dict[str, Any] = {"messages": [_ingest_message(m) for m in messages]}
    context = _run_context(agent_id)

    async def run() -> Any:
        async with get_client(url=None) as client:
            return await client.runs.wait(
                None, INGEST_GRAPH, input=batch, context=context, raise_error=False
            )

    output = _run_output(await as_caller(caller, run, agent_id))
    return Remembered(
        changes=[Change.of(a) for a in output.get("applied") or []],
        refused=[
            Refused(text=r.get("text"), reason=str(r.get("reason")))
            for r in output.get("rejected") or []
        ],
        problem=output.get("memory_error"),
    )


def _run_context(agent_id: str | None) -> dict[str, Any] | None:
    """A run's context naming the agent (the server's `check_run` checks the token again,
    and every node sees only what that agent sees); none: the shared memories only."""
    return {"agent_id": agent_id} if agent_id is not None else None


def _ingest_message(message: Said) -> dict[str, Any]:
    data: dict[str, Any] = {
        "type": "human" if message.role == "user" else "ai",
        "content": message.content,
    }
    if message.id is not None:
        data["id"] = message.id
    if message.sent_at is not None:
        data["additional_kwargs"] = {"sent_at": message.sent_at.isoformat()}
    return data


def _run_output(output: Any) -> dict[str, Any]:
    """A finished run's output, or its error as a `RunError`."""
    if not isinstance(output, dict):
        raise RunError(f"the run returned {type(output).__name__}, not its state")
    error = output.get("__error__")
    if isinstance(error, dict):
        raise RunError(str(error.get("message") or error.get("error") or "the run failed"))
    return output


def _answer(output: Mapping[str, Any]) -> str:
    for message in reversed(output.get("messages") or []):
        if isinstance(message, dict) and message.get("type") == "ai":
            content = message.get("content")
            if isinstance(content, list):  # content blocks: their text
                content = "".join(
                    b.get("text", "") if isinstance(b, dict) else str(b) for b in content
                )
            return str(content)
    raise RunError("the chat run ended without an answer")


@dataclass(frozen=True)
class ToolSpec:
    """A tool: what it runs, and the models whose schemas `tools/list` shows."""

    run: Callable[[Caller, Any], Awaitable[BaseModel]]
    arguments: type[Arguments]
    result: type[BaseModel]
    description: str
    annotations: types.ToolAnnotations

    def listing(self, name: str) -> types.Tool:
        return types.Tool(
            name=name,
            description=self.description,
            input_schema=schema(self.arguments, "validation"),
            output_schema=schema(self.result, "serialization"),
            annotations=self.annotations,
        )


READS = types.ToolAnnotations(read_only_hint=True, open_world_hint=False)
TOOLS: dict[str, ToolSpec] = {
    "remember": ToolSpec(
        remember,
        RememberArgs,
        Remembered,
        "Remember something about the user: `text`, one fact stored as written (an exact "
        "duplicate changes nothing), or `messages`, a conversation from which the facts the "
        "user stated are extracted and merged (a contradicted memory is updated).",
        types.ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False),
    ),
    "search_memories": ToolSpec(
        search_memories,
        SearchArgs,
        Found,
        "The user's memories most relevant to a query, best first, with scores.",
        READS,
    ),
    "list_memories": ToolSpec(
        list_memories,
        ListArgs,
        Page,
        "The user's memories, oldest first, a page at a time; `status: deleted` lists "
        "forgotten ones.",
        READS,
    ),
    "forget_memory": ToolSpec(
        forget_memory,
        MemoryIdArgs,
        Change,
        "Forget one memory that is no longer true (marked deleted; restore_memory brings it back).",
        types.ToolAnnotations(
            read_only_hint=False,
            destructive_hint=False,
            idempotent_hint=True,
            open_world_hint=False,
        ),
    ),
    "restore_memory": ToolSpec(
        restore_memory,
        MemoryIdArgs,
        Change,
        "Make a forgotten (or replaced) memory version active again.",
        types.ToolAnnotations(
            read_only_hint=False,
            destructive_hint=False,
            idempotent_hint=True,
            open_world_hint=False,
        ),
    ),
    "set_validity": ToolSpec(
        set_validity,
        ValidityArgs,
        Change,
        "Set when a memory is true (both ends; a date left out is open, so none clears "
        "them): e.g. valid_until for a plan or a stay that ends. Past its valid_until a "
        "memory is kept but no longer recalled as current.",
        types.ToolAnnotations(
            read_only_hint=False,
            destructive_hint=False,
            idempotent_hint=True,
            open_world_hint=False,
        ),
    ),
    "get_profile": ToolSpec(
        get_profile,
        ProfileArgs,
        ProfileView,
        "The user's profile: the lasting core facts about them, each line with the memory ids "
        "it rests on, and the pinned memories. Read it first for who the user is.",
        READS,
    ),
    "pin_memory": ToolSpec(
        pin_memory,
        MemoryIdArgs,
        ProfileView,
        "Pin an active memory so it always appears in the user's profile; returns the profile.",
        types.ToolAnnotations(
            read_only_hint=False,
            destructive_hint=False,
            idempotent_hint=True,
            open_world_hint=False,
        ),
    ),
    "unpin_memory": ToolSpec(
        unpin_memory,
        MemoryIdArgs,
        ProfileView,
        "Unpin a memory: it stays in the profile only while a profile line rests on it.",
        types.ToolAnnotations(
            read_only_hint=False,
            destructive_hint=False,
            idempotent_hint=False,
            open_world_hint=False,
        ),
    ),
    "chat": ToolSpec(
        chat,
        ChatArgs,
        Answer,
        "Talk to Engram's own chatbot, which answers from the user's memories and learns "
        "from the conversation afterwards. Returns the answer and the thread id to continue.",
        types.ToolAnnotations(read_only_hint=False, destructive_hint=False),
    ),
}


def schema(model: type[BaseModel], mode: Literal["validation", "serialization"]) -> dict[str, Any]:
    """The model's JSON schema, small and self-contained: agents read all of it on every
    turn, and some clients do not follow `$ref`. No titles; an optional field is its type
    alone (a client leaves it out; results never hold a null, see `_call_tool`)."""
    raw = model.model_json_schema(mode=mode)
    definitions = raw.pop("$defs", {})
    raw.pop("description", None)  # the class docstring; the tool has its own

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(definitions[str(node["$ref"]).rsplit("/", 1)[-1]])
            variants = node.get("anyOf")
            if node.get("default", ...) is None and isinstance(variants, list):
                kept = [v for v in variants if v != {"type": "null"}]
                if len(kept) == 1:
                    rest = {k: v for k, v in node.items() if k not in ("anyOf", "default")}
                    return inline({**kept[0], **rest})
            return {
                key: inline(value)
                for key, value in node.items()
                if not (key == "title" and isinstance(value, str))
            }
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    result: dict[str, Any] = inline(raw)
    return result


# -- the MCP server --------------------------------------------------------------------------


async def _list_tools(
    ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    return types.ListToolsResult(tools=[spec.listing(name) for name, spec in TOOLS.items()])


async def _call_tool(
    ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
) -> types.CallToolResult:
    spec = TOOLS.get(params.name)
    if spec is None:
        raise MCPError(
            types.INVALID_PARAMS, f"unknown tool {params.name!r}; tools: {', '.join(TOOLS)}"
        )
    try:
        arguments = spec.arguments.model_validate(params.arguments or {})
    except ValidationError as error:
        return refusal(f"invalid arguments: {reasons(error)}")
    try:
        caller = Caller.of(getattr(ctx.request, "scope", None) or {})
        acting = acting_agent(caller.user)  # the X-Engram-Agent header, if the client sent it
        if arguments.agent_id is None and acting is not None:
            arguments = arguments.model_copy(update={"agent_id": acting})
        elif acting is not None and arguments.agent_id != acting:
            raise AccessDeniedError(
                f"agent_id {arguments.agent_id!r} differs from the X-Engram-Agent header's "
                f"{acting!r}"
            )
        caller.check_agent(arguments.agent_id)
        result = await spec.run(caller, arguments)
    except httpx.HTTPStatusError as error:  # the in-process API refused a run
        return refusal(refused_run(error.response))
    except EngramError as error:
        return refusal(str(error))
    except Exception:
        log.exception("MCP tool %s failed", params.name)
        return refusal(f"{params.name} failed on the server; the server's log has the details")
    data = result.model_dump(mode="json", exclude_none=True)
    return types.CallToolResult(
        content=[types.TextContent(text=json.dumps(data, ensure_ascii=False))],
        structured_content=data,
    )


def refusal(reason: str) -> types.CallToolResult:
    """A tool error an agent can act on: one line, bounded."""
    line = " ".join(reason.split())
    if len(line) > MAX_REASON_CHARS:
        line = line[: MAX_REASON_CHARS - 1] + "…"
    return types.CallToolResult(content=[types.TextContent(text=line)], is_error=True)


def refused_run(response: httpx.Response) -> str:
    if response.status_code == 409:
        return "the thread is busy with another run; try again when it has finished"
    try:
        detail = response.json()["detail"]
    except (ValueError, KeyError, TypeError, httpx.StreamError):
        detail = response.reason_phrase
    return f"the server refused the run ({response.status_code}): {detail}"


def reasons(error: ValidationError) -> str:
    """What was wrong with each argument (never the values given)."""
    parts = []
    for problem in error.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in problem["loc"])
        message = str(problem["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


class McpEndpoint:
    """The ASGI endpoint at `/mcp`. A fresh session manager per lifespan of the app (one
    manager runs only once); requests without an authenticated user never reach it."""

    def __init__(self) -> None:
        self.server: Server[Any] = Server(
            "engram",
            version=__version__,
            title="Engram memory",
            instructions=INSTRUCTIONS,
            on_list_tools=_list_tools,
            on_call_tool=_call_tool,
        )
        self._manager: StreamableHTTPSessionManager | None = None

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object) -> AsyncIterator[None]:
        manager = StreamableHTTPSessionManager(
            self.server, json_response=True, stateless=True, max_request_body_size=MAX_BODY_BYTES
        )
        async with manager.run():
            self._manager = manager
            try:
                yield
            finally:
                self._manager = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") != "POST":
            # Stateless: no session to end (DELETE) and nothing the server would send on a
            # standing stream (GET), which would otherwise stay open, idle, per client.
            response = JSONResponse(
                {"detail": "this MCP endpoint is stateless: POST JSON-RPC requests"},
                status_code=405,
                headers={"Allow": "POST"},
            )
            await response(scope, receive, send)
            return
        if self._manager is None:
            response = JSONResponse({"detail": "the MCP server is not running"}, status_code=503)
            await response(scope, receive, send)
            return
        if "user" not in scope and on_aegra():
            # Aegra's custom-route auth covers FastAPI's routes only: this one checks the
            # token itself, with the same verifier as every other request.
            headers = Headers(scope=scope)
            try:
                token = await verifier().caller(headers.get("authorization"))
                permissions = request_permissions(token, headers.get(AGENT_HEADER))
            except TokenError as error:
                await JSONResponse({"detail": str(error)}, status_code=401)(scope, receive, send)
                return
            except Auth.exceptions.HTTPException as error:
                answer = JSONResponse({"detail": error.detail}, status_code=error.status_code)
                await answer(scope, receive, send)
                return
            scope["user"] = TokenUser(token.user_id, tuple(permissions))
        try:
            Caller.of(scope)
        except AccessDeniedError as error:
            await JSONResponse({"detail": str(error)}, status_code=403)(scope, receive, send)
            return
        await self._manager.handle_request(scope, receive, send)
