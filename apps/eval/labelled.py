"""A labelled set (Engram's JSONL with `save`, `facts` and `memories` on user turns) as
DSPy examples for the three memory programs, and the metrics that score them.

- decide_save: every labelled user turn, with the reply after it and what the user's
  memory holds before it; gold: `save`. Metric: accuracy.
- extract: every user turn labelled with `facts`; gold: those facts. Metric: fact-level
  precision/recall (F1 per example) after the extract node's own grounding rule, so a fact
  the node would reject never counts.
- maintain: every user turn with facts and `memories`; the memory before it is shown with
  small ids, the gold facts are the new facts; gold: the memory after it. Metric: the
  resulting memory (the model's operations through the maintain node's own validation,
  applied like the store applies them) against the gold memory, F1 of matched texts.

Each metric returns `dspy.Prediction(score, feedback)`: GEPA reads the feedback.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dspy

from engram.apps.eval.datasets import Conversation, Dataset, DatasetError, Turn
from engram.apps.eval.metrics import apply_planned, match_texts
from engram.nodes.extract import grounded_in_user
from engram.nodes.maintain import plan_operations
from engram.state.contracts import (
    Candidate,
    Fact,
    MemoryOp,
    MemoryRecord,
    NumberedMemory,
    ObservedFact,
)

LABELLED = Path(__file__).with_name("data") / "labelled.jsonl"
STEPS = ("decide_save", "extract", "maintain")


@dataclass(frozen=True)
class LabelledTurn:
    conversation: str
    at: datetime
    turn: Turn
    reply: str
    before: tuple[tuple[str, datetime], ...]  # the user's memory before the turn, with dates


def labelled_turns(dataset: Dataset) -> list[LabelledTurn]:
    """User turns that carry labels, in order, each with the memory before it."""
    found: list[LabelledTurn] = []
    for conversation in dataset.conversations:
        found += _turns_of(conversation)
    if not found:
        raise DatasetError(
            f"{dataset.name} has no labelled user turns (`save`, `facts`, `memories`)"
        )
    return found


def _turns_of(conversation: Conversation) -> list[LabelledTurn]:
    found: list[LabelledTurn] = []
    memory: dict[str, datetime] = {}
    pairs = list(conversation.turns())
    for index, (session, turn) in enumerate(pairs):
        if turn.speaker not in conversation.users:
            continue
        following = pairs[index + 1][1] if index + 1 < len(pairs) else None
        reply = following.text if following and following.speaker not in conversation.users else ""
        if turn.save is not None or turn.facts is not None:
            found.append(
                LabelledTurn(conversation.id, session.at, turn, reply, tuple(memory.items()))
            )
        if turn.memories is not None:
            memory = {text: memory.get(text, session.at) for text in turn.memories}
    return found


def _known(before: Sequence[tuple[str, datetime]]) -> list[NumberedMemory]:
    return [
        NumberedMemory(id=i, text=text, category="other", said=said.date())
        for i, (text, said) in enumerate(before, 1)
    ]


def decide_save_examples(turns: Sequence[LabelledTurn]) -> list[dspy.Example]:
    return [
        dspy.Example(
            known_memories=_known(t.before),
            user_message=t.turn.text,
            assistant_message=t.reply,
            save=t.turn.save,
            conversation=t.conversation,
        ).with_inputs("known_memories", "user_message", "assistant_message")
        for t in turns
        if t.turn.save is not None
    ]


def extract_examples(turns: Sequence[LabelledTurn]) -> list[dspy.Example]:
    return [
        dspy.Example(
            user_message=t.turn.text,
            assistant_context=t.reply,
            message_time=t.at,
            gold_facts=list(t.turn.facts or ()),
            conversation=t.conversation,
        ).with_inputs("user_message", "assistant_context", "message_time")
        for t in turns
        if t.turn.facts is not None
    ]


def maintain_examples(turns: Sequence[LabelledTurn]) -> list[dspy.Example]:
    return [
        dspy.Example(
            new_facts=[Fact(text=f, category="other") for f in t.turn.facts or ()],
            existing_memories=_known(t.before),
            today=t.at.date(),
            gold_memories=list(t.turn.memories or ()),
            observed_at=t.at,
            conversation=t.conversation,
        ).with_inputs("new_facts", "existing_memories", "today")
        for t in turns
        if t.turn.facts and t.turn.memories is not None
    ]


def examples(dataset: Dataset, step: str) -> list[dspy.Example]:
    turns = labelled_turns(dataset)
    if step == "decide_save":
        return decide_save_examples(turns)
    if step == "extract":
        return extract_examples(turns)
    if step == "maintain":
        return maintain_examples(turns)
    raise ValueError(f"unknown step {step!r}; one of {', '.join(STEPS)}")


# -- metrics -------------------------------------------------------------------------------


def decide_save_metric(
    gold: dspy.Example,
    pred: dspy.Prediction,
    trace: Any = None,
    pred_name: str | None = None,
    pred_trace: Any = None,
) -> dspy.Prediction:
    said = getattr(pred, "save", None)
    correct = said is gold.save
    if correct:
        feedback = f"Correct: save={gold.save}."
    elif gold.save:
        feedback = (
            "Wrong: the user states something new and lasting about themselves here "
            "(a preference, a fact of their life, a change or correction of what is known); "
            "it must be saved."
        )
    else:
        feedback = (
            "Wrong: nothing here is new and lasting about the user (small talk, a question "
            "that states nothing, something only the assistant said, or what is already "
            "known); it must not be saved."
        )
    return dspy.Prediction(score=1.0 if correct else 0.0, feedback=feedback)


def extract_metric(
    gold: dspy.Example,
    pred: dspy.Prediction,
    trace: Any = None,
    pred_name: str | None = None,
    pred_trace: Any = None,
) -> dspy.Prediction:
    facts = [f.text for f in getattr(pred, "facts", None) or [] if (f.text or "").strip()]
    kept = [f for f in facts if grounded_in_user(f, gold.user_message)]
    dropped = [f for f in facts if f not in kept]
    result = match_texts(kept, gold.gold_facts)
    notes = [f"F1 {result.f1:.2f}."]
    if result.missed:
        notes.append("Missed facts the user stated: " + "; ".join(result.missed) + ".")
    if result.spurious:
        notes.append(
            "Not facts the user stated (or not atomic, or not lasting): "
            + "; ".join(result.spurious)
            + "."
        )
    if dropped:
        notes.append(
            "Rejected as not in the user's own words (the assistant's words are never a "
            "source of facts): " + "; ".join(dropped) + "."
        )
    if not gold.gold_facts and not facts:
        notes = ["Correct: there is nothing to extract."]
    return dspy.Prediction(score=result.f1, feedback=" ".join(notes))


def maintain_result(
    gold: dspy.Example, operations: Sequence[MemoryOp]
) -> tuple[list[str], list[str]]:
    """The memory after the operations (through the maintain node's validation), and the
    reasons operations were rejected."""
    now = datetime.now(UTC)
    candidates = [
        Candidate(
            ref=m.id,
            memory=MemoryRecord(
                id=f"memory-{m.id}",
                user_id="labelled",
                text=m.text,
                category=m.category,
                status="active",
                created_at=now,
                updated_at=now,
                observed_at=datetime.combine(m.said, datetime.min.time(), UTC),
                lineage_id=f"memory-{m.id}",
            ),
        )
        for m in gold.existing_memories
    ]
    facts = [
        ObservedFact(text=f.text, category=f.category, observed_at=gold.observed_at)
        for f in gold.new_facts
    ]
    planned, rejected = plan_operations(list(operations), candidates, facts)
    after = apply_planned({m.id: m.text for m in gold.existing_memories}, planned)
    return after, [f"{r.op} {r.ref}: {r.reason}" for r in rejected]


def maintain_metric(
    gold: dspy.Example,
    pred: dspy.Prediction,
    trace: Any = None,
    pred_name: str | None = None,
    pred_trace: Any = None,
) -> dspy.Prediction:
    after, rejected = maintain_result(gold, list(getattr(pred, "operations", None) or []))
    result = match_texts(after, gold.gold_memories)
    notes = [f"F1 {result.f1:.2f} of the resulting memory against the expected one."]
    if result.missed:
        notes.append("Expected in memory but missing: " + "; ".join(result.missed) + ".")
    if result.spurious:
        notes.append(
            "In memory but not expected (outdated, duplicated or merged wrongly): "
            + "; ".join(result.spurious)
            + "."
        )
    if rejected:
        notes.append("Rejected operations: " + "; ".join(rejected) + ".")
    return dspy.Prediction(score=result.f1, feedback=" ".join(notes))


METRICS = {
    "decide_save": decide_save_metric,
    "extract": extract_metric,
    "maintain": maintain_metric,
}
