"""Small helpers the nodes share: the latest exchange, the user's time, endpoint errors."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any

import httpx
import openai
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage

from engram.state.errors import EndpointError, InvalidInputError


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
    """When the user wrote the message, in their time zone, so "today" and "yesterday"
    mean the user's days: `additional_kwargs['sent_at']` (ISO 8601; a time without an
    offset is read in this machine's local zone), else now in the local zone."""
    sent_at = message.additional_kwargs.get("sent_at")
    if isinstance(sent_at, str):
        try:
            parsed = datetime.fromisoformat(sent_at)
        except ValueError:
            raise InvalidInputError(f"sent_at {sent_at!r} is not an ISO 8601 time") from None
        return parsed if parsed.tzinfo else parsed.astimezone()
    return datetime.now().astimezone()


def turn_date(messages: Sequence[AnyMessage]) -> date:
    """The user's date for this turn: the day of the latest user message."""
    user_message, _ = latest_exchange(messages)
    return message_time(user_message).date() if user_message else datetime.now().astimezone().date()


def with_error(state: Mapping[str, Any], message: str) -> str:
    """This turn's `memory_error` with one more message (every failure stays visible)."""
    return "; ".join(filter(None, [state.get("memory_error"), message]))


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
