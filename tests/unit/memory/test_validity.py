"""When memories are true (design: the time model): validity dates, expiry that keeps
history, time to live renewed by restating, and "as of" reads from the versions' events
— on both engines."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from langchain_core.embeddings import Embeddings

from engram.memory.store import MemoryStore, PlannedOp, now_utc
from engram.state.contracts import ProfileLine, Source
from engram.state.errors import InvalidInputError
from tests.helpers import make_store


@pytest.fixture
def store(kind: str, local_embeddings: Embeddings, tmp_path: Path) -> Any:
    opened = make_store(kind, local_embeddings, tmp_path, ttl_days={"plans": 90})
    yield opened
    opened.engine.close()


def said(day: str) -> datetime:
    return datetime.fromisoformat(f"{day}T10:00:00+00:00")


def add(store: MemoryStore, text: str, category: str = "personal", **fields: Any) -> str:
    report = store.apply("alice", [PlannedOp("ADD", text=text, category=category, **fields)])
    assert not report.rejected, report.rejected
    memory_id = report.applied[0].memory_id
    assert memory_id
    return memory_id


def texts(found: list[Any]) -> list[str]:
    return [m.text for m in found]


def test_until_friday_is_current_through_friday_and_past_after(store: MemoryStore) -> None:
    friday = date(2026, 3, 13)
    tokyo = add(store, "User is in Tokyo", observed_at=said("2026-03-09"), valid_until=friday)
    add(store, "User lives in Lisbon", "location", observed_at=said("2026-01-02"))
    query = "Where is the user?"
    assert "User is in Tokyo" in texts(store.search("alice", query, 5, valid_on=friday))
    after = store.search("alice", query, 5, valid_on=friday + timedelta(days=1))
    assert texts(after) == ["User lives in Lisbon"]
    # kept: an unfiltered search and the history still hold it, with its dates
    assert "User is in Tokyo" in texts(store.search("alice", query, 5))
    [version] = store.history("alice", tokyo)
    assert (version.status, version.valid_until) == ("active", friday)
    assert version.is_past(friday + timedelta(days=1)) and not version.is_past(friday)


def test_a_superseding_fact_closes_the_old_ones_validity(store: MemoryStore) -> None:
    paris = add(store, "User lives in Paris", "location", observed_at=said("2024-01-01"))
    moved = date(2026, 2, 28)
    report = store.apply(
        "alice",
        [
            PlannedOp(
                "UPDATE",
                target_id=paris,
                text="User lives in Paris",
                observed_at=said("2026-03-01"),
                valid_until=moved,
            ),
            PlannedOp("ADD", text="User lives in Berlin", category="location"),
        ],
    )
    assert [a.result for a in report.applied] == ["updated", "added"]
    today = date(2026, 3, 2)
    assert texts(store.search("alice", "Where does the user live?", 5, valid_on=today)) == [
        "User lives in Berlin"
    ]
    history = store.history("alice", paris)
    assert [(v.status, v.valid_until) for v in history] == [
        ("superseded", None),
        ("active", moved),
    ]
    detail = history[1].events[0].detail or ""
    assert detail == "true from when said, until 2026-02-28 (was: from when said, no end)"


def test_an_as_of_read_before_and_after_an_update_returns_each_text(store: MemoryStore) -> None:
    coffee = add(store, "User drinks coffee every morning", "preferences")
    before = now_utc()
    store.update("alice", coffee, "User drinks tea every morning")
    after = now_utc()
    assert texts(store.memories("alice", as_of=before)) == ["User drinks coffee every morning"]
    assert texts(store.memories("alice", as_of=after)) == ["User drinks tea every morning"]
    morning = "What does the user drink in the morning?"
    assert texts(store.search("alice", morning, 3, as_of=before)) == [
        "User drinks coffee every morning"
    ]
    assert texts(store.search("alice", morning, 3, as_of=after)) == [
        "User drinks tea every morning"
    ]
    # a delete and a restore replay too; nothing before the first write
    store.delete("alice", store.memories("alice")[0].id)
    deleted = now_utc()
    store.restore("alice", store.memories("alice", status="deleted")[0].id)
    assert store.memories("alice", as_of=deleted) == []
    assert texts(store.memories("alice", as_of=now_utc())) == ["User drinks tea every morning"]
    assert store.memories("alice", as_of=datetime(2000, 1, 1, tzinfo=UTC)) == []
    # reads only: nothing was written by them
    assert len(store.memories("alice", status=None)) == 2
    with pytest.raises(InvalidInputError, match="UTC offset"):
        store.memories("alice", as_of=datetime(2026, 1, 1))


def test_as_of_leaves_out_what_had_expired_by_then(store: MemoryStore) -> None:
    add(store, "User has an exam", observed_at=said("2026-01-05"), valid_until=date(2026, 1, 12))
    assert texts(store.memories("alice", as_of=said("2026-01-12"))) == []  # written later
    assert store.held_at("alice", now_utc() + timedelta(days=1)) == []  # past on that day
    assert store.held_at("bob", now_utc()) == []


def test_a_time_to_live_expires_a_category_and_restating_renews_it(store: MemoryStore) -> None:
    trip = add(store, "User plans a trip to Peru", "plans", observed_at=said("2026-01-10"))
    assert store.get("alice", trip).valid_until == date(2026, 4, 10)
    lasting = add(store, "User is allergic to cats", "health", observed_at=said("2026-01-10"))
    assert store.get("alice", lasting).valid_until is None
    report = store.apply(
        "alice", [PlannedOp("NOOP", target_id=trip, observed_at=said("2026-03-01"))]
    )
    [renewed] = report.applied
    assert renewed.result == "updated" and "true until 2026-05-30" in (renewed.detail or "")
    current = store.get("alice", renewed.memory_id or "")
    assert (current.text, current.valid_until) == ("User plans a trip to Peru", date(2026, 5, 30))
    # restating it earlier than its end changes nothing
    again = store.apply(
        "alice", [PlannedOp("NOOP", target_id=current.id, observed_at=said("2026-01-20"))]
    )
    assert again.applied[0].result == "unchanged"
    # an end the user gave wins over the time to live
    given = add(store, "User plans to paint the flat", "plans", valid_until=date(2027, 1, 1))
    assert store.get("alice", given).valid_until == date(2027, 1, 1)


def test_validity_is_set_and_cleared_by_hand_as_new_versions(store: MemoryStore) -> None:
    job = add(store, "User works at Acme", "work")
    set_ = store.set_validity("alice", job, date(2025, 1, 1), date(2026, 6, 30))
    assert set_.result == "updated"
    current = store.get("alice", set_.memory_id or "")
    assert (current.valid_from, current.valid_until) == (date(2025, 1, 1), date(2026, 6, 30))
    cleared = store.set_validity("alice", current.id, None, None, source=Source(actor="cli"))
    assert store.get("alice", cleared.memory_id or "").valid_until is None
    assert len(store.history("alice", job)) == 3
    with pytest.raises(InvalidInputError, match="before valid from"):
        store.set_validity("alice", job, date(2026, 1, 2), date(2026, 1, 1))


def test_expired_memories_crowding_the_top_do_not_shorten_a_search(store: MemoryStore) -> None:
    for n in range(12):
        add(
            store,
            f"User visited museum number {n} in Rome",
            observed_at=said("2025-05-01"),
            valid_until=date(2025, 5, 2),
        )
    add(store, "User enjoys museums", "preferences")
    add(store, "User likes Roman history", "preferences")
    found = store.search("alice", "museum visit in Rome", 2, valid_on=date(2026, 1, 1))
    assert sorted(texts(found)) == ["User enjoys museums", "User likes Roman history"]


def test_the_profile_never_states_what_is_no_longer_true(store: MemoryStore) -> None:
    friday = now_utc().date() + timedelta(days=4)
    trip = add(store, "User is in Tokyo", "location", valid_until=friday)
    home = add(store, "User lives in Lisbon", "location")
    gone = add(store, "User was in Oslo", "location", valid_until=date(2020, 1, 1))
    lines = [
        ProfileLine(text="In Tokyo this week.", memory_ids=[trip]),
        ProfileLine(text="Lives in Lisbon.", memory_ids=[home]),
        ProfileLine(text="In Oslo.", memory_ids=[gone]),
    ]
    report = store.save_profile("alice", lines, source=Source(actor="profile"))
    assert [r.text for r in report.refused] == ["In Oslo."]  # past already: refused
    on_friday = store.profile("alice", on=friday)
    after = store.profile("alice", on=friday + timedelta(days=1))
    assert [line.text for line in on_friday.lines] == ["In Tokyo this week.", "Lives in Lisbon."]
    assert [line.text for line in after.lines] == ["Lives in Lisbon."]


def test_a_new_text_does_not_inherit_an_end_and_a_closed_fact_can_reopen(
    store: MemoryStore,
) -> None:
    tokyo = add(store, "User is in Tokyo", "location", valid_until=date(2026, 3, 13))
    moved = store.update("alice", tokyo, "User lives in Tokyo")
    assert store.get("alice", moved.memory_id or "").valid_until is None
    paris = add(store, "User lives in Paris", "location", valid_until=date(2026, 2, 28))
    report = store.apply(
        "alice",
        [
            PlannedOp(
                "UPDATE", target_id=paris, text="User lives in Paris", valid_from=date(2026, 6, 1)
            )
        ],
    )
    [reopened] = report.applied
    current = store.get("alice", reopened.memory_id or "")
    assert (current.valid_from, current.valid_until) == (date(2026, 6, 1), None)


def test_restoring_a_version_restores_its_dates(store: MemoryStore) -> None:
    trip = add(store, "User is in Tokyo", "location", valid_until=date(2026, 3, 13))
    cleared = store.set_validity("alice", trip, None, None)
    assert store.get("alice", cleared.memory_id or "").valid_until is None
    restored = store.restore("alice", trip)
    assert store.get("alice", restored.memory_id or "").valid_until == date(2026, 3, 13)


def test_saying_a_fact_again_renews_only_an_end_from_the_time_to_live(
    store: MemoryStore,
) -> None:
    stated = add(
        store,
        "User is in Lima for work",
        "plans",
        observed_at=said("2026-03-01"),
        valid_until=date(2026, 3, 13),
    )
    again = store.apply(
        "alice", [PlannedOp("NOOP", target_id=stated, observed_at=said("2026-03-05"))]
    )
    assert again.applied[0].result == "unchanged"
    assert store.get("alice", stated).valid_until == date(2026, 3, 13)
    cleared = store.set_validity("alice", stated, None, None).memory_id or ""
    store.apply("alice", [PlannedOp("NOOP", target_id=cleared, observed_at=said("2026-03-06"))])
    assert store.memories("alice")[0].valid_until is None  # cleared by hand: stays open


def test_a_start_later_than_the_time_to_live_counts_from_the_start(store: MemoryStore) -> None:
    sabbatical = add(
        store,
        "User starts a sabbatical",
        "plans",
        observed_at=said("2026-03-01"),
        valid_from=date(2026, 9, 1),
    )
    record = store.get("alice", sabbatical)
    assert (record.valid_from, record.valid_until) == (date(2026, 9, 1), date(2026, 11, 30))


def test_an_add_of_a_known_text_takes_its_new_dates_or_renews_it(store: MemoryStore) -> None:
    add(
        store,
        "User is in Tokyo",
        "location",
        observed_at=said("2026-03-09"),
        valid_until=date(2026, 3, 13),
    )
    report = store.apply(
        "alice",
        [
            PlannedOp(
                "ADD",
                text="User is in Tokyo",
                category="location",
                observed_at=said("2026-03-16"),
                valid_until=date(2026, 3, 20),
            )
        ],
    )
    assert report.applied[0].result == "updated"
    assert [m.valid_until for m in store.memories("alice")] == [date(2026, 3, 20)]
    add(store, "User plans to learn Spanish", "plans", observed_at=said("2026-01-01"))
    renewed = store.apply(
        "alice",
        [
            PlannedOp(
                "ADD",
                text="User plans to learn Spanish",
                category="plans",
                observed_at=said("2026-05-01"),
            )
        ],
    )
    assert renewed.applied[0].result == "updated"
    spanish = next(m for m in store.memories("alice") if "Spanish" in m.text)
    assert spanish.valid_until == date(2026, 7, 30)


def test_time_to_live_names_categories_as_the_store_does(tmp_path: Path) -> None:
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from tests.helpers import make_engine

    embeddings = DeterministicFakeEmbedding(size=4)
    engine = make_engine("edge", embeddings, tmp_path)
    store = MemoryStore(engine, embeddings, dims=4, ttl_days={"Travel Plans": 30})
    try:
        trip = store.add(
            "alice", "User books a trip", "travel plans", observed_at=said("2026-01-01")
        )
        assert store.get("alice", trip.memory_id or "").valid_until == date(2026, 1, 31)
    finally:
        engine.close()


def test_an_as_of_read_shows_each_version_as_it_was_then(store: MemoryStore) -> None:
    coffee = add(store, "User drinks coffee every morning", "preferences")
    before = now_utc()
    store.update("alice", coffee, "User drinks tea every morning")
    [then] = store.memories("alice", as_of=before)
    assert (then.status, then.superseded_by) == ("active", None)
    assert [e.op for e in then.events] == ["ADD"]  # not yet superseded
    [found] = store.search("alice", "morning drink", 1, as_of=before)
    assert (found.id, found.status, found.score is not None) == (coffee, "active", True)
