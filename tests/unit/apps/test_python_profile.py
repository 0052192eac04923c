"""The profile from Python (`Memory` / `AsyncMemory`): show, history, pin, unpin, restore,
export and import, on the real store; another user's memory and version ids are refused
exactly like missing ones, and nothing of theirs changes."""

from __future__ import annotations

import io
import uuid
from typing import Any

import pytest

from engram import AsyncMemory, Memory, Profile, ProfileLine
from engram.clients import Clients
from engram.memory.store import MemoryStore
from engram.settings import Settings
from engram.state.contracts import Source
from engram.state.errors import InvalidInputError, MemoryNotFoundError
from tests.helpers import facts, ops, save, scripted_lm


def memory_on(store: MemoryStore) -> Memory:
    return Memory(clients=Clients(Settings(llm_attempts=1), store=store))


def alices_profile(store: MemoryStore) -> tuple[str, str]:
    veg = store.add("alice", "User is vegetarian", "health").memory_id or ""
    city = store.add("alice", "User lives in Lyon", "location").memory_id or ""
    store.save_profile(
        "alice", [ProfileLine(text="Vegetarian.", memory_ids=[veg])], source=Source(actor="t")
    )
    return veg, city


def test_profile_pin_unpin_history_and_restore(store: MemoryStore) -> None:
    veg, city = alices_profile(store)
    with memory_on(store) as memory:
        assert memory.profile(user_id="nobody") == Profile(user_id="nobody")
        assert memory.profile_history(user_id="nobody") == []

        shown = memory.profile(user_id="alice")
        assert [(line.text, line.memory_ids) for line in shown.lines] == [("Vegetarian.", [veg])]
        pinned = memory.pin(city, user_id="alice")
        assert pinned.pinned == [city] and pinned.lines[0].memory_ids == [city]
        assert memory.unpin(city, user_id="alice").pinned == []

        history = memory.profile_history(user_id="alice")
        assert [v.events[0].detail for v in history[1:]] == [f"pinned {city}", f"unpinned {city}"]
        assert history[-1].events[0].source.actor == "python"
        restored = memory.restore_profile(history[1].version_id or "", user_id="alice")
        assert restored.pinned == [city] and restored.events[0].op == "RESTORE"
        assert memory.profile(user_id="alice", as_stored=True).version_id == restored.version_id


def test_another_users_ids_are_refused_like_missing_ones(store: MemoryStore) -> None:
    veg, city = alices_profile(store)
    store.pin("alice", city)
    before = store.profile_history("alice")
    alices_version = before[0].version_id or ""
    missing = str(uuid.uuid4())
    with memory_on(store) as memory:
        for theirs in (veg, city):
            with pytest.raises(MemoryNotFoundError) as refused:
                memory.pin(theirs, user_id="bob")
            with pytest.raises(MemoryNotFoundError) as unknown:
                memory.pin(missing, user_id="bob")
            assert str(refused.value) == str(unknown.value).replace(missing, theirs)
            with pytest.raises(MemoryNotFoundError, match="not pinned for 'bob'"):
                memory.unpin(theirs, user_id="bob")
        with pytest.raises(MemoryNotFoundError) as refused:
            memory.restore_profile(alices_version, user_id="bob")
        with pytest.raises(MemoryNotFoundError) as unknown:
            memory.restore_profile(missing, user_id="bob")
        assert str(refused.value) == str(unknown.value).replace(missing, alices_version)
        assert memory.profile(user_id="bob").version_id is None
        with pytest.raises(InvalidInputError):
            memory.profile(user_id="alice\x1fprofile")  # the profile's own key is no user id
    assert store.profile_history("alice") == before
    assert store.profile_history("bob") == []


def test_export_then_import_keeps_the_profile(store: MemoryStore) -> None:
    _, city = alices_profile(store)
    store.pin("alice", city)
    with memory_on(store) as memory:
        out = io.StringIO()
        memory.export(out, user_id="alice")
        report = memory.import_(out.getvalue().splitlines(), as_user="carol")
        assert report.profile is not None and report.profile.result == "imported"
        carol = memory.profile(user_id="carol")
        assert [line.text for line in carol.lines] == ["User lives in Lyon", "Vegetarian."]
        assert carol.cited() <= {m.id for m in memory.list(user_id="carol")}
        assert not carol.cited() & memory.profile(user_id="alice").cited()


async def test_the_async_facade(store: MemoryStore) -> None:
    _, city = alices_profile(store)
    memory = AsyncMemory(clients=Clients(Settings(), store=store))
    assert (await memory.pin(city, user_id="alice")).pinned == [city]
    assert (await memory.profile(user_id="alice")).pinned == [city]
    assert len(await memory.profile_history(user_id="alice")) == 2
    first = (await memory.profile_history(user_id="alice"))[0].version_id or ""
    assert (await memory.restore_profile(first, user_id="alice")).pinned == []
    with pytest.raises(MemoryNotFoundError, match="not pinned"):
        await memory.unpin(city, user_id="alice")


def test_add_keeps_the_profile_up_to_date_across_calls(store: MemoryStore) -> None:
    """`Memory.add` runs without a checkpointer: what is due comes from the store."""
    said = [
        ("I'm a nurse", "User is a nurse"),
        ("My son is called Leo", "User's son is called Leo"),
        ("I play the cello", "User plays the cello"),
        ("I live in Lyon", "User lives in Lyon"),
    ]
    script: list[dict[str, Any]] = []
    for n, (_, fact) in enumerate(said):
        script += [save(), facts((fact, "personal")), ops({"op": "ADD", "text": fact})]
        if n == 0:  # the first fact that may belong in a profile builds it
            script.append({"lines": [{"text": "Nurse.", "memory_ids": [1]}]})
    # three new memories since: the next update (shown: the profile's own memory, then the
    # newest first: Lyon 2, cello 3, son 4)
    script.append(
        {"lines": [{"text": "Nurse.", "memory_ids": [1]}, {"text": "Son: Leo.", "memory_ids": [4]}]}
    )
    lm = scripted_lm(*script)
    clients = Clients(Settings(llm_attempts=1, profile="on"), store=store, memory_lm=lm)
    with Memory(clients=clients) as memory:
        for n, (message, _) in enumerate(said):
            memory.add(message, user_id="alice")
            if n == 0:
                assert [line.text for line in memory.profile(user_id="alice").lines] == ["Nurse."]
            if n in (1, 2):
                assert len(lm.history) == 3 * (n + 1) + 1  # not due yet: no profile call
        assert [line.text for line in memory.profile(user_id="alice").lines] == [
            "Nurse.",
            "Son: Leo.",
        ]
        son = memory.profile(user_id="alice").lines[1].memory_ids[0]
        assert store.get("alice", son).text == "User's son is called Leo"
    assert len(lm.history) == 4 * 3 + 2
