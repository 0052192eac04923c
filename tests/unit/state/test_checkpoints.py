"""Checkpoints written before Engram became one package (0.1.0, types named
`state.contracts.X`) restore as today's classes, without LangGraph's unregistered or
blocked type warnings and without importing anything by the old name; their pending work
is applied by the next turn."""

from __future__ import annotations

import logging
import shutil
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from engram.apps.cli.common import compiled_graph, conversations, thread_config
from engram.clients import Clients
from engram.memory.store import MemoryStore
from engram.settings import Settings
from engram.state.contracts import AppliedOp, MemoryRecord, ObservedFact, RejectedOp, Unextracted
from tests.helpers import REPO_ROOT, ops, save, scripted_lm

OLD_FILE = REPO_ROOT / "tests" / "data" / "conversations-0.1.0.sqlite"
THREAD = "cli:alice:default"
PENDING_FACT = "User's sister Ana visits next week"


def old_conversations(tmp_path: Path) -> Settings:
    """A data directory holding the 0.1.0 conversation file (a copy: tests write to it)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copy(OLD_FILE, data_dir / "conversations.sqlite")
    return Settings(data_dir=data_dir, llm_attempts=1)


def engram_objects(value: Any) -> list[Any]:
    """Every pydantic object of Engram's in a restored value, however deeply nested."""
    if isinstance(value, dict):
        return [o for v in value.values() for o in engram_objects(v)]
    if isinstance(value, list | tuple):
        return [o for v in value for o in engram_objects(v)]
    return [value] if type(value).__module__.startswith("engram.") else []


def test_the_old_file_names_the_old_modules() -> None:
    """The fixture is what it claims to be (else the tests below prove nothing)."""
    data = OLD_FILE.read_bytes()
    assert b"state.contracts" in data
    assert b"engram.state.contracts" not in data


async def test_every_old_checkpoint_restores_as_todays_classes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = old_conversations(tmp_path)
    restored: list[Any] = []
    with caplog.at_level(logging.DEBUG):
        async with conversations(settings) as conv:
            assert conv.saver.serde is not None
            async for checkpoint in conv.saver.alist({"configurable": {"thread_id": THREAD}}):
                restored += engram_objects(checkpoint.checkpoint["channel_values"])
                restored += engram_objects([w[2] for w in checkpoint.pending_writes or []])
    kinds = {type(o) for o in restored}
    assert {ObservedFact, MemoryRecord, AppliedOp, RejectedOp, Unextracted} <= kinds
    assert all(type(o).__module__ == "engram.state.contracts" for o in restored)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [w for w in warnings if "unregistered" in w or "Blocked" in w], warnings


async def test_an_apps_own_state_module_is_never_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host app's `state` package must not be what old checkpoints load."""
    hostile = types.ModuleType("state.contracts")

    def __getattr__(name: str) -> Any:
        raise AssertionError(f"the app's state.contracts.{name} was loaded")

    hostile.__getattr__ = __getattr__  # type: ignore[method-assign]
    monkeypatch.setitem(sys.modules, "state", types.ModuleType("state"))
    monkeypatch.setitem(sys.modules, "state.contracts", hostile)
    settings = old_conversations(tmp_path)
    async with conversations(settings) as conv:
        latest = await conv.saver.aget_tuple({"configurable": {"thread_id": THREAD}})
    assert latest is not None
    pending = latest.checkpoint["channel_values"]["facts"]
    assert [type(f) for f in pending] == [ObservedFact]
    assert [f.text for f in pending] == [PENDING_FACT]


async def test_the_next_turn_applies_the_old_threads_pending_work(
    tmp_path: Path, store: MemoryStore
) -> None:
    settings = old_conversations(tmp_path)
    lm = scripted_lm(
        save(False),  # the new message holds nothing to save
        {"facts": [{"text": "User started running on Sundays", "category": "plans"}]},
        ops(
            {"op": "ADD", "text": PENDING_FACT, "category": "relationships"},
            {"op": "ADD", "text": "User started running on Sundays", "category": "plans"},
        ),
    )
    clients = Clients(
        settings, store=store, chat_model=FakeListChatModel(responses=["Hi!"]), memory_lm=lm
    )
    async with conversations(settings) as conv:
        graph = compiled_graph(settings, conv, clients)
        result = await graph.ainvoke(
            {"messages": [("user", "Hello again")]},
            thread_config("alice", THREAD),
            context={"user_id": "alice"},
        )
    assert result["memory_error"] is None
    added = sorted(op.text or "" for op in result["applied"] if op.result == "added")
    assert added == sorted([PENDING_FACT, "User started running on Sundays"])
    assert result["facts"] == [] and result["unextracted"] == []
