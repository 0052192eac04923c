"""Retrieval over long multi-session conversations: keywords, dense and hybrid search side by
side, per question kind, and levers on what is embedded and what is asked.

The data (`benchmarks/data/longmem.jsonl`, written for this project by
`benchmarks/data/make_longmem.py`, deterministic) holds ten users' conversations, 15-30 dated
sessions each over seven to nine months, the per-session observations a memory step would
keep from them (150-300 per user, so a user's memories outnumber a search's candidates), and
about 50 questions per user: single-hop, multi-hop (two or more observations), temporal
(when, which first, "in March", "last month"), open-domain (an inference: "would I enjoy a
hiking trip?") and unanswerable (never said). Every observation goes through the real
`MemoryStore.apply` (Qdrant Edge, the local all-MiniLM-L6-v2 embeddings, every user in one
collection) with its session's date as `observed_at` and its category.

A question is found at k when one of its gold observations is among the top k of
`MemoryStore.search(k=20)`; for questions with several gold observations, "all" asks for
every one of them in the top k. MRR@20 is 1 / rank of the first gold one (0 past 20). For
unanswerable questions, AUC is the chance that an answerable question's top-1 score beats an
unanswerable one's (1.0: a relevance floor could tell them apart; 0.5: chance). The
answerable questions are also split by wording: those that share a content word with a gold
memory, and paraphrases that share none (where keywords cannot help).

Methods: keywords alone (the engine's BM25 query; `MemoryStore` has no keyword-only mode),
dense (`Retrieval(mode="dense")`), hybrid at keyword weights 0.05 (the product's), 0.025,
0.075, 0.1, 0.2 and 0.3, and the chat graph's recall (`nodes.recall.recall_memories`: the
product's hybrid search, time-aware, without its relevance floor). Levers, each against the
product's hybrid search, changing only the text the benchmark stores or asks:
  +date      the observation's date first in the stored (and embedded) text: "2026-03-14: ..."
  +date (words)  the same as "14 March 2026: ...", words a question may use ("in March")
  +category  its category first: "pets: ..."
  +previous  the user's previous chat message before the question, in the query

    python benchmarks/retrieval.py [--sample 100] [--embedding-model NAME_OR_FOLDER] [--no-levers]

`--embedding-model` compares another local sentence-transformers model (its own dimension);
`--no-levers` skips the stores of the stored-text levers. Loads in about a minute on 2 cores
(one store per stored-text variant); prints figures only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from langchain_core.embeddings import Embeddings

from engram.clients import build_embeddings
from engram.memory.engines.base import Query, Where
from engram.memory.engines.edge import EdgeEngine
from engram.memory.keywords import content_words, query_keywords
from engram.memory.retrieval import KEYWORD_WEIGHT, Retrieval
from engram.memory.store import MemoryStore, PlannedOp
from engram.memory.timeframe import time_reference
from engram.nodes.recall import recall_memories
from engram.settings import Settings
from engram.state.contracts import Source

DATA = Path(__file__).with_name("data") / "longmem.jsonl"
K = 20
CUTOFFS = (5, 10, 20)
KINDS = ("single", "multi", "temporal", "open")
WEIGHTS = tuple(dict.fromkeys((KEYWORD_WEIGHT, 0.025, 0.075, 0.1, 0.2, 0.3)))
MONTHS = "January February March April May June July August September October November December"


@dataclass(frozen=True)
class Memory:
    user: str
    id: str
    day: date
    category: str
    text: str


@dataclass(frozen=True)
class Question:
    user: str
    id: str
    kind: str
    text: str
    gold: tuple[str, ...]  # memory ids; empty when the user never said it
    previous: str
    previous_related: bool
    asked_at: date


@dataclass
class Dataset:
    memories: list[Memory] = field(default_factory=list)
    questions: list[Question] = field(default_factory=list)
    sessions: int = 0


@dataclass
class Run:
    """One method's results: per question, the ranked memory ids and the top-1 score."""

    name: str
    ranked: dict[str, list[str]] = field(default_factory=dict)
    top: dict[str, float] = field(default_factory=dict)
    times: list[float] = field(default_factory=list)  # seconds per search


def load(path: Path) -> Dataset:
    data = Dataset()
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row["kind"] == "session":
            data.sessions += 1
        elif row["kind"] == "memory":
            day = date.fromisoformat(row["date"])
            data.memories.append(Memory(row["user"], row["id"], day, row["category"], row["text"]))
        elif row["kind"] == "question":
            data.questions.append(
                Question(
                    row["user"],
                    row["id"],
                    row["type"],
                    row["text"],
                    tuple(row["gold"]),
                    row["previous"],
                    row["previous_related"],
                    date.fromisoformat(row["asked_at"]),
                )
            )
    return data


