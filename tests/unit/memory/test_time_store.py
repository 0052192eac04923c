"""Time in the store, on both engines: search narrowed to when the user said things, and
history ingested out of order, where an older statement never replaces a newer one."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from langchain_core.embeddings import Embeddings

from engram.memory.engines.base import TimeRange
from engram.memory.store import MemoryStore, PlannedOp
from engram.state.contracts import Source
from tests.helpers import ENGINES, make_store


def day(year: int, month: int, date: int, hour: int = 12) -> datetime:
    return datetime(year, month, date, hour, tzinfo=UTC)


@pytest.fixture(params=ENGINES)
def store(
    request: pytest.FixtureRequest, local_embeddings: Embeddings, tmp_path: Path
) -> Iterator[MemoryStore]:
    opened = make_store(str(request.param), local_embeddings, tmp_path)
    yield opened
    opened.engine.close()


def test_search_within_a_time_range_sees_only_what_was_said_then(store: MemoryStore) -> None:
    store.add("alice", "User went hiking in the Alps", observed_at=day(2023, 7, 20))
    store.add("alice", "User went hiking in Patagonia", observed_at=day(2024, 2, 3))
    store.add("alice", "User went hiking in Norway", observed_at=day(2024, 7, 14))
    store.add("bob", "User went hiking in Wales", observed_at=day(2023, 7, 1))

    summer_2023 = TimeRange(day(2023, 6, 1, 0), day(2023, 9, 1, 0))
    hits = store.search("alice", "where did I go hiking?", k=5, observed=summer_2023)
    assert [h.text for h in hits] == ["User went hiking in the Alps"]

    since_2024 = TimeRange(start=day(2024, 1, 1, 0))
    found = {h.text for h in store.search("alice", "hiking", k=5, observed=since_2024)}
    assert found == {"User went hiking in Patagonia", "User went hiking in Norway"}

    before_2024 = TimeRange(end=day(2024, 1, 1, 0))
    assert [h.text for h in store.search("alice", "hiking", k=5, observed=before_2024)] == [
        "User went hiking in the Alps"
    ]
    # All three without a range; the end of a range is excluded, its start included.
    assert len(store.search("alice", "hiking", k=5)) == 3
    exact = TimeRange(day(2024, 2, 3), day(2024, 7, 14))
    assert [h.text for h in store.search("alice", "hiking", k=5, observed=exact)] == [
        "User went hiking in Patagonia"
    ]


def test_time_ranges_compare_instants_across_utc_offsets(store: MemoryStore) -> None:
    tokyo = timezone(timedelta(hours=9))
    # 08:00 on 2 March in Tokyo is still 1 March in UTC.
    store.add("alice", "User adopted a cat", observed_at=datetime(2024, 3, 2, 8, tzinfo=tokyo))
    march_1_utc = TimeRange(day(2024, 3, 1, 0), day(2024, 3, 2, 0))
    assert [h.text for h in store.search("alice", "cat", observed=march_1_utc)] == [
        "User adopted a cat"
    ]


def test_a_time_range_must_be_aware_and_non_empty() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        TimeRange(datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="empty time range"):
        TimeRange(day(2024, 1, 2), day(2024, 1, 1))
    span = TimeRange(day(2024, 1, 1), day(2024, 1, 2))
    assert day(2024, 1, 1) in span and day(2024, 1, 2) not in span


def update(target: str, text: str, said: datetime) -> PlannedOp:
    return PlannedOp(
        "UPDATE", target_id=target, text=text, observed_at=said, source=Source(actor="test")
    )


def test_an_older_update_never_replaces_a_newer_memory(store: MemoryStore) -> None:
    newer = store.add("alice", "User lives in Berlin", "location", observed_at=day(2024, 5, 1))
    assert newer.memory_id is not None
    stale = update(newer.memory_id, "User lives in Paris", day(2023, 1, 10))

    report = store.apply("alice", [stale])
    [applied] = report.applied
    assert applied.result == "unchanged"
    assert applied.memory_id == newer.memory_id
    assert "said 2023-01-10, before the current version (said 2024-05-01)" in (applied.detail or "")
    assert [m.text for m in store.memories("alice")] == ["User lives in Berlin"]

    # The older statement is not lost: it is in the memory's history, dated when it was
    # said, and points to the version that is kept.
    history = store.history("alice", newer.memory_id)
    assert [(v.text, v.status) for v in history] == [
        ("User lives in Berlin", "active"),
        ("User lives in Paris", "superseded"),
    ]
    older = history[1]
    assert older.observed_at == day(2023, 1, 10)
    assert older.superseded_by == newer.memory_id
    assert older.lineage_id == history[0].lineage_id
    assert older.category == "location"

    # Ingesting the same history again adds nothing more.
    again = store.apply("alice", [stale]).applied[0]
    assert again.result == "unchanged"
    assert len(store.history("alice", newer.memory_id)) == 2
    # It can be restored explicitly, like any version.
    restored = store.restore("alice", older.id)
    assert restored.result == "restored"
    assert [m.text for m in store.memories("alice")] == ["User lives in Paris"]


def test_a_newer_update_still_replaces_an_older_memory(store: MemoryStore) -> None:
    old = store.add("alice", "User lives in Paris", "location", observed_at=day(2023, 1, 10))
    assert old.memory_id is not None
    applied = store.apply("alice", [update(old.memory_id, "User lives in Berlin", day(2024, 5, 1))])
    assert applied.applied[0].result == "updated"
    [current] = store.memories("alice")
    assert current.text == "User lives in Berlin"
    assert current.observed_at == day(2024, 5, 1)  # the date the user said it


def test_an_older_delete_never_removes_a_newer_memory(store: MemoryStore) -> None:
    newer = store.add("alice", "User plays the cello", observed_at=day(2024, 5, 1))
    assert newer.memory_id is not None
    stale = PlannedOp("DELETE", target_id=newer.memory_id, observed_at=day(2023, 2, 1))
    [applied] = store.apply("alice", [stale]).applied
    assert applied.result == "unchanged"
    assert "before the current version" in (applied.detail or "")
    assert [m.text for m in store.memories("alice")] == ["User plays the cello"]
    # A delete said later than the memory still deletes it.
    fresh = PlannedOp("DELETE", target_id=newer.memory_id, observed_at=day(2024, 6, 1))
    assert store.apply("alice", [fresh]).applied[0].result == "deleted"
    assert store.memories("alice") == []
