"""Engram from Python, for apps that have their own chat model: `Memory` and its async twin
`AsyncMemory`, shaped like Mem0's so they read familiar.

`add(messages, user_id=...)` runs the ingest graph (decide_save → extract →
retrieve_similar → maintain) on a conversation the app already answered and returns what
changed; the other methods are the memory store's own (`engram.memory.store`), with its
guarantees and errors: every call names the user and reaches only that user's memories,
updates keep every version, deletes are restorable, only `forget` erases. `agent_id=` acts
as one of the user's agents (docs/agents.md): the shared memories and that agent's own;
left out, the shared ones only. `ALL_AGENTS` reads (and changes) every agent's, for an
operator's tools.

Nothing opens a client until a method needs it. One store per data directory per process
(the embedded Qdrant Edge shard is locked by its first opener), so two `Memory` objects on
one data directory share it.
"""

from __future__ import annotations

import asyncio
import builtins
import threading
import uuid
import weakref
from collections.abc import Coroutine, Iterable, Sequence
from contextlib import suppress
from datetime import date, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO, TypeVar

from langchain_core.messages import BaseMessage, convert_to_messages
from pydantic import BaseModel, Field

from engram.clients import Clients
from engram.settings import Settings
from engram.state.context import ALL_AGENTS, AgentScope
from engram.state.contracts import (
    AppliedOp,
    MemoryRecord,
    MemoryStatus,
    ObservedFact,
    Profile,
    RejectedOp,
    Source,
)
from engram.state.errors import InvalidInputError

if TYPE_CHECKING:
    from langgraph.graph.state import CompiledStateGraph

    from engram.memory.store import MemoryStore
    from engram.memory.transfer import ImportReport
    from engram.nodes.programs import MemoryPrograms

T = TypeVar("T")
Messages = str | Sequence[BaseMessage | dict[str, Any] | tuple[str, str] | str]
Which = Literal["active", "superseded", "deleted", "all"]
AsOf = datetime | date | str  # a time with its UTC offset, or a day (its end, UTC)
PYTHON_SOURCE_ACTOR = "python"


class AddResult(BaseModel):
    """What `add` did: the facts it extracted, the store's changes (`applied`, with
    `result` "added", "updated", "deleted", or "duplicate"/"unchanged" for none), and what
    it refused and why. `error` names a failed memory step: nothing is lost by sending the
    same messages again (adding a memory twice changes nothing)."""

    extracted: list[ObservedFact] = Field(default_factory=list)
    applied: list[AppliedOp] = Field(default_factory=list)
    rejected: list[RejectedOp] = Field(default_factory=list)
    error: str | None = None