# -- stored text and queries ------------------------------------------------------------


def plain(memory: Memory) -> str:
    return memory.text


def dated(memory: Memory) -> str:
    return f"{memory.day.isoformat()}: {memory.text}"


def dated_words(memory: Memory) -> str:
    month = MONTHS.split()[memory.day.month - 1]
    return f"{memory.day.day} {month} {memory.day.year}: {memory.text}"


def categorized(memory: Memory) -> str:
    return f"{memory.category}: {memory.text}"


def asked(question: Question) -> str:
    return question.text


def with_previous(question: Question) -> str:
    return f"{question.previous} {question.text}"


# -- the store ---------------------------------------------------------------------------


def fill(
    embeddings: Embeddings, path: Path, data: Dataset, text: Callable[[Memory], str]
) -> tuple[MemoryStore, dict[str, str], float]:
    """A store holding every user's memories, as `text` words them; returns it, point id ->
    memory id, and the seconds loading took."""
    started = time.perf_counter()
    dims = len(embeddings.embed_query("dims"))
    store = MemoryStore(EdgeEngine(path), embeddings, dims=dims, embedding_id=f"local:{dims}")
    memory_ids: dict[str, str] = {}
    users = list(dict.fromkeys(m.user for m in data.memories))
    for user in users:
        mine = [m for m in data.memories if m.user == user]
        ops = [
            PlannedOp(
                "ADD",
                text=text(m),
                category=m.category,
                observed_at=datetime(m.day.year, m.day.month, m.day.day, 12, tzinfo=UTC),
                source=Source(actor="benchmark"),
            )
            for m in mine
        ]
        report = store.apply(user, ops)
        if report.rejected or len(report.applied) != len(mine):
            raise RuntimeError(f"{user}: rejected {report.rejected}")
        for memory, applied in zip(mine, report.applied, strict=True):
            if applied.memory_id is None or applied.result != "added":
                raise RuntimeError(f"{memory.id} was not added: {applied.result}")
            memory_ids[applied.memory_id] = memory.id
    return store, memory_ids, time.perf_counter() - started


def search_run(
    name: str,
    store: MemoryStore,
    memory_ids: dict[str, str],
    data: Dataset,
    retrieval: Retrieval,
    query: Callable[[Question], str] = asked,
) -> Run:
    """Every question through `MemoryStore.search(k=20)`, timed one by one."""
    store.retrieval = retrieval
    run = Run(name)
    for question in data.questions:
        started = time.perf_counter()
        found = store.search(question.user, query(question), K)
        run.times.append(time.perf_counter() - started)
        run.ranked[question.id] = [memory_ids[r.id] for r in found]
        run.top[question.id] = (found[0].score or 0.0) if found else 0.0
    return run


def recall_run(store: MemoryStore, memory_ids: dict[str, str], data: Dataset) -> Run:
    """The chat graph's recall (`nodes.recall.recall_memories`) without its relevance floor:
    hybrid search, and a question that refers to a time ("in July", "last month") narrows
    to or boosts what was said then, resolved against the day it is asked."""
    store.retrieval = Retrieval(mode="hybrid", keyword_weight=KEYWORD_WEIGHT)
    run = Run("recall (time-aware)")
    for question in data.questions:
        day = question.asked_at
        now = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
        started = time.perf_counter()
        reference = time_reference(question.text, now)
        found = recall_memories(
            store, question.user, asked(question), K, reference=reference, floor=None
        )
        run.times.append(time.perf_counter() - started)
        run.ranked[question.id] = [memory_ids[r.id] for r in found]
        run.top[question.id] = (found[0].score or 0.0) if found else 0.0
    return run


def keyword_run(store: MemoryStore, memory_ids: dict[str, str], data: Dataset) -> Run:
    """BM25 alone: the engine's keyword search, as the hybrid search sends it (the time is
    that query and encoding the text; no embedding)."""
    run = Run("keywords (BM25)")
    for question in data.questions:
        started = time.perf_counter()
        where = Where(user_id=question.user, status="active")
        hits = store.engine.query(
            [Query(where=where, limit=K, keywords=query_keywords(question.text), lean=True)]
        )[0]
        run.times.append(time.perf_counter() - started)
        run.ranked[question.id] = [memory_ids[p.id] for p in hits]
        run.top[question.id] = (hits[0].score or 0.0) if hits else 0.0
    return run


