"""The profile in export/import: a round trip keeps it, ids are mapped like the memories',
and no file can make a profile line cite a memory the file does not carry, another user's
above all; older files (no profile) still import."""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import pytest

from engram.memory.store import MemoryStore
from engram.memory.transfer import VERSION, derived_id, export_jsonl, import_jsonl
from engram.state.contracts import ProfileLine, Source
from engram.state.errors import ImportFormatError

CHAT = Source(actor="profile")


@pytest.fixture
def store(store_on_each_engine: MemoryStore) -> MemoryStore:
    return store_on_each_engine


def line(text: str, *ids: str) -> ProfileLine:
    return ProfileLine(text=text, memory_ids=list(ids))


def alice_with_a_profile(store: MemoryStore) -> dict[str, str]:
    ids = {
        "veg": store.add("alice", "User is vegetarian", "health").memory_id or "",
        "city": store.add("alice", "User lives in Lyon", "location").memory_id or "",
        "cat": store.add("alice", "User has a cat named Miso", "personal").memory_id or "",
    }
    store.save_profile(
        "alice",
        [
            line("Vegetarian.", ids["veg"]),
            line("Lives in Lyon with Miso.", ids["city"], ids["cat"]),
        ],
        source=CHAT,
    )
    store.pin("alice", ids["cat"])
    return ids


def exported(store: MemoryStore, user_id: str = "alice") -> str:
    out = io.StringIO()
    export_jsonl(store, user_id, out)
    return out.getvalue()


def lines_of(text: str) -> list[dict[str, Any]]:
    return [json.loads(row) for row in text.splitlines() if row.strip()]


def file_of(rows: list[dict[str, Any]]) -> io.StringIO:
    return io.StringIO("\n".join(json.dumps(row) for row in rows) + "\n")


def test_the_export_carries_the_current_profile_as_stored(store: MemoryStore) -> None:
    ids = alice_with_a_profile(store)
    header = lines_of(exported(store))[0]
    assert header["version"] == VERSION
    profile = header["profile"]
    assert profile["version_id"] == store.profile("alice").version_id
    assert [entry["text"] for entry in profile["lines"]] == [
        "Vegetarian.",
        "Lives in Lyon with Miso.",
    ]
    assert profile["pinned"] == [ids["cat"]]
    assert lines_of(exported(store, "bob"))[0]["profile"] is None  # bob has none


def test_round_trip_after_forget_restores_the_profile_exactly(store: MemoryStore) -> None:
    alice_with_a_profile(store)
    before = store.profile("alice")
    text = exported(store)
    store.forget("alice")
    assert store.profile("alice").version_id is None

    report = import_jsonl(store, io.StringIO(text))
    assert report.profile is not None
    assert (report.profile.result, report.profile.lines, report.profile.pinned) == (
        "imported",
        2,
        1,
    )
    assert report.profile.dropped == []
    after = store.profile("alice")
    assert after.lines == before.lines and after.pinned == before.pinned  # the same ids
    [event] = after.events
    assert (event.op, event.source.actor) == ("IMPORT", "import")
    assert report.profile.version_id == after.version_id


def test_a_copy_for_another_user_cites_the_copies(store: MemoryStore) -> None:
    ids = alice_with_a_profile(store)
    report = import_jsonl(store, io.StringIO(exported(store)), as_user="carol")
    assert report.profile is not None and report.profile.result == "imported"
    carol = store.profile("carol")
    cited = carol.cited()
    assert cited == {derived_id("carol", i) for i in ids.values()}
    assert {m.id for m in store.memories("carol")} >= cited  # carol's own memories
    assert not cited & set(ids.values())
    # the line about the pinned memory first, as in every profile shown
    assert [entry.text for entry in carol.lines] == ["Lives in Lyon with Miso.", "Vegetarian."]
    assert store.profile("alice").cited() == set(ids.values())  # alice's is untouched


def test_the_users_own_profile_wins_over_a_file(store: MemoryStore) -> None:
    ids = alice_with_a_profile(store)
    text = exported(store)
    store.unpin("alice", ids["cat"])
    current = store.profile("alice").version_id
    report = import_jsonl(store, io.StringIO(text))
    assert report.profile is not None
    assert (report.profile.result, report.profile.version_id) == ("kept", current)
    assert store.profile("alice").pinned == []  # the stale file did not roll it back
    assert len(store.profile_history("alice")) == 3


def test_a_line_resting_on_a_retired_memory_is_dropped_with_the_reason(store: MemoryStore) -> None:
    ids = alice_with_a_profile(store)
    store.delete("alice", ids["veg"])
    text = exported(store)
    store.forget("alice")
    report = import_jsonl(store, io.StringIO(text))
    assert report.profile is not None and report.profile.result == "imported"
    [dropped] = report.profile.dropped
    assert (dropped.op, dropped.text) == ("PROFILE", "Vegetarian.")
    assert "not an active memory" in dropped.reason
    assert [entry.text for entry in store.profile("alice").lines] == ["Lives in Lyon with Miso."]


