"""`engram eval retrieval`: how well recall finds the gold evidence, with no LLM at all.

A dataset's turns (or its observations: LoCoMo's per-session facts, or the labelled facts
of Engram's format) are loaded as memories, one store user per conversation, each memory
dated when it was said and remembering the turns it covers. Every question with evidence
is then asked through recall's own search (`engram.nodes.recall.recall_memories`, time-aware,
without the relevance floor so the whole ranking counts), once per retrieval mode on the
same store, and scored by recall@k: the share of the question's evidence turns covered by
the top k memories. This compares embedding backends and modes offline and cheaply.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from engram.apps.eval.datasets import Conversation, Dataset, DatasetError
from engram.apps.eval.metrics import mean, recall_at, reciprocal_rank
from engram.memory.retrieval import Retrieval, RetrievalMode
from engram.memory.store import MemoryStore, PlannedOp
from engram.memory.timeframe import time_reference
from engram.nodes.recall import recall_memories
from engram.state.contracts import Source

Units = Literal["turns", "observations"]
CUTOFFS = (1, 3, 5, 10, 20)


@dataclass(frozen=True)
class RetrievalOptions:
    units: Units = "turns"
    modes: tuple[RetrievalMode, ...] = ("dense", "hybrid")
    cutoffs: tuple[int, ...] = CUTOFFS
    time_aware: bool = True


@dataclass(frozen=True)
class Unit:
    text: str
    covers: tuple[str, ...]  # turn ids
    at: datetime


def units_of(conversation: Conversation, units: Units) -> list[Unit]:
    """What becomes a memory. Turns of a conversation between people carry the speaker's
    name; in a chatbot conversation only the user's turns are memories."""
    if units == "observations":
        return [Unit(o.text, o.evidence, o.at) for o in conversation.observations]
    named = len(conversation.users) > 1
    return [
        Unit(f"{turn.speaker}: {turn.text}" if named else turn.text, (turn.id,), session.at)
        for session, turn in conversation.turns()
        if named or turn.speaker in conversation.users
    ]


def store_user(conversation: Conversation) -> str:
    return f"retrieval:{conversation.id}"


def load_units(
    dataset: Dataset,
    store: MemoryStore,
    units: Units,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, tuple[str, ...]]:
    """Write every conversation's units; returns memory id -> the turns it covers (an exact
    duplicate text is one memory covering the turns of all its copies)."""
    covers: dict[str, set[str]] = {}
    conversations = dataset.conversations
    for done, conversation in enumerate(conversations, 1):
        chosen = units_of(conversation, units)
        if not chosen:
            raise DatasetError(
                f"conversation {conversation.id!r} has no {units} to load"
                + ("; LoCoMo's observations, or labelled facts" if units == "observations" else "")
            )
        planned = [
            PlannedOp(
                "ADD",
                text=unit.text,
                category="eval",
                observed_at=unit.at,
                source=Source(message_ids=list(unit.covers), actor="eval"),
            )
            for unit in chosen
        ]
        report = store.apply(store_user(conversation), planned)
        if report.rejected:
            raise DatasetError(
                f"conversation {conversation.id!r}: {report.rejected[0].reason} "
                f"({report.rejected[0].text!r})"
            )
        for unit, applied in zip(chosen, report.applied, strict=True):
            assert applied.memory_id is not None
            covers.setdefault(applied.memory_id, set()).update(unit.covers)
        if on_progress:
            on_progress(done, len(conversations))
    return {memory_id: tuple(sorted(turns)) for memory_id, turns in covers.items()}


def evaluate_retrieval(
    dataset: Dataset,
    store: MemoryStore,
    options: RetrievalOptions,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Load, then rank every question's memories in every mode; the results document."""
    covers = load_units(
        dataset,
        store,
        options.units,
        lambda done, total: on_progress("loading", done, total) if on_progress else None,
    )
    asked = [(c, q) for c in dataset.conversations for q in c.questions if q.evidence]
    depth = max(options.cutoffs)
    rows: dict[str, dict[str, Any]] = {
        q.id: {
            "conversation": c.id,
            "id": q.id,
            "category": q.category,
            "question": q.question,
            "evidence": list(q.evidence),
        }
        for c, q in asked
    }
    original = store.retrieval
    try:
        for mode in options.modes:
            store.retrieval = Retrieval(mode=mode, keyword_weight=original.keyword_weight)
            for done, (conversation, question) in enumerate(asked, 1):
                reference = (
                    time_reference(question.question, question.at) if options.time_aware else None
                )
                found = recall_memories(
                    store,
                    store_user(conversation),
                    question.question,
                    depth,
                    reference=reference,
                    floor=None,
                )
                ranked = [covers.get(m.id, ()) for m in found]
                rows[question.id][mode] = {
                    "recall": {
                        str(k): recall_at(question.evidence, ranked, k) for k in options.cutoffs
                    },
                    "rr": reciprocal_rank(question.evidence, ranked),
                    "top": [m.text for m in found[:3]],
                }
                if on_progress:
                    on_progress(mode, done, len(asked))
    finally:
        store.retrieval = original
    questions = list(rows.values())
    return {
        "kind": "retrieval",
        "created": datetime.now(UTC).isoformat(),
        "run": {
            "dataset": {
                "name": dataset.name,
                "source": dataset.source,
                "fingerprint": dataset.fingerprint,
            },
            "units": options.units,
            "memories": len(covers),
            "embeddings": store.embedding_id,
            "modes": list(options.modes),
            "cutoffs": list(options.cutoffs),
            "time_aware": options.time_aware,
        },
        "summary": {mode: _summary(questions, mode, options.cutoffs) for mode in options.modes},
        "questions": questions,
    }


def _summary(rows: Sequence[dict[str, Any]], mode: str, cutoffs: Sequence[int]) -> dict[str, Any]:
    def scores(chosen: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return {
            "n": len(chosen),
            "recall": {str(k): mean(r[mode]["recall"][str(k)] for r in chosen) for k in cutoffs},
            "mrr": mean(r[mode]["rr"] for r in chosen),
        }

    categories = list(dict.fromkeys(r["category"] for r in rows))
    return {
        **scores(rows),
        "by_category": {c: scores([r for r in rows if r["category"] == c]) for c in categories},
    }
