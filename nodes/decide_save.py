"""decide_save: does the latest exchange hold new information about the user? Runs after
the answer, so the user never waits on it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from langgraph.graph import END
from langgraph.runtime import Runtime

from engram.clients import Clients
from engram.identity import run_context
from engram.nodes.common import latest_exchange, with_error
from engram.nodes.programs import DecideSave, run_memory_step
from engram.nodes.update_profile import route_after_memory_steps
from engram.state.context import EngramContext
from engram.state.contracts import NumberedMemory
from engram.state.errors import MemoryStepError
from engram.state.graph_state import EngramState


def make_decide_save(
    clients: Clients, program: DecideSave
) -> Callable[..., Awaitable[dict[str, Any]]]:
    async def decide_save(state: EngramState, runtime: Runtime[EngramContext]) -> dict[str, Any]:
        context = run_context(runtime)
        if context.save_policy != "auto":
            return {"save": context.save_policy == "always"}
        user_message, reply = latest_exchange(state.get("messages", []))
        try:
            prediction = await run_memory_step(
                "decide_save",
                program,
                clients,
                context,
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
    return await route_after_memory_steps(state)
