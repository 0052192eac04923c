"""`Memory` / `AsyncMemory`, the Python facade, through the real ingest graph and store with
scripted models: add → search → update → history → delete → restore → forget, export and
import, and the same refusals as every other entry point."""

from __future__ import annotations

import asyncio
import io
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from dspy.utils import DummyLM

import engram
from engram import AsyncMemory, Memory
from engram.clients import Clients
from engram.memory.store import MemoryStore
from engram.settings import Settings
from engram.state.errors import InvalidInputError, MemoryNotFoundError
from tests.helpers import facts, ops, save, scripted_lm


def memory_on(store: MemoryStore, lm: DummyLM | None = None) -> Memory:
    return Memory(clients=Clients(Settings(llm_attempts=1), store=store, memory_lm=lm))


def test_add_search_update_history_forget(store: MemoryStore) -> None:
    lm = scripted_lm(
        save(),
        facts(("User drinks coffee every morning", "preferences")),
        ops({"op": "ADD", "text": "User drinks coffee every morning", "category": "preferences"}),
    )
    memory = memory_on(store, lm)
    added = memory.add(
        [
            {"role": "user", "content": "I drink coffee every morning."},
            {"role": "assistant", "content": "Noted!"},
        ],
        user_id="alice",
        sent_at=datetime(2026, 3, 1, 9, tzinfo=UTC),
    )
    assert added.error is None
    assert [(a.op, a.result) for a in added.applied] == [("ADD", "added")]
    assert added.extracted[0].observed_at == datetime(2026, 3, 1, 9, tzinfo=UTC)

    found = memory.search("what does alice drink?", user_id="alice", k=3)
    assert [m.text for m in found] == ["User drinks coffee every morning"]
    assert found[0].score is not None
    assert memory.search("what does alice drink?", user_id="bob") == []

    memory_id = found[0].id
    changed = memory.update(memory_id, "User drinks tea every morning", user_id="alice")
    assert changed.result == "updated" and changed.memory_id != memory_id
    versions = memory.history(changed.memory_id or "", user_id="alice")
    assert [(v.text, v.status) for v in versions] == [
        ("User drinks coffee every morning", "superseded"),
        ("User drinks tea every morning", "active"),
    ]
    assert versions[-1].events[-1].source.actor == "python"

    assert memory.delete(changed.memory_id or "", user_id="alice").result == "deleted"
    assert memory.list(user_id="alice") == []
    assert len(memory.list(user_id="alice", status="all")) == 2
    assert memory.restore(changed.memory_id or "", user_id="alice").result == "restored"
    assert [m.text for m in memory.list(user_id="alice")] == ["User drinks tea every morning"]

    assert memory.forget(user_id="alice") == 2  # both versions
    assert memory.list(user_id="alice", status="all") == []


def test_another_users_memory_is_not_found(store: MemoryStore) -> None:
    memory = memory_on(store)
    mine = store.add("alice", "User is a nurse", "work")
    for call in (
        lambda: memory.get(mine.memory_id or "", user_id="bob"),
        lambda: memory.history(mine.memory_id or "", user_id="bob"),
        lambda: memory.update(mine.memory_id or "", "User is a pilot", user_id="bob"),
        lambda: memory.delete(mine.memory_id or "", user_id="bob"),
    ):
        with pytest.raises(MemoryNotFoundError):
            call()
    assert [m.text for m in memory.list(user_id="alice")] == ["User is a nurse"]


def test_bad_input_is_refused_with_a_reason(store: MemoryStore) -> None:
    memory = memory_on(store)
    with pytest.raises(InvalidInputError, match="at least one message"):
        memory.add([], user_id="alice")
    with pytest.raises(InvalidInputError, match="time zone"):
        memory.add("hi", user_id="alice", sent_at=datetime(2026, 1, 1))
    with pytest.raises(InvalidInputError, match="query is empty"):
        memory.search("  ", user_id="alice")
    with pytest.raises(ValueError, match="user_id must not be blank"):
        memory.list(user_id=" ")
    with pytest.raises(InvalidInputError, match="clients= alone"):
        Memory("./x", clients=Clients(Settings(), store=store))


