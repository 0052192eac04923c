"""schedule_memory: on a LangGraph server, the memory steps of a chat turn run as their own
run after the answer, so a client waiting on the chat run (`runs.wait`, the SDK's most
common call) gets its answer after recall + one chat call.

The turn's exchange goes to the ingest graph (`engram_ingest`: decide_save → extract →
retrieve_similar → maintain, the same nodes) on the chat thread's *memory thread*, a
thread of the same user whose id is derived from the chat thread's. Runs there are queued
(`multitask_strategy="enqueue"`), so the memory steps of one conversation apply in order,
and they never block the conversation itself: the next chat run on the chat thread starts
at once, whatever the client's multitask strategy. Ingest considers each message id once
and keeps failed work on the memory thread for the next run.

The run is created through the server's in-process API, inside this run's own
authentication context, so the server's auth handlers stamp the memory thread with the
same owner and the run acts for the same user as any run a client starts.

When the run cannot be scheduled (no LangGraph server API in this process, or it refused),
the turn falls back to running the memory steps inline: nothing is lost, the answer has
already been produced.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from langchain_core.messages import AnyMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.constants import CONFIG_KEY_CHECKPOINTER
from langgraph.graph import END
from langgraph.runtime import Runtime

from engram.clients import Clients
from engram.identity import on_aegra, run_context
from engram.nodes.common import latest_exchange, message_time, with_error
from engram.state.context import EngramContext
from engram.state.graph_state import EngramState

log = logging.getLogger(__name__)

INGEST_GRAPH = "engram_ingest"  # the ingest graph's id in langgraph.json
# uuid5 namespace of memory threads: a chat thread's memory thread id is fixed, so every
# turn of a conversation queues behind the previous one.
MEMORY_THREADS = uuid.UUID("5e0d4c1e-6b8a-4f59-9d3c-7a1f0e2b8c41")
# Context fields the ingest graph reads (the chat model and top_k are the chat's own).
MEMORY_CONTEXT = ("user_id", "memory_model", "save_policy")


def make_schedule_memory() -> Callable[..., Awaitable[dict[str, Any]]]:
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
        kept = bool(config.get("configurable", {}).get(CONFIG_KEY_CHECKPOINTER))
        chat_thread = run_thread if kept else None
        thread_id = memory_thread_id(context.user_id, chat_thread)
        exchange = [_forwarded(user_message, run_thread, chat_thread)]
        if reply is not None:
            exchange.append(_forwarded(reply, run_thread, chat_thread))
        try:
            run = await _create_run(
                thread_id,
                {"messages": [message.model_dump() for message in exchange]},
                context.model_dump(include=set(MEMORY_CONTEXT), exclude_none=True),
                {"chat_thread_id": chat_thread},
            )
        except Exception as error:  # anything: the answer stands, the steps run inline
            log.warning("memory steps run inline, they could not be scheduled: %s", error)
            return {
                "memory_run": None,
                "memory_error": with_error(
                    state, f"memory steps ran inline (scheduling failed: {error})"
                ),
            }
        return {"memory_run": {"thread_id": thread_id, "run_id": str(run["run_id"])}}

    return schedule_memory


def make_route_after_respond(clients: Clients) -> Callable[..., Awaitable[str]]:
    async def route_after_respond(state: EngramState, runtime: Runtime[EngramContext]) -> str:
        """The memory steps in a run of their own (on LangGraph's server, unless the
        context or ENGRAM_MEMORY_STEPS says inline), or in this run: always outside a
        server and on Aegra, and while earlier inline work is pending on the thread."""
        context = run_context(runtime)
        if context.save_policy == "never":
            return END
        where = context.memory_steps or clients.settings.memory_steps
        pending = state.get("facts") or state.get("unextracted")
        # Aegra has no in-process API to queue a run with, and does not enforce multitask
        # strategies (queued memory runs of one conversation would overlap): inline there.
        served = runtime.server_info is not None and not on_aegra()
        if served and where == "background" and not pending:
            return "schedule_memory"
        return "decide_save"

    return route_after_respond


async def route_after_schedule(state: EngramState) -> str:
    return END if state.get("memory_run") else "decide_save"


def memory_thread_id(user_id: str, chat_thread: str | None) -> str:
    """The memory thread of a chat thread; one per user for stateless runs, whose own
    thread the server throws away afterwards (the memory thread stays, with the reports).

    The id is computable from the user id: another user who creates a thread with it
    first only makes this user's stateless turns run their memory steps inline (the
    owner filters keep that thread apart; scheduling fails, the fallback runs)."""
    name = f"thread:{chat_thread}" if chat_thread else f"stateless:{user_id}"
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
