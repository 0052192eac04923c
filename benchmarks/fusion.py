"""Retrieval quality of the memory store: which fusion of dense and keyword search to use.

Loads a synthetic set of users and their memories (`benchmarks/data/fusion.jsonl`,
written for this project) into a real `MemoryStore` with the local all-MiniLM-L6-v2
embeddings, every user in one collection (the per-user filter is real), then asks each
user's questions and measures, over the questions that have an answer:

- recall@1, recall@3, recall@k: the share of a question's gold memories in the top 1/3/k
  (capped: a question with two gold memories counts fully at @1 when either is first);
- MRR@k: 1 / rank of the first gold memory in the top k, else 0;

for dense search alone, the product's weighted sum (cosine + weight x keyword score /
best keyword score of the query, `engram.memory.retrieval.fuse`) at several weights, reciprocal
rank fusion (RRF, computed here from the same two engine result lists) and keyword (BM25)
search alone. The searches fetch as many candidates as `MemoryStore.search` does.
Questions are split by whether they share a keyword with a gold memory ("lexical") or not
("paraphrase"). For the best score-based method it then compares the top-1 score of
answerable and unanswerable questions (about things the user never said) and suggests a
relevance floor (`min_score`): the highest one that costs at most `--max-recall-loss` of
recall@k.

    python benchmarks/fusion.py [--engine edge|server|both] [--k 5]

Runs offline in well under a minute; prints figures only (nothing is asserted).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from langchain_core.embeddings import Embeddings
from qdrant_client import QdrantClient

from engram.clients import build_embeddings
from engram.memory.engines.base import Engine, Point, Query, Where
from engram.memory.engines.edge import EdgeEngine
from engram.memory.engines.qdrant_server import ServerEngine
from engram.memory.keywords import document_keywords, query_keywords
from engram.memory.retrieval import (
    KEYWORD_WEIGHT,
    OVERFETCH,
    Retrieval,
    fuse,
    keyword_scores,
    searches,
)
from engram.memory.store import MemoryStore, PlannedOp
from engram.settings import Settings
from engram.state.contracts import Source

DATA = Path(__file__).with_name("data") / "fusion.jsonl"
EMBEDDING_ID = "local:all-MiniLM-L6-v2"
DIMS = 384

Ranking = list[tuple[str, float]]  # (point id, score), best first


@dataclass
class Question:
    user: str
    id: str
    text: str
    gold: list[str]  # dataset memory ids; empty when the user never said it
    lexical: bool = False  # shares a keyword (BM25 token) with a gold memory


@dataclass
class Dataset:
    memories: dict[str, dict[str, str]] = field(default_factory=dict)  # user -> id -> text
    questions: list[Question] = field(default_factory=list)


@dataclass
class Hits:
    """One question's engine result lists (as `engram.memory.retrieval.searches` asks them), and
    the ids of its gold memories."""

    question: Question
    dense: list[Point]
    keywords: list[Point]
    rescored: list[Point]  # the keyword hits, scored by dense similarity
    scored: list[Point]  # the dense hits the keyword search missed, scored by keywords
    gold: set[str]  # point ids


@dataclass
class Method:
    name: str
    rank: Callable[[Hits], Ranking]
    score_based: bool = True  # its scores are absolute, so a floor on them means something


@dataclass(frozen=True)
class Scores:
    recall: dict[int, float]
    mrr: float
    count: int


def load(path: Path) -> Dataset:
    data = Dataset()
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if row["kind"] == "memory":
            data.memories.setdefault(row["user"], {})[row["id"]] = row["text"]
        else:
            data.questions.append(Question(row["user"], row["id"], row["text"], row["gold"]))
    for question in data.questions:
        asked = set(query_keywords(question.text).indices)
        question.lexical = any(
            asked & set(document_keywords(data.memories[question.user][g]).indices)
            for g in question.gold
        )
    return data


def make_engine(kind: str, embeddings: Embeddings, path: Path) -> Engine:
    if kind == "edge":
        return EdgeEngine(path / "edge")
    return ServerEngine(QdrantClient(":memory:"), "engram_memories", embeddings)


def fill(store: MemoryStore, data: Dataset) -> dict[str, str]:
    """Add every user's memories through the store; returns dataset id -> point id."""
    point_ids: dict[str, str] = {}
    for user, memories in data.memories.items():
        ops = [
            PlannedOp("ADD", text=text, source=Source(actor="benchmark"))
            for text in memories.values()
        ]
        report = store.apply(user, ops)
        if report.rejected or len(report.applied) != len(memories):
            raise RuntimeError(f"{user}: rejected {report.rejected}")
        for memory_id, applied in zip(memories, report.applied, strict=True):
            if applied.memory_id is None:
                raise RuntimeError(f"{memory_id} was not stored")
            point_ids[memory_id] = applied.memory_id
    return point_ids


