"""Where a thread's messages live: a bounded window in the graph state, the rest in the
run's long-term store.

Why: every checkpoint carries the whole state, so a state that keeps every message makes a
thread's checkpoints grow with the square of its length (the CLI's file reached 108 MB after
200 turns). Nothing needs the old messages in the state: respond sends the model only the
last `history_window` messages, and the memory steps read only the latest exchange and the
user messages whose extraction is still pending (`unextracted`), each with the reply right
after it (`engram.nodes.common.exchange_for`). So after each answer, respond keeps those and moves
every other message to the store LangGraph hands the run (`runtime.store`; the LangGraph
server always has one, `engram chat` keeps one in its SQLite file), then drops it from the
state with `RemoveMessage`. Without a store, or without a thread, nothing moves: the
messages stay in the state, since there is nowhere else to keep them.

Layout in the store, one namespace per conversation (labels escaped, see `label`):

- `("conversations", user, thread, "messages")`: one item per message, keyed by the
  message id (so the message ids in a memory's provenance find it), value
  `{"n": position in the conversation, "message": langchain's message dict}`;
- `("conversations", user, thread, "archive")`, key `"count"`: how many messages moved so
  far, so the next ones get the positions after them.

A message moves when it leaves the window, in conversation order, even when pending work
keeps it in the state a while longer; it is written once (a message already in the store
is not written again, so a step that is retried duplicates nothing).

The ingest graph keeps which of a user's messages it has considered under
`("ingested", user)` (key: message id, value: a fingerprint of its text), so re-sending a
message changes nothing on any thread, a stateless server run's included.

Both roots are Engram's own: `RESERVED_ROOTS` lists them so the server's store API never
hands them to a client (`engram.apps.server.auth`), and forgetting a user erases both.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote

from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    BaseMessage,
    HumanMessage,
    RemoveMessage,
    message_to_dict,
    messages_from_dict,
)
from langgraph.runtime import Runtime
from langgraph.store.base import BaseStore, GetOp, Item, PutOp

log = logging.getLogger("engram")

ROOT = "conversations"
INGESTED_ROOT = "ingested"
RESERVED_ROOTS = frozenset({ROOT, INGESTED_ROOT})
PAGE = 500  # items per store read when a whole conversation is read or erased


def label(value: str) -> str:
    """A namespace label for a user or thread id: LangGraph's stores refuse labels with a
    period, and quoting everything else too keeps two different ids apart."""
    return quote(value, safe="").replace(".", "%2E")


def messages_namespace(user_id: str, thread_id: str) -> tuple[str, ...]:
    return (ROOT, label(user_id), label(thread_id), "messages")


def ingested_namespace(user_id: str, agent_id: str | None = None) -> tuple[str, ...]:
    """Where the ingest graph marks the messages it considered: per user, and per agent
    (another agent reading the same conversation makes its own memories of it). Under the
    user's prefix either way, so `forget_conversations` erases both."""
    if agent_id is None:
        return (INGESTED_ROOT, label(user_id))
    return (INGESTED_ROOT, label(user_id), "agent", label(agent_id))


def user_prefixes(user_id: str) -> list[tuple[str, ...]]:
    """Every namespace prefix holding a user's conversations or ingest markers."""
    return [(ROOT, label(user_id)), ingested_namespace(user_id)]


def _count_namespace(user_id: str, thread_id: str) -> tuple[str, ...]:
    return (ROOT, label(user_id), label(thread_id), "archive")


def kept_ids(messages: Sequence[AnyMessage], window: int, pending: Iterable[str]) -> set[str]:
    """Ids of the messages the state keeps: the last `window`, the latest exchange (the
    memory steps of this turn read it, however small the window), and each pending user
    message with the reply right after it."""
    wanted = set(pending)
    last_user = max(
        (i for i, m in enumerate(messages) if isinstance(m, HumanMessage)), default=None
    )
    keep = list(messages[-window:])
    for index, message in enumerate(messages):
        if message.id in wanted or index == last_user:
            keep.append(message)
            following = messages[index + 1] if index + 1 < len(messages) else None
            if isinstance(following, AIMessage):
                keep.append(following)
    return {m.id for m in keep if m.id}


async def trim_history(
    runtime: Runtime[Any],
    user_id: str,
    messages: Sequence[AnyMessage],
    *,
    window: int,
    pending: Iterable[str],
) -> list[RemoveMessage]:
    """The removals that keep the state bounded, once the old messages are in the run's
    store; none without a store or a thread. A store that fails costs nothing but size:
    the messages stay in the state and move on a later turn (logged, never raised, so the
    answer is not lost to it)."""
    thread_id = runtime.execution_info.thread_id if runtime.execution_info else None
    if runtime.store is None or thread_id is None:
        return []
    try:
        return await move_old_messages(
            runtime.store, user_id, thread_id, messages, window=window, pending=pending
        )
    except Exception as error:
        log.warning("old messages stay in the thread's state for now: %s", error)
        return []


