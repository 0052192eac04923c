"""How checkpoints hold Engram's state types, and how checkpoints from earlier versions
still restore.

Before 0.2, Engram's packages were top-level (`state`, `graph`, ...), so checkpoints
written then name their types `state.contracts.X`. Allow-listing that name would import
whatever `state` module the host app has; instead such a type is read as the class it
always meant, `engram.state.contracts.X`, and only for the types a checkpoint can hold.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ormsgpack
from langgraph.checkpoint.serde.jsonplus import (
    EXT_PYDANTIC_V2,
    JsonPlusSerializer,
    _create_msgpack_ext_hook,
)

from engram.state.contracts import (
    AppliedOp,
    Candidate,
    MemoryEvent,
    MemoryRecord,
    ObservedFact,
    Profile,
    ProfileLine,
    RejectedOp,
    Source,
    Unextracted,
)

# Types that appear in checkpoints of the graph state.
CHECKPOINT_TYPES: tuple[type[Any], ...] = (
    AppliedOp,
    Candidate,
    MemoryEvent,
    MemoryRecord,
    ObservedFact,
    Profile,
    ProfileLine,
    RejectedOp,
    Source,
    Unextracted,
)
# The module the contracts had before they moved into the `engram` package.
LEGACY_MODULES = frozenset({"state.contracts"})


def checkpoint_serde() -> JsonPlusSerializer:
    """A checkpoint serializer that allows Engram's state types (and only safe ones), and
    restores checkpoints written by earlier versions.

    Pass it to your checkpointer (`InMemorySaver(serde=...)`, `AsyncSqliteSaver(conn,
    serde=...)`) to restore Engram state without LangGraph's unregistered-type warning.
    """
    allowed: set[tuple[str, ...]] = {(t.__module__, t.__name__) for t in CHECKPOINT_TYPES}
    return JsonPlusSerializer(
        allowed_msgpack_modules=sorted(allowed),
        __unpack_ext_hook__=_legacy_aware_hook(_create_msgpack_ext_hook(allowed)),
    )


def _legacy_aware_hook(hook: Callable[[int, bytes], Any]) -> Callable[[int, bytes], Any]:
    """LangGraph's msgpack hook, reading a contract saved under its pre-0.2 module name as
    today's class (nothing is imported by the old name)."""
    by_name = {t.__name__: t for t in CHECKPOINT_TYPES}

    def ext_hook(code: int, data: bytes) -> Any:
        if code == EXT_PYDANTIC_V2:
            saved = ormsgpack.unpackb(data, ext_hook=hook, option=ormsgpack.OPT_NON_STR_KEYS)
            module, name, fields = saved[0], saved[1], saved[2]
            if module in LEGACY_MODULES and name in by_name:
                return by_name[name].model_validate(fields)
        return hook(code, data)

    return ext_hook