def search_all(store: MemoryStore, data: Dataset, point_ids: dict[str, str], k: int) -> list[Hits]:
    """The searches per question (dense, keywords, and each rescored by the other), as
    `MemoryStore.search(k=k)` first sends them."""
    vectors = store.embeddings.embed_documents([q.text for q in data.questions])
    limit = (k + 2) * OVERFETCH  # `MemoryStore.search` first ranks k + 2 from this many
    plans = [
        searches(
            Where(user_id=question.user, status="active"),
            vector,
            query_keywords(question.text),
            limit,
            Retrieval(mode="hybrid"),
        )
        for question, vector in zip(data.questions, vectors, strict=True)
    ]
    results = iter(store.engine.query([q for plan in plans for q in plan]))
    found = []
    for question, plan in zip(data.questions, plans, strict=True):
        lists = [next(results) for _ in plan]
        dense, *keyword_results = lists
        keywords, rescored = keyword_results or ([], [])
        scoring = keyword_scores(plan[0].where, query_keywords(question.text), lists, limit)
        scored = store.engine.query([scoring])[0] if scoring else []
        gold = {point_ids[g] for g in question.gold}
        found.append(Hits(question, dense, keywords, rescored, scored, gold))
    return found


# -- methods ---------------------------------------------------------------------------


def dense_only(hits: Hits) -> Ranking:
    return [(p.id, p.score or 0.0) for p in hits.dense]


def keyword_only(hits: Hits) -> Ranking:
    return [(p.id, p.score or 0.0) for p in hits.keywords]


def weighted(weight: float) -> Callable[[Hits], Ranking]:
    """The product's fusion (`engram.memory.retrieval.fuse`), over all candidates."""
    retrieval = Retrieval(mode="hybrid", keyword_weight=weight)

    def rank(hits: Hits) -> Ranking:
        results = [hits.dense, hits.keywords, hits.rescored]
        pool = len({p.id for p in [*hits.dense, *hits.keywords]})
        fused = fuse(results, pool, len(hits.dense), retrieval, hits.scored)
        return [(p.id, score) for p, score in fused.ranked]

    return rank


def rrf(constant: int) -> Callable[[Hits], Ranking]:
    """Reciprocal rank fusion: sum of 1 / (constant + rank) over both lists."""

    def rank(hits: Hits) -> Ranking:
        scores: dict[str, float] = defaultdict(float)
        for results in (hits.dense, hits.keywords):
            for position, point in enumerate(results, 1):
                scores[point.id] += 1.0 / (constant + position)
        order = {p.id: i for i, p in enumerate([*hits.dense, *hits.keywords])}
        return sorted(scores.items(), key=lambda item: (-item[1], order[item[0]]))

    return rank


# -- metrics ---------------------------------------------------------------------------


def evaluate(
    rankings: Sequence[tuple[Hits, Ranking]], cutoffs: Sequence[int], floor: float | None = None
) -> Scores:
    k = max(cutoffs)
    recall = dict.fromkeys(cutoffs, 0.0)
    mrr = 0.0
    answerable = [(h, r) for h, r in rankings if h.gold]
    for hits, ranking in answerable:
        ids = [i for i, s in ranking if floor is None or s >= floor][:k]
        for cutoff in cutoffs:
            found = len(hits.gold & set(ids[:cutoff]))
            recall[cutoff] += found / min(cutoff, len(hits.gold))
        first = next((n for n, i in enumerate(ids, 1) if i in hits.gold), None)
        mrr += 1.0 / first if first else 0.0
    n = len(answerable) or 1
    return Scores({c: v / n for c, v in recall.items()}, mrr / n, len(answerable))


