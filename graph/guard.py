"""The one place where every node of every Engram graph checks who it runs for, and how
Engram's types enter and leave the graph's state.

A run can enter a thread at any node (`Command(goto=...)`, a retry, a resumed background
run), so the checks cannot live in the first node only. Before any node runs:

1. the run's user is resolved (`engram.identity.run_context`: the authenticated user on
   a LangGraph server, `context.user_id` from plain Python);
2. the thread must belong to that user and the agent it was started as (`state["user_id"]`,
   `state["agent_id"]`, stamped by the first node that runs on the thread);
3. the models the context names must be allowed (`ENGRAM_ALLOWED_MODELS`), before any
   client for them is built or cached.

State: nodes always see Engram's contracts (`ObservedFact`, `MemoryRecord`, ...), whether
the checkpoint held them as objects or as plain data. Graphs compiled for a LangGraph
server (`plain_checkpoints=True`) also write plain data: the server's checkpointer cannot be
told which classes to trust (its serde config has no msgpack allowlist), so objects would be
restored with an "unregistered type" warning today and refused by a stricter LangGraph
tomorrow, while plain data (dicts, lists, strings, datetimes) restores in every version.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, get_args, get_type_hints

from langchain_core.runnables import RunnableConfig
from langgraph.runtime import Runtime
from langgraph.types import Overwrite
from pydantic import BaseModel, TypeAdapter

from engram.clients import Clients
from engram.identity import check_models, check_thread_owner, run_context
from engram.state.context import EngramContext

Node = Callable[..., Awaitable[dict[str, Any]]]


class StateTypes:
    """Turns a state schema's fields that hold Engram's contracts into their types (for
    nodes) and into plain data (for checkpoints)."""

    def __init__(self, schema: type) -> None:
        self.fields: dict[str, TypeAdapter[Any]] = {
            name: TypeAdapter(hint)
            for name, hint in get_type_hints(schema).items()
            if name != "messages" and _holds_models(hint)
        }

    def load(self, state: dict[str, Any]) -> dict[str, Any]:
        loaded = dict(state)
        for name, adapter in self.fields.items():
            if loaded.get(name) is not None:
                loaded[name] = adapter.validate_python(loaded[name])
        return loaded

    def dump(self, update: dict[str, Any]) -> dict[str, Any]:
        dumped = dict(update)
        for name, adapter in self.fields.items():
            value = dumped.get(name)
            if isinstance(value, Overwrite):
                dumped[name] = Overwrite(adapter.dump_python(value.value))
            elif value is not None:
                dumped[name] = adapter.dump_python(value)
        return dumped


def guarded(
    node: Node, clients: Clients, types: StateTypes, *, plain_checkpoints: bool = False
) -> Node:
    """`node`, run only for the thread's owner, as the authenticated user, with allowed
    models, seeing Engram's types (and writing plain data when `plain_checkpoints`); the
    first node on a thread stamps its owner."""
    wanted = set(inspect.signature(node).parameters)

    async def guard(
        state: dict[str, Any], config: RunnableConfig, runtime: Runtime[EngramContext]
    ) -> dict[str, Any]:
        context = run_context(runtime)
        check_thread_owner(state, context)
        check_models(context, clients.settings.permitted_models)
        extra: dict[str, Any] = {}
        if "config" in wanted:
            extra["config"] = config
        if "runtime" in wanted:
            extra["runtime"] = runtime
        update = await node(types.load(state), **extra)
        if state.get("user_id") is None:  # the thread's first node: its owner and agent
            update = {"user_id": context.user_id, "agent_id": context.agent_id, **update}
        return types.dump(update) if plain_checkpoints else update

    # Only the name: LangGraph reads the guard's own signature and annotations (the whole
    # graph state in, config and runtime injected), which functools.wraps would replace.
    guard.__name__ = guard.__qualname__ = getattr(node, "__name__", "node")
    return guard


def _holds_models(hint: Any) -> bool:
    if isinstance(hint, type) and issubclass(hint, BaseModel):
        return True
    return any(_holds_models(arg) for arg in get_args(hint))
