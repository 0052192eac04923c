"""Hybrid retrieval on both engines: a memory that only its words find (the dense search
misses it) is ranked by its true dense similarity plus its keyword share, which the engine
computes by rescoring the keyword hits (no vector leaves the engine)."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from langchain_core.embeddings import Embeddings

from engram.memory.engines.base import Where
from engram.memory.keywords import query_keywords
from engram.memory.retrieval import (
    OVERFETCH,
    Retrieval,
    RetrievalMode,
    cosine,
    keyword_scores,
    searches,
)
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
    plan = searches(where, question, query_keywords(QUESTION), 3 * OVERFETCH, Retrieval())
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
    # The keyword search returned every memory sharing a word: the dense hits it missed
    # share none, and need no query for their keyword scores.
    assert keyword_scores(where, query_keywords(QUESTION), [dense_hits, keyword_hits], 12) is None


def test_dense_hits_a_full_keyword_search_missed_get_their_keyword_scores(
    arranged: MemoryStore,
) -> None:
    """When the keyword search is cut, a dense hit below its cut may still share words with
    the text: `keyword_scores` asks for exactly those hits' scores, which are the scores a
    deep enough keyword search gives them."""
    text = "Does the user like music number 7?"
    question, words = Arranged().vector(NEAR[0]), query_keywords(text)
    where = Where(user_id="alice", status="active")
    dense_hits, keyword_hits, _ = arranged.engine.query(
        searches(where, question, words, 5, Retrieval())
    )
    assert len(keyword_hits) == 5  # cut: 40 memories share "music"
    scoring = keyword_scores(where, words, [dense_hits, keyword_hits], 5)
    assert scoring is not None
    missed = {p.id for p in dense_hits} - {p.id for p in keyword_hits}
    assert set(scoring.where.ids or []) == missed
    scored = arranged.engine.query([scoring])[0]
    everything = arranged.engine.query(searches(where, question, words, 100, Retrieval()))[1]
    truth = {p.id: p.score for p in everything}
    assert {p.id for p in scored} == missed
    for point in scored:
        assert point.score == pytest.approx(truth[point.id], rel=1e-5)


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


WORDS = (
    "apple river stone violin garden winter coffee tennis lisbon harbor marble pepper "
    "candle forest bicycle museum quartz lantern meadow falcon orchard saddle velvet "
    "thunder copper island ribbon summit walnut glacier"
).split()


class Hashed(Embeddings):
    """Fixed pseudo-random 8-d vectors per text: meaning that keyword scores often beat."""

    def vector(self, text: str) -> list[float]:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
        return [float(x) for x in np.random.default_rng(seed).normal(size=8)]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.vector(text)


@pytest.fixture
def crowded(kind: str, tmp_path: Path) -> Iterator[MemoryStore]:
    """400 memories of four words each: for most questions, far more keyword matches than
    a search for 5 fetches, so the keyword cut falls among them."""
    rng = random.Random(7)
    texts = {" ".join(["User likes", *rng.sample(WORDS, 4)]) for _ in range(400)}
    store = make_store(kind, Hashed(), tmp_path, dims=8)
    assert not store.apply("alice", [PlannedOp("ADD", text=t) for t in sorted(texts)]).rejected
    yield store
    store.engine.close()


def test_the_top_n_is_the_start_of_any_deeper_search(crowded: MemoryStore) -> None:
    modes: list[tuple[RetrievalMode, float]] = [("hybrid", 0.1), ("hybrid", 1.0), ("dense", 0.1)]
    for mode, weight in modes:
        crowded.retrieval = Retrieval(mode=mode, keyword_weight=weight)
        rng = random.Random(11)
        for _ in range(12):
            question = "Does the user like " + " ".join(rng.sample(WORDS, 3)) + "?"
            deep = [m.id for m in crowded.search("alice", question, k=40)]
            assert len(deep) == 40
            for n in (1, 3, 5, 10, 20):
                top = [m.id for m in crowded.search("alice", question, k=n)]
                assert top == deep[:n], (mode, weight, question, n)


class Same(Embeddings):
    """One vector for every text: meaning ties everywhere, at every cut."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [[1.0, 0.0, 0.0, 0.0] for _ in texts]

    def embed_query(self, text: str) -> list[float]:
        return [1.0, 0.0, 0.0, 0.0]


def test_ties_at_the_cut_keep_the_top_n_the_start_of_a_deeper_search(
    kind: str, tmp_path: Path
) -> None:
    store = make_store(kind, Same(), tmp_path, dims=4)
    ops = [PlannedOp("ADD", text=f"User noted item number {i}") for i in range(100)]
    assert not store.apply("alice", ops).rejected
    for mode, question in [("dense", "what?"), ("hybrid", "what?"), ("hybrid", "item 7")]:
        store.retrieval = Retrieval(mode=mode)  # type: ignore[arg-type]
        deep = [m.id for m in store.search("alice", question, k=60)]
        for n in (1, 5, 20):
            assert [m.id for m in store.search("alice", question, k=n)] == deep[:n], (mode, n)
    store.engine.close()