def first_ranks(rows: Sequence[tuple[Hits, Ranking]], k: int) -> list[int | None]:
    """Per answerable question, the rank of its first gold memory in the top k."""
    return [
        next((n for n, (i, _) in enumerate(r[:k], 1) if i in h.gold), None)
        for h, r in rows
        if h.gold
    ]


def versus(
    rows: Sequence[tuple[Hits, Ranking]], base: Sequence[tuple[Hits, Ranking]], k: int
) -> tuple[int, int]:
    """How many answerable questions rank their first gold memory higher / lower."""
    better = worse = 0
    for mine, theirs in zip(first_ranks(rows, k), first_ranks(base, k), strict=True):
        a, b = 1.0 / mine if mine else 0.0, 1.0 / theirs if theirs else 0.0
        better += a > b
        worse += a < b
    return better, worse


def top1(rankings: Sequence[tuple[Hits, Ranking]], answerable: bool) -> list[float]:
    return [r[0][1] for h, r in rankings if bool(h.gold) == answerable and r]


def percentiles(values: Sequence[float]) -> str:
    if not values:
        return "(none)"
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    parts = [f"{name} {at(q):.3f}" for name, q in PERCENTILES]
    return f"n={len(values):3d}  " + "  ".join(parts)


PERCENTILES = [("min", 0.0), ("p10", 0.1), ("p25", 0.25), ("p50", 0.5), ("p90", 0.9)]
PERCENTILES += [("max", 1.0)]


def kept(rows: Sequence[tuple[Hits, Ranking]], floor: float, k: int) -> float:
    """Mean results returned per answerable question with the floor."""
    chosen = [r for h, r in rows if h.gold]
    return sum(len([s for _, s in r[:k] if s >= floor]) for r in chosen) / (len(chosen) or 1)


def empty_share(rankings: Sequence[tuple[Hits, Ranking]], floor: float, answerable: bool) -> float:
    chosen = [r for h, r in rankings if bool(h.gold) == answerable]
    empty = sum(1 for r in chosen if not r or r[0][1] < floor)
    return empty / (len(chosen) or 1)


def suggest_floor(
    rankings: Sequence[tuple[Hits, Ranking]], cutoffs: Sequence[int], max_loss: float
) -> float:
    """The highest floor (on a 0.01 grid) that loses at most `max_loss` of recall@k."""
    k = max(cutoffs)
    base = evaluate(rankings, cutoffs).recall[k]
    best = 0.0
    for step in range(0, 201):
        floor = step / 100
        if evaluate(rankings, cutoffs, floor).recall[k] >= base - max_loss - 1e-9:
            best = floor
    return best


# -- report ----------------------------------------------------------------------------


def table(
    methods: Sequence[Method],
    ranked: dict[str, list[tuple[Hits, Ranking]]],
    cutoffs: Sequence[int],
) -> dict[str, Scores]:
    k = max(cutoffs)
    lexical = [h for h, _ in ranked[methods[0].name] if h.gold and h.question.lexical]
    paraphrase = [h for h, _ in ranked[methods[0].name] if h.gold and not h.question.lexical]
    head = f"{'method':<22}" + "".join(f"{'R@' + str(c):>7}" for c in cutoffs)
    head += f"{'MRR@' + str(k):>8}{'lexical':>9}{'paraphr.':>9}{'vs dense':>10}"
    print(head)
    sub = f"{'MRR@' + str(k):>9}{'MRR@' + str(k):>9}{'+/-':>10}"
    print(" " * 22 + " " * (7 * len(cutoffs) + 8) + sub)
    results: dict[str, Scores] = {}
    for method in methods:
        rows = ranked[method.name]
        scores = evaluate(rows, cutoffs)
        lex = evaluate([(h, r) for h, r in rows if h.gold and h.question.lexical], cutoffs)
        par = evaluate([(h, r) for h, r in rows if h.gold and not h.question.lexical], cutoffs)
        results[method.name] = scores
        better, worse = versus(rows, ranked[methods[0].name], k)
        line = f"{method.name:<22}" + "".join(f"{scores.recall[c]:7.3f}" for c in cutoffs)
        line += f"{scores.mrr:8.3f}{lex.mrr:9.3f}{par.mrr:9.3f}{f'+{better}/-{worse}':>10}"
        print(line)
    print(
        f"({results[methods[0].name].count} answerable questions: {len(lexical)} lexical, "
        f"{len(paraphrase)} paraphrase; one question moves R@1 by "
        f"{1 / (len(lexical) + len(paraphrase) or 1):.3f}; +/-: questions whose first gold "
        f"memory ranks higher/lower than with {methods[0].name})"
    )
    return results


