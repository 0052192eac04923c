"""schedule_memory: the memory steps of a chat turn run as their own run after the answer,
so a caller waiting on the chat run (`runs.wait`, the SDK's most common call, or Python's
`ainvoke`) gets its answer after recall + one chat call.

The turn's exchange goes to the ingest graph (`engram_ingest`: decide_save → extract →
retrieve_similar → maintain, the same nodes) on the chat thread's *memory thread*, a
thread of the same user whose id is derived from the chat thread's. Runs there are queued,
so the memory steps of one conversation apply in order, and they never block the
conversation itself: the next chat run on the chat thread starts at once. Ingest considers
each message id once and keeps failed work on the memory thread for the next run.

On a LangGraph server the run is created through the server's in-process API
(`multitask_strategy="enqueue"`), inside this run's own authentication context, so the
server's auth handlers stamp the memory thread with the same owner and the run acts for
the same user as any run a client starts. From Python (a run whose context asks for
`memory_steps="background"`), it is an asyncio task on the caller's event loop with the
chat run's checkpointer and store (`LocalMemoryRuns`; `join_memory_run` waits for one).

When the run cannot be scheduled (no LangGraph server API in this process, or it refused),
the turn falls back to running the memory steps inline: nothing is lost, the answer has
already been produced.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any

from langchain_core.messages import AnyMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.constants import CONFIG_KEY_CHECKPOINTER
from langgraph.graph import END, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime

from engram.clients import Clients
from engram.identity import on_aegra, owner_key, run_context
from engram.nodes.common import latest_exchange, message_time, with_error
from engram.state.context import EngramContext
from engram.state.errors import InvalidInputError
from engram.state.graph_state import EngramState

log = logging.getLogger(__name__)

INGEST_GRAPH = "engram_ingest"  # the ingest graph's id in langgraph.json
# uuid5 namespace of memory threads: a chat thread's memory thread id is fixed, so every
# turn of a conversation queues behind the previous one.
MEMORY_THREADS = uuid.UUID("5e0d4c1e-6b8a-4f59-9d3c-7a1f0e2b8c41")
# Context fields the ingest graph reads (the chat model and top_k are the chat's own).
MEMORY_CONTEXT = ("user_id", "agent_id", "memory_model", "save_policy")


def make_schedule_memory(
    ingest: StateGraph[Any, Any, Any, Any],
) -> Callable[..., Awaitable[dict[str, Any]]]:
    """`ingest` is the ingest graph's builder: from Python it is compiled with the chat
    run's checkpointer and store for each memory run (on a server the server runs it)."""

    async def schedule_memory(
        state: EngramState, config: RunnableConfig, runtime: Runtime[EngramContext]
    ) -> dict[str, Any]:
        context = run_context(runtime)
        user_message, reply = latest_exchange(state.get("messages", []))
        if user_message is None:
            return {"memory_run": None}
        run_thread = runtime.execution_info.thread_id if runtime.execution_info else None
        # A stateless run (`/runs/wait` without a thread) has no checkpointer and a thread
        # the server deletes afterwards: its memory steps go to the user's one memory thread
        # for stateless runs, whose failed work is retried by the next such run.
        checkpointer = config.get("configurable", {}).get(CONFIG_KEY_CHECKPOINTER)
        chat_thread = run_thread if checkpointer else None
        thread_id = memory_thread_id(context.user_id, chat_thread, context.agent_id)
        exchange = [_forwarded(user_message, run_thread, chat_thread)]
        if reply is not None:
            exchange.append(_forwarded(reply, run_thread, chat_thread))
        payload = {"messages": [message.model_dump() for message in exchange]}
        memory_context = context.model_dump(include=set(MEMORY_CONTEXT), exclude_none=True)
        try:
            if runtime.server_info is None:  # Python: a task on this event loop
                graph = ingest.compile(checkpointer=checkpointer, store=runtime.store)
                run_id = LOCAL_RUNS.start(graph, thread_id, payload, memory_context)
            else:
                run = await _create_run(
                    thread_id, payload, memory_context, {"chat_thread_id": chat_thread}
                )
                run_id = str(run["run_id"])
        except Exception as error:  # anything: the answer stands, the steps run inline
            log.warning("memory steps run inline, they could not be scheduled: %s", error)
            return {
                "memory_run": None,
                "memory_error": with_error(
                    state, f"memory steps ran inline (scheduling failed: {error})"
                ),
            }
        return {"memory_run": {"thread_id": thread_id, "run_id": run_id}}

    return schedule_memory


