"""Qdrant Edge against qdrant-client local mode, side by side, under Engram's store.

Measures, in one run, for each engine (`EdgeEngine` on disk; qdrant-client
local mode through `ServerEngine`, on disk up to `--local-disk-max` points
and `:memory:` above, skipped above `--local-max` because populating it takes minutes):

- bulk upsert: writing N synthetic memory versions (payload, 384-d unit vector, BM25
  keyword vector) with `engine.upsert`; building the points is not timed;
- reopen: close the store, construct the engine again and count its points (Edge's
  target: <= 1 s at 100k); the store's own open (`MemoryStore(...)`) is shown after `+`;
- query p50/p95: one filtered top-10 dense search for one user (`Where(user_id,
  status="active")`) through `engine.query`, with fixed random unit query vectors (no
  embedding). The queried user holds 10k points (all of them when N is smaller); the
  rest is spread over 99 other users; one version in ten is superseded;
- hybrid p50/p95 (Edge): the dense + keywords batch `MemoryStore.search_many` sends for
  one text (`engram.memory.retrieval.searches`, lean: the store reads the winners by id after);
- saving turn: `store.apply(user, [ADD, UPDATE])` plus one `search_many` of 3 texts with
  embeddings that return instantly, median (target on Edge: <= 15 ms at 10k memories);
- import (Edge): `engram.memory.transfer.export_jsonl` of one user's N versions with vectors,
  then `import_jsonl` into a fresh Edge store with the same vector key and embedding id,
  so no vector is re-embedded (target: <= 60 s for 100k versions; re-embedded must be 0).

Prints a table, local/Edge ratios and the targets, and plots query p95 against points to
`benchmarks/results/engine.png` (needs matplotlib).

    python benchmarks/engine.py                 # 1k / 10k / 100k, ~3 minutes
    python benchmarks/engine.py --quick         # 1k / 10k, small import, ~1 minute
    python benchmarks/engine.py --sizes 1000,50000 --local-max 50000 --import-versions 0
"""

from __future__ import annotations

import argparse
import gc
import math
import random
import statistics
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
from langchain_core.embeddings import Embeddings
from qdrant_client import QdrantClient

from engram.memory.engines.base import Engine, Point, Query, Where
from engram.memory.engines.edge import EdgeEngine
from engram.memory.engines.qdrant_server import ServerEngine
from engram.memory.keywords import document_keywords, query_keywords
from engram.memory.payload import Stored, payload
from engram.memory.retrieval import OVERFETCH, Retrieval, searches
from engram.memory.store import MemoryStore, PlannedOp
from engram.memory.transfer import export_jsonl, import_jsonl
from engram.state.contracts import MemoryRecord, Source

DIMS = 384
USER = "u0"
USER_POINTS = 10_000  # the queried user's share of each store
OTHER_USERS = 99
TOP_K = 10
BATCH = 5_000  # points built and upserted per step
COLLECTION = "engram_memories"
EMBEDDING_ID = "bench"
VECTOR_KEY = b"engram-benchmark-vector-key-0001"
RESULTS = Path(__file__).parent / "results"
MIN_SAMPLES = 5

LocalMode = Literal["disk", ":memory:", "skipped"]

_SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pu", "da", "fe", "gi", "ho"]
VOCABULARY = sorted(
    {a + b + c for a in _SYLLABLES for b in _SYLLABLES for c in _SYLLABLES[:10]}
)  # ~2k pseudo-words: keyword vectors with a realistic spread of terms


def synthetic_text(index: int, rng: random.Random) -> str:
    return f"Memory {index}: user " + " ".join(rng.sample(VOCABULARY, 8))