async def move_old_messages(
    store: BaseStore,
    user_id: str,
    thread_id: str,
    messages: Sequence[AnyMessage],
    *,
    window: int,
    pending: Iterable[str],
) -> list[RemoveMessage]:
    """Write the messages outside the window to the store (those not written before), and
    return the removals that take the ones no pending work needs out of the state.

    `messages` is the whole conversation in the state, the new reply included. The
    removals are only returned once the store has every message they remove.
    """
    keep = kept_ids(messages, window, pending)
    window_ids = {m.id for m in messages[-window:]}
    outside = [m for m in messages if m.id and m.id not in window_ids]
    if not outside:
        return []
    namespace = messages_namespace(user_id, thread_id)
    counter = _count_namespace(user_id, thread_id)
    found = await store.abatch(
        [GetOp(counter, "count"), *(GetOp(namespace, m.id or "") for m in outside)]
    )
    count_item, known = found[0], found[1:]
    count = int(count_item.value["count"]) if isinstance(count_item, Item) else 0
    new = [m for m, item in zip(outside, known, strict=True) if item is None]
    if new:
        puts = [
            PutOp(namespace, m.id or "", {"n": count + i, "message": message_to_dict(m)}, False)
            for i, m in enumerate(new)
        ]
        await store.abatch([*puts, PutOp(counter, "count", {"count": count + len(new)}, False)])
    return [RemoveMessage(id=m.id or "") for m in outside if m.id not in keep]


async def stored_messages(
    store: BaseStore, user_id: str, thread_id: str, *, last: int | None = None
) -> list[BaseMessage]:
    """The thread's messages in the store, oldest first (only the `last` few if given)."""
    namespace = messages_namespace(user_id, thread_id)
    query: dict[str, Any] = {}
    if last is not None:
        count = await store.aget(_count_namespace(user_id, thread_id), "count")
        if count is None or last <= 0:
            return []
        query = {"n": {"$gte": int(count.value["count"]) - last}}
    items: list[Item] = []
    while True:
        page = await store.asearch(namespace, filter=query, limit=PAGE, offset=len(items))
        items += [item for item in page if item.namespace == namespace]
        if len(page) < PAGE:
            break
    items.sort(key=lambda item: int(item.value["n"]))
    return messages_from_dict([item.value["message"] for item in items])


async def conversation(
    store: BaseStore | None,
    user_id: str,
    thread_id: str,
    in_state: Sequence[BaseMessage],
    *,
    window: int,
    last: int | None = None,
) -> list[BaseMessage]:
    """A thread's whole conversation (or its `last` messages), oldest first.

    The state's last `window` messages are the conversation's last ones (respond keeps
    them), so a short tail needs no store. Otherwise: the messages in the store, then
    those of the state not in it (pending work keeps some messages in both).
    """
    recent = list(in_state)
    if store is not None and (last is None or last > window):
        older = await stored_messages(store, user_id, thread_id, last=last)
        stored_ids = {m.id for m in older}
        recent = older + [m for m in recent if m.id not in stored_ids]
    if last is None:
        return recent
    return recent[-last:] if last > 0 else []


async def ingested_before(
    store: BaseStore, user_id: str, message_ids: Sequence[str], agent_id: str | None = None
) -> dict[str, str]:
    """The fingerprints of those messages the ingest graph considered before for the user
    (as this agent), on any thread."""
    namespace = ingested_namespace(user_id, agent_id)
    found = await store.abatch([GetOp(namespace, message_id) for message_id in message_ids])
    return {
        message_id: str(item.value["fingerprint"])
        for message_id, item in zip(message_ids, found, strict=True)
        if isinstance(item, Item)
    }


async def mark_ingested(
    store: BaseStore, user_id: str, fingerprints: dict[str, str], agent_id: str | None = None
) -> None:
    namespace = ingested_namespace(user_id, agent_id)
    await store.abatch(
        [
            PutOp(namespace, message_id, {"fingerprint": fingerprint}, False)
            for message_id, fingerprint in fingerprints.items()
        ]
    )


async def forget_conversations(store: BaseStore, user_id: str) -> int:
    """Erase every stored message of a user, in all threads, and the ingest markers;
    returns how many messages."""
    erased = 0
    for prefix in user_prefixes(user_id):
        while items := await store.asearch(prefix, limit=PAGE):
            await store.abatch([PutOp(item.namespace, item.key, None) for item in items])
            erased += sum(1 for item in items if "message" in item.value)
    return erased