def make_route_after_respond(clients: Clients) -> Callable[..., Awaitable[str]]:
    async def route_after_respond(
        state: EngramState, config: RunnableConfig, runtime: Runtime[EngramContext]
    ) -> str:
        """The memory steps in a run of their own, or in this run: while earlier inline
        work is pending on the thread, on Aegra, when the context (or, on LangGraph's
        server, ENGRAM_MEMORY_STEPS) says inline, and from Python unless the context asks
        for the background and the graph has a checkpointer to keep the memory thread."""
        context = run_context(runtime)
        if context.save_policy == "never":
            return END
        if state.get("facts") or state.get("unextracted"):
            return "decide_save"
        if runtime.server_info is None:
            kept = config.get("configurable", {}).get(CONFIG_KEY_CHECKPOINTER) is not None
            background = context.memory_steps == "background" and kept
        else:
            # Aegra has no in-process API to queue a run with, and does not enforce
            # multitask strategies (queued memory runs of one conversation would overlap).
            where = context.memory_steps or clients.settings.memory_steps
            background = where == "background" and not on_aegra()
        return "schedule_memory" if background else "decide_save"

    return route_after_respond


class LocalMemoryRuns:
    """Memory runs of chat runs invoked from Python: each an asyncio task on the caller's
    event loop, queued behind the previous run of its memory thread (the server's
    "enqueue"). A run's report is kept until `join` takes it (the `KEPT` latest).

    A task lives and dies with its loop: `join` and `drain` wait only for runs of the
    loop they are called on, and runs of a closed loop are dropped (a loop closed while a
    run waited, as `asyncio.run` per turn does, cancels it: its exchange stays on the
    memory thread, unseen, for the conversation's next memory run)."""

    KEPT = 1000

    def __init__(self) -> None:
        self._runs: dict[str, asyncio.Task[dict[str, Any]]] = {}
        self._latest: dict[str, asyncio.Task[dict[str, Any]]] = {}

    def start(
        self,
        graph: CompiledStateGraph[Any, Any, Any, Any],
        thread_id: str,
        payload: dict[str, Any],
        context: dict[str, Any],
    ) -> str:
        run_uuid = uuid.uuid4()
        run_id = str(run_uuid)
        before = self._latest.get(thread_id)
        loop = asyncio.get_running_loop()

        async def run() -> dict[str, Any]:
            if before is not None and before.get_loop() is loop:
                await asyncio.wait([before])  # its outcome is its own caller's
            config: RunnableConfig = {"configurable": {"thread_id": thread_id}, "run_id": run_uuid}
            return dict(await graph.ainvoke(payload, config, context=context))

        # A fresh context: the task is no part of the chat run (its config, callbacks and
        # stream), which has already ended when it runs.
        task = loop.create_task(run(), context=contextvars.Context())
        task.add_done_callback(partial(self._finished, thread_id, run_id))
        self._runs[run_id] = self._latest[thread_id] = task
        for gone in [r for r, t in self._runs.items() if t.get_loop().is_closed()]:
            del self._runs[gone]
        for old in [r for r, t in self._runs.items() if t.done()][: -self.KEPT]:
            del self._runs[old]
        return run_id

    def _finished(self, thread_id: str, run_id: str, task: asyncio.Task[dict[str, Any]]) -> None:
        if self._latest.get(thread_id) is task:
            del self._latest[thread_id]
        if task.cancelled():
            log.warning("memory run %s was cancelled (its event loop ended?)", run_id)
        elif task.exception() is not None:
            log.error("memory run %s failed", run_id, exc_info=task.exception())

    async def join(self, run_id: str) -> dict[str, Any]:
        """The memory run's report (`IngestOutput`), once it has finished."""
        task = self._runs.get(run_id)
        if task is None:
            raise InvalidInputError(
                f"no memory run {run_id} in this process (it ran elsewhere, or its report "
                f"was already taken or dropped: the latest {self.KEPT} are kept)"
            )
        if task.cancelled():
            self._runs.pop(run_id, None)
            raise InvalidInputError(
                f"memory run {run_id} was cancelled before it finished (its event loop "
                "ended?); its exchange waits on the memory thread for the next memory run"
            )
        if task.get_loop() is not asyncio.get_running_loop():
            raise InvalidInputError(
                f"memory run {run_id} runs on another event loop; join it there (a run "
                "lives and dies with the loop of the chat run that started it)"
            )
        try:
            return await asyncio.shield(task)
        finally:
            if task.done():
                self._runs.pop(run_id, None)

    async def drain(self) -> None:
        """Wait for every memory run started on this event loop (before it ends)."""
        loop = asyncio.get_running_loop()
        while pending := [t for t in self._runs.values() if t.get_loop() is loop and not t.done()]:
            await asyncio.wait(pending)