def unit_vectors(count: int, seed: int) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    matrix = rng.standard_normal((count, DIMS), dtype=np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    vectors: list[list[float]] = matrix.tolist()
    return vectors


class InstantEmbeddings(Embeddings):
    """Fixed pseudo-random unit vectors per text, precomputed with `preload`; counts every
    text it is asked to embed (an import that reuses vectors asks for none)."""

    def __init__(self) -> None:
        self.table: dict[str, list[float]] = {}
        self.embedded = 0

    def preload(self, texts: list[str]) -> None:
        missing = [t for t in texts if t not in self.table]
        for text, vector in zip(missing, unit_vectors(len(missing), 7), strict=True):
            self.table[text] = vector

    def _vector(self, text: str) -> list[float]:
        vector = self.table.get(text)
        if vector is None:
            vector = unit_vectors(1, zlib.crc32(text.encode()))[0]
            self.table[text] = vector
        return vector

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.embedded += len(texts)
        return [self._vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        self.embedded += 1
        return self._vector(text)


# -- synthetic stores ------------------------------------------------------------------------


def point_id(index: int, salt: int = 0) -> str:
    return str(uuid.UUID(int=(salt << 64) + index + 1))


def user_of(index: int, queried: int) -> str:
    return USER if index < queried else f"u{1 + (index - queried) % OTHER_USERS}"


def tenant_points(total: int, queried: int, start: int, count: int) -> list[Point]:
    """Points `start..start+count` of a store of `total`: the first `queried` belong to the
    queried user, one in ten is superseded."""
    at = datetime(2025, 1, 1, tzinfo=UTC)
    rng = random.Random(start)
    vectors = unit_vectors(count, start + 1)
    points = []
    for offset, vector in enumerate(vectors):
        index = start + offset
        record = MemoryRecord(
            id=point_id(index),
            user_id=user_of(index, queried),
            text=synthetic_text(index, rng),
            category="other",
            status="superseded" if index % 10 == 9 else "active",
            created_at=at + timedelta(seconds=index),
            updated_at=at + timedelta(seconds=index),
            observed_at=at,
            lineage_id=point_id(index),
            source=Source(actor="benchmark"),
        )
        points.append(point(record, vector))
    return points


def history_points(start: int, count: int) -> list[Point]:
    """One user's versions for the export: every tenth memory has an older, superseded
    version linked both ways to its active successor."""
    at = datetime(2025, 1, 1, tzinfo=UTC)
    rng = random.Random(start)
    vectors = unit_vectors(count, 10_000_000 + start)
    points = []
    for offset, vector in enumerate(vectors):
        index = start + offset
        old, successor = index % 10 == 0, index % 10 == 1
        record = MemoryRecord(
            id=point_id(index, 1),
            user_id="mover",
            text=synthetic_text(index, rng),
            category="other",
            status="superseded" if old else "active",
            created_at=at + timedelta(seconds=index),
            updated_at=at + timedelta(seconds=index),
            observed_at=at,
            lineage_id=point_id(index - 1 if successor else index, 1),
            supersedes=point_id(index - 1, 1) if successor else None,
            superseded_by=point_id(index + 1, 1) if old else None,
            source=Source(actor="benchmark"),
        )
        points.append(point(record, vector))
    return points


def point(record: MemoryRecord, vector: list[float]) -> Point:
    return Point(
        id=record.id,
        payload=payload(Stored(record)),
        dense=vector,
        keywords=document_keywords(record.text),
    )


def populate(engine: Engine, total: int, build: Callable[[int, int], list[Point]]) -> float:
    """Upsert `total` points built by `build(start, count)`; returns the upsert seconds."""
    spent = 0.0
    for start in range(0, total, BATCH):
        points = build(start, min(BATCH, total - start))
        began = time.perf_counter()
        engine.upsert(points)
        spent += time.perf_counter() - began
    return spent


# -- measuring -------------------------------------------------------------------------------


def sample(run: Callable[[int], object], runs: int, budget: float, warmup: int = 2) -> list[float]:
    """Seconds per call of `run(i)`: `runs` calls, fewer (at least MIN_SAMPLES) when they
    take longer than `budget` seconds in all."""
    for i in range(warmup):
        run(-1 - i)
    samples: list[float] = []
    began = time.perf_counter()
    while len(samples) < runs and (
        len(samples) < MIN_SAMPLES or time.perf_counter() - began < budget
    ):
        start = time.perf_counter()
        run(len(samples))
        samples.append(time.perf_counter() - start)
    return samples


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


@dataclass
class Latency:
    p50_ms: float
    p95_ms: float
    n: int

    @classmethod
    def of(cls, samples: list[float]) -> Latency:
        return cls(
            statistics.median(samples) * 1000, percentile(samples, 0.95) * 1000, len(samples)
        )

    def __str__(self) -> str:
        return f"{fmt_ms(self.p50_ms)} / {fmt_ms(self.p95_ms)}"


@dataclass
class Row:
    engine: str
    points: int
    mode: str
    upsert_s: float | None = None
    reopen_s: float | None = None
    store_open_s: float | None = None
    dense: Latency | None = None
    hybrid: Latency | None = None
    turn_ms: float | None = None
    turn_runs: int = 0


@dataclass
class Workload:
    queries: list[list[float]]
    texts: list[str]
    runs: int
    budget: float
    turn_runs: int
    embeddings: InstantEmbeddings = field(default_factory=InstantEmbeddings)


def measure_queries(engine: Engine, work: Workload, row: Row, *, hybrid: bool) -> None:
    where = Where(user_id=USER, status="active")
    keywords = [query_keywords(t) for t in work.texts]

    def dense(i: int) -> None:
        engine.query([Query(where=where, limit=TOP_K, dense=work.queries[i % len(work.queries)])])

    def both(i: int) -> None:
        j = i % len(work.queries)
        engine.query(
            searches(
                where, work.queries[j], keywords[j], (TOP_K + 2) * OVERFETCH, Retrieval(), lean=True
            )
        )

    row.dense = Latency.of(sample(dense, work.runs, work.budget))
    if hybrid:
        row.hybrid = Latency.of(sample(both, work.runs, work.budget))


def measure_turn(store: MemoryStore, work: Workload, row: Row) -> None:
    """A saving turn's store work without model calls: apply ADD + UPDATE, then the
    retrieve_similar step's search of 3 facts."""
    targets = [point_id(i) for i in range(min(USER_POINTS, row.points)) if i % 10 != 9]
    random.Random(3).shuffle(targets)
    runs = work.turn_runs + 2  # the warm-up runs too
    adds = [f"User turn {row.engine} {row.points} {i}: likes {VOCABULARY[i]}" for i in range(runs)]
    updates = [
        f"User turn {row.engine} {row.points} {i}: moved {VOCABULARY[-i - 1]}" for i in range(runs)
    ]
    facts = [
        [f"fact {i} {j} {VOCABULARY[(i * 3 + j) % 2000]}" for j in range(3)] for i in range(runs)
    ]
    work.embeddings.preload(adds + updates + [t for f in facts for t in f])

    def turn(i: int) -> None:
        i %= runs
        report = store.apply(
            USER,
            [
                PlannedOp("ADD", text=adds[i]),
                PlannedOp("UPDATE", target_id=targets[i], text=updates[i]),
            ],
        )
        assert not report.rejected and len(report.applied) == 2, report
        store.search_many(USER, facts[i], k=3)

    samples = sample(turn, work.turn_runs, work.budget)
    row.turn_ms, row.turn_runs = statistics.median(samples) * 1000, len(samples)


def open_store(engine: Engine, work: Workload) -> MemoryStore:
    return MemoryStore(
        engine,
        work.embeddings,
        collection=COLLECTION,
        embedding_id=EMBEDDING_ID,
        dims=DIMS,
        vector_key=VECTOR_KEY,
    )


def reopen(row: Row, make_engine: Callable[[], Engine], work: Workload) -> MemoryStore:
    began = time.perf_counter()
    engine = make_engine()
    counted = engine.count(None)
    row.reopen_s = time.perf_counter() - began
    assert counted == row.points, (counted, row.points)
    began = time.perf_counter()
    store = open_store(engine, work)
    row.store_open_s = time.perf_counter() - began
    return store


def run_edge(size: int, root: Path, work: Workload, *, turn: bool) -> Row:
    row = Row("Edge", size, "disk")
    path = root / f"edge-{size}"
    store = open_store(EdgeEngine(path), work)
    queried = min(USER_POINTS, size)
    row.upsert_s = populate(store.engine, size, lambda s, c: tenant_points(size, queried, s, c))
    store.engine.close()
    store = reopen(row, lambda: EdgeEngine(path), work)
    measure_queries(store.engine, work, row, hybrid=True)
    if turn:
        measure_turn(store, work, row)
    store.engine.close()
    return row


def run_local(size: int, mode: LocalMode, root: Path, work: Workload, *, turn: bool) -> Row:
    row = Row("local", size, mode)
    if mode == "skipped":
        return row
    path = str(root / f"local-{size}") if mode == "disk" else ":memory:"

    def engine() -> Engine:
        return ServerEngine(
            QdrantClient(path=path) if mode == "disk" else QdrantClient(path),
            COLLECTION,
            work.embeddings,
        )

    store = open_store(engine(), work)
    queried = min(USER_POINTS, size)
    row.upsert_s = populate(store.engine, size, lambda s, c: tenant_points(size, queried, s, c))
    if mode == "disk":
        store.engine.close()
        store = reopen(row, engine, work)
    measure_queries(store.engine, work, row, hybrid=False)
    if turn:
        measure_turn(store, work, row)
    store.engine.close()
    return row


@dataclass
class ImportResult:
    versions: int
    upsert_s: float
    export_s: float
    import_s: float
    imported: int
    skipped: int
    re_embedded: int
    embed_calls: int
    file_mb: float


def run_import(versions: int, root: Path, work: Workload) -> ImportResult:
    source = open_store(EdgeEngine(root / "export-source"), work)
    upsert_s = populate(source.engine, versions, history_points)
    file = root / "export.jsonl"
    began = time.perf_counter()
    with file.open("w") as out:
        written = export_jsonl(source, "mover", out)
    export_s = time.perf_counter() - began
    assert written == versions, (written, versions)
    source.engine.close()
    gc.collect()
    embeddings = InstantEmbeddings()
    target = MemoryStore(
        EdgeEngine(root / "import-target"),
        embeddings,
        embedding_id=EMBEDDING_ID,
        dims=DIMS,
        vector_key=VECTOR_KEY,
    )
    began = time.perf_counter()
    with file.open() as lines:
        report = import_jsonl(target, lines)
    import_s = time.perf_counter() - began
    stored = target.count("mover")
    target.engine.close()
    assert stored == report.imported, (stored, report)
    return ImportResult(
        versions,
        upsert_s,
        export_s,
        import_s,
        report.imported,
        report.skipped,
        report.re_embedded,
        embeddings.embedded,
        file.stat().st_size / 1e6,
    )


# -- report ----------------------------------------------------------------------------------


def fmt_ms(value: float) -> str:
    return f"{value:.3f}" if value < 1 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def fmt_s(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def ratio(local: float | None, edge: float | None) -> str:
    if local is None or edge is None or edge <= 0:
        return "—"
    return f"x{local / edge:,.0f}" if local / edge >= 10 else f"x{local / edge:.1f}"


def cell(latency: Latency | None) -> str:
    return "—" if latency is None else str(latency)


def p50(latency: Latency | None) -> float | None:
    return None if latency is None else latency.p50_ms


def p95(latency: Latency | None) -> float | None:
    return None if latency is None else latency.p95_ms


def print_table(rows: list[Row]) -> None:
    header = (
        f"{'engine':<7} {'points':>7} {'mode':<8} {'upsert s':>8} {'reopen s (+store)':>17} "
        f"{'dense p50 / p95 ms':>19} {'hybrid p50 / p95 ms':>20} {'turn ms (runs)':>15}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        if r.mode == "skipped":
            print(f"{r.engine:<7} {r.points:>7,} {'skipped':<8} (above --local-max)")
            continue
        reopen = "—" if r.reopen_s is None else f"{r.reopen_s:.2f} (+{r.store_open_s or 0:.2f})"
        turn = "—" if r.turn_ms is None else f"{fmt_ms(r.turn_ms)} ({r.turn_runs})"
        print(
            f"{r.engine:<7} {r.points:>7,} {r.mode:<8} {fmt_s(r.upsert_s):>8} {reopen:>17} "
            f"{cell(r.dense):>19} {cell(r.hybrid):>20} {turn:>15}"
        )


def print_ratios(rows: list[Row]) -> None:
    print("\nlocal / Edge (how many times slower local mode is):")
    edges = {r.points: r for r in rows if r.engine == "Edge"}
    for local in (r for r in rows if r.engine == "local" and r.mode != "skipped"):
        edge = edges[local.points]
        print(
            f"  {local.points:>7,} points ({local.mode}): "
            f"dense p50 {ratio(p50(local.dense), p50(edge.dense))}, "
            f"p95 {ratio(p95(local.dense), p95(edge.dense))}; "
            f"upsert {ratio(local.upsert_s, edge.upsert_s)}; "
            f"reopen {ratio(local.reopen_s, edge.reopen_s)}; "
            f"turn {ratio(local.turn_ms, edge.turn_ms)}"
        )


def print_targets(rows: list[Row], imported: ImportResult | None) -> None:
    def verdict(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    print("\ntargets (Edge):")
    largest = max((r for r in rows if r.engine == "Edge"), key=lambda r: r.points)
    if largest.reopen_s is not None:
        print(
            f"  reopen at {largest.points:,} points: {largest.reopen_s:.2f} s "
            f"(+{largest.store_open_s or 0:.2f} s store open) <= 1 s: "
            f"{verdict(largest.reopen_s <= 1)}"
        )
    for r in rows:
        if r.engine == "Edge" and r.turn_ms is not None and r.points >= USER_POINTS:
            print(
                f"  saving turn at {USER_POINTS:,} memories for the user ({r.points:,} points): "
                f"{r.turn_ms:.1f} ms <= 15 ms: {verdict(r.turn_ms <= 15)}"
            )
    if imported is not None:
        print(
            f"  import of {imported.versions:,} versions with vectors: "
            f"{imported.import_s:.1f} s <= 60 s: {verdict(imported.import_s <= 60)}; "
            f"re-embedded {imported.re_embedded} (embedding calls {imported.embed_calls}): "
            f"{verdict(imported.re_embedded == 0 and imported.embed_calls == 0)}"
        )
        print(
            f"  (export {imported.export_s:.1f} s, {imported.file_mb:,.0f} MB; "
            f"imported {imported.imported:,}, skipped {imported.skipped:,}; "
            f"source upsert {imported.upsert_s:.1f} s)"
        )


def plot(rows: list[Row]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("\nplot skipped: it needs `pip install matplotlib`")
        return
    figure, axes = plt.subplots(figsize=(7, 4.5))
    local_modes = ", ".join(
        sorted({r.mode for r in rows if r.engine == "local" and r.mode != "skipped"})
    )
    series: list[tuple[str, str, Callable[[Row], Latency | None]]] = [
        ("Edge", "Qdrant Edge, dense", lambda r: r.dense),
        ("Edge", "Qdrant Edge, hybrid batch", lambda r: r.hybrid),
        ("local", f"qdrant-client local ({local_modes}), dense", lambda r: r.dense),
    ]
    for engine, label, pick in series:
        points = [(r.points, lat.p95_ms) for r in rows if r.engine == engine and (lat := pick(r))]
        if points:
            axes.plot(*zip(*points, strict=True), marker="o", label=label)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("points in the collection")
    axes.set_ylabel("filtered top-10 query p95 (ms)")
    axes.set_title(f"Filtered query p95; the user holds min({USER_POINTS:,}, points); {DIMS}-d")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    out = RESULTS / "engine.png"
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    print(f"\nplot: {out}")


# -- main ------------------------------------------------------------------------------------


def local_mode(size: int, local_max: int, disk_max: int) -> LocalMode:
    if size > local_max:
        return "skipped"
    return "disk" if size <= disk_max else ":memory:"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", help="total points per store, e.g. 1000,10000,100000")
    parser.add_argument("--local-max", type=int, help="largest local-mode store (default 20000)")
    parser.add_argument(
        "--local-disk-max", type=int, help="largest on-disk local-mode store (default 10000)"
    )
    parser.add_argument("--queries", type=int, help="queries per measurement (default 200)")
    parser.add_argument("--turns", type=int, help="saving turns per engine (default 30)")
    parser.add_argument("--import-versions", type=int, help="0 skips it (default 100000)")
    parser.add_argument(
        "--budget", type=float, help="seconds per measurement before stopping early (default 20)"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes and fewer samples")
    args = parser.parse_args()

    def pick(value: int | float | None, full: int | float, quick: int | float) -> float:
        return float(value if value is not None else quick if args.quick else full)

    sizes = (
        [int(s) for s in args.sizes.split(",")]
        if args.sizes
        else [1_000, 10_000]
        if args.quick
        else [1_000, 10_000, 100_000]
    )
    local_max = int(pick(args.local_max, 20_000, 20_000))
    disk_max = int(pick(args.local_disk_max, 10_000, 1_000))
    versions = int(pick(args.import_versions, 100_000, 10_000))
    work = Workload(
        queries=unit_vectors(256, 42),
        texts=[synthetic_text(i, random.Random(i)) for i in range(256)],
        runs=int(pick(args.queries, 200, 50)),
        budget=pick(args.budget, 20, 5),
        turn_runs=int(pick(args.turns, 30, 10)),
    )
    print(
        f"{DIMS}-d unit vectors, filtered top-{TOP_K} for one user (status=active) holding "
        f"min({USER_POINTS:,}, points); the rest over {OTHER_USERS} other users. "
        f"Query embedding excluded.\nlocal = qdrant-client {_client_version()} local mode "
        f"(on disk up to {disk_max:,} points, :memory: up to {local_max:,}, skipped above); "
        f"Edge = qdrant-edge-py {_edge_version()} on disk.\n"
        f"{work.runs} queries / {work.turn_runs} turns per measurement, fewer (>= "
        f"{MIN_SAMPLES}) past {work.budget:.0f} s.\n",
        flush=True,
    )
    rows: list[Row] = []
    imported: ImportResult | None = None
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="engram-engine-bench-") as tmp:
        root = Path(tmp)
        for size in sizes:
            for runner in ("Edge", "local"):
                row = (
                    run_edge(size, root, work, turn=True)
                    if runner == "Edge"
                    else run_local(
                        size, local_mode(size, local_max, disk_max), root, work, turn=True
                    )
                )
                rows.append(row)
                elapsed = time.perf_counter() - began
                print(f"  done: {row.engine} at {size:,} ({row.mode}), {elapsed:.0f} s", flush=True)
                gc.collect()
        if versions:
            imported = run_import(versions, root, work)
            print(
                f"  done: import of {versions:,}, {time.perf_counter() - began:.0f} s", flush=True
            )
    print()
    print_table(rows)
    print_ratios(rows)
    print_targets(rows, imported)
    plot(rows)
    print(f"\ntotal {time.perf_counter() - began:.0f} s")


def _client_version() -> str:
    from importlib.metadata import version

    return version("qdrant-client")


def _edge_version() -> str:
    from importlib.metadata import version

    return version("qdrant-edge-py")


if __name__ == "__main__":
    main()
