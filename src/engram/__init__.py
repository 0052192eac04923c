"""Engram: long-term, per-user memory for chatbots.

    from engram import Memory

    memory = Memory(data_dir="./memories")
    memory.add("I'm vegetarian and I just moved to Lyon.", user_id="alice")
    memory.search("what should I cook?", user_id="alice")

`Memory` / `AsyncMemory` are for apps with their own chat model; `build_graph()` is the
whole chat graph (recall → respond → decide_save → extract → retrieve_similar → maintain)
to compile with your checkpointer, and `build_ingest_graph()` its memory steps alone.

Importing `engram` is cheap: each name below loads its module when first used, so a
program that only searches memories never imports DSPy or the chat model's client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engram.apps.python_api import AddResult, AsyncMemory, Memory
    from engram.clients import Clients
    from engram.graph import build_graph, build_ingest_graph, drain_memory_runs, join_memory_run
    from engram.memory.store import MemoryStore
    from engram.nodes.programs import DecideSave, ExtractFacts, MaintainMemory, MemoryPrograms
    from engram.settings import Settings
    from engram.state import (
        AppliedOp,
        ChatInput,
        ChatOutput,
        EngramContext,
        EngramState,
        Fact,
        MemoryOp,
        MemoryRecord,
        ObservedFact,
        RejectedOp,
        checkpoint_serde,
    )
    from engram.state.context import ALL_AGENTS
    from engram.state.contracts import Profile, ProfileLine
    from engram.state.errors import (
        AccessDeniedError,
        ConfigurationError,
        EmbeddingDimensionError,
        EndpointError,
        EngramError,
        ImportFormatError,
        InvalidInputError,
        MemoryNotFoundError,
        MemoryStepError,
        StoreConflictError,
    )

__version__ = "0.2.0"

# name -> the module that defines it (loaded on first use, see `__getattr__`)
_EXPORTS = {
    **dict.fromkeys(["AddResult", "AsyncMemory", "Memory"], "engram.apps.python_api"),
    "Clients": "engram.clients",
    **dict.fromkeys(
        ["build_graph", "build_ingest_graph", "drain_memory_runs", "join_memory_run"],
        "engram.graph",
    ),
    "MemoryStore": "engram.memory.store",
    **dict.fromkeys(
        ["DecideSave", "ExtractFacts", "MaintainMemory", "MemoryPrograms"], "engram.nodes.programs"
    ),
    "Settings": "engram.settings",
    **dict.fromkeys(
        [
            "AppliedOp",
            "ChatInput",
            "ChatOutput",
            "EngramContext",
            "EngramState",
            "Fact",
            "MemoryOp",
            "MemoryRecord",
            "ObservedFact",
            "RejectedOp",
            "checkpoint_serde",
        ],
        "engram.state",
    ),
    "ALL_AGENTS": "engram.state.context",
    **dict.fromkeys(["Profile", "ProfileLine"], "engram.state.contracts"),
    **dict.fromkeys(
        [
            "AccessDeniedError",
            "ConfigurationError",
            "EmbeddingDimensionError",
            "EndpointError",
            "EngramError",
            "ImportFormatError",
            "InvalidInputError",
            "MemoryNotFoundError",
            "MemoryStepError",
            "StoreConflictError",
        ],
        "engram.state.errors",
    ),
}

# Spelled out for linters and type checkers; a test checks it against `_EXPORTS`.
__all__ = [
    "ALL_AGENTS",
    "AccessDeniedError",
    "AddResult",
    "AppliedOp",
    "AsyncMemory",
    "ChatInput",
    "ChatOutput",
    "Clients",
    "ConfigurationError",
    "DecideSave",
    "EmbeddingDimensionError",
    "EndpointError",
    "EngramContext",
    "EngramError",
    "EngramState",
    "ExtractFacts",
    "Fact",
    "ImportFormatError",
    "InvalidInputError",
    "MaintainMemory",
    "Memory",
    "MemoryNotFoundError",
    "MemoryOp",
    "MemoryPrograms",
    "MemoryRecord",
    "MemoryStepError",
    "MemoryStore",
    "ObservedFact",
    "Profile",
    "ProfileLine",
    "RejectedOp",
    "Settings",
    "StoreConflictError",
    "__version__",
    "build_graph",
    "build_ingest_graph",
    "checkpoint_serde",
    "drain_memory_runs",
    "join_memory_run",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'engram' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
