"""decide_save: does the latest exchange hold new information about the user? Runs after
the answer, so the user never waits on it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from langgraph.graph import END
from langgraph.runtime import Runtime

from engram.resources import Resources
from nodes.common import latest_exchange, run_context, with_error
from nodes.programs import DecideSave, run_program
from state.context import EngramContext
from state.contracts import NumberedMemory
from state.errors import MemoryStepError
from state.graph_state import EngramState


def make_decide_save(
    resources: Resources, program: DecideSave
) -> Callable[..., Awaitable[dict[str, Any]]]:
    async def decide_save(state: EngramState, runtime: Runtime[EngramContext]) -> dict[str, Any]:
        context = run_context(runtime)
        if context.save_policy != "auto":
            return {"save": context.save_policy == "always"}
        user_message, reply = latest_exchange(state.get("messages", []))
        settings = resources.settings
        try:
            prediction = await run_program(
                "decide_save",
                program,
                resources.memory_lm(context.memory_model),
                attempts=settings.llm_attempts,
                seconds=settings.llm_timeout,
                backoff=settings.llm_backoff,
                known_memories=[
                    NumberedMemory.of(i, m) for i, m in enumerate(state.get("recalled", []), 1)
                ],
                user_message=user_message.text if user_message else "",
                assistant_message=reply.text if reply else "",
            )
        except MemoryStepError as error:
            # Fail open: extraction decides, and returns no facts when there is nothing.
            return {"save": True, "memory_error": with_error(state, str(error))}
        return {"save": prediction.save is True}

    return decide_save


async def route_after_decide(state: EngramState, runtime: Runtime[EngramContext]) -> str:
    """Extract when there is something to save, or unfinished work from earlier turns.

    A coroutine, like every route here: LangGraph runs a plain function on an edge in a
    worker thread when the graph runs asynchronously, a thread hop per turn for nothing."""
    if run_context(runtime).save_policy == "never":
        return END
    if state.get("save") or state.get("facts") or state.get("unextracted"):
        return "extract"
    return END