# -- metrics -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Scores:
    found: dict[int, float]  # any gold in the top k
    every: dict[int, float]  # all gold in the top k (questions with several gold)
    mrr: float
    count: int
    several: int  # questions with more than one gold memory


def score(run: Run, questions: Sequence[Question]) -> Scores:
    found = dict.fromkeys(CUTOFFS, 0.0)
    every = dict.fromkeys(CUTOFFS, 0.0)
    mrr = 0.0
    several = 0
    answerable = [q for q in questions if q.gold]
    for question in answerable:
        ranked = run.ranked[question.id]
        gold = set(question.gold)
        for k in CUTOFFS:
            found[k] += bool(gold & set(ranked[:k]))
            if len(gold) > 1:
                every[k] += gold <= set(ranked[:k])
        several += len(gold) > 1
        first = next((n for n, m in enumerate(ranked, 1) if m in gold), None)
        mrr += 1.0 / first if first else 0.0
    n = len(answerable) or 1
    return Scores(
        {k: v / n for k, v in found.items()},
        {k: v / (several or 1) for k, v in every.items()},
        mrr / n,
        len(answerable),
        several,
    )


def auc(run: Run, questions: Sequence[Question]) -> float:
    """The chance that an answerable question's top-1 score beats an unanswerable one's."""
    yes = [run.top[q.id] for q in questions if q.gold]
    no = [run.top[q.id] for q in questions if not q.gold]
    if not yes or not no:
        return float("nan")
    wins = sum((a > b) + 0.5 * (a == b) for a in yes for b in no)
    return wins / (len(yes) * len(no))


def first_rank(run: Run, question: Question) -> float:
    ranked = run.ranked[question.id]
    first = next((n for n, m in enumerate(ranked, 1) if m in question.gold), None)
    return 1.0 / first if first else 0.0


def versus(run: Run, base: Run, questions: Sequence[Question]) -> str:
    """Answerable questions whose first gold memory ranks higher / lower than in `base`."""
    better = worse = 0
    for question in questions:
        if question.gold:
            mine, theirs = first_rank(run, question), first_rank(base, question)
            better += mine > theirs
            worse += mine < theirs
    return f"+{better}/-{worse}"


def cell(scores: Scores) -> str:
    found = "/".join(f"{scores.found[k]:.2f}".lstrip("0") for k in CUTOFFS)
    return f"{found}/{scores.mrr:.2f}".replace("/0.", "/.")


def every_cell(scores: Scores) -> str:
    return "/".join(f"{scores.every[k]:.2f}".lstrip("0") for k in CUTOFFS)


def millis(times: Sequence[float]) -> tuple[float, float]:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1000, p95 * 1000


def table(runs: Sequence[Run], base: Run, questions: Sequence[Question]) -> None:
    kinds = {kind: [q for q in questions if q.kind == kind] for kind in KINDS}
    counts = {kind: len(qs) for kind, qs in kinds.items()}
    overall = score(base, questions)
    widths = (22, 20, 16, 8, 8, 12, 14)
    head = ["method", *(f"{kind} ({counts[kind]})" for kind in KINDS)]
    head += [f"answerable ({overall.count})", f"all gold ({overall.several})"]
    head += ["unans AUC", f"vs w={KEYWORD_WEIGHT:g}", "ms p50/p95"]
    print(
        f"{head[0]:<{widths[0]}}"
        + "".join(f"{h:>{widths[1]}}" for h in head[1:7])
        + f"{head[7]:>{widths[3] + 2}}{head[8]:>{widths[4] + 2}}{head[9]:>{widths[5]}}"
    )
    for run in runs:
        cells = [cell(score(run, qs)) for qs in kinds.values()]
        cells.append(cell(score(run, questions)))
        cells.append(every_cell(score(run, questions)))
        p50, p95 = millis(run.times)
        line = f"{run.name:<{widths[0]}}" + "".join(f"{c:>{widths[1]}}" for c in cells)
        line += f"{auc(run, questions):>{widths[3] + 2}.2f}"
        line += f"{versus(run, base, questions):>{widths[4] + 2}}"
        line += f"{f'{p50:.1f}/{p95:.1f}':>{widths[5]}}"
        print(line)


def previous_split(runs: Sequence[Run], questions: Sequence[Question]) -> None:
    related = [q for q in questions if q.gold and q.previous_related]
    unrelated = [q for q in questions if q.gold and not q.previous_related]
    for run in runs:
        a, b = score(run, related), score(run, unrelated)
        print(
            f"  {run.name:<20} previous message related ({a.count}): {cell(a)}   "
            f"unrelated ({b.count}): {cell(b)}"
        )


