"""recall: embed the latest user message (with a little context) and fetch the user's
top-k active memories, and the user's profile (`engram.memory.profile`; the memories it
states are not recalled again). Embedding and vector search only; no LLM call, unless
reranking is on (ENGRAM_RERANK=llm): then the memory model reorders a wider set of
candidates first.

Recall is time-aware: a message that refers to a time (`engram.memory.timeframe`) narrows recall
to what the user said then ("what did I tell you last week?") or boosts it ("where did I
go last summer?"), on `observed_at`, the time the user said each memory."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import date
from functools import partial
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage
from langgraph.runtime import Runtime

from engram.clients import Clients
from engram.identity import run_context
from engram.memory.store import MemoryStore
from engram.memory.timeframe import TimeReference, asks_about_the_past, time_reference
from engram.nodes.common import endpoint_errors, latest_exchange, message_time
from engram.nodes.programs import RerankMemories, run_memory_step
from engram.state.context import EngramContext
from engram.state.contracts import MemoryRecord, NumberedMemory, Profile
from engram.state.errors import InvalidInputError, MemoryStepError
from engram.state.graph_state import TURN_RESET, EngramState

CONTEXT_CHARS = 300  # of the previous assistant reply, to resolve "yes, that one"
# Added to the score of a memory said within the span a message refers to: about the gap
# between a clearly relevant memory and a loosely related one (cosine, 384-d MiniLM).
TIME_BOOST = 0.15
# Reranking looks at this many times top_k candidates (at least RERANK_MIN, at most
# RERANK_MAX), so a memory the search placed just below the cut can still come in.
RERANK_FACTOR, RERANK_MIN, RERANK_MAX = 2, 10, 50


def make_recall(clients: Clients) -> Callable[..., Awaitable[dict[str, Any]]]:
    async def recall(state: EngramState, runtime: Runtime[EngramContext]) -> dict[str, Any]:
        context = run_context(runtime)
        messages = state.get("messages", [])
        user_message = validate_user_message(messages, clients.settings.max_message_chars)
        now = message_time(user_message)  # a malformed `sent_at` fails now, before the answer
        previous_reply = next(
            (m for m in reversed(messages[:-1]) if isinstance(m, AIMessage)), None
        )
        query = str(user_message.text)
        if previous_reply is not None:
            query = f"{previous_reply.text[-CONTEXT_CHARS:]}\n{query}"
        top_k = context.top_k or clients.settings.top_k
        rerank = clients.settings.rerank == "llm"
        fetch = min(max(RERANK_FACTOR * top_k, RERANK_MIN), RERANK_MAX) if rerank else top_k
        reference = time_reference(user_message.text, now)
        floor = clients.settings.recall_floor  # nothing irrelevant in the prompt
        # What is no longer true is left out, unless the message asks about the past.
        valid_on = None if asks_about_the_past(user_message.text, now) else now.date()

        with_profile = clients.settings.profile == "on"

        def search() -> tuple[Profile | None, list[MemoryRecord]]:  # one worker thread
            store = clients.store()  # its errors are its own, not the embedding endpoint's
            profile = store.profile(context.user_id, on=now.date()) if with_profile else None
            stated = profile.cited() if profile else set()
            with endpoint_errors("embedding model", clients.settings.openai_base_url):
                found = recall_memories(
                    store,
                    context.user_id,
                    query,
                    fetch + len(stated),
                    reference=reference,
                    floor=floor,
                    valid_on=valid_on,
                    agent_id=context.agent_id,
                )
            # what the profile already says is not repeated in the prompt
            return profile, [m for m in found if m.id not in stated][:fetch]

        profile, recalled = await asyncio.to_thread(search)
        error = None
        if rerank and len(recalled) > 1:
            recalled, error = await reranked(clients, program, context, user_message.text, recalled)
        update = {
            "user_id": context.user_id,
            "profile": profile,
            "recalled": recalled[:top_k],
            "memory_error": error,
        }
        return {**TURN_RESET, **update}

    program = RerankMemories()
    return recall


async def reranked(
    clients: Clients,
    program: RerankMemories,
    context: EngramContext,
    message: str,
    found: list[MemoryRecord],
) -> tuple[list[MemoryRecord], str | None]:
    """`found` in the memory model's order: the memories it lists first (ids it invented or
    repeated are ignored), then the others in the search's order, so a bad or empty answer
    can reorder recall but never empty it. A failed call keeps the search's order and says
    so (`memory_error`); the answer is not held up by more than the configured retries."""
    shown = [NumberedMemory.of(i, memory) for i, memory in enumerate(found, 1)]
    try:
        prediction = await run_memory_step(
            "rerank", program, clients, context, user_message=message, memories=shown
        )
    except MemoryStepError as error:
        return found, f"{error} (recall kept the search's order)"
    chosen = [i for i in dict.fromkeys(prediction.ranked or []) if 1 <= i <= len(found)]
    order = chosen + [i for i in range(1, len(found) + 1) if i not in chosen]
    return [found[i - 1] for i in order], None


def recall_memories(
    store: MemoryStore,
    user_id: str,
    query: str,
    k: int,
    *,
    reference: TimeReference | None,
    floor: float | None,
    valid_on: date | None = None,
    agent_id: str | None = None,
) -> list[MemoryRecord]:
    """The user's `k` memories for a message, best first.

    Without a time reference: the most relevant ones above the relevance `floor`. Asking
    what the user said at a time: the most relevant of those said then, without the floor
    (the time is what makes them relevant; none said then means none). Any other time
    reference: memories said then gain `TIME_BOOST`, against the floor too, so they rank
    above equally relevant ones from other times and can enter the top k from below it.
    With `valid_on`, only memories still true that day. As `agent_id`: the shared
    memories and that agent's own.
    """
    # One embedding for the message, however many searches it takes: with a remote
    # embedding endpoint, each one is a round trip before the answer.
    embedding = store.embed_query(query)
    search = partial(
        store.search,
        user_id,
        query,
        k,
        valid_on=valid_on,
        agent_id=agent_id,
        embedding=embedding,
    )
    if reference is None:
        return search(min_score=floor)
    if reference.said:
        return search(observed=reference.span)
    anytime = search(min_score=floor)
    # The boost counts against the floor too: "where was I last week?" shares few words
    # with "User is in Tokyo", said then.
    lowered = None if floor is None else floor - TIME_BOOST
    then = search(min_score=lowered, observed=reference.span)
    merged = {m.id: m for m in [*anytime, *then]}.values()
    boosted = [
        m.model_copy(update={"score": (m.score or 0) + TIME_BOOST})
        if m.observed_at in reference.span
        else m
        for m in merged
    ]
    return sorted(boosted, key=lambda m: m.score or 0, reverse=True)[:k]


def validate_user_message(messages: list[Any], max_chars: int) -> HumanMessage:
    """The turn's user message, or a clear error for a missing, empty or oversized one."""
    if not messages or not isinstance(messages[-1], HumanMessage):
        raise InvalidInputError("a turn must end with a user message")
    user_message, _ = latest_exchange(messages)
    assert user_message is not None
    text = user_message.text
    if not text.strip():
        raise InvalidInputError("the user message is empty")
    if len(text) > max_chars:
        raise InvalidInputError(
            f"the user message is {len(text)} characters; the limit is {max_chars} "
            "(ENGRAM_MAX_MESSAGE_CHARS)"
        )
    return user_message
