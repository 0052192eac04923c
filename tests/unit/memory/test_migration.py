"""Users of earlier versions lose nothing: an embedded store in qdrant-client's local mode
moves to Qdrant Edge on first open (verified before the old files are set aside), and a
server collection without keyword vectors gets them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings
from qdrant_client import QdrantClient, models

from engram import clients
from engram.memory import migrate
from engram.memory.engines.base import Query, Where
from engram.memory.keywords import query_keywords
from engram.memory.payload import record_from_point, text_hash
from engram.memory.store import MemoryStore, now_utc
from engram.settings import Settings
from engram.state.contracts import MemoryEvent, MemoryRecord, Source
from engram.state.errors import ConfigurationError

DIMS = 16


@pytest.fixture
def fake_embeddings(monkeypatch: pytest.MonkeyPatch) -> Iterator[Embeddings]:
    embeddings = DeterministicFakeEmbedding(size=DIMS)
    monkeypatch.setattr(clients, "build_embeddings", lambda settings: embeddings)
    yield embeddings
    clients.close_clients()


def settings_for(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", embedding_dims=DIMS, openai_api_key="unused")


def legacy_records() -> list[MemoryRecord]:
    """What an earlier version wrote: an update (two linked versions) and a deletion."""
    at = now_utc() - timedelta(days=3)
    paris, berlin, cello = (str(uuid.uuid4()) for _ in range(3))
    source = Source(thread_id="cli:alice:main", message_ids=["m1"], actor="chat")

    def record(point_id: str, text: str, status: str, **links: str | None) -> MemoryRecord:
        return MemoryRecord.model_validate(
            {
                "id": point_id,
                "user_id": "alice",
                "text": text,
                "category": "location" if "lives" in text else "preferences",
                "status": status,
                "created_at": at,
                "updated_at": at,
                "observed_at": at,
                "lineage_id": links.pop("lineage_id", None) or point_id,
                "source": source,
                "events": [MemoryEvent(op="ADD", at=at, source=source)],
                **links,
            }
        )

    moved = record(berlin, "User lives in Berlin", "active", supersedes=paris, lineage_id=paris)
    return [
        record(paris, "User lives in Paris", "superseded", superseded_by=berlin),
        moved.model_copy(update={"created_at": at + timedelta(days=1)}),
        record(cello, "User plays the cello", "deleted"),
    ]


def keyword_hits(store: MemoryStore, text: str) -> list[str]:
    """The user's active memories found by keywords alone (fake embeddings mean nothing)."""
    where = Where(user_id="alice", status="active")
    [hits] = store.engine.query([Query(where=where, limit=3, keywords=query_keywords(text))])
    return [record_from_point(p).text for p in hits]


def write_legacy_store(path: Path, records: list[MemoryRecord], embeddings: Embeddings) -> None:
    """The exact layout of the previous embedded store: local mode, one unnamed vector."""
    client = QdrantClient(path=str(path))
    client.create_collection(
        "engram_memories",
        vectors_config=models.VectorParams(size=DIMS, distance=models.Distance.COSINE),
    )
    points = []
    for record in records:
        metadata = record.model_dump(mode="json", exclude={"id", "text", "score"})
        metadata["text_hash"] = text_hash(record.text)
        points.append(
            models.PointStruct(
                id=record.id,
                vector=embeddings.embed_query(record.text),
                payload={"page_content": record.text, "metadata": metadata},
            )
        )
    client.upsert("engram_memories", points)
    client.close()


def test_a_local_mode_store_moves_to_edge_with_nothing_lost(
    fake_embeddings: Embeddings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_for(tmp_path)
    records = legacy_records()
    write_legacy_store(settings.qdrant_path, records, fake_embeddings)

    store = clients.default_store(settings)

    assert "Moved 3 memory versions to Qdrant Edge" in capsys.readouterr().err
    assert (settings.edge_path / "edge_config.json").exists()
    kept = settings.qdrant_path.with_name("qdrant.before-edge")
    assert (kept / "collection" / "engram_memories").is_dir()  # the old files, set aside
    assert not settings.qdrant_path.exists()
    assert sorted(store.memories("alice", status=None), key=lambda r: r.id) == sorted(
        records, key=lambda r: r.id
    )
    assert [v.text for v in store.history("alice", records[0].id)] == [
        "User lives in Paris",
        "User lives in Berlin",
    ]
    assert keyword_hits(store, "Berlin") == ["User lives in Berlin"]
    # The migrated store takes writes as usual, and reopens without migrating again.
    store.update("alice", records[1].id, "User lives in Rome")
    clients.close_clients()
    again = clients.default_store(settings)
    assert [m.text for m in again.memories("alice")] == ["User lives in Rome"]
    assert "Moved" not in capsys.readouterr().err


def test_an_interrupted_migration_keeps_the_old_store_and_starts_over(
    fake_embeddings: Embeddings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(tmp_path)
    records = legacy_records()
    write_legacy_store(settings.qdrant_path, records, fake_embeddings)

    def power_cut(*args: object) -> None:
        raise RuntimeError("power cut")

    monkeypatch.setattr(migrate, "_verify", power_cut)
    with pytest.raises(RuntimeError, match="power cut"):
        clients.default_store(settings)
    assert (settings.qdrant_path / "collection" / "engram_memories").is_dir()
    assert not settings.edge_path.exists()

    monkeypatch.undo()
    monkeypatch.setattr(clients, "build_embeddings", lambda settings: fake_embeddings)
    store = clients.default_store(settings)
    assert len(store.memories("alice", status=None)) == 3


def test_an_edge_store_open_in_another_process_is_a_clear_error(
    fake_embeddings: Embeddings, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path)
    holder = MemoryStore(
        migrate.EdgeEngine(settings.edge_path), fake_embeddings, dims=DIMS
    )  # holds the shard's lock, as another process would
    try:
        with pytest.raises(ConfigurationError, match="in use by another process"):
            clients.default_store(settings)
    finally:
        holder.engine.close()


def test_a_server_collection_without_keyword_vectors_gets_them(
    fake_embeddings: Embeddings,
) -> None:
    client = QdrantClient(":memory:")
    records = legacy_records()
    client.create_collection(
        "engram_memories",
        vectors_config=models.VectorParams(size=DIMS, distance=models.Distance.COSINE),
    )
    client.upsert(
        "engram_memories",
        [
            models.PointStruct(
                id=r.id,
                vector=fake_embeddings.embed_query(r.text),
                payload={
                    "page_content": r.text,
                    "metadata": {
                        **r.model_dump(mode="json", exclude={"id", "text", "score"}),
                        "text_hash": text_hash(r.text),
                    },
                },
            )
            for r in records
        ],
    )
    progress: list[tuple[str, int, int]] = []
    store = MemoryStore(
        client,
        fake_embeddings,
        dims=DIMS,
        on_progress=lambda what, done, total: progress.append((what, done, total)),
    )
    assert progress[-1] == ("adding keyword vectors", 3, 3)
    assert store.engine.count_without_keywords() == 0
    assert keyword_hits(store, "Berlin") == ["User lives in Berlin"]
    assert store.update("alice", records[1].id, "User lives in Rome").result == "updated"
    assert [v.text for v in store.history("alice", records[0].id)] == [
        "User lives in Paris",
        "User lives in Berlin",
        "User lives in Rome",
    ]
