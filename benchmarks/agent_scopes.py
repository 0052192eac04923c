"""What agent scopes cost a search, side by side in one run, on Qdrant Edge.

The store of `benchmarks/engine.py` (N synthetic versions, 10k for the queried user, the rest
over 99 other users, one in ten superseded), where the queried user's memories are 70%
shared (written before agents: no `agent_id` key at all) and 10% each the own memories of
agents a1, a2 and a3. For each filter, one filtered top-10 dense search and the hybrid
(dense + keywords) batch the store sends, through `engine.query`, scores only (`lean`, as
the store searches):

- no scope: the query every search made before agents (`Where(user, status)`);
- shared: what a caller without an agent sees;
- a1: what agent a1 sees (the shared memories and its own).

It also checks what each scope returned: never another agent's point.

    python benchmarks/agent_scopes.py                # 100k points, ~1 minute
    python benchmarks/agent_scopes.py --points 10000
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # engine.py's workload, shared with this script

from engine import (
    OVERFETCH,
    TOP_K,
    USER,
    USER_POINTS,
    Latency,
    Workload,
    populate,
    sample,
    synthetic_text,
    tenant_points,
    unit_vectors,
)

from engram.memory.engines.base import SHARED, Agents, Point, Query, Where
from engram.memory.engines.edge import EdgeEngine
from engram.memory.keywords import query_keywords
from engram.memory.payload import stored_from_point
from engram.memory.retrieval import Retrieval, searches

AGENTS = ("a1", "a2", "a3")


def agent_of(index: int) -> str | None:
    """The scope of the queried user's point `index`: 70% shared, 10% per agent."""
    share = index % 10
    return AGENTS[share - 7] if share >= 7 else None


def scoped_points(total: int, queried: int, start: int, count: int) -> list[Point]:
    points = tenant_points(total, queried, start, count)
    for offset, point in enumerate(points):
        index = start + offset
        metadata = point.payload["metadata"]
        agent = agent_of(index) if index < queried else None
        if agent is None:
            metadata.pop("agent_id", None)  # as an earlier version wrote it
        else:
            metadata["agent_id"] = agent
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    rng = random.Random(7)
    texts = [synthetic_text(i, rng) for i in range(50)]
    work = Workload(unit_vectors(50, 99), texts, args.runs, budget=20.0, turn_runs=0)
    keywords = [query_keywords(t) for t in work.texts]
    scopes: dict[str, Agents | None] = {"no scope": None, "shared": SHARED, "a1": Agents("a1")}
    with tempfile.TemporaryDirectory() as root:
        engine = EdgeEngine(Path(root) / "edge")
        engine.create(384)
        queried = min(USER_POINTS, args.points)
        populate(engine, args.points, lambda s, c: scoped_points(args.points, queried, s, c))
        print(f"Qdrant Edge, {args.points:,} points, {queried:,} of the queried user's")
        print(f"{'scope':<10} {'dense p50 / p95 ms':>20} {'hybrid p50 / p95 ms':>22}  leaks")
        baseline: dict[str, Latency] = {}
        for name, agents in scopes.items():
            where = Where(user_id=USER, status="active", agents=agents)

            def dense(i: int, where: Where = where, lean: bool = True) -> list[list[Point]]:
                vector = work.queries[i % len(work.queries)]
                return engine.query([Query(where=where, limit=TOP_K, dense=vector, lean=lean)])

            def hybrid(i: int, where: Where = where, lean: bool = True) -> list[list[Point]]:
                j = i % len(work.queries)
                limit = (TOP_K + 2) * OVERFETCH
                return engine.query(
                    searches(where, work.queries[j], keywords[j], limit, Retrieval(), lean=lean)
                )

            leaks = 0
            for i in range(len(work.queries)):
                for hits in [*dense(i, lean=False), *hybrid(i, lean=False)]:
                    seen = {stored_from_point(p).record.agent_id for p in hits}
                    leaks += sum(1 for a in seen if agents is not None and not agents.admits(a))
            rows = {
                "dense": Latency.of(sample(dense, work.runs, work.budget)),
                "hybrid": Latency.of(sample(hybrid, work.runs, work.budget)),
            }
            baseline = baseline or rows
            ratio = rows["dense"].p50_ms / baseline["dense"].p50_ms
            print(
                f"{name:<10} {rows['dense']!s:>20} {rows['hybrid']!s:>22}  {leaks}"
                f"   (dense p50 x{ratio:.2f} of no scope)"
            )
        engine.close()


if __name__ == "__main__":
    main()
