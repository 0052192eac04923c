"""The store's semantics (design 4): per-user isolation, versions, idempotent ADD,
restore, forget without a cap, dimension checks, and surviving an interrupted update —
on both engines: Qdrant Edge, and qdrant-client's in-memory mode standing in for a server."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings
from qdrant_client import QdrantClient

from engram.memory.engines.base import Point
from engram.memory.payload import Stored, payload
from engram.memory.store import LOCK_STRIPES, MemoryStore, PlannedOp, now_utc
from engram.state.contracts import MemoryRecord, Source
from engram.state.errors import EmbeddingDimensionError, InvalidInputError, MemoryNotFoundError
from tests.helpers import make_engine


@pytest.fixture
def store(store_on_each_engine: MemoryStore) -> MemoryStore:
    return store_on_each_engine


@pytest.fixture
def tiny_store(kind: str, tmp_path: Path) -> Iterator[MemoryStore]:
    """A store with 4-dimensional fake embeddings, for bulk tests."""
    embeddings = DeterministicFakeEmbedding(size=4)
    opened = MemoryStore(make_engine(kind, embeddings, tmp_path), embeddings, dims=4)
    yield opened
    opened.engine.close()


def test_search_is_semantic_and_per_user(store: MemoryStore) -> None:
    store.add("alice", "User loves hiking in the Alps", "preferences")
    store.add("alice", "User works as a tax accountant", "work")
    store.add("alice", "User is allergic to peanuts", "health")
    store.add("bob", "User enjoys mountain climbing and trekking", "preferences")

    hits = store.search("alice", "what outdoor activities do I like?", k=1)
    assert [h.text for h in hits] == ["User loves hiking in the Alps"]
    assert hits[0].score is not None
    assert all(h.user_id == "alice" for h in store.search("alice", "mountain trekking", k=10))
    assert [h.text for h in store.search("carol", "hiking", k=5)] == []


def test_a_search_with_the_querys_embedding_ranks_as_without_it(store: MemoryStore) -> None:
    store.add("alice", "User loves hiking in the Alps", "preferences")
    store.add("alice", "User works as a tax accountant", "work")
    moment = now_utc()
    store.add("alice", "User hikes every weekend", "preferences")
    query = "what outdoor activities do I like?"
    vector = store.embed_query(query)
    for options in ({}, {"as_of": moment}):
        plain = store.search("alice", query, k=3, **options)
        given = store.search("alice", query, k=3, embedding=vector, **options)
        assert [(h.id, h.score) for h in given] == [(h.id, h.score) for h in plain]
    wrong = f"embedding has 3 dimensions; this store's have {store.dims}"
    with pytest.raises(ValueError, match=wrong):
        store.search("alice", query, embedding=[0.1, 0.2, 0.3])


def test_add_of_exact_duplicate_is_idempotent(store: MemoryStore) -> None:
    first = store.add("alice", "User likes green tea", "preferences")
    again = store.add("alice", "  user likes GREEN tea. ", "preferences")
    assert first.result == "added"
    assert again.result == "duplicate"
    assert again.memory_id == first.memory_id
    assert store.count("alice") == 1
    # the same text for another user is that user's own memory
    assert store.add("bob", "User likes green tea").result == "added"


def test_update_writes_a_new_version_linked_both_ways(store: MemoryStore) -> None:
    old = store.add("alice", "User lives in Paris", "location")
    new = store.update("alice", old.memory_id or "", "User lives in Berlin")
    versions = store.history("alice", new.memory_id or "")
    assert [(v.text, v.status) for v in versions] == [
        ("User lives in Paris", "superseded"),
        ("User lives in Berlin", "active"),
    ]
    assert versions[0].superseded_by == versions[1].id
    assert versions[1].supersedes == versions[0].id
    assert versions[1].category == "location"  # kept from the old version
    assert [e.op for e in versions[0].events] == ["ADD", "SUPERSEDED"]
    assert [m.text for m in store.search("alice", "Paris", k=5)] == ["User lives in Berlin"]


def test_update_of_a_superseded_version_follows_to_the_newest(store: MemoryStore) -> None:
    first = store.add("alice", "User has one cat", "personal")
    store.update("alice", first.memory_id or "", "User has two cats")
    late = store.update("alice", first.memory_id or "", "User has three cats")
    history = store.history("alice", late.memory_id or "")
    assert [v.text for v in history] == [
        "User has one cat",
        "User has two cats",
        "User has three cats",
    ]
    assert [v.status for v in history] == ["superseded", "superseded", "active"]


def test_delete_is_soft_and_restore_brings_it_back(store: MemoryStore) -> None:
    added = store.add("alice", "User plays the cello", "preferences")
    memory_id = added.memory_id or ""
    assert store.delete("alice", memory_id).result == "deleted"
    assert store.search("alice", "cello", k=5) == []
    assert store.get("alice", memory_id).status == "deleted"
    assert store.delete("alice", memory_id).result == "already deleted"

    assert store.restore("alice", memory_id).result == "restored"
    assert [m.text for m in store.search("alice", "cello", k=5)] == ["User plays the cello"]
    assert [e.op for e in store.get("alice", memory_id).events] == ["ADD", "DELETE", "RESTORE"]
    assert store.restore("alice", memory_id).result == "already active"


def test_restore_of_a_superseded_version_makes_it_active_again(store: MemoryStore) -> None:
    old = store.add("alice", "User is vegetarian", "health")
    store.update("alice", old.memory_id or "", "User eats fish again")
    restored = store.restore("alice", old.memory_id or "")
    assert restored.result == "restored"
    assert [m.text for m in store.memories("alice")] == ["User is vegetarian"]
    history = store.history("alice", old.memory_id or "")
    assert [v.status for v in history] == ["superseded", "superseded", "active"]
    assert history[-1].supersedes == history[1].id
    assert history[-1].events[0].detail == f"restored from {old.memory_id}"


def test_another_users_memory_is_invisible_and_untouchable(store: MemoryStore) -> None:
    secret = store.add("alice", "User's bank PIN hint is her cat's name", "personal")
    memory_id = secret.memory_id or ""
    for call in (
        lambda: store.get("bob", memory_id),
        lambda: store.history("bob", memory_id),
        lambda: store.delete("bob", memory_id),
        lambda: store.update("bob", memory_id, "hijacked"),
        lambda: store.restore("bob", memory_id),
    ):
        with pytest.raises(MemoryNotFoundError, match="no memory"):
            call()
    report = store.apply("bob", [PlannedOp("DELETE", ref=1, target_id=memory_id)])
    assert report.applied == [] and "no memory" in report.rejected[0].reason
    assert store.get("alice", memory_id).status == "active"
    assert store.get("alice", memory_id).events[-1].op == "ADD"


@pytest.mark.parametrize("user_id", ["", "   "])
def test_blank_user_id_is_refused(store: MemoryStore, user_id: str) -> None:
    with pytest.raises(InvalidInputError, match="user_id must not be blank"):
        store.add(user_id, "User likes tea")
    with pytest.raises(InvalidInputError, match="user_id"):
        store.search(user_id, "tea")


def test_empty_or_oversized_text_is_refused(store: MemoryStore) -> None:
    with pytest.raises(InvalidInputError, match="empty"):
        store.add("alice", "   ")
    with pytest.raises(InvalidInputError, match="over 2000"):
        store.add("alice", "x" * 2001)
    assert store.count("alice") == 0


def test_embedding_dimension_mismatch_is_a_clear_error(kind: str, tmp_path: Path) -> None:
    engine = make_engine(kind, DeterministicFakeEmbedding(size=384), tmp_path)
    MemoryStore(engine, DeterministicFakeEmbedding(size=384), dims=384)
    with pytest.raises(EmbeddingDimensionError) as error:
        MemoryStore(
            engine,
            DeterministicFakeEmbedding(size=64),
            dims=64,
            embedding_id="openai:text-embedding-3-small",
        )
    message = str(error.value)
    assert "holds 384-dimensional vectors" in message
    assert "makes 64-dimensional" in message and "ENGRAM_EMBEDDING_DIMS" in message


def test_dims_are_probed_when_not_given() -> None:
    store = MemoryStore(QdrantClient(":memory:"), DeterministicFakeEmbedding(size=12))
    assert store.dims == 12 and store.embedding_id == "custom:12"


def failing(error: Exception) -> Callable[..., Any]:
    """A stand-in for a store step that dies (a crash in the middle of an update)."""

    def crash(*args: object, **kwargs: object) -> Any:
        raise error

    return crash


def half_updated(store: MemoryStore, monkeypatch: pytest.MonkeyPatch) -> str:
    """alice's "Paris" memory after a crash between writing "Berlin" and retiring Paris."""
    old = store.add("alice", "User lives in Paris", "location")
    old_id = old.memory_id or ""
    monkeypatch.setattr(store.versions, "change", failing(RuntimeError("power cut")))
    with pytest.raises(RuntimeError, match="power cut"):
        store.update("alice", old_id, "User lives in Berlin")
    monkeypatch.undo()
    return old_id