def floor_report(
    name: str, rows: list[tuple[Hits, Ranking]], cutoffs: Sequence[int], max_loss: float
) -> float:
    k = max(cutoffs)
    print(f"\ntop-1 score, {name}:")
    print(f"  answerable    {percentiles(top1(rows, True))}")
    print(f"  unanswerable  {percentiles(top1(rows, False))}")
    floor = suggest_floor(rows, cutoffs, max_loss)
    base = evaluate(rows, cutoffs).recall[k]
    print(
        f"  floor   R@{k}  kept/answerable  answerable empty  unanswerable empty"
        f"   (no floor: R@{k} {base:.3f})"
    )
    for candidate in sorted({round(floor + d, 2) for d in (-0.1, -0.05, 0.0, 0.05, 0.1)}):
        if candidate < 0:
            continue
        recall = evaluate(rows, cutoffs, candidate).recall[k]
        mark = "  <- suggested" if candidate == floor else ""
        print(
            f"  {candidate:5.2f}  {recall:5.3f}  {kept(rows, candidate, k):15.2f}"
            f"  {empty_share(rows, candidate, True):16.3f}"
            f"  {empty_share(rows, candidate, False):18.3f}{mark}"
        )
    return floor


def sanity_check(store: MemoryStore, rows: list[tuple[Hits, Ranking]], k: int) -> None:
    """`MemoryStore.search` itself should rank as the benchmark's copy of its fusion, give
    the start of a deeper search for a smaller k, and rarely need to search deeper."""
    same = prefix = 0
    batches: Counter[int] = Counter()  # engine query batches per search -> searches
    calls = [0]
    query = store.engine.query

    def counted(queries: Sequence[Query]) -> list[list[Point]]:
        calls[0] += 1
        return query(queries)

    store.engine.query = counted  # type: ignore[method-assign]
    try:
        for hits, ranking in rows:
            calls[0] = 0
            found = store.search(hits.question.user, hits.question.text, k)
            batches[calls[0]] += 1
            same += [r.id for r in found] == [i for i, _ in ranking[:k]]
            deeper = store.search(hits.question.user, hits.question.text, 4 * k)
            prefix += [r.id for r in found] == [r.id for r in deeper[:k]]
    finally:
        store.engine.query = query  # type: ignore[method-assign]
    print(
        f"MemoryStore.search (keyword_weight {store.retrieval.keyword_weight}) returns the "
        f"same top {k} as the benchmark on {same}/{len(rows)} questions; its top {k} is the "
        f"start of its top {4 * k} on {prefix}/{len(rows)}; engine query batches per search "
        f"(1-2 without going deeper): "
        + ", ".join(f"{n}: {count}" for n, count in sorted(batches.items()))
    )


def leaks(hits: Sequence[Hits], point_ids: dict[str, str]) -> int:
    """Results that belong to another user than the one asking (should be none)."""
    owner = {point: memory.split("-", 1)[0] for memory, point in point_ids.items()}
    return sum(owner[p.id] != h.question.user for h in hits for p in [*h.dense, *h.keywords])


