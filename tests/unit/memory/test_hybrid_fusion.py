"""Hybrid retrieval on both engines: a memory that only its words find (the dense search
misses it) is ranked by its true dense similarity plus its keyword share, which the engine
computes by rescoring the keyword hits (no vector leaves the engine)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from langchain_core.embeddings import Embeddings

from engram.memory.engines.base import Where
from engram.memory.keywords import query_keywords
from engram.memory.retrieval import OVERFETCH, Retrieval, cosine, searches
from engram.memory.store import MemoryStore, PlannedOp
from tests.helpers import make_store

QUESTION = "Which zither do I play?"
RARE = "User plays an old zither"  # shares the rare word, points away in meaning
NEAR = [f"User likes music number {i}" for i in range(40)]  # close in meaning, no shared word


class Arranged(Embeddings):
    """4-d vectors placed by hand: the question near the NEAR memories, RARE far off."""

    def vector(self, text: str) -> list[float]:
        if text == QUESTION:
            return [1.0, 0.0, 0.0, 0.0]
        if text == RARE:
            return [0.2, 1.0, 0.0, 0.0]
        index = NEAR.index(text)
        return [1.0, 0.05 + index / 100, 0.1, 0.0]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.vector(text)


@pytest.fixture
def arranged(kind: str, tmp_path: Path) -> Iterator[MemoryStore]:
    store = make_store(kind, Arranged(), tmp_path, dims=4)
    report = store.apply("alice", [PlannedOp("ADD", text=t) for t in [*NEAR, RARE]])
    assert not report.rejected
    yield store
    store.engine.close()


def test_rescored_keyword_hits_carry_their_dense_similarity(arranged: MemoryStore) -> None:
    question = Arranged().embed_query(QUESTION)
    where = Where(user_id="alice", status="active")
    plan = searches(where, question, query_keywords(QUESTION), 3, Retrieval())
    dense_hits, keyword_hits, rescored_hits = arranged.engine.query(plan)

    by_id = {r.id: r for r in arranged.memories("alice")}
    rare_id = next(i for i, r in by_id.items() if r.text == RARE)
    assert len(dense_hits) == 3 * OVERFETCH  # full, and RARE is below its cut
    assert rare_id not in {p.id for p in dense_hits}
    assert {p.id for p in rescored_hits} == {p.id for p in keyword_hits} == {rare_id}
    for hit in rescored_hits:
        expected = cosine(question, Arranged().vector(by_id[hit.id].text))
        assert hit.score == pytest.approx(expected, abs=1e-4)
        assert hit.dense is None  # the engine scored it; no vector came back


def test_a_memory_only_its_words_find_ranks_by_fused_score(arranged: MemoryStore) -> None:
    # A keyword weight large enough for RARE's words to outweigh the NEAR memories' meaning:
    # it is found only through the keyword search and its rescoring.
    arranged.retrieval = Retrieval(mode="hybrid", keyword_weight=1.0)
    found = arranged.search("alice", QUESTION, k=3)

    assert found[0].text == RARE
    similarity = cosine([1.0, 0.0, 0.0, 0.0], [0.2, 1.0, 0.0, 0.0])
    # the only keyword hit, so its keyword share is the whole weight
    assert found[0].score == pytest.approx(similarity + 1.0, abs=1e-4)
    assert [m.text for m in found[1:]] == NEAR[:2]  # then by meaning


def test_dense_mode_never_finds_what_only_words_match(arranged: MemoryStore) -> None:
    arranged.retrieval = Retrieval(mode="dense", keyword_weight=1.0)
    assert [m.text for m in arranged.search("alice", QUESTION, k=3)] == NEAR[:3]


def test_cosine_matches_numpy() -> None:
    a, b = [0.3, -1.0, 2.0], [1.0, 0.5, -0.25]
    expected = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    assert cosine(a, b) == pytest.approx(expected, rel=1e-6)
    assert cosine([0.0, 0.0], [1.0, 1.0]) == 0.0 and cosine([1.0], [1.0, 2.0]) == 0.0