def test_a_failed_step_is_reported_and_resending_is_safe(store: MemoryStore) -> None:
    said = "I keep bees in my garden."
    failing = memory_on(store, scripted_lm(save(), {"nonsense": "x"}))
    result = failing.add(said, user_id="alice")
    assert result.error is not None and "extract failed" in result.error
    assert result.applied == []
    fact = "User keeps bees in the garden"
    retry = memory_on(
        store,
        scripted_lm(
            save(),
            facts((fact, "preferences")),
            ops({"op": "ADD", "text": fact, "category": "preferences"}),
        ),
    )
    assert [a.result for a in retry.add(said, user_id="alice").applied] == ["added"]


def test_export_then_import_as_another_user(store: MemoryStore) -> None:
    memory = memory_on(store)
    store.add("alice", "User lives in Lyon", "location")
    buffer = io.StringIO()
    assert memory.export(buffer, user_id="alice") == 1
    report = memory.import_(io.StringIO(buffer.getvalue()).readlines(), as_user="carol")
    assert (report.user_id, report.imported) == ("carol", 1)
    assert [m.text for m in memory.list(user_id="carol")] == ["User lives in Lyon"]


def test_the_sync_facade_works_inside_a_running_loop(store: MemoryStore) -> None:
    """A notebook or a web handler already runs a loop: `Memory` must not need its own."""
    store.add("alice", "User plays the cello", "preferences")
    memory = memory_on(store)

    async def from_a_coroutine() -> list[str]:
        return [m.text for m in memory.list(user_id="alice")]

    assert asyncio.run(from_a_coroutine()) == ["User plays the cello"]


async def test_the_async_facade(store: MemoryStore) -> None:
    lm = scripted_lm(
        save(),
        facts(("User is vegetarian", "health")),
        ops({"op": "ADD", "text": "User is vegetarian", "category": "health"}),
    )
    memory = AsyncMemory(clients=Clients(Settings(llm_attempts=1), store=store, memory_lm=lm))
    added = await memory.add("I'm vegetarian.", user_id="alice")
    assert [a.text for a in added.applied] == ["User is vegetarian"]
    found = await memory.search("dinner ideas", user_id="alice")
    assert [m.text for m in found] == ["User is vegetarian"]


def test_a_data_dir_of_its_own(tmp_path: Any) -> None:
    memory = Memory(tmp_path / "mine")
    assert memory.aio.clients.settings.data_dir == tmp_path / "mine"
    assert memory.aio.clients.settings.edge_path.is_relative_to(tmp_path / "mine")


def test_the_public_names_are_all_exported() -> None:
    assert sorted([*engram._EXPORTS, "__version__"]) == sorted(engram.__all__)
    for name in engram._EXPORTS:
        assert getattr(engram, name) is not None
    with pytest.raises(AttributeError):
        _ = engram.no_such_name  # type: ignore[attr-defined]


def test_close_ends_the_background_thread(store: MemoryStore) -> None:
    before = set(threading.enumerate())  # other tests' Memory objects may still be open
    with memory_on(store) as memory:
        assert memory.list(user_id="alice") == []
        threads = [
            t for t in threading.enumerate() if t.name == "engram-memory" and t not in before
        ]
        assert threads
    for thread in threads:
        thread.join(timeout=5)
    assert not any(t.is_alive() for t in threads)


def test_a_failed_export_leaves_the_file_as_it_was(store: MemoryStore, tmp_path: Any) -> None:
    target = tmp_path / "alice.jsonl"
    target.write_text("an earlier export\n")
    with pytest.raises(ValueError, match="user_id must not be blank"):
        memory_on(store).export(target, user_id=" ")
    assert target.read_text() == "an earlier export\n"
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]  # none left beside it
