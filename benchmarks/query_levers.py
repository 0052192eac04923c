"""Levers on the query alone, measured on the long conversations of `benchmarks/retrieval.py`
with dense similarity computed exactly in numpy (the same all-MiniLM-L6-v2 vectors the
store would hold; no store, so each variant costs one batch of query embeddings):

  pseudo-relevance feedback  the query vector plus `a` x the mean of its top `n` hits'
                             vectors, searched again (Rocchio, no LLM)
  first person -> User       "I", "my", "me" as the stored facts word them ("User ...")
  first person -> name       the same with the user's name, as this set's memories word them
  content words              the query's content words only (`memory.keywords.content_words`)

Cells: found@5/@10/@20 over the answerable questions, MRR@20, and found@10 per kind.

    python benchmarks/query_levers.py
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

from retrieval import DATA, KINDS, Dataset, Question, Run, asked, load, score

from engram.clients import build_embeddings
from engram.memory.keywords import content_words
from engram.settings import Settings

Scorer = Callable[[np.ndarray, np.ndarray], np.ndarray]


def dense(query: np.ndarray, memories: np.ndarray) -> np.ndarray:
    return memories @ query


def feedback(n: int, a: float) -> Scorer:
    def scored(query: np.ndarray, memories: np.ndarray) -> np.ndarray:
        top = np.argsort(-(memories @ query))[:n]
        moved = query + a * memories[top].mean(axis=0)
        return memories @ (moved / np.linalg.norm(moved))

    return scored


def first_person_as(question: Question, who: str) -> str:
    text = re.sub(r"\b(I'm|I am)\b", f"{who} is", question.text)
    text = re.sub(r"\bI've\b", f"{who} has", text)
    text = re.sub(r"\b(I|me|myself)\b", who, text)
    return re.sub(r"\b(my|mine)\b", f"{who}'s", text, flags=re.IGNORECASE)


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None).parse_args()
    data = load(DATA)
    embeddings = build_embeddings(Settings(embeddings="local"))
    vectors = np.asarray(embeddings.embed_documents([m.text for m in data.memories]))
    rows: dict[str, list[int]] = {}
    for i, memory in enumerate(data.memories):
        rows.setdefault(memory.user, []).append(i)
    # This set's memories name their user ("Maria adopted ..."): the most common first word.
    names = {
        user: Counter(data.memories[i].text.split()[0] for i in mine).most_common(1)[0][0]
        for user, mine in rows.items()
    }

    def measure(name: str, queries: list[str], scorer: Scorer = dense) -> None:
        asked_vectors = np.asarray(embeddings.embed_documents(queries))
        run = Run(name)
        for query, question in zip(asked_vectors, data.questions, strict=True):
            mine = rows[question.user]
            order = np.argsort(-scorer(query, vectors[mine]), kind="stable")[:20]
            run.ranked[question.id] = [data.memories[mine[j]].id for j in order]
        report(run, data)

    plain = [asked(q) for q in data.questions]
    print(f"{len(data.memories)} memories, {sum(bool(q.gold) for q in data.questions)} answerable")
    measure("dense", plain)
    for n in (2, 3, 5, 8):
        for a in (0.2, 0.4, 0.7, 1.0):
            measure(f"feedback n={n} a={a:g}", plain, feedback(n, a))
    measure("first person -> User", [first_person_as(q, "User") for q in data.questions])
    measure("first person -> name", [first_person_as(q, names[q.user]) for q in data.questions])
    measure(
        "content words",
        [" ".join(sorted(content_words(q.text))) or q.text for q in data.questions],
    )


def report(run: Run, data: Dataset) -> None:
    every = score(run, data.questions)
    found = "/".join(f"{every.found[k]:.3f}" for k in (5, 10, 20))
    kinds = " ".join(
        f"{kind} {score(run, [q for q in data.questions if q.kind == kind]).found[10]:.2f}"
        for kind in KINDS
    )
    print(f"{run.name:<24} {found} MRR {every.mrr:.3f} | found@10 {kinds}", flush=True)


if __name__ == "__main__":
    main()
