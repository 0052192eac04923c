"""Contracts shared by the graph, the nodes, the store, the CLI and evaluation tools.

The names here are stable: tests, optimized DSPy programs and exports rely on them. Each
loads its module on first use, so `engram.state.errors` (which every command imports)
does not pull in LangGraph's graph machinery with the graph state.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engram.state.checkpoints import CHECKPOINT_TYPES, checkpoint_serde
    from engram.state.context import EngramContext
    from engram.state.contracts import (
        AppliedOp,
        Candidate,
        Fact,
        MemoryEvent,
        MemoryOp,
        MemoryRecord,
        NumberedMemory,
        ObservedFact,
        RejectedOp,
        Source,
        Unextracted,
    )
    from engram.state.graph_state import TURN_RESET, ChatInput, ChatOutput, EngramState

_EXPORTS = {
    **dict.fromkeys(["CHECKPOINT_TYPES", "checkpoint_serde"], "engram.state.checkpoints"),
    "EngramContext": "engram.state.context",
    **dict.fromkeys(
        [
            "AppliedOp",
            "Candidate",
            "Fact",
            "MemoryEvent",
            "MemoryOp",
            "MemoryRecord",
            "NumberedMemory",
            "ObservedFact",
            "RejectedOp",
            "Source",
            "Unextracted",
        ],
        "engram.state.contracts",
    ),
    **dict.fromkeys(
        ["TURN_RESET", "ChatInput", "ChatOutput", "EngramState"], "engram.state.graph_state"
    ),
}

__all__ = [
    "CHECKPOINT_TYPES",
    "TURN_RESET",
    "AppliedOp",
    "Candidate",
    "ChatInput",
    "ChatOutput",
    "EngramContext",
    "EngramState",
    "Fact",
    "MemoryEvent",
    "MemoryOp",
    "MemoryRecord",
    "NumberedMemory",
    "ObservedFact",
    "RejectedOp",
    "Source",
    "Unextracted",
    "checkpoint_serde",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'engram.state' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