LOCAL_RUNS = LocalMemoryRuns()


async def join_memory_run(memory_run: Mapping[str, str]) -> dict[str, Any]:
    """Wait for the memory steps a chat run invoked from Python left running in the
    background (its output's `memory_run`) and return their report: `extracted`,
    `applied`, `rejected`, `memory_error` and the work kept for a retry."""
    return await LOCAL_RUNS.join(memory_run["run_id"])


async def drain_memory_runs() -> None:
    """Wait for every background memory run of this event loop, e.g. before it ends: a run
    cut off by the exit keeps its exchange on the memory thread, unseen, for the
    conversation's next memory run."""
    await LOCAL_RUNS.drain()


async def route_after_schedule(state: EngramState) -> str:
    return END if state.get("memory_run") else "decide_save"


def memory_thread_id(user_id: str, chat_thread: str | None, agent_id: str | None = None) -> str:
    """The memory thread of a chat thread; one per user (and agent: a thread keeps one)
    for stateless runs, whose own thread the server throws away afterwards (the memory
    thread stays, with the reports).

    The id is computable from the user id: another user who creates a thread with it
    first only makes this user's stateless turns run their memory steps inline (the
    owner filters keep that thread apart; scheduling fails, the fallback runs)."""
    # without an agent, `owner_key` is the user id: existing memory threads keep their ids
    name = f"thread:{chat_thread}" if chat_thread else f"stateless:{owner_key(user_id, agent_id)}"
    return str(uuid.uuid5(MEMORY_THREADS, name))


def _forwarded(message: AnyMessage, run_thread: str | None, chat_thread: str | None) -> AnyMessage:
    """The message as the memory thread gets it.

    Its id is derived from the run's thread and its own id: the ingest graph considers
    each message id once per user, and clients often number messages per conversation
    ("1", "2", ...), so the same id in two conversations must stay two messages. The
    original id and chat thread go along as its `origin`, which the memories it yields
    name as their source. A user message carries the time it was sent, so a run that
    starts later still resolves "today" and "yesterday" against the turn's own time."""
    extra = {
        **message.additional_kwargs,
        "origin": {"thread_id": chat_thread, "message_id": message.id},
    }
    if isinstance(message, HumanMessage) and "sent_at" not in extra:
        extra["sent_at"] = message_time(message).isoformat()
    forwarded_id = str(uuid.uuid5(MEMORY_THREADS, f"message:{run_thread}:{message.id}"))
    return message.model_copy(update={"id": forwarded_id, "additional_kwargs": extra})


async def _create_run(
    thread_id: str, payload: dict[str, Any], context: dict[str, Any], metadata: dict[str, Any]
) -> dict[str, Any]:
    """Queue an ingest run on the memory thread, as this run's user (the in-process client
    runs inside this run's auth context, so the server's auth handlers see that user)."""
    from langgraph_sdk import get_client  # the server's in-process API; only on a server

    client = get_client(url=None)
    run = await client.runs.create(
        thread_id,
        INGEST_GRAPH,
        input=payload,
        context=context,
        metadata=metadata,  # a new memory thread takes it: which conversation it serves
        multitask_strategy="enqueue",
        if_not_exists="create",
    )
    return dict(run)