def wording_split(runs: Sequence[Run], data: Dataset) -> None:
    """Answerable questions that share a content word with a gold memory (a name, a title)
    against paraphrases that share none, where keywords cannot help."""
    texts = {m.id: m.text for m in data.memories}

    def shares_a_word(question: Question) -> bool:
        asked_words = content_words(question.text)
        return any(asked_words & content_words(texts[gold]) for gold in question.gold)

    lexical = [q for q in data.questions if q.gold and shares_a_word(q)]
    paraphrase = [q for q in data.questions if q.gold and not shares_a_word(q)]
    for run in runs:
        a, b = score(run, lexical), score(run, paraphrase)
        print(f"  {run.name:<20} shared word ({a.count}): {cell(a)}   none ({b.count}): {cell(b)}")


def consistency(store: MemoryStore, data: Dataset, sample: int, retrieval: Retrieval) -> str:
    """Whether `search(k=5)` is the start of `search(k=20)` (the product says it is)."""
    store.retrieval = retrieval
    step = max(1, len(data.questions) // sample)
    chosen = data.questions[::step][:sample]
    same = 0
    for question in chosen:
        five = [r.id for r in store.search(question.user, question.text, 5)]
        twenty = [r.id for r in store.search(question.user, question.text, 20)]
        same += five == twenty[:5]
    return f"{same}/{len(chosen)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument(
        "--sample", type=int, default=100, help="questions for the k=5 vs k=20 check"
    )
    parser.add_argument(
        "--embedding-model",
        help="a local sentence-transformers model (name or folder) instead of the default",
    )
    parser.add_argument(
        "--no-levers", action="store_true", help="skip the stores that change the stored text"
    )
    args = parser.parse_args()
    data = load(args.data)
    embeddings = build_embeddings(
        Settings(embeddings="local", embedding_model=args.embedding_model)
    )
    users = len({m.user for m in data.memories})
    per_user = len(data.memories) / (users or 1)
    print(
        f"{users} users, {data.sessions} sessions, {len(data.memories)} memories "
        f"({per_user:.0f} per user), {len(data.questions)} questions "
        f"({sum(not q.gold for q in data.questions)} unanswerable); all users in one collection"
    )
    hybrid = Retrieval(mode="hybrid", keyword_weight=KEYWORD_WEIGHT)
    base_name = f"hybrid w={KEYWORD_WEIGHT:g}"
    runs: list[Run] = []
    checks: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        store, ids, seconds = fill(embeddings, Path(tmp) / "plain", data, plain)
        print(f"loaded in {seconds:.1f} s")
        try:
            runs.append(keyword_run(store, ids, data))
            runs.append(search_run("dense", store, ids, data, Retrieval(mode="dense")))
            for weight in WEIGHTS:
                retrieval = Retrieval(mode="hybrid", keyword_weight=weight)
                runs.append(search_run(f"hybrid w={weight:g}", store, ids, data, retrieval))
            base = next(r for r in runs if r.name == base_name)
            for name, retrieval in (("hybrid", hybrid), ("dense", Retrieval(mode="dense"))):
                checks.append(f"{name} {consistency(store, data, args.sample, retrieval)}")
            previous = search_run("+previous", store, ids, data, hybrid, with_previous)
            runs.append(recall_run(store, ids, data))
        finally:
            store.engine.close()
        levers = [("+date", dated), ("+date (words)", dated_words), ("+category", categorized)]
        for name, text in [] if args.no_levers else levers:
            store, ids, seconds = fill(embeddings, Path(tmp) / name, data, text)
            print(f"loaded {name} in {seconds:.1f} s")
            try:
                runs.append(search_run(name, store, ids, data, hybrid))
            finally:
                store.engine.close()
        runs.append(previous)
    print(
        "\ncells: found@5/found@10/found@20/MRR@20 (a gold memory in the top k); all gold: "
        "every gold memory in the top 5/10/20, questions with several; unans AUC: answerable "
        f"top-1 score above an unanswerable one's; vs {base_name}: questions whose first gold "
        f"ranks higher/lower than there; ms: per search (store.search with k=20, embedding "
        f"the query; keywords: the engine's BM25 query alone); levers (+...) are {base_name}\n"
    )
    table(runs, base, data.questions)
    print("\nby wording: questions sharing a content word with a gold memory, or none:")
    wording_split(runs[:3] + [r for r in runs if r.name.startswith("recall")], data)
    print("\nprevious message in the query, by whether it was about the same thing:")
    previous_split([base, previous], data.questions)
    print(f"\nsearch(k=5) is the first 5 of search(k=20): {', '.join(checks)}")


if __name__ == "__main__":
    main()
