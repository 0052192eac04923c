"""respond: the chat model answers from a bounded window of recent messages plus the
user's profile and the recalled memories. The prompt never grows with the length of the
conversation, and neither does the state: after the answer, messages no step needs any
more move to the run's store (`engram.memory.conversations`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import date
from typing import Any

from langchain_core.messages import AnyMessage, BaseMessage, SystemMessage, trim_messages
from langgraph.runtime import Runtime

from engram.clients import Clients
from engram.identity import run_context
from engram.memory.conversations import trim_history
from engram.nodes.common import endpoint_errors, turn_date
from engram.state.context import EngramContext
from engram.state.contracts import MemoryRecord, Profile
from engram.state.graph_state import EngramState

SYSTEM_PROMPT = """You are a helpful assistant with long-term memory of this user.
Today is {today}.
{profile}What you remember about the user (with the date they told you):
{memories}
Use these memories when they help; do not list them unprompted. If a memory seems outdated,
ask. Never claim to remember things that are not listed here or in the conversation."""
PROFILE_SECTION = """The user's profile (core facts; keep them in mind in every answer):
{lines}
"""


def make_respond(clients: Clients) -> Callable[..., Awaitable[dict[str, Any]]]:
    async def respond(state: EngramState, runtime: Runtime[EngramContext]) -> dict[str, Any]:
        context = run_context(runtime)
        settings = clients.settings
        chat = clients.chat_model(context.chat_model)
        messages = state.get("messages", [])
        prompt = build_prompt(
            messages,
            state.get("recalled", []),
            profile=state.get("profile"),
            window=settings.history_window,
            max_chars=settings.max_message_chars,
        )
        with endpoint_errors("chat model", settings.openai_base_url):
            reply = await chat.ainvoke(prompt)
        removed = await trim_history(
            runtime,
            context.user_id,
            [*messages, reply],
            window=settings.history_window,
            pending=[item.message_id for item in state.get("unextracted", [])],
        )
        return {"messages": [reply, *removed]}

    return respond


def build_prompt(
    messages: Sequence[AnyMessage],
    memories: Sequence[MemoryRecord],
    *,
    window: int,
    max_chars: int,
    profile: Profile | None = None,
) -> list[BaseMessage]:
    """System prompt with the profile and memories + the last `window` messages, each cut
    to `max_chars`."""
    recent = trim_messages(
        list(messages),
        max_tokens=window,
        token_counter=count_messages,
        strategy="last",
        start_on="human",
    )
    bounded = [
        m if len(m.text) <= max_chars else m.model_copy(update={"content": m.text[:max_chars]})
        for m in recent
    ]
    system = SYSTEM_PROMPT.format(
        today=turn_date(messages).isoformat(),
        profile=render_profile(profile),
        memories=render_memories(memories, turn_date(messages)),
    )
    return [SystemMessage(system), *bounded]


def count_messages(messages: Sequence[BaseMessage]) -> int:
    """The window counts messages. (Not `len` itself: trim_messages reads its counter's
    signature on every call, and a builtin's is parsed from text, about 0.2 ms a turn.)"""
    return len(messages)


def render_profile(profile: Profile | None) -> str:
    """The profile's section of the system prompt; empty without lines. One line each,
    whitespace collapsed (the store bounds the lines' total size)."""
    if profile is None or not profile.lines:
        return ""
    lines = "\n".join(f"- {' '.join(line.text.split())}" for line in profile.lines)
    return PROFILE_SECTION.format(lines=lines)


def render_memories(memories: Sequence[MemoryRecord], today: date) -> str:
    """One line per memory, with its category, when the user said it and, when it has
    them, when it is true (a past one says so). Whitespace in a text is collapsed, so a
    stored newline cannot start a line of its own."""
    if not memories:
        return "none"
    return "\n".join(
        f"- {' '.join(m.text.split())} ({m.category}; said {m.observed_at:%Y-%m-%d}"
        f"{validity_note(m, today)})"
        for m in memories
    )


def validity_note(memory: MemoryRecord, today: date) -> str:
    start, end = memory.valid_from, memory.valid_until
    if end is not None and end < today:
        return f"; no longer true: it held until {end}"
    if start is not None and start > today:
        return f"; from {start}" + (f" until {end}" if end else "")
    return f"; true until {end}" if end is not None else ""
