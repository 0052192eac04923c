"""Hybrid retrieval: dense similarity plus BM25 keyword scores over the user's own memories.

Each text becomes two searches (dense, keywords) sent in one batch; their hits are fused
by a weighted sum: cosine similarity + `keyword_weight` x (keyword score / the best keyword
score of that query). On this project's retrieval benchmark (`benchmarks/retrieval.py`,
192 questions over 8 users) weight 0.1 ranked best, narrowly ahead of dense alone (MRR@5
0.893 vs 0.882; keywords help questions that share a rare word, hurt paraphrases as the
weight grows), and reciprocal-rank fusion (k=60) ranked below dense alone. "dense" turns
keywords off (`ENGRAM_RETRIEVAL=dense`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from memory.engine import Point, Query, Sparse, Where

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
    """The engine queries for one text: dense, plus keywords when hybrid and non-empty
    (`lean`: without payloads, see `Query`)."""
    limit = k * OVERFETCH
    queries = [Query(where=where, limit=limit, dense=dense, lean=lean)]
    if retrieval.mode == "hybrid" and keywords.indices:
        queries.append(Query(where=where, limit=limit, keywords=keywords, lean=lean))
    return queries


def fuse(
    dense_query: list[float],
    dense_hits: Sequence[Point],
    keyword_hits: Sequence[Point],
    k: int,
    retrieval: Retrieval,
) -> list[tuple[Point, float]]:
    """The best `k` points of both searches by the fused score, best first."""
    best_keyword = max((p.score or 0.0 for p in keyword_hits), default=0.0)
    keyword = {p.id: (p.score or 0.0) / best_keyword for p in keyword_hits} if best_keyword else {}
    scores = {p.id: p.score or 0.0 for p in dense_hits}
    points = {p.id: p for p in dense_hits}
    only_keywords = [p for p in keyword_hits if p.id not in scores and p.dense]
    if only_keywords:  # found by keywords alone: score their vectors here, in one go
        similarities = cosines(dense_query, [p.dense or [] for p in only_keywords])
        for point, similarity in zip(only_keywords, similarities, strict=True):
            scores[point.id] = float(similarity)
            points[point.id] = point
    fused = [
        (points[point_id], score + retrieval.keyword_weight * keyword.get(point_id, 0.0))
        for point_id, score in scores.items()
    ]
    fused.sort(key=lambda pair: pair[1], reverse=True)
    return fused[:k]


def cosines(query: Sequence[float], vectors: Sequence[Sequence[float]]) -> list[float]:
    """Cosine similarity of `query` to each vector (numpy: hundreds per turn)."""
    matrix = np.asarray(vectors, dtype=np.float32)
    target = np.asarray(query, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1) * float(np.linalg.norm(target))
    result = np.divide(matrix @ target, norms, out=np.zeros(len(matrix)), where=norms > 0)
    return [float(x) for x in result]


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    if not a or not b or len(a) != len(b):
        return 0.0
    return cosines(a, [b])[0]