def test_a_forged_line_cannot_cite_another_users_memory(store: MemoryStore) -> None:
    """Mallory edits her own export so that her profile cites bob's memory by its id: the
    line is dropped (that id is no memory in her file) and bob's memory stays his."""
    bobs = store.add("bob", "User's PIN is 1234", "personal").memory_id or ""
    mine = store.add("mallory", "User likes tea", "preferences").memory_id or ""
    store.save_profile("mallory", [line("Likes tea.", mine)], source=CHAT)
    rows = lines_of(exported(store, "mallory"))
    rows[0]["profile"]["lines"].append({"text": "PIN 1234.", "memory_ids": [bobs]})
    rows[0]["profile"]["pinned"] = [bobs]
    store.forget("mallory")
    report = import_jsonl(store, file_of(rows))
    assert report.profile is not None
    assert [(d.op, d.reason) for d in report.profile.dropped] == [
        ("PIN", f"rests on {bobs}: not a memory in this file"),
        ("PROFILE", f"rests on {bobs}: not a memory in this file"),
    ]
    profile = store.profile("mallory", as_stored=True)
    assert bobs not in profile.cited()
    assert [entry.text for entry in profile.lines] == ["Likes tea."]
    assert [m.text for m in store.memories("bob")] == ["User's PIN is 1234"]


def test_a_file_carrying_another_users_ids_gets_copies_never_theirs(store: MemoryStore) -> None:
    """A file naming bob's memory ids as its own versions (bob's export, re-labelled):
    the import writes copies under ids derived for the importer, and the profile cites
    the copies, never bob's."""
    bobs = store.add("bob", "User's bank is Acme", "personal").memory_id or ""
    store.save_profile("bob", [line("Banks with Acme.", bobs)], source=CHAT)
    store.pin("bob", bobs)
    rows = lines_of(exported(store, "bob"))
    rows[0]["user_id"] = "mallory"
    for row in rows[1:]:
        row["user_id"] = "mallory"
    report = import_jsonl(store, file_of(rows))
    assert report.user_id == "mallory" and report.profile is not None
    profile = store.profile("mallory")
    assert profile.cited() == {derived_id("mallory", bobs)}
    assert bobs not in profile.cited()
    assert store.profile("bob").pinned == [bobs]


def test_a_profile_that_cites_nothing_importable_writes_nothing(store: MemoryStore) -> None:
    store.add("dora", "User swims", "preferences")
    rows = lines_of(exported(store, "dora"))
    rows[0]["profile"] = {
        "version_id": str(uuid.uuid4()),
        "lines": [{"text": "Swims.", "memory_ids": [str(uuid.uuid4())]}],
        "pinned": [],
    }
    store.forget("dora")
    report = import_jsonl(store, file_of(rows))
    assert report.imported == 1 and report.profile is not None
    assert report.profile.result == "nothing" and len(report.profile.dropped) == 1
    assert store.profile("dora").version_id is None


def test_an_imported_fact_merged_into_an_active_one_keeps_its_line(store: MemoryStore) -> None:
    ids = alice_with_a_profile(store)
    text = exported(store)
    store.forget("alice")
    kept = store.add("alice", "User is vegetarian", "health").memory_id  # already there
    report = import_jsonl(store, io.StringIO(text))
    assert report.profile is not None and report.profile.dropped == []
    [veg_line] = [entry for entry in store.profile("alice").lines if entry.text == "Vegetarian."]
    assert veg_line.memory_ids == [kept]
    assert ids["veg"] != kept


def test_a_file_without_a_profile_still_imports(store: MemoryStore) -> None:
    ids = alice_with_a_profile(store)
    rows = lines_of(exported(store))
    rows[0]["version"] = 3
    del rows[0]["profile"]
    store.forget("alice")
    report = import_jsonl(store, file_of(rows))
    assert report.imported == 3 and report.profile is None
    assert store.profile("alice").version_id is None
    assert {m.id for m in store.memories("alice")} == set(ids.values())


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"lines": [{"text": "x", "memory_ids": ["not-a-uuid"]}]}, "is not a UUID"),
        ({"lines": [{"text": " ", "memory_ids": [str(uuid.uuid4())]}]}, "empty or over"),
        ({"lines": [{"text": "y" * 301, "memory_ids": [str(uuid.uuid4())]}]}, "empty or over"),
        ({"lines": [{"text": "z", "memory_ids": []}]}, "rests on 1 to 50"),
        ({"lines": [{"text": "z", "memory_ids": [str(uuid.uuid4())]}] * 201}, "at most 200"),
        ({"pinned": ["alice"]}, "profile.pinned"),
        ({"updated_at": "2026-01-01T00:00:00"}, "no time zone"),
    ],
)
def test_a_malformed_profile_is_refused_before_anything_is_written(
    store: MemoryStore, change: dict[str, Any], problem: str
) -> None:
    alice_with_a_profile(store)
    rows = lines_of(exported(store))
    rows[0]["profile"].update(change)
    store.forget("alice")
    with pytest.raises(ImportFormatError, match=problem) as refused:
        import_jsonl(store, file_of(rows))
    assert str(refused.value).startswith("line 1:")
    assert store.count("alice") == 0 and store.profile("alice").version_id is None
