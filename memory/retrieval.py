"""Hybrid retrieval: dense similarity plus BM25 keyword scores over the user's own memories.

Each text becomes three searches sent in one batch: dense, keywords, and the keyword hits
rescored by the dense vector; the dense hits the keyword search did not reach get their
keyword scores from a fourth (`keyword_scores`), so every candidate carries both scores.
They are fused by a weighted sum: cosine similarity + `keyword_weight` x (keyword score /
the best keyword score of that query). The weight, 0.05, ranked best of those tried
(0.025 to 0.5) on both retrieval benchmarks (`benchmarks/retrieval.py`, long
conversations, and `benchmarks/fusion.py`), ahead of dense alone, of heavier weights and
of reciprocal-rank fusion (figures in benchmarks/README.md). "dense" turns keywords off
(`ENGRAM_RETRIEVAL=dense`).

The ranking does not depend on how many results are asked for: `search(k=5)` is the start
of `search(k=20)`. Every candidate is scored exactly, and `fuse` says whether a memory
neither search returned could still outrank the k-th (the threshold algorithm's test:
the last dense score plus the last keyword share bounds whatever lies below both cuts);
when one could, the store searches again deeper (`MemoryStore._ranked`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from engram.memory.engines.base import Point, Query, Sparse, Where

RetrievalMode = Literal["hybrid", "dense"]
KEYWORD_WEIGHT = 0.05
OVERFETCH = 4  # each search first fetches this many times k, so fusion has candidates
# The deepest a search goes to make its top k certain (`Fused.exact`); past it the ranking
# is taken as found (rare: thousands of a user's memories tied near the cut).
MAX_CANDIDATES = 2048


@dataclass(frozen=True)
class Retrieval:
    mode: RetrievalMode = "hybrid"
    keyword_weight: float = KEYWORD_WEIGHT


@dataclass(frozen=True)
class Fused:
    """The best points by fused score, best first, and whether they are exactly the best:
    False when a point below both searches' cuts could still rank among them."""

    ranked: list[tuple[Point, float]]
    exact: bool


def searches(
    where: Where,
    dense: list[float],
    keywords: Sparse,
    limit: int,
    retrieval: Retrieval,
    *,
    lean: bool = False,
) -> list[Query]:
    """The engine queries for one text, each for `limit` hits: dense; when hybrid and the
    text has keywords, also the keyword search and its hits rescored by the dense vector
    (`lean`: without payloads, see `Query`). `fuse` takes their results in this order."""
    queries = [Query(where=where, limit=limit, dense=dense, lean=lean)]
    if retrieval.mode == "hybrid" and keywords.indices:
        queries.append(Query(where=where, limit=limit, keywords=keywords, lean=lean))
        queries.append(Query(where=where, limit=limit, keywords=keywords, lean=lean, rescore=dense))
    return queries


def keyword_scores(
    where: Where, keywords: Sparse, results: Sequence[Sequence[Point]], limit: int
) -> Query | None:
    """The query for the keyword scores of the dense hits the keyword search did not
    return, when it returned all `limit` it was asked for (those hits may share words with
    the text); otherwise they share none, score 0, and no query is needed."""
    dense_hits, *keyword_results = results
    if not keyword_results or len(keyword_results[0]) < limit:
        return None
    found = {p.id for p in keyword_results[0]}
    missed = [p.id for p in dense_hits if p.id not in found]
    if not missed:
        return None
    return Query(where=replace(where, ids=missed), limit=len(missed), keywords=keywords, lean=True)


def fuse(
    results: Sequence[Sequence[Point]],
    k: int,
    limit: int,
    retrieval: Retrieval,
    keyword_scored: Sequence[Point] = (),
) -> Fused:
    """The best `k` points of `searches`' results (each asked for `limit` hits) by fused
    score, best first; ties go to the smaller id, so the order is the same for every k.

    A keyword hit the dense search missed is scored by its dense similarity from the
    rescored keyword hits; a dense hit the keyword search missed by its keyword score in
    `keyword_scored` (`keyword_scores`' hits; none there: it shares no word with the text,
    its keyword share is 0). A keyword hit missing from its rescoring (a write landed
    between the searches on a server) cannot be ranked and is left out: one candidate
    fewer, never a wrong score."""
    dense_hits, *keyword_results = results
    keyword_hits, rescored_hits = keyword_results or ([], [])
    best_keyword = max((p.score or 0.0 for p in keyword_hits), default=0.0)
    keyword: dict[str, float] = {}
    if best_keyword > 0:
        for point in [*keyword_hits, *keyword_scored]:
            keyword[point.id] = (point.score or 0.0) / best_keyword
    scores = {p.id: p.score or 0.0 for p in dense_hits}
    points = {p.id: p for p in dense_hits}
    similarity = {p.id: p.score or 0.0 for p in rescored_hits}
    for point in keyword_hits:
        if point.id not in scores and point.id in similarity:
            scores[point.id] = similarity[point.id]
            points[point.id] = point
    weight = retrieval.keyword_weight if keyword_results else 0.0
    fused = [
        (points[point_id], score + weight * keyword.get(point_id, 0.0))
        for point_id, score in scores.items()
    ]
    fused.sort(key=lambda pair: (-pair[1], pair[0].id))
    if len(dense_hits) < limit:
        return Fused(fused[:k], exact=True)  # every match is a dense hit: all were scored
    # A point below both cuts scores at most the last dense score plus the last keyword
    # share (0 when the keyword search returned every point sharing a word with the text).
    # Strictly above it, or the k-th may tie with a point the dense search cut off.
    last_keyword = keyword.get(keyword_hits[-1].id, 0.0) if len(keyword_hits) >= limit else 0.0
    bound = (dense_hits[-1].score or 0.0) + weight * last_keyword
    exact = len(fused) >= k and fused[k - 1][1] > bound if k > 0 else True
    return Fused(fused[:k], exact=exact)


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity; 0 for empty, unequal or zero vectors."""
    if not a or not b or len(a) != len(b):
        return 0.0
    left, right = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    norms = float(np.linalg.norm(left)) * float(np.linalg.norm(right))
    return float(left @ right) / norms if norms > 0 else 0.0