def raw_metadata(store: MemoryStore, memory_id: str) -> dict[str, Any]:
    """A version as stored, read past the store's own (repairing) readers."""
    [point] = store.engine.retrieve([memory_id])
    metadata: dict[str, Any] = point.payload["metadata"]
    return metadata


def test_interrupted_update_loses_nothing_and_the_next_write_repairs_it(
    store: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_id = half_updated(store, monkeypatch)
    # Both versions exist and are active: nothing lost.
    berlin_id = raw_metadata(store, old_id)["superseded_by"]
    assert raw_metadata(store, old_id)["status"] == "active"
    assert raw_metadata(store, berlin_id)["status"] == "active"

    # The next write to the memory (no read before it) completes the update, then applies.
    rome = store.update("alice", old_id, "User lives in Rome")
    assert raw_metadata(store, old_id)["status"] == "superseded"
    assert raw_metadata(store, old_id)["events"][-1]["detail"] == "completed an interrupted update"
    assert [(v.text, v.status) for v in store.history("alice", rome.memory_id or "")] == [
        ("User lives in Paris", "superseded"),
        ("User lives in Berlin", "superseded"),
        ("User lives in Rome", "active"),
    ]


def test_readers_never_show_the_old_half_of_an_interrupted_update(
    store: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_id = half_updated(store, monkeypatch)
    assert [m.text for m in store.search("alice", "where does the user live", k=5)] == [
        "User lives in Berlin"
    ]
    assert [m.text for m in store.memories("alice")] == ["User lives in Berlin"]
    assert store.get("alice", old_id).status == "superseded"  # the read finished the job


def test_update_that_dies_before_writing_keeps_the_old_version(
    store: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = store.add("alice", "User lives in Paris", "location")
    old_id = old.memory_id or ""

    monkeypatch.setattr(store.versions, "insert", failing(ConnectionError("Qdrant went away")))
    with pytest.raises(ConnectionError):
        store.update("alice", old_id, "User lives in Berlin")
    monkeypatch.undo()

    # The old version links to a successor that was never written: it stays the memory.
    assert [m.text for m in store.search("alice", "where does the user live", k=5)] == [
        "User lives in Paris"
    ]
    assert store.history("alice", old_id)[-1].text == "User lives in Paris"
    updated = store.update("alice", old_id, "User lives in Rome")  # the retry just works
    assert [m.text for m in store.memories("alice")] == ["User lives in Rome"]
    assert store.get("alice", old_id).superseded_by == updated.memory_id


def _bulk_insert(store: MemoryStore, user_id: str, count: int) -> None:
    at = now_utc()
    points = []
    for index in range(count):
        record = MemoryRecord(
            id=str(uuid.uuid4()),
            user_id=user_id,
            text=f"fact {index}",
            category="other",
            status="active",
            created_at=at,
            updated_at=at,
            observed_at=at,
            lineage_id=str(uuid.uuid4()),
            source=Source(actor="test"),
        )
        vector = [1.0, float(index % 7), 0.5, 0.25]
        points.append(Point(id=record.id, payload=payload(Stored(record)), dense=vector))
    store.engine.upsert(points)


@pytest.mark.slow
def test_forget_erases_every_memory_without_a_cap(tiny_store: MemoryStore) -> None:
    _bulk_insert(tiny_store, "alice", 25_000)
    tiny_store.add("bob", "User likes jazz")
    assert tiny_store.count("alice") == 25_000

    assert tiny_store.forget("alice") == 25_000
    assert tiny_store.count("alice") == 0
    assert [m.text for m in tiny_store.memories("bob")] == ["User likes jazz"]
    assert tiny_store.forget("alice") == 0


def test_listing_pages_through_everything(tiny_store: MemoryStore) -> None:
    _bulk_insert(tiny_store, "alice", 2_345)  # more than one scroll page
    assert len(tiny_store.memories("alice")) == 2_345


def test_hidden_half_update_never_swallows_a_restated_fact(
    store: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = store.add("alice", "User lives in Paris", "location")
    monkeypatch.setattr(store.versions, "change", failing(OSError("disk full")))
    with pytest.raises(OSError):
        store.update("alice", old.memory_id or "", "User lives in Berlin")
    monkeypatch.undo()
    berlin = next(m for m in store.export_records("alice") if m[0].text.endswith("Berlin"))[0]
    # The old version is still active in storage, hidden behind its written successor.
    stored = raw_metadata(store, old.memory_id or "")
    assert (stored["status"], stored["superseded_by"]) == ("active", berlin.id)
    store.delete("alice", berlin.id)
    # "Paris" again: the hidden half-updated version must not count as a duplicate.
    again = store.add("alice", "User lives in Paris", "location")
    assert again.result == "added"
    assert [m.text for m in store.memories("alice")] == ["User lives in Paris"]
    assert store.get("alice", old.memory_id or "").status == "superseded"


def test_restore_never_touches_the_memory_it_was_merged_into(store: MemoryStore) -> None:
    tea = store.add("alice", "User likes tea", "preferences")
    coffee = store.add("alice", "User likes coffee", "preferences")
    merged = store.update("alice", coffee.memory_id or "", "User likes tea")
    assert merged.result == "merged" and merged.memory_id == tea.memory_id
    assert store.restore("alice", coffee.memory_id or "").result == "restored"
    assert sorted(m.text for m in store.memories("alice")) == [
        "User likes coffee",
        "User likes tea",
    ]
    assert store.get("alice", tea.memory_id or "").events[-1].op == "ADD"


def test_restore_does_not_duplicate_an_active_memory(store: MemoryStore) -> None:
    first = store.add("alice", "User plays chess", "preferences")
    store.delete("alice", first.memory_id or "")
    second = store.add("alice", "User plays chess", "preferences")
    restored = store.restore("alice", first.memory_id or "")
    assert restored.result == "already active" and restored.memory_id == second.memory_id
    assert len(store.memories("alice")) == 1


def test_user_ids_follow_the_run_contexts_rule(store: MemoryStore) -> None:
    with pytest.raises(InvalidInputError, match="control characters"):
        store.add("alice\x00", "User likes tea")
    with pytest.raises(InvalidInputError, match="at most 256"):
        store.add("a" * 257, "User likes tea")


def test_delete_of_a_merged_memory_never_touches_the_memory_it_merged_into(
    store: MemoryStore,
) -> None:
    tea = store.add("alice", "User likes tea", "preferences")
    coffee = store.add("alice", "User likes coffee", "preferences")
    assert store.update("alice", coffee.memory_id or "", "User likes tea").result == "merged"

    deleted = store.delete("alice", coffee.memory_id or "")
    assert deleted.result == "unchanged" and f"merged into {tea.memory_id}" in (
        deleted.detail or ""
    )
    assert [m.text for m in store.memories("alice")] == ["User likes tea"]
    assert store.get("alice", tea.memory_id or "").status == "active"


def test_update_of_a_merged_memory_never_changes_the_memory_it_merged_into(
    store: MemoryStore,
) -> None:
    tea = store.add("alice", "User likes tea", "preferences")
    coffee = store.add("alice", "User likes coffee", "drinks")
    store.update("alice", coffee.memory_id or "", "User likes tea")

    late = store.update("alice", coffee.memory_id or "", "User likes coffee with oat milk")
    assert late.result == "added" and "merged into" in (late.detail or "")
    assert sorted(m.text for m in store.memories("alice")) == [
        "User likes coffee with oat milk",
        "User likes tea",
    ]
    assert store.get("alice", tea.memory_id or "").text == "User likes tea"
    assert [e.op for e in store.get("alice", tea.memory_id or "").events] == ["ADD"]
    assert store.get("alice", late.memory_id or "").category == "drinks"


def test_update_of_a_target_deleted_meanwhile_keeps_its_category(store: MemoryStore) -> None:
    added = store.add("alice", "User runs marathons", "health")
    store.delete("alice", added.memory_id or "")
    kept = store.update("alice", added.memory_id or "", "User runs half marathons")
    assert kept.result == "added" and kept.detail == "its target was deleted meanwhile"
    assert store.get("alice", kept.memory_id or "").category == "health"


def test_write_locks_stay_bounded_however_many_users(store: MemoryStore) -> None:
    locks = {id(store.write_lock(f"user-{n}")) for n in range(10_000)}
    assert len(locks) <= LOCK_STRIPES
    assert store.write_lock("alice") is store.write_lock("alice")


class BlockingEmbeddings(Embeddings):
    """Embeds documents only once released: a slow embedding endpoint."""

    def __init__(self, inner: Embeddings) -> None:
        self.inner = inner
        self.entered = threading.Event()
        self.release = threading.Event()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.entered.set()
        self.release.wait(30)
        return self.inner.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        return self.inner.embed_query(text)


def test_a_slow_embedding_never_blocks_other_users(
    kind: str, local_embeddings: Embeddings, tmp_path: Path
) -> None:
    slow = BlockingEmbeddings(local_embeddings)
    store = MemoryStore(make_engine(kind, slow, tmp_path), slow, dims=384)
    slow.release.set()
    store.add("bob", "User likes jazz", "preferences")
    slow.release.clear()
    writer = threading.Thread(target=store.add, args=("alice", "User likes tea"))
    writer.start()
    assert slow.entered.wait(10)
    try:
        reader = threading.Thread(target=store.search, args=("bob", "music"))
        reader.start()
        reader.join(5)
        assert not reader.is_alive(), "bob's search waited for alice's embedding"
        # nor do bob's writes that need no embedding
        assert store.delete("bob", store.memories("bob")[0].id).result == "deleted"
    finally:
        slow.release.set()
        writer.join(10)
    assert [m.text for m in store.memories("alice")] == ["User likes tea"]


class HeldEmbeddings(Embeddings):
    """Embeds only once `release` is set, after saying it has started (`started`)."""

    def __init__(self) -> None:
        self.fake = DeterministicFakeEmbedding(size=8)
        self.started, self.release = threading.Event(), threading.Event()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.started.set()
        assert self.release.wait(10)
        return self.fake.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        return self.fake.embed_query(text)


def test_a_write_prepared_before_a_forget_does_not_land_after_it(kind: str, tmp_path: Path) -> None:
    """A turn's memory steps embed their facts outside the user's lock; a forget that
    happens meanwhile must leave nothing of them behind."""
    embeddings = HeldEmbeddings()
    store = MemoryStore(make_engine(kind, embeddings, tmp_path), embeddings, dims=8)
    reports = []
    writer = threading.Thread(
        target=lambda: reports.append(
            store.apply("alice", [PlannedOp("ADD", text="User's PIN is 4321")])
        )
    )
    writer.start()
    assert embeddings.started.wait(10)
    assert store.forget("alice") == 0
    embeddings.release.set()
    writer.join(10)

    assert reports[0].applied == []
    assert "erased (forget)" in reports[0].rejected[0].reason
    assert store.count("alice") == 0
    store.apply("alice", [PlannedOp("ADD", text="User's PIN is 1234")])  # later writes land
    assert [m.text for m in store.memories("alice")] == ["User's PIN is 1234"]
    store.engine.close()