class AsyncMemory:
    """Engram's memory for one data directory, from async code.

    `Memory(data_dir="./memories")` keeps everything there (default: `ENGRAM_DATA_DIR`, or
    the user data directory). Settings come from the environment and `.env` like
    everywhere else (`OPENAI_API_KEY` or `OPENAI_BASE_URL` for `add` and `search`);
    `settings=` or `clients=` replace them (tests pass scripted models this way).
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        settings: Settings | None = None,
        clients: Clients | None = None,
        programs: MemoryPrograms | None = None,
    ) -> None:
        if clients is not None and (settings is not None or data_dir is not None):
            raise InvalidInputError("pass clients= alone: they carry their own settings")
        if data_dir is not None:
            settings = (settings or Settings()).model_copy(
                update={"data_dir": Path(data_dir).expanduser()}
            )
        self.clients = clients or Clients(settings)
        self._programs = programs

    @property
    def store(self) -> MemoryStore:
        """The memory store itself (opened on first use; its calls block)."""
        return self.clients.store()

    @cached_property
    def _ingest(self) -> CompiledStateGraph[Any, Any, Any, Any]:
        """The ingest graph without a checkpointer: each `add` is a batch of its own."""
        from engram.graph import build_ingest_graph

        return build_ingest_graph(self.clients, self._programs).compile(name="engram_ingest")

    async def add(
        self,
        messages: Messages,
        *,
        user_id: str,
        sent_at: datetime | None = None,
        save_policy: Literal["auto", "always"] = "auto",
        agent_id: str | None = None,
    ) -> AddResult:
        """Remember what the user said in `messages` (a string, or user and assistant
        messages as dicts `{"role", "content"}`, tuples or LangChain messages).

        Only the user's own words become facts; the assistant's replies are context.
        `sent_at` dates messages that carry no `sent_at` of their own (default: now), and
        relative dates ("next Friday") are resolved against it. `save_policy="always"`
        skips the judgement of whether a message is worth remembering. As `agent_id`, new
        memories go to that agent's own when it is a private agent (ENGRAM_PRIVATE_AGENTS),
        else to the shared ones."""
        batch = _as_messages(messages, sent_at)
        ingest = await asyncio.to_thread(lambda: self._ingest)  # imports DSPy the first time
        context = {"user_id": user_id, "save_policy": save_policy, "agent_id": agent_id}
        result = await ingest.ainvoke({"messages": batch}, context=context)
        return AddResult(
            extracted=result.get("extracted") or [],
            applied=result.get("applied") or [],
            rejected=result.get("rejected") or [],
            error=result.get("memory_error"),
        )

    async def search(
        self,
        query: str,
        *,
        user_id: str,
        k: int = 5,
        category: str | None = None,
        as_of: AsOf | None = None,
        agent_id: str | None = None,
    ) -> builtins.list[MemoryRecord]:
        """The user's `k` active memories most relevant to `query`, best first, scored
        (past ones too: see `valid_until`). `as_of`: among what the store held as true at
        that moment (a datetime with its time zone, or a date: the end of that day, UTC)."""
        if not query.strip():
            raise InvalidInputError("the query is empty")
        moment = _moment(as_of)
        return await self._off_loop(
            lambda: self.store.search(user_id, query, k, category, as_of=moment, agent_id=agent_id)
        )

    async def get(
        self, memory_id: str, *, user_id: str, agent_id: AgentScope = None
    ) -> MemoryRecord:
        """One memory version; `MemoryNotFoundError` when the user has none with this id
        (another agent's own memory reads like none)."""
        return await self._off_loop(lambda: self.store.get(user_id, memory_id, agent_id=agent_id))

    async def list(
        self,
        *,
        user_id: str,
        status: Which = "active",
        category: str | None = None,
        as_of: AsOf | None = None,
        agent_id: AgentScope = None,
    ) -> builtins.list[MemoryRecord]:
        """All of the user's memories (no cap), oldest first; `status="all"` for every
        version, superseded and deleted ones included. `as_of`: the versions active and
        still true at that moment instead (as `search`); a read only."""
        chosen: MemoryStatus | None = None if status == "all" else status
        moment = _moment(as_of)
        if moment is not None and chosen != "active":
            raise InvalidInputError("as_of lists what was active then; leave status out")
        return await self._off_loop(
            lambda: self.store.memories(
                user_id, status=chosen, category=category, as_of=moment, agent_id=agent_id
            )
        )

    async def history(
        self, memory_id: str, *, user_id: str, agent_id: AgentScope = None
    ) -> builtins.list[MemoryRecord]:
        """Every version of the memory, oldest first, each with its audit trail."""
        return await self._off_loop(
            lambda: self.store.history(user_id, memory_id, agent_id=agent_id)
        )

    async def update(
        self,
        memory_id: str,
        text: str,
        *,
        user_id: str,
        category: str | None = None,
        agent_id: AgentScope = None,
    ) -> AppliedOp:
        """A new version with this text; the old one stays in the history."""
        return await self._off_loop(
            lambda: self.store.update(
                user_id, memory_id, text, category, source=_source(), agent_id=agent_id
            )
        )

    async def set_validity(
        self,
        memory_id: str,
        *,
        user_id: str,
        valid_from: date | None = None,
        valid_until: date | None = None,
        agent_id: AgentScope = None,
    ) -> AppliedOp:
        """Set when the memory is true: both ends (None leaves that end open, so neither
        clears them). A new version with the same text; the old one stays in the history.
        Past its `valid_until` a memory is kept but no longer recalled as current."""
        return await self._off_loop(
            lambda: self.store.set_validity(
                user_id, memory_id, valid_from, valid_until, source=_source(), agent_id=agent_id
            )
        )

    async def delete(
        self, memory_id: str, *, user_id: str, agent_id: AgentScope = None
    ) -> AppliedOp:
        """Mark the memory deleted: no longer recalled, kept in the history (`restore`)."""
        return await self._off_loop(
            lambda: self.store.delete(user_id, memory_id, source=_source(), agent_id=agent_id)
        )

    async def restore(
        self, memory_id: str, *, user_id: str, agent_id: AgentScope = None
    ) -> AppliedOp:
        """Make a deleted or superseded version the memory's active one again."""
        return await self._off_loop(
            lambda: self.store.restore(user_id, memory_id, source=_source(), agent_id=agent_id)
        )

    async def move(
        self,
        memory_id: str,
        *,
        user_id: str,
        to_agent: str | None,
        agent_id: AgentScope = ALL_AGENTS,
    ) -> AppliedOp:
        """Move the memory, every version of it, into `to_agent`'s own memories, or (None)
        into the user's shared ones. `agent_id`: whom it must be visible to now (default:
        anyone's, the operator's move)."""
        return await self._off_loop(
            lambda: self.store.move(
                user_id, memory_id, to_agent, agent_id=agent_id, source=_source()
            )
        )

    async def profile(self, *, user_id: str, as_stored: bool = False) -> Profile:
        """The user's profile as the chatbot sees it: the lines whose memories are all
        active (each with the memory ids it rests on) and the pinned memories; `version_id`
        is None when there is none yet. `as_stored`: the current version as written."""
        return await self._off_loop(lambda: self.store.profile(user_id, as_stored=as_stored))

    async def profile_history(self, *, user_id: str) -> builtins.list[Profile]:
        """Every version of the user's profile, oldest first, each with what made it."""
        return await self._off_loop(lambda: self.store.profile_history(user_id))

    async def restore_profile(self, version_id: str, *, user_id: str) -> Profile:
        """Make an earlier version of the profile the current one (a new version); returns
        it as written. `MemoryNotFoundError` when the user has no such version."""
        return await self._off_loop(
            lambda: self.store.restore_profile(user_id, version_id, source=_source())
        )

    async def pin(self, memory_id: str, *, user_id: str, agent_id: AgentScope = None) -> Profile:
        """Pin an active shared memory: it always appears in the profile (which every agent
        of the user sees, so an agent's own memory is refused). Returns the profile."""
        return await self._off_loop(
            lambda: self.store.pin(user_id, memory_id, source=_source(), agent_id=agent_id)
        )

    async def unpin(self, memory_id: str, *, user_id: str) -> Profile:
        """Unpin a memory: it stays in the profile only while a line rests on it."""
        return await self._off_loop(lambda: self.store.unpin(user_id, memory_id, source=_source()))

    async def forget(self, *, user_id: str, agent_id: str | None = None) -> int:
        """Erase every version of every memory of the user, every agent's included, and
        their profile; with `agent_id`, only that agent's own memories. Returns how many
        memory versions. It cannot be undone (`export` first if in doubt)."""
        return await self._off_loop(lambda: self.store.forget(user_id, agent_id=agent_id))

    async def export(
        self, file: str | Path | TextIO, *, user_id: str, agent_id: AgentScope = None
    ) -> int:
        """Write every version of the user's memories `agent_id` sees (`ALL_AGENTS`: every
        agent's), and their profile, to `file` (a path or a text stream) in `engram
        export`'s format; returns how many versions."""
        from engram.memory.transfer import export_file, export_jsonl

        def write() -> int:
            if not isinstance(file, str | Path):
                return export_jsonl(self.store, user_id, file, agent_id=agent_id)
            return export_file(self.store, user_id, Path(file), agent_id=agent_id)

        return await self._off_loop(write)

    async def import_(
        self,
        file: str | Path | Iterable[str],
        *,
        as_user: str | None = None,
        agent_id: AgentScope = ALL_AGENTS,
    ) -> ImportReport:
        """Import an export (a path, or its lines), all or nothing, optionally as another
        user. Memories the store already has are kept as they are; the file's profile is
        imported for a user who has none (`ImportReport.profile` says what became of it).
        Memories keep their scopes; with `agent_id`, a file holding another agent's own
        memories imports nothing."""
        from engram.memory.transfer import import_jsonl

        def read() -> ImportReport:
            if isinstance(file, str | Path):
                with Path(file).open(encoding="utf-8") as handle:
                    return import_jsonl(self.store, handle, as_user=as_user, agent_id=agent_id)
            return import_jsonl(self.store, file, as_user=as_user, agent_id=agent_id)

        return await self._off_loop(read)

    @staticmethod
    async def _off_loop(call: Any) -> Any:
        """Store calls block (Qdrant, embeddings): they run in a worker thread."""
        return await asyncio.to_thread(call)


class Memory:
    """`AsyncMemory` for synchronous code, with the same methods and arguments.

    Its async work runs on an event loop of its own, in a background thread, so it also
    works where a loop is already running (a notebook, a web handler)."""

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        settings: Settings | None = None,
        clients: Clients | None = None,
        programs: MemoryPrograms | None = None,
    ) -> None:
        self.aio = AsyncMemory(data_dir, settings=settings, clients=clients, programs=programs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    @property
    def store(self) -> MemoryStore:
        return self.aio.store

    def add(
        self,
        messages: Messages,
        *,
        user_id: str,
        sent_at: datetime | None = None,
        save_policy: Literal["auto", "always"] = "auto",
        agent_id: str | None = None,
    ) -> AddResult:
        return self._run(
            self.aio.add(
                messages,
                user_id=user_id,
                sent_at=sent_at,
                save_policy=save_policy,
                agent_id=agent_id,
            )
        )

    def search(
        self,
        query: str,
        *,
        user_id: str,
        k: int = 5,
        category: str | None = None,
        as_of: AsOf | None = None,
        agent_id: str | None = None,
    ) -> builtins.list[MemoryRecord]:
        return self._run(
            self.aio.search(
                query, user_id=user_id, k=k, category=category, as_of=as_of, agent_id=agent_id
            )
        )

    def get(self, memory_id: str, *, user_id: str, agent_id: AgentScope = None) -> MemoryRecord:
        return self._run(self.aio.get(memory_id, user_id=user_id, agent_id=agent_id))

    def list(
        self,
        *,
        user_id: str,
        status: Which = "active",
        category: str | None = None,
        as_of: AsOf | None = None,
        agent_id: AgentScope = None,
    ) -> builtins.list[MemoryRecord]:
        return self._run(
            self.aio.list(
                user_id=user_id, status=status, category=category, as_of=as_of, agent_id=agent_id
            )
        )

    def history(
        self, memory_id: str, *, user_id: str, agent_id: AgentScope = None
    ) -> builtins.list[MemoryRecord]:
        return self._run(self.aio.history(memory_id, user_id=user_id, agent_id=agent_id))

    def update(
        self,
        memory_id: str,
        text: str,
        *,
        user_id: str,
        category: str | None = None,
        agent_id: AgentScope = None,
    ) -> AppliedOp:
        return self._run(
            self.aio.update(memory_id, text, user_id=user_id, category=category, agent_id=agent_id)
        )

    def set_validity(
        self,
        memory_id: str,
        *,
        user_id: str,
        valid_from: date | None = None,
        valid_until: date | None = None,
        agent_id: AgentScope = None,
    ) -> AppliedOp:
        return self._run(
            self.aio.set_validity(
                memory_id,
                user_id=user_id,
                valid_from=valid_from,
                valid_until=valid_until,
                agent_id=agent_id,
            )
        )

    def delete(self, memory_id: str, *, user_id: str, agent_id: AgentScope = None) -> AppliedOp:
        return self._run(self.aio.delete(memory_id, user_id=user_id, agent_id=agent_id))

    def restore(self, memory_id: str, *, user_id: str, agent_id: AgentScope = None) -> AppliedOp:
        return self._run(self.aio.restore(memory_id, user_id=user_id, agent_id=agent_id))

    def move(
        self,
        memory_id: str,
        *,
        user_id: str,
        to_agent: str | None,
        agent_id: AgentScope = ALL_AGENTS,
    ) -> AppliedOp:
        return self._run(
            self.aio.move(memory_id, user_id=user_id, to_agent=to_agent, agent_id=agent_id)
        )

    def profile(self, *, user_id: str, as_stored: bool = False) -> Profile:
        return self._run(self.aio.profile(user_id=user_id, as_stored=as_stored))

    def profile_history(self, *, user_id: str) -> builtins.list[Profile]:
        return self._run(self.aio.profile_history(user_id=user_id))

    def restore_profile(self, version_id: str, *, user_id: str) -> Profile:
        return self._run(self.aio.restore_profile(version_id, user_id=user_id))

    def pin(self, memory_id: str, *, user_id: str, agent_id: AgentScope = None) -> Profile:
        return self._run(self.aio.pin(memory_id, user_id=user_id, agent_id=agent_id))

    def unpin(self, memory_id: str, *, user_id: str) -> Profile:
        return self._run(self.aio.unpin(memory_id, user_id=user_id))

    def forget(self, *, user_id: str, agent_id: str | None = None) -> int:
        return self._run(self.aio.forget(user_id=user_id, agent_id=agent_id))

    def export(
        self, file: str | Path | TextIO, *, user_id: str, agent_id: AgentScope = None
    ) -> int:
        return self._run(self.aio.export(file, user_id=user_id, agent_id=agent_id))

    def import_(
        self,
        file: str | Path | Iterable[str],
        *,
        as_user: str | None = None,
        agent_id: AgentScope = ALL_AGENTS,
    ) -> ImportReport:
        return self._run(self.aio.import_(file, as_user=as_user, agent_id=agent_id))

    def close(self) -> None:
        """Stop the background loop and its thread (also done when the object goes)."""
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is not None:
            _stop(loop)

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(work, self._background_loop())
        try:
            return future.result()
        except BaseException:  # Ctrl-C in the caller: the work stops too
            future.cancel()
            raise

    def _background_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = self._loop = asyncio.new_event_loop()
                threading.Thread(
                    target=_serve, args=(loop,), name="engram-memory", daemon=True
                ).start()
                weakref.finalize(self, _stop, loop)
            return self._loop


def _stop(loop: asyncio.AbstractEventLoop) -> None:
    with suppress(RuntimeError):  # already closed
        loop.call_soon_threadsafe(loop.stop)


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    """A `Memory`'s loop, until `close`: then its pending work is cancelled and it closes."""
    loop.run_forever()
    for task in asyncio.all_tasks(loop):
        task.cancel()
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


def _as_messages(messages: Messages, sent_at: datetime | None) -> list[BaseMessage]:
    """LangChain messages with ids (the ingest graph tells messages apart by id) and a
    `sent_at` each (the given one, where a message has none)."""
    if isinstance(messages, str):
        messages = [("user", messages)]
    converted = convert_to_messages(list(messages))
    if not converted:
        raise InvalidInputError("add() needs at least one message")
    stamp = sent_at.isoformat() if sent_at is not None else None
    if sent_at is not None and sent_at.tzinfo is None:
        raise InvalidInputError("sent_at needs a time zone (e.g. datetime.now(UTC))")
    prepared = []
    for message in converted:
        update: dict[str, Any] = {}
        if not message.id:
            update["id"] = str(uuid.uuid4())
        if stamp is not None and "sent_at" not in message.additional_kwargs:
            update["additional_kwargs"] = {**message.additional_kwargs, "sent_at": stamp}
        prepared.append(message.model_copy(update=update) if update else message)
    return prepared


def _moment(as_of: AsOf | None) -> datetime | None:
    from engram.memory.timeframe import as_of_moment

    return None if as_of is None else as_of_moment(as_of)


def _source() -> Source:
    return Source(actor=PYTHON_SOURCE_ACTOR)


__all__ = ["AddResult", "AsyncMemory", "Memory"]
