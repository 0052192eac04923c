"""The process-wide store: opened once per location, however many threads ask at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings

from engram import clients
from engram.clients import close_clients, default_store
from engram.memory.store import MemoryStore
from engram.settings import Settings

THREADS = 8
TRIALS = 15


@pytest.fixture(autouse=True)
def fake_embeddings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tiny deterministic vectors: the race is in opening Qdrant, not in embedding."""

    def build(settings: Settings) -> Embeddings:
        return DeterministicFakeEmbedding(size=8)

    monkeypatch.setattr(clients, "build_embeddings", build)
    yield
    close_clients()


def open_concurrently(settings: Settings) -> list[MemoryStore | BaseException]:
    """Every thread calls `default_store` at the same instant (a server's first runs)."""
    barrier = threading.Barrier(THREADS)
    results: list[MemoryStore | BaseException] = [RuntimeError("thread never ran")] * THREADS

    def open_store(n: int) -> None:
        barrier.wait()
        try:
            results[n] = default_store(settings)
        except BaseException as error:  # reported by the test, with every other thread's
            results[n] = error

    threads = [threading.Thread(target=open_store, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


@pytest.mark.slow
def test_concurrent_first_opens_share_one_store(tmp_path: Path) -> None:
    for trial in range(TRIALS):
        close_clients()  # a fresh process, as far as the store cache is concerned
        settings = Settings(data_dir=tmp_path / f"trial-{trial}", embedding_dims=8)
        results = open_concurrently(settings)
        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, f"trial {trial}: {errors[0]!r}"
        assert len({id(r) for r in results}) == 1, f"trial {trial}: several stores built"
        store = results[0]
        assert isinstance(store, MemoryStore)
        store.add("alice", "User keeps bees", "preferences")  # the collection works
        assert [m.text for m in store.memories("alice")] == ["User keeps bees"]


def test_stores_for_different_locations_are_distinct(tmp_path: Path) -> None:
    first = default_store(Settings(data_dir=tmp_path / "one", embedding_dims=8))
    second = default_store(Settings(data_dir=tmp_path / "two", embedding_dims=8))
    assert first is not second
    assert default_store(Settings(data_dir=tmp_path / "one", embedding_dims=8)) is first
