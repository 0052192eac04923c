"""The ingest graph: Engram's memory steps on conversations an app already answered (what
Mem0's `add()` does), built from the chat graph's nodes.

    START → decide_save ──nothing to save──→ END
                 ▼
              extract ──no facts──→ END
                 ▼
        retrieve_similar → maintain → update_profile → END

Input (`IngestInput`): `{"messages": [...]}`, user and assistant messages with stable ids,
optionally `additional_kwargs={"sent_at": ISO 8601}`; any other key is ignored. Context:
`{"user_id": ...}` and the usual knobs. Output (`IngestOutput`): `extracted`, `applied`,
`rejected`, `memory_error` and the work kept for a retry.

How a batch is handled:

- Every user message of the batch not seen before is considered, not only the last one.
  Seen message ids are kept in the thread's state (`ingested`) and, when the run has a
  store (the LangGraph server always does), per user in that store
  (`memory.conversations.ingested_before`), so re-sending a batch changes nothing and calls
  no model, on the same thread, on another one, or as a stateless run. A seen id that
  arrives with another text is reported in `rejected`, not ingested again. Without a
  checkpointer and a store (a plain Python compile) every batch is new.
- A message is seen only once its work is done: decided not worth saving, or extracted
  and its facts applied (or none kept). Work that failed (decide_save's failure extracts
  anyway) stays pending on the thread and the message unseen, so re-sending it retries it,
  also after a stateless run, whose pending work goes with its thread. A message pending
  on the thread is not considered again: the thread's retry does it.
- decide_save runs once per new user message, on that message and the assistant reply
  right after it, with the same program as in chat (no recalled memories: maintain sees
  the similar ones). `save_policy="always"` skips it and extracts every message;
  `"never"` ingests nothing (and leaves the messages unseen for a later run).
- Extraction runs per chosen message through the chat graph's retry path (`unextracted`):
  a message whose extraction fails stays pending on the thread and is retried next time
  (the `MAX_UNEXTRACTED` most recent; an older one is reported and left to a re-send).
- A user message that is too long (ENGRAM_MAX_MESSAGE_CHARS) or has a malformed `sent_at`
  is rejected with the reason and left unseen, so re-sending it fixed under the same id
  ingests it.
- maintain gets all of the batch's facts in one call, like a chat turn.
- The thread keeps only the exchanges whose work is pending: finished ones leave its state
  at the next run (what was seen stays in `ingested`), so a thread that ingests a long
  conversation batch by batch, like a chat thread's memory thread, stays small.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, RemoveMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Overwrite

from engram.clients import Clients
from engram.graph.guard import StateTypes, guarded
from engram.identity import run_context
from engram.memory.conversations import ingested_before, mark_ingested
from engram.nodes import (
    MemoryPrograms,
    make_decide_save,
    make_extract,
    make_maintain,
    make_retrieve_similar,
    make_update_profile,
    route_after_decide,
    route_after_extract,
)
from engram.nodes.common import message_time
from engram.nodes.extract import MAX_UNEXTRACTED
from engram.state.context import EngramContext
from engram.state.contracts import ObservedFact, RejectedOp, Unextracted
from engram.state.errors import InvalidInputError
from engram.state.graph_state import TURN_RESET
from engram.state.ingest_state import IngestInput, IngestOutput, IngestState

Node = Callable[..., Awaitable[dict[str, Any]]]

DECIDE_CONCURRENCY = 4  # decide_save calls in flight for one batch
QUOTE_CHARS = 200  # of a rejected message's text, in its report


def build_ingest_graph(
    clients: Clients | None = None,
    programs: MemoryPrograms | None = None,
    *,
    plain_checkpoints: bool = False,
) -> StateGraph[IngestState, EngramContext, IngestInput, IngestOutput]:
    """The ingest graph builder (uncompiled, like `engram.graph.build_graph`, with the same
    `plain_checkpoints`)."""
    clients = clients or Clients()
    programs = programs or MemoryPrograms.configured(clients.settings)
    builder = StateGraph(
        IngestState,
        context_schema=EngramContext,
        input_schema=IngestInput,
        output_schema=IngestOutput,
    )
    nodes = {
        "decide_save": batch_decide_save(make_decide_save(clients, programs.decide_save), clients),
        "extract": batch_extract(make_extract(clients, programs.extract)),
        "retrieve_similar": make_retrieve_similar(clients),
        "maintain": batch_maintain(
            make_maintain(clients, programs.maintain, actor="ingest", from_origin=True)
        ),
        "update_profile": make_update_profile(clients, programs.profile),
    }
    types = StateTypes(IngestState)
    for name, node in nodes.items():
        builder.add_node(name, guarded(node, clients, types, plain_checkpoints=plain_checkpoints))
    builder.add_edge(START, "decide_save")
    builder.add_conditional_edges(
        "decide_save", route_after_decide, ["extract", "update_profile", END]
    )
    builder.add_conditional_edges(
        "extract", route_after_extract, ["retrieve_similar", "update_profile", END]
    )
    builder.add_edge("retrieve_similar", "maintain")
    builder.add_edge("maintain", "update_profile")
    builder.add_edge("update_profile", END)
    return builder


def batch_decide_save(decide: Node, clients: Clients) -> Node:
    """decide_save for a batch: the chat graph's node, asked once per new user message.

    The chosen messages go to `unextracted`, which extract works through; the turn's
    fields start empty, as recall makes them in chat. Only the messages not worth saving
    are seen now; the chosen ones once their work is done (`batch_extract`,
    `batch_maintain`)."""

    async def decide_save(state: dict[str, Any], runtime: Runtime[EngramContext]) -> dict[str, Any]:
        context = run_context(runtime)
        messages: list[AnyMessage] = list(state.get("messages", []))
        seen: dict[str, str] = dict(state.get("ingested") or {})
        if runtime.store is not None:
            unseen = [
                str(m.id)
                for m in messages
                if isinstance(m, HumanMessage) and m.id and m.id not in seen
            ]
            if unseen:
                seen.update(
                    await ingested_before(runtime.store, context.user_id, unseen, context.agent_id)
                )
        max_chars = clients.settings.max_message_chars
        new, rejected = _new_user_messages(messages, seen, _pending(state), max_chars)
        reset: dict[str, Any] = {**TURN_RESET, "rejected": Overwrite(rejected)}
        if context.save_policy == "never":
            return {**reset, "save": False}
        decisions = await _decide_each(decide, state, messages, new, runtime, context)
        chosen = [
            Unextracted(message_id=str(message.id), observed_at=observed_at)
            for (_, message, observed_at), (save, _) in zip(new, decisions, strict=True)
            if save
        ]
        not_saved = [m for (_, m, _), (save, _) in zip(new, decisions, strict=True) if not save]
        errors = [error for _, error in decisions if error]
        keep = _pending(state) | {item.message_id for item in chosen}
        return {
            **reset,
            "messages": _finished_messages(messages, keep),
            "save": bool(chosen),
            "unextracted": [*state.get("unextracted", []), *chosen],
            "ingested": await _mark(runtime, seen, not_saved),
            "memory_error": "; ".join(errors) or None,
        }

    return decide_save


def batch_extract(extract: Node) -> Node:
    """The chat graph's extract node, on the messages decide_save chose (`unextracted`),
    one message at a time, so which extractions failed is known.

    In chat, `save=True` also means "extract the latest exchange"; here the batch's choice
    is already in `unextracted`, so the node sees `save=False` and extracts exactly those.
    A message that extracted no fact is seen now, one with facts once maintain applied
    them; a failed one stays pending (and unseen)."""

    async def extract_batch(
        state: dict[str, Any], config: RunnableConfig, runtime: Runtime[EngramContext]
    ) -> dict[str, Any]:
        current: dict[str, Any] = {**state, "save": False}
        todo = {item.message_id: item for item in state.get("unextracted", [])}
        extracted: list[ObservedFact] = []
        rejected: list[RejectedOp] = []
        failed: list[Unextracted] = []
        done: list[str] = []
        for item in todo.values():
            update = await extract(
                {**current, "unextracted": [item]}, config=config, runtime=runtime
            )
            current["facts"] = update["facts"]
            current["memory_error"] = update.get("memory_error", current.get("memory_error"))
            extracted += update["extracted"]
            rejected += update["rejected"]
            failed += update["unextracted"]
            if not update["unextracted"]:
                done.append(item.message_id)
        kept, given_up = failed[-MAX_UNEXTRACTED:], failed[:-MAX_UNEXTRACTED]
        rejected += [_given_up(item, state) for item in given_up]
        with_facts = _message_ids(current["facts"])
        finished = [m for m in _user_messages(state, done) if m.id not in with_facts]
        return {
            "extracted": extracted,
            "facts": current["facts"],
            "unextracted": kept,
            "rejected": rejected,
            "memory_error": current.get("memory_error"),
            "ingested": await _mark(runtime, state.get("ingested"), finished),
        }

    extract_batch.__name__ = "extract"
    return extract_batch


def batch_maintain(maintain: Node) -> Node:
    """The chat graph's maintain node; the messages whose facts it applied are seen (a
    failure keeps the facts pending, and their messages unseen)."""

    async def maintain_batch(
        state: dict[str, Any], runtime: Runtime[EngramContext]
    ) -> dict[str, Any]:
        update = await maintain(state, runtime=runtime)
        if update.get("facts") != []:  # not applied: the facts stay for a retry
            return update
        applied = _user_messages(state, list(_message_ids(state.get("facts", []))))
        return {**update, "ingested": await _mark(runtime, state.get("ingested"), applied)}

    maintain_batch.__name__ = "maintain"
    return maintain_batch


def _finished_messages(messages: Sequence[AnyMessage], keep: set[str]) -> list[RemoveMessage]:
    """Removals for every message no step needs any more: the thread keeps only the
    exchanges whose work is pending, so a thread that ingests a long conversation (a chat
    thread's memory thread) stays small. What was seen is in `ingested` (and the store), so
    a re-sent message is still recognised."""
    removals: list[RemoveMessage] = []
    kept_exchange = False
    for message in messages:
        if isinstance(message, HumanMessage):
            kept_exchange = message.id in keep
        if not kept_exchange and message.id:
            removals.append(RemoveMessage(id=message.id))
    return removals


def _pending(state: dict[str, Any]) -> set[str]:
    """Messages whose work waits on the thread (extraction or facts to apply)."""
    return {item.message_id for item in state.get("unextracted", [])} | _message_ids(
        state.get("facts", [])
    )


def _message_ids(facts: Sequence[ObservedFact]) -> set[str]:
    return {message_id for fact in facts for message_id in fact.message_ids}


def _user_messages(state: dict[str, Any], message_ids: Sequence[str]) -> list[HumanMessage]:
    wanted = set(message_ids)
    return [
        m
        for m in state.get("messages", [])
        if isinstance(m, HumanMessage) and m.id and m.id in wanted
    ]


async def _mark(
    runtime: Runtime[EngramContext],
    seen: dict[str, str] | None,
    messages: Sequence[HumanMessage],
) -> dict[str, str]:
    """The thread's seen messages with these added, recorded in the run's store too."""
    done = {str(message.id): _fingerprint(message) for message in messages}
    if runtime.store is not None and done:
        context = run_context(runtime)
        await mark_ingested(runtime.store, context.user_id, done, context.agent_id)
    return {**(seen or {}), **done}


def _given_up(item: Unextracted, state: dict[str, Any]) -> RejectedOp:
    found = _user_messages(state, [item.message_id])
    message = found[0] if found else None
    return RejectedOp(
        op="EXTRACT",
        text=message.text[:QUOTE_CHARS] if message else None,
        reason=(
            f"extracting facts from message {item.message_id} failed and this thread "
            f"retries only the {MAX_UNEXTRACTED} most recent such messages; it is still "
            "unseen: send it again to retry"
        ),
    )


def _new_user_messages(
    messages: Sequence[AnyMessage], seen: dict[str, str], pending: set[str], max_chars: int
) -> tuple[list[tuple[int, HumanMessage, datetime]], list[RejectedOp]]:
    """User messages neither seen nor pending (with their index and time), and the ones
    refused with a reason."""
    new: list[tuple[int, HumanMessage, datetime]] = []
    rejected: list[RejectedOp] = []
    for index, message in enumerate(messages):
        if not isinstance(message, HumanMessage) or not message.id or message.id in pending:
            continue
        before = seen.get(message.id)
        if before is not None:
            if before != _fingerprint(message):
                rejected.append(
                    _rejected(
                        message,
                        f"message {message.id} was ingested before with another text; it "
                        "is not ingested again (send a new message with a new id)",
                    )
                )
            continue
        if len(message.text) > max_chars:
            rejected.append(
                _rejected(
                    message,
                    f"message {message.id} is {len(message.text)} characters; the limit is "
                    f"{max_chars} (ENGRAM_MAX_MESSAGE_CHARS)",
                )
            )
            continue
        try:
            observed_at = message_time(message)
        except InvalidInputError as error:
            rejected.append(_rejected(message, f"message {message.id}: {error}"))
            continue
        new.append((index, message, observed_at))
    return new, rejected


async def _decide_each(
    decide: Node,
    state: dict[str, Any],
    messages: list[AnyMessage],
    new: list[tuple[int, HumanMessage, datetime]],
    runtime: Runtime[EngramContext],
    context: EngramContext,
) -> list[tuple[bool, str | None]]:
    """(save, error) per new message. An empty message has nothing to save; "always" asks
    no model; otherwise the decide_save node judges the message and the reply after it."""
    if context.save_policy == "always":
        return [(bool(message.text.strip()), None) for _, message, _ in new]
    limit = asyncio.Semaphore(DECIDE_CONCURRENCY)

    async def one(index: int, message: HumanMessage) -> tuple[bool, str | None]:
        if not message.text.strip():
            return False, None
        end = index + 1
        if end < len(messages) and isinstance(messages[end], AIMessage):
            end += 1  # the reply belongs to the exchange
        view = {**state, "messages": messages[:end], "recalled": [], "memory_error": None}
        async with limit:
            update = await decide(view, runtime=runtime)
        return update.get("save") is True, update.get("memory_error")

    return list(await asyncio.gather(*(one(index, message) for index, message, _ in new)))


def _fingerprint(message: AnyMessage) -> str:
    return hashlib.sha256(message.text.encode()).hexdigest()[:16]


def _rejected(message: AnyMessage, reason: str) -> RejectedOp:
    return RejectedOp(op="INGEST", text=message.text[:QUOTE_CHARS], reason=reason)