def misses(rows: list[tuple[Hits, Ranking]], data: Dataset, point_ids: dict[str, str]) -> None:
    texts = {point_ids[m]: t for memories in data.memories.values() for m, t in memories.items()}
    for hits, ranking in rows:
        if hits.gold and (not ranking or ranking[0][0] not in hits.gold):
            tag = "lexical" if hits.question.lexical else "paraphrase"
            print(f"  {hits.question.id} [{tag}] {hits.question.text}")
            for i, score in ranking[:3]:
                mark = "*" if i in hits.gold else " "
                print(f"     {mark} {score:.3f} {texts[i]}")


def run(kind: str, embeddings: Embeddings, data: Dataset, args: argparse.Namespace) -> None:
    cutoffs = sorted({1, 3, args.k})
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        store = MemoryStore(
            make_engine(kind, embeddings, Path(tmp)),
            embeddings,
            dims=DIMS,
            embedding_id=EMBEDDING_ID,
            retrieval=Retrieval(mode="hybrid", keyword_weight=args.check_weight),
        )
        try:
            point_ids = fill(store, data)
            loaded = time.perf_counter() - started
            hits = search_all(store, data, point_ids, args.k)
            methods = [Method("dense", dense_only)]
            methods += [Method(f"weighted w={w:g}", weighted(w)) for w in args.weights]
            methods += [Method(f"RRF k={args.rrf_k}", rrf(args.rrf_k), score_based=False)]
            methods += [Method("keyword (BM25)", keyword_only, score_based=False)]
            ranked = {m.name: [(h, m.rank(h)) for h in hits] for m in methods}
            users = len(data.memories)
            print(
                f"\n== engine: {kind} — {len(point_ids)} memories of {users} users in one "
                f"collection, {len(hits)} questions, loaded in {loaded:.1f} s =="
            )
            results = table(methods, ranked, cutoffs)
            print(f"results from another user than the one asking: {leaks(hits, point_ids)}")

            def key(m: Method) -> tuple[float, float]:
                return (results[m.name].mrr, results[m.name].recall[1])

            best = max(methods, key=key)
            best_scored = max((m for m in methods if m.score_based), key=key)
            print(f"\nbest overall: {best.name} (by MRR@{args.k}, then recall@1)")
            if best is not best_scored:
                print(f"best with absolute scores (can take a floor): {best_scored.name}")
            floor_report(best_scored.name, ranked[best_scored.name], cutoffs, args.max_recall_loss)
            if best_scored.name != "dense":
                floor_report("dense", ranked["dense"], cutoffs, args.max_recall_loss)
            print(f"\nrecommended: {best_scored.name}")
            check = f"weighted w={args.check_weight:g}"
            if check in ranked:
                sanity_check(store, ranked[check], args.k)
            if args.misses:
                print(f"\nquestions whose top-1 is wrong, {best_scored.name}:")
                misses(ranked[best_scored.name], data, point_ids)
        finally:
            store.engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--engine", choices=["edge", "server", "both"], default="edge")
    parser.add_argument("--k", type=int, default=5, help="results per search (default 5)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument(
        "--weights",
        type=float,
        nargs="+",
        default=[0.05, 0.1, 0.2, 0.3, 0.5],
        help="keyword weights",
    )
    parser.add_argument("--rrf-k", type=int, default=60, help="RRF constant (default 60)")
    parser.add_argument(
        "--max-recall-loss",
        type=float,
        default=0.02,
        help="recall@k the suggested floor may cost (default 0.02)",
    )
    parser.add_argument(
        "--check-weight",
        type=float,
        default=KEYWORD_WEIGHT,
        help="keyword weight of the store whose own search is compared (default: the product's)",
    )
    parser.add_argument("--misses", action="store_true", help="list questions ranked wrong")
    args = parser.parse_args()
    data = load(args.data)
    embeddings = build_embeddings(Settings(embeddings="local"))
    kinds = ["edge", "server"] if args.engine == "both" else [args.engine]
    for kind in kinds:
        run(kind, embeddings, data, args)


if __name__ == "__main__":
    main()
