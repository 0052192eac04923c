"""Hybrid retrieval: dense similarity plus BM25 keyword scores over the user's own memories.

Each text becomes two searches (dense, keywords) sent in one batch, with a third that
gives the keyword hits their dense similarity; the hits are fused by a weighted sum:
cosine similarity + `keyword_weight` x (keyword score / the best keyword score of that
query). The weight, 0.1, ranked best on `benchmarks/retrieval.py`, ahead of dense alone
and of reciprocal-rank fusion (figures in benchmarks/README.md). "dense" turns keywords
off (`ENGRAM_RETRIEVAL=dense`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from engram.memory.engines.base import Point, Query, Sparse, Where

RetrievalMode = Literal["hybrid", "dense"]
KEYWORD_WEIGHT = 0.1
OVERFETCH = 4  # each search fetches this many times k, so fusion has candidates to rank


@dataclass(frozen=True)
class Retrieval:
    mode: RetrievalMode = "hybrid"
    keyword_weight: float = KEYWORD_WEIGHT


def searches(
    where: Where,
    dense: list[float],
    keywords: Sparse,
    k: int,
    retrieval: Retrieval,
    *,
    lean: bool = False,
) -> list[Query]:
    """The engine queries for one text: dense; when hybrid and the text has keywords, also
    the keyword search and its hits rescored by the dense vector (`lean`: without
    payloads, see `Query`). `fuse` takes their results in this order."""
    limit = k * OVERFETCH
    queries = [Query(where=where, limit=limit, dense=dense, lean=lean)]
    if retrieval.mode == "hybrid" and keywords.indices:
        queries.append(Query(where=where, limit=limit, keywords=keywords, lean=lean))
        queries.append(Query(where=where, limit=limit, keywords=keywords, lean=lean, rescore=dense))
    return queries


def fuse(
    dense_hits: Sequence[Point],
    keyword_hits: Sequence[Point],
    rescored_hits: Sequence[Point],
    k: int,
    retrieval: Retrieval,
) -> list[tuple[Point, float]]:
    """The best `k` points of both searches by the fused score, best first.

    A keyword hit the dense search missed is scored by its dense similarity from
    `rescored_hits` (the keyword hits with dense scores); one missing there (the two
    searches disagreed on a tie at the cut, or a write landed between them on a server)
    cannot be ranked and is left out: one candidate fewer, never a wrong score."""
    best_keyword = max((p.score or 0.0 for p in keyword_hits), default=0.0)
    keyword = {p.id: (p.score or 0.0) / best_keyword for p in keyword_hits} if best_keyword else {}
    scores = {p.id: p.score or 0.0 for p in dense_hits}
    points = {p.id: p for p in dense_hits}
    similarity = {p.id: p.score or 0.0 for p in rescored_hits}
    for point in keyword_hits:
        if point.id not in scores and point.id in similarity:
            scores[point.id] = similarity[point.id]
            points[point.id] = point
    fused = [
        (points[point_id], score + retrieval.keyword_weight * keyword.get(point_id, 0.0))
        for point_id, score in scores.items()
    ]
    fused.sort(key=lambda pair: pair[1], reverse=True)
    return fused[:k]


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity; 0 for empty, unequal or zero vectors."""
    if not a or not b or len(a) != len(b):
        return 0.0
    left, right = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    norms = float(np.linalg.norm(left)) * float(np.linalg.norm(right))
    return float(left @ right) / norms if norms > 0 else 0.0
