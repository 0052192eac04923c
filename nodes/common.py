"""Small helpers the nodes share: the run context, the latest exchange, endpoint errors."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

import httpx
import openai
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.runtime import Runtime

from engram.errors import EndpointError, InvalidInputError
from state.context import EngramContext
from state.contracts import MemoryRecord


def run_context(runtime: Runtime[EngramContext]) -> EngramContext:
    """The validated context; a run without one is refused (the LLM never picks the user)."""
    context = runtime.context
    if context is None:
        raise InvalidInputError("every run needs context={'user_id': ...}")
    if isinstance(context, dict):
        return EngramContext.model_validate(context)
    return context


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
