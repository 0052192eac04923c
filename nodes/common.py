"""Small helpers the nodes share: the run context, the latest exchange, endpoint errors."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import openai
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.runtime import Runtime

from engram.errors import EndpointError, InvalidInputError
from state.context import EngramContext
from state.contracts import MemoryRecord

_STOPWORDS = frozenset(
    "the and for are was were has have had with that this from they them their there about "
    "user users you your yours not but can will would could should into also very just like "
    "likes liked been being than then what when where which who whom how does did its our "
    "ours she her his him".split()
)


def content_words(text: str) -> set[str]:
    """Words that carry meaning, cut to 5 letters (a crude stem: live/lives/living)."""
    words = re.findall(r"[a-z0-9]+", text.casefold())
    return {w[:5] for w in words if len(w) > 2 and w not in _STOPWORDS}


def run_context(runtime: Runtime[EngramContext]) -> EngramContext:
    """The validated context; a run without one is refused (the LLM never picks the user)."""
    context = runtime.context
    if context is None:
        raise InvalidInputError("every run needs context={'user_id': ...}")
    if isinstance(context, dict):
        return EngramContext.model_validate(context)
    return context


def check_thread_owner(state: Mapping[str, Any], context: EngramContext) -> None:
    """A thread belongs to the user of its first turn; nobody else may continue it
    (they would see the conversation and could apply its pending facts)."""
    owner = state.get("user_id")
    if owner is not None and owner != context.user_id:
        raise InvalidInputError(
            f"this thread belongs to another user; start a new thread for {context.user_id!r}"
        )


def latest_exchange(messages: Sequence[AnyMessage]) -> tuple[HumanMessage | None, AIMessage | None]:
    """The last user message and the assistant reply right after it (if any)."""
    for index in range(len(messages) - 1, -1, -1):
        if isinstance(messages[index], HumanMessage):
            return _exchange_at(messages, index)
    return None, None


def exchange_for(
    messages: Sequence[AnyMessage], message_id: str
) -> tuple[HumanMessage | None, AIMessage | None]:
    """The user message with this id and the assistant reply right after it."""
    for index, message in enumerate(messages):
        if isinstance(message, HumanMessage) and message.id == message_id:
            return _exchange_at(messages, index)
    return None, None


def _exchange_at(
    messages: Sequence[AnyMessage], index: int
) -> tuple[HumanMessage | None, AIMessage | None]:
    user_message = messages[index]
    reply = messages[index + 1] if index + 1 < len(messages) else None
    return (
        user_message if isinstance(user_message, HumanMessage) else None,
        reply if isinstance(reply, AIMessage) else None,
    )


def message_time(message: AnyMessage) -> datetime:
    """When the user wrote the message: `additional_kwargs['sent_at']` (ISO 8601) or now."""
    sent_at = message.additional_kwargs.get("sent_at")
    if isinstance(sent_at, str):
        try:
            parsed = datetime.fromisoformat(sent_at)
        except ValueError:
            raise InvalidInputError(f"sent_at {sent_at!r} is not an ISO 8601 time") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return datetime.now(UTC)


def render_memories(memories: Sequence[MemoryRecord], numbered: bool = False) -> str:
    """Memories as prompt lines, with their category and when the user said them."""
    if not memories:
        return "none"
    lines = []
    for index, memory in enumerate(memories, start=1):
        prefix = f"[{index}] " if numbered else "- "
        lines.append(
            f"{prefix}{memory.text} ({memory.category}; said {memory.observed_at:%Y-%m-%d})"
        )
    return "\n".join(lines)


@contextmanager
def endpoint_errors(what: str, base_url: str | None) -> Iterator[None]:
    """Turn provider failures into one clear `EndpointError` naming the endpoint."""
    where = base_url or "the OpenAI API"
    try:
        yield
    except openai.APITimeoutError as error:
        raise EndpointError(f"{what} at {where} timed out") from error
    except openai.APIConnectionError as error:
        raise EndpointError(f"{what} at {where} could not be reached: {error}") from error
    except openai.APIStatusError as error:
        raise EndpointError(
            f"{what} at {where} answered HTTP {error.status_code}: {error.message}"
        ) from error
    except httpx.HTTPError as error:
        raise EndpointError(f"{what} at {where} failed: {error}") from error
