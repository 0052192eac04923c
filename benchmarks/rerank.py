"""Recall's optional reranking (`ENGRAM_RERANK=llm`) measured with a real model: the long
conversations of `benchmarks/retrieval.py`, recall's candidates for each question reordered
by the memory model through the product's own code (`nodes.recall.reranked`), against the
search's order.

The model is the only one that installs offline here: SmolLM2-135M-Instruct behind
llama-cpp-python's OpenAI-compatible server, set up as `benchmarks/local_model.py` does
(its own environment, `--venv`; a source build of 15-30 minutes on first use). A model
this small says little about what a hosted one would do; the figures show what reranking
costs per answer and that a weak or unparseable answer never loses what the search found
(the reorder lists the model's picks first and keeps the rest in the search's order).

For a sample of the answerable questions (seeded), recall's candidates (hybrid search,
time-aware, no relevance floor; 10 of them, what `ENGRAM_RERANK=llm` fetches for top-k 5)
are reranked; found@1/@3/@5 and MRR@10 are counted before and after, with the seconds per
rerank call and how many answers parsed.

    python benchmarks/rerank.py [--sample 60] [--mode auto]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

from local_model import ensure_server, llama_server, model_file, served_settings
from retrieval import DATA, Question, asked, fill, load, plain

from engram.clients import Clients, build_embeddings
from engram.memory.retrieval import KEYWORD_WEIGHT, Retrieval
from engram.memory.store import MemoryStore
from engram.memory.timeframe import time_reference
from engram.nodes.programs import RerankMemories
from engram.nodes.recall import RERANK_MIN, recall_memories, reranked
from engram.settings import Settings
from engram.state.context import EngramContext
from engram.state.contracts import MemoryRecord

CUTOFFS = (1, 3, 5)


def candidates(store: MemoryStore, question: Question) -> list[MemoryRecord]:
    """What recall hands reranking: its time-aware hybrid search, `RERANK_MIN` deep."""
    day = question.asked_at
    now = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    reference = time_reference(question.text, now)
    return recall_memories(
        store, question.user, asked(question), RERANK_MIN, reference=reference, floor=None
    )


def ranks(order: list[str], gold: tuple[str, ...]) -> float:
    """1 / the rank of the first gold memory in `order`, 0 when none is there."""
    first = next((n for n, m in enumerate(order, 1) if m in gold), None)
    return 1.0 / first if first else 0.0


async def measure(url: str, mode: str, sample: int, seed: int) -> None:
    data = load(DATA)
    answerable = [q for q in data.questions if q.gold]
    chosen = random.Random(seed).sample(answerable, min(sample, len(answerable)))
    embeddings = build_embeddings(Settings(embeddings="local"))
    with tempfile.TemporaryDirectory(prefix="engram-rerank-") as tmp:
        store, memory_ids, seconds = fill(embeddings, Path(tmp) / "store", data, plain)
        store.retrieval = Retrieval(mode="hybrid", keyword_weight=KEYWORD_WEIGHT)
        print(f"{len(data.memories)} memories loaded in {seconds:.0f} s; {len(chosen)} questions")
        settings = served_settings(url, mode, Path(tmp) / "data", rerank="llm")
        clients = Clients(settings, store=store)
        program = RerankMemories()
        before: list[list[str]] = []
        after: list[list[str]] = []
        seconds_per_call: list[float] = []
        failed = moved = 0
        try:
            for n, question in enumerate(chosen, 1):
                found = candidates(store, question)
                context = EngramContext(user_id=question.user)
                started = time.perf_counter()
                order, error = await reranked(clients, program, context, question.text, found)
                seconds_per_call.append(time.perf_counter() - started)
                failed += error is not None
                moved += [m.id for m in order] != [m.id for m in found]
                before.append([memory_ids[m.id] for m in found])
                after.append([memory_ids[m.id] for m in order])
                if n % 10 == 0:
                    print(f"  {n}/{len(chosen)} questions", flush=True)
        finally:
            store.engine.close()
    golds = [q.gold for q in chosen]
    print(f"\n{'order':<22} " + " ".join(f"found@{k:<3}" for k in CUTOFFS) + "  MRR@10")
    for name, orders in (("search (recall)", before), ("reranked by the model", after)):
        found_at = [
            sum(bool(set(g) & set(o[:k])) for g, o in zip(golds, orders, strict=True)) / len(golds)
            for k in CUTOFFS
        ]
        mrr = statistics.mean(ranks(o, g) for g, o in zip(golds, orders, strict=True))
        print(f"{name:<22} " + " ".join(f"{f:<9.2f}" for f in found_at) + f"  {mrr:.3f}")
    p50 = statistics.median(seconds_per_call)
    print(
        f"\nrerank call: p50 {p50:.2f} s, max {max(seconds_per_call):.2f} s; "
        f"{failed} of {len(chosen)} failed (kept the search's order), "
        f"{moved} changed the order; {RERANK_MIN} candidates per question"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--venv", type=Path, default=Path.home() / ".cache" / "engram-llama")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--mode", default="auto", help="ENGRAM_STRUCTURED_OUTPUT")
    parser.add_argument("--sample", type=int, default=60)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    python = ensure_server(args.venv)
    gguf = model_file(python)
    print(f"model: {gguf.name}, server: {python}")
    with llama_server(python, gguf, args.port) as url:
        asyncio.run(measure(url, args.mode, args.sample, args.seed))


if __name__ == "__main__":
    main()
