"""The profile in the store (memory.profile): lines grounded in the user's own active
memories, versions with their causes, pins, the size bound, forget, and isolation from the
memories' reads — on both engines."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from engram.memory.store import MemoryStore
from engram.state.contracts import ProfileLine, Source
from engram.state.errors import InvalidInputError, MemoryNotFoundError
from tests.helpers import make_engine

CHAT = Source(actor="profile")


@pytest.fixture
def store(kind: str, tmp_path: Path) -> Any:
    embeddings = DeterministicFakeEmbedding(size=8)
    opened = MemoryStore(make_engine(kind, embeddings, tmp_path), embeddings, dims=8)
    yield opened
    opened.engine.close()


def line(text: str, *ids: str) -> ProfileLine:
    return ProfileLine(text=text, memory_ids=list(ids))


def test_a_profile_is_written_from_the_users_memories(store: MemoryStore) -> None:
    veg = store.add("alice", "User is vegetarian", "health").memory_id
    city = store.add("alice", "User lives in Berlin", "location").memory_id
    assert veg and city
    report = store.save_profile(
        "alice", [line("Vegetarian.", veg), line("Lives in Berlin.", city)], source=CHAT
    )
    assert report.refused == [] and report.profile is not None
    profile = store.profile("alice")
    assert [entry.text for entry in profile.lines] == ["Vegetarian.", "Lives in Berlin."]
    assert profile.version_id == report.profile.version_id
    # the profile is not a memory: no read of memories sees it
    assert [m.text for m in store.memories("alice", status=None)] == [
        "User is vegetarian",
        "User lives in Berlin",
    ]
    assert store.count("alice") == 2
    assert all(m.category != "profile" for m in store.search("alice", "Vegetarian.", k=10))


def test_lines_resting_on_unknown_foreign_or_retired_memories_are_refused(
    store: MemoryStore,
) -> None:
    mine = store.add("alice", "User drinks coffee", "preferences").memory_id
    theirs = store.add("bob", "User has a cat", "personal").memory_id
    gone = store.add("alice", "User plays chess", "preferences").memory_id
    assert mine and theirs and gone
    store.delete("alice", gone)
    report = store.save_profile(
        "alice",
        [
            line("Drinks coffee.", mine),
            line("Has a cat.", theirs),
            line("Plays chess.", gone),
            line("Is a pilot."),
            line("Knows Rust.", "00000000-0000-0000-0000-000000000001"),
        ],
        source=CHAT,
    )
    assert [entry.text for entry in store.profile("alice").lines] == ["Drinks coffee."]
    reasons = {r.text: r.reason for r in report.refused}
    assert set(reasons) == {"Has a cat.", "Plays chess.", "Is a pilot.", "Knows Rust."}
    assert "not an active memory of this user" in reasons["Has a cat."]
    assert "rests on no memory" in reasons["Is a pilot."]


def test_a_line_whose_memory_changed_leaves_the_chatbots_view_until_revised(
    store: MemoryStore,
) -> None:
    coffee = store.add("alice", "User drinks coffee every morning", "preferences").memory_id
    assert coffee
    store.save_profile("alice", [line("Drinks coffee every morning.", coffee)], source=CHAT)
    store.update("alice", coffee, "User now drinks tea every morning")
    assert store.profile("alice").lines == []
    # the stored version still holds it, to be revised by the next update
    assert [entry.text for entry in store.profile("alice", as_stored=True).lines] == [
        "Drinks coffee every morning."
    ]


def test_every_change_is_a_version_and_an_earlier_one_can_be_restored(
    store: MemoryStore,
) -> None:
    a = store.add("alice", "User lives in Berlin", "location").memory_id
    b = store.add("alice", "User works as a nurse", "work").memory_id
    assert a and b
    first = store.save_profile("alice", [line("Lives in Berlin.", a)], source=CHAT).profile
    second = store.save_profile(
        "alice", [line("Lives in Berlin.", a), line("Nurse.", b)], source=CHAT, detail="turn 2"
    ).profile
    assert first and second
    # the same lines again write nothing
    assert store.save_profile("alice", second.lines, source=CHAT).profile is None
    restored = store.restore_profile("alice", first.version_id or "")
    assert [entry.text for entry in restored.lines] == ["Lives in Berlin."]
    history = store.profile_history("alice")
    assert [p.status for p in history] == ["superseded", "superseded", "active"]
    assert history[1].events[0].detail == "turn 2"
    assert history[2].events[0].op == "RESTORE"
    with pytest.raises(MemoryNotFoundError):
        store.restore_profile("bob", first.version_id or "")


def test_pinned_memories_always_appear_first_and_within_the_bound(store: MemoryStore) -> None:
    store.profile_chars = 60
    keys = store.add("alice", "User keeps a spare key under the mat", "personal").memory_id
    city = store.add("alice", "User lives in Berlin", "location").memory_id
    job = store.add("alice", "User works night shifts as a nurse", "work").memory_id
    assert keys and city and job
    store.pin("alice", keys)
    assert [entry.text for entry in store.profile("alice").lines] == [
        "User keeps a spare key under the mat"
    ]
    report = store.save_profile(
        "alice", [line("Lives in Berlin.", city), line("Night-shift nurse.", job)], source=CHAT
    )
    texts = [entry.text for entry in store.profile("alice").lines]
    assert texts == ["User keeps a spare key under the mat", "Lives in Berlin."]
    assert [entry.text for entry in report.left_out] == ["Night-shift nurse."]
    assert store.profile("alice").chars() <= 60
    store.unpin("alice", keys)
    assert [entry.text for entry in store.profile("alice").lines] == ["Lives in Berlin."]
    with pytest.raises(MemoryNotFoundError):
        store.unpin("alice", keys)
    with pytest.raises(MemoryNotFoundError):
        store.pin("bob", city)  # another user's memory reads as missing
    store.profile_chars = 20
    with pytest.raises(InvalidInputError, match="would not fit"):
        store.pin("alice", job)


def test_forget_erases_the_profile(store: MemoryStore) -> None:
    a = store.add("alice", "User lives in Berlin", "location").memory_id
    b = store.add("bob", "User lives in Lyon", "location").memory_id
    assert a and b
    store.save_profile("alice", [line("Lives in Berlin.", a)], source=CHAT)
    store.save_profile("bob", [line("Lives in Lyon.", b)], source=CHAT)
    assert store.forget("alice") == 1
    assert store.profile("alice").version_id is None
    assert store.profile_history("alice") == []
    assert [entry.text for entry in store.profile("bob").lines] == ["Lives in Lyon."]


def test_an_empty_profile_records_when_it_was_considered(store: MemoryStore) -> None:
    report = store.save_profile("alice", [line("Is a pilot.")], source=CHAT)
    assert report.profile is not None and report.profile.lines == []
    assert len(report.refused) == 1
    assert len(store.profile_history("alice")) == 1
    assert store.save_profile("alice", [], source=CHAT).profile is None  # nothing changed


def test_a_profile_prepared_before_a_forget_is_not_written(store: MemoryStore) -> None:
    city = store.add("alice", "User lives in Berlin", "location").memory_id
    assert city
    mark = store.erasure_mark("alice")
    store.forget("alice")
    report = store.save_profile(
        "alice", [line("Lives in Berlin.", city)], source=CHAT, erasures=mark
    )
    assert report.profile is None and "erased" in report.refused[0].reason
    assert store.profile_history("alice") == []


def test_writers_in_several_processes_never_fork_the_profile_or_lose_a_pin(
    store: MemoryStore,
) -> None:
    """Four stores on one collection stand in for four processes sharing a Qdrant: each
    has its own locks, so only the conditional writes keep the profile one chain."""
    stores = [store, *(MemoryStore(store.engine, store.embeddings, dims=8) for _ in range(3))]
    for attempt in range(6):
        user = f"dave{attempt}"
        ids = [store.add(user, f"User thing {i}", "personal").memory_id or "" for i in range(4)]
        store.save_profile(user, [line("Thing 0.", ids[0])], source=CHAT)
        start = threading.Barrier(4)
        errors: list[BaseException] = []

        def pin(
            writer: int,
            user: str = user,
            ids: list[str] = ids,
            start: threading.Barrier = start,
            errors: list[BaseException] = errors,
        ) -> None:
            start.wait()
            try:
                stores[writer].pin(user, ids[writer])
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=pin, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        history = store.profile_history(user)
        assert [p.status for p in history].count("active") == 1
        assert sorted(store.profile(user).pinned) == sorted(ids)


def test_a_pin_follows_its_memory_through_an_update(store: MemoryStore) -> None:
    allergy = store.add("alice", "User is allergic to nuts", "health").memory_id
    assert allergy
    store.pin("alice", allergy)
    changed = store.update("alice", allergy, "User is allergic to nuts and sesame").memory_id
    assert changed
    shown = store.profile("alice")
    assert [entry.text for entry in shown.lines] == ["User is allergic to nuts and sesame"]
    assert shown.pinned == [changed]
    store.save_profile("alice", [], source=CHAT)  # a later update keeps the pin, as it is now
    assert store.profile("alice", as_stored=True).pinned == [changed]
    store.unpin("alice", changed)  # by its current id
    assert store.profile("alice").lines == []


def test_a_pin_the_bound_leaves_out_is_not_claimed_as_shown(store: MemoryStore) -> None:
    first = store.add("alice", "User has type 1 diabetes", "health").memory_id
    second = store.add("alice", "User keeps insulin in the fridge", "health").memory_id
    assert first and second
    store.pin("alice", first)
    store.pin("alice", second)
    store.profile_chars = 30  # lowered after pinning
    shown = store.profile("alice")
    assert [entry.text for entry in shown.lines] == ["User has type 1 diabetes"]
    assert shown.pinned == [first]  # recall still brings the other one when it matters


def test_forget_takes_the_profile_of_the_id_as_normalised(store: MemoryStore) -> None:
    city = store.add("alice", "User lives in Berlin", "location").memory_id
    assert city
    store.save_profile("alice", [line("Lives in Berlin.", city)], source=CHAT)
    store.forget(" alice ")
    assert store.profile_history("alice") == []
