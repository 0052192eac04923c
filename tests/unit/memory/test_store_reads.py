"""How a search reads, and what a turn's writes reuse from its search.

A search ranks by scores first and reads the winners' payloads by id after: a winner that
changes in between must not make a memory vanish from the results. The facts a turn
searches with (`search_many`) are embedded once, not again when they are written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.embeddings import Embeddings

from engram.memory.engines.base import Query
from engram.memory.store import MemoryStore, PlannedOp
from engram.state.contracts import Source
from tests.helpers import make_engine, make_store


class CountingEmbeddings(Embeddings):
    """The real embeddings, recording which texts were embedded as documents."""

    def __init__(self, inner: Embeddings) -> None:
        self.inner = inner
        self.documents: list[str] = []

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.documents += texts
        return self.inner.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        return self.inner.embed_query(text)


def test_a_memory_updated_while_a_search_reads_it_shows_as_its_new_version(
    kind: str, local_embeddings: Embeddings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The search ranks "Paris"; before it reads that version, another process's update
    retires it and writes "Berlin" (too late for that ranking): the search runs again."""
    engine = make_engine(kind, local_embeddings, tmp_path)
    reader = MemoryStore(engine, local_embeddings, dims=384)
    writer = MemoryStore(engine, local_embeddings, dims=384)
    paris = writer.add("alice", "User lives in Paris")
    updates: list[Any] = []
    ranked_by = engine.query

    def rank_then_update(queries: list[Query]) -> list[Any]:
        hits = ranked_by(queries)
        if not updates:
            updates.append(writer.update("alice", paris.memory_id or "", "User lives in Berlin"))
        return hits

    monkeypatch.setattr(engine, "query", rank_then_update)
    try:
        hits = reader.search("alice", "which city does the user live in", k=3)
        assert [u.result for u in updates] == ["updated"]
        assert [h.text for h in hits] == ["User lives in Berlin"]
    finally:
        engine.close()


def test_writing_the_facts_a_turn_searched_with_embeds_nothing_again(
    local_embeddings: Embeddings, tmp_path: Path
) -> None:
    counting = CountingEmbeddings(local_embeddings)
    store = make_store("edge", counting, tmp_path)
    try:
        fact = "User keeps bees on the roof"
        store.search_many("alice", [fact], k=3)
        assert counting.documents == [fact]
        op = PlannedOp("ADD", text=fact, category="hobbies", source=Source(actor="chat"))
        report = store.apply("alice", [op])
        assert [a.result for a in report.applied] == ["added"]
        assert counting.documents == [fact]  # the search's vector was written
        written = store.engine.retrieve([report.applied[0].memory_id or ""], with_dense=True)
        expected = local_embeddings.embed_documents([fact])[0]
        assert written[0].dense == pytest.approx(expected, abs=1e-6)
        other = PlannedOp("ADD", text="User plays the cello", source=Source(actor="chat"))
        store.apply("alice", [other])
        assert counting.documents == [fact, "User plays the cello"]  # new texts still embed
    finally:
        store.engine.close()
