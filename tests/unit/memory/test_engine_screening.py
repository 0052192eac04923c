"""Qdrant Edge's lean dense searches filtered on status leave that condition to the
engine's Python side (`EdgeEngine.query`): the results must be exactly those of the filtered
search, also when retired versions crowd the top."""

from __future__ import annotations

import uuid
from pathlib import Path

from engram.memory.engines.base import METADATA_KEY, Point, Query, Where
from engram.memory.engines.edge import EdgeEngine

QUERY = [1.0, 0.0, 0.0, 0.0]


def point(user_id: str, status: str, dense: list[float]) -> Point:
    return Point(
        id=str(uuid.uuid4()),
        payload={"page_content": "x", METADATA_KEY: {"user_id": user_id, "status": status}},
        dense=dense,
    )


def engine_with(tmp_path: Path, points: list[Point]) -> EdgeEngine:
    engine = EdgeEngine(tmp_path / "edge")
    engine.create(len(QUERY))
    engine.upsert(points)
    return engine


def active_ranked(count: int) -> list[Point]:
    """Active versions, each a little further from QUERY than the one before."""
    return [point("alice", "active", [1.0 - i / 10, i / 10 + 0.05, 0.0, 0.0]) for i in range(count)]


def test_retired_versions_crowding_the_top_do_not_hide_the_active_ones(tmp_path: Path) -> None:
    retired = [point("alice", "superseded", QUERY) for _ in range(10)]
    active = active_ranked(3)
    others = [point("bob", "active", QUERY) for _ in range(3)]
    engine = engine_with(tmp_path, retired + active + others)
    try:
        where = Where(user_id="alice", status="active")
        hits, lean = engine.query(
            [Query(where=where, limit=3, dense=QUERY), Query(where, 3, QUERY, lean=True)]
        )
        assert [h.id for h in hits] == [p.id for p in active]
        assert [h.payload[METADATA_KEY]["status"] for h in hits] == ["active"] * 3
        assert [h.id for h in lean] == [p.id for p in active]
        assert all(h.payload == {} for h in lean)
    finally:
        engine.close()


def test_a_screened_search_keeps_the_best_matches_in_order(tmp_path: Path) -> None:
    retired = [point("alice", "deleted", [0.95, 0.05 * i + 0.05, 0.0, 0.0]) for i in range(2)]
    active = active_ranked(5)
    engine = engine_with(tmp_path, retired + active)
    try:
        for status, limit, expected in (("active", 3, active[:3]), ("deleted", 5, retired)):
            where = Where(user_id="alice", status=status)
            screened, filtered = engine.query(
                [Query(where, limit, QUERY, lean=True), Query(where, limit, QUERY)]
            )
            assert [h.id for h in screened] == [h.id for h in filtered]
            assert {h.id for h in screened} == {p.id for p in expected}
            assert [h.score for h in screened] == [h.score for h in filtered]
    finally:
        engine.close()
