"""A labelled set (Engram's JSONL with `save`, `facts`, `memories` and `profile` on user
turns) as DSPy examples for the four memory programs, and the metrics that score them.

- decide_save: every labelled user turn, with the reply after it and what the user's
  memory holds before it; gold: `save`. Metric: accuracy.
- extract: every user turn labelled with `facts`; gold: those facts, with their dates
  (`valid_from`/`valid_until`; none for a lasting fact). Metric: fact-level
  precision/recall (F1 per example) after the extract node's own grounding rule, so a fact
  the node would reject never counts; a fact whose dates differ from the gold ones (a
  missing date, a day off, an end given to a lasting fact) counts half (`match_dated`).
- maintain: every user turn with facts and `memories`; the memory before it is shown with
  small ids and dates, the gold facts are the new facts (with their dates); gold: the
  memory after it, with dates. Metric: the resulting memory (the model's operations
  through the maintain node's own validation, applied like the store applies them) against
  the gold memory, F1 of matched texts with the same date rule: a move that closes the old
  home (UPDATE with its own text and `valid_until`) keeps it, with its end.
- profile: every user turn labelled with `profile`; the user's memory after it is shown
  with small ids, the profile of the previous such turn as the current profile (each line
  citing the memory it rests on now: a memory since updated is cited as its new version,
  as the update_profile node shows it; a deleted one is cited by nothing); gold: the core
  facts, plus what must stay out (`not_profile`, every memory the labels show was
  superseded or deleted before the turn, and every memory past its `valid_until` then,
  which the profile program is not shown). Metric: `profile_metric`.

Each metric returns `dspy.Prediction(score, feedback)`: GEPA reads the feedback.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dspy

from engram.apps.eval.datasets import (
    LASTING,
    Conversation,
    Dataset,
    DatasetError,
    Turn,
    Validity,
)
from engram.apps.eval.metrics import (
    MATCH_THRESHOLD,
    DatedMatch,
    apply_planned_dated,
    describe_validity,
    match_dated,
    text_similarity,
)
from engram.memory.profile import fit
from engram.nodes.extract import grounded_in_user
from engram.nodes.maintain import carries, plan_operations
from engram.settings import Settings
from engram.state.contracts import (
    Candidate,
    CitedLine,
    Fact,
    MemoryOp,
    MemoryRecord,
    NumberedMemory,
    ObservedFact,
    ProfileLine,
)

LABELLED = Path(__file__).with_name("data") / "labelled.jsonl"
STEPS = ("decide_save", "extract", "maintain", "profile")
PROFILE_CHARS: int = Settings.model_fields["profile_chars"].default  # ENGRAM_PROFILE_CHARS


Known = tuple[str, datetime, Validity]  # a memory's text, when it was said, when it holds


@dataclass(frozen=True)
class LabelledTurn:
    conversation: str
    at: datetime
    turn: Turn
    reply: str
    before: tuple[Known, ...]  # the user's memory before the turn, with dates
    after: tuple[Known, ...] = ()  # and after it
    gone: tuple[str, ...] = ()  # memories the labels show superseded or deleted by then
    # The previous `profile`-labelled turn's profile, each line with the memory text it
    # rests on now (None: that memory was deleted); empty for the first.
    current_profile: tuple[tuple[str, str | None], ...] = ()


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
    dates: dict[str, Validity] = {}  # the labelled memory's dates, by text
    ever: dict[str, None] = {}  # every memory text the labels held, in order
    profile: list[tuple[str, str | None]] = []  # the last profile label, line -> its memory
    pairs = list(conversation.turns())
    for index, (session, turn) in enumerate(pairs):
        if turn.speaker not in conversation.users:
            continue
        following = pairs[index + 1][1] if index + 1 < len(pairs) else None
        reply = following.text if following and following.speaker not in conversation.users else ""
        before = _with_dates(memory, dates)
        if turn.memories is not None:
            replaced = _successors(memory, turn.memories)
            profile = [(line, replaced.get(m) if m else None) for line, m in profile]
            memory = {text: memory.get(text, session.at) for text in turn.memories}
            dates = dict(turn.dated_memories())
            ever.update(dict.fromkeys(turn.memories))
        if turn.save is not None or turn.facts is not None or turn.profile is not None:
            found.append(
                LabelledTurn(
                    conversation.id,
                    session.at,
                    turn,
                    reply,
                    before,
                    _with_dates(memory, dates),
                    tuple(t for t in ever if t not in memory),
                    tuple(profile),
                )
            )
        if turn.profile is not None:
            profile = [(line, _resting_on(line, memory)) for line in turn.profile]
    return found


def _with_dates(memory: dict[str, datetime], dates: dict[str, Validity]) -> tuple[Known, ...]:
    return tuple((text, said, dates.get(text, LASTING)) for text, said in memory.items())


def _successors(before: dict[str, datetime], after: Sequence[str]) -> dict[str, str | None]:
    """Each memory of `before` as it is in `after`: itself, else the most similar memory
    new in `after` (its update), else None (deleted)."""
    new = [t for t in after if t not in before]
    found: dict[str, str | None] = {}
    for text in before:
        if text in after:
            found[text] = text
            continue
        best = max(new, key=lambda t: text_similarity(text, t), default=None)
        found[text] = best if best is not None and text_similarity(text, best) > 0 else None
    return found


def _resting_on(line: str, memory: dict[str, datetime]) -> str | None:
    """The memory a gold profile line states (the most similar one)."""
    best = max(memory, key=lambda t: text_similarity(line, t), default=None)
    return best if best is not None and text_similarity(line, best) > 0 else None


def _known(before: Sequence[Known]) -> list[NumberedMemory]:
    return [
        NumberedMemory(
            id=i,
            text=text,
            category="other",
            said=said.date(),
            valid_from=validity.valid_from,
            valid_until=validity.valid_until,
        )
        for i, (text, said, validity) in enumerate(before, 1)
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
            gold_dates=[validity for _, validity in t.turn.dated_facts()],
            conversation=t.conversation,
        ).with_inputs("user_message", "assistant_context", "message_time")
        for t in turns
        if t.turn.facts is not None
    ]


def maintain_examples(turns: Sequence[LabelledTurn]) -> list[dspy.Example]:
    return [
        dspy.Example(
            new_facts=[
                Fact(
                    text=f,
                    category="other",
                    valid_from=validity.valid_from,
                    valid_until=validity.valid_until,
                )
                for f, validity in t.turn.dated_facts()
            ],
            existing_memories=_known(t.before),
            today=t.at.date(),
            gold_memories=list(t.turn.memories or ()),
            gold_memory_dates=[validity for _, validity in t.turn.dated_memories()],
            observed_at=t.at,
            conversation=t.conversation,
        ).with_inputs("new_facts", "existing_memories", "today")
        for t in turns
        if t.turn.facts and t.turn.memories is not None
    ]


def profile_examples(turns: Sequence[LabelledTurn]) -> list[dspy.Example]:
    found: list[dspy.Example] = []
    for t in turns:
        if t.turn.profile is None:
            continue
        # What is past its valid_until is not shown to the profile program (update_profile's
        # rule), and a line stating it is outdated.
        today = t.at.date()
        past = [text for text, _, validity in t.after if validity.is_past(today)]
        memories = _known([m for m in t.after if m[0] not in past])
        ids = {m.text: m.id for m in memories}
        current = [
            CitedLine(text=line, memory_ids=[ids[rests]] if rests in ids else [])
            for line, rests in t.current_profile
        ]
        found.append(
            dspy.Example(
                current_profile=current,
                memories=memories,
                max_chars=PROFILE_CHARS,
                gold_profile=list(t.turn.profile),
                leave_out=list(t.turn.not_profile or ()),
                outdated=[*t.gone, *past],
                conversation=t.conversation,
            ).with_inputs("current_profile", "memories", "max_chars")
        )
    return found


def examples(dataset: Dataset, step: str) -> list[dspy.Example]:
    turns = labelled_turns(dataset)
    if step == "decide_save":
        return decide_save_examples(turns)
    if step == "extract":
        return extract_examples(turns)
    if step == "maintain":
        return maintain_examples(turns)
    if step == "profile":
        return profile_examples(turns)
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
    given = [f for f in getattr(pred, "facts", None) or [] if (f.text or "").strip()]
    facts = [f.text for f in given]
    kept = [
        (f.text, Validity(f.valid_from, f.valid_until))
        for f in given
        if grounded_in_user(f.text, gold.user_message)
    ]
    dropped = [f for f in facts if f not in {text for text, _ in kept}]
    result = match_dated(kept, _gold_dated(gold.gold_facts, gold.get("gold_dates")))
    notes = [f"F1 {result.f1:.2f}."]
    if result.texts.missed:
        notes.append("Missed facts the user stated: " + "; ".join(result.texts.missed) + ".")
    if result.texts.spurious:
        notes.append(
            "Not facts the user stated (or not atomic, or not lasting): "
            + "; ".join(result.texts.spurious)
            + "."
        )
    if result.wrong_dates:
        notes.append(_date_notes(result, EXTRACT_DATES))
    if dropped:
        notes.append(
            "Rejected as not in the user's own words (the assistant's words are never a "
            "source of facts): " + "; ".join(dropped) + "."
        )
    if not gold.gold_facts and not facts:
        notes = ["Correct: there is nothing to extract."]
    return dspy.Prediction(score=result.f1, feedback=" ".join(notes))


def _gold_dated(
    texts: Sequence[str], dates: Sequence[Validity] | None
) -> list[tuple[str, Validity]]:
    """Gold texts with their dates (an example without dates: all lasting)."""
    dates = list(dates or ())
    return [(text, dates[i] if i < len(dates) else LASTING) for i, text in enumerate(texts)]


EXTRACT_DATES = (
    "Give valid_until only when the user says or implies an end (until Friday, an event's "
    "day, used to), on the day itself, resolved against the message time; leave both dates "
    "null for lasting facts."
)
MAINTAIN_DATES = (
    "When a new fact ends a memory (a move, a new job), UPDATE that memory with its own "
    "text and valid_until the last day it held; an ADD keeps its fact's dates; never end a "
    "memory nothing ends."
)


def _date_notes(result: DatedMatch, advice: str) -> str:
    wrong = "; ".join(
        f"{text}: {describe_validity(given)}, expected {describe_validity(gold)}"
        for text, given, gold in result.wrong_dates
    )
    return f"Wrong dates (each such fact counts half): {wrong}. {advice}"


def maintain_result(
    gold: dspy.Example, operations: Sequence[MemoryOp]
) -> tuple[list[tuple[str, Validity]], list[str]]:
    """The memory after the operations (through the maintain node's validation), with its
    dates, and the reasons operations were rejected."""
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
                valid_from=m.valid_from,
                valid_until=m.valid_until,
            ),
        )
        for m in gold.existing_memories
    ]
    facts = [
        ObservedFact(
            text=f.text,
            category=f.category,
            observed_at=gold.observed_at,
            valid_from=f.valid_from,
            valid_until=f.valid_until,
        )
        for f in gold.new_facts
    ]
    planned, rejected = plan_operations(list(operations), candidates, facts)
    existing = {
        m.id: (m.text, Validity(m.valid_from, m.valid_until)) for m in gold.existing_memories
    }
    after = apply_planned_dated(existing, planned)
    return after, [f"{r.op} {r.ref}: {r.reason}" for r in rejected]


def maintain_metric(
    gold: dspy.Example,
    pred: dspy.Prediction,
    trace: Any = None,
    pred_name: str | None = None,
    pred_trace: Any = None,
) -> dspy.Prediction:
    after, rejected = maintain_result(gold, list(getattr(pred, "operations", None) or []))
    result = match_dated(after, _gold_dated(gold.gold_memories, gold.get("gold_memory_dates")))
    notes = [f"F1 {result.f1:.2f} of the resulting memory against the expected one."]
    if result.texts.missed:
        notes.append(
            "Expected in memory but missing (a memory a new fact ends is kept, closed with "
            "valid_until, not deleted): " + "; ".join(result.texts.missed) + "."
        )
    if result.texts.spurious:
        notes.append(
            "In memory but not expected (outdated, duplicated or merged wrongly): "
            + "; ".join(result.texts.spurious)
            + "."
        )
    if result.wrong_dates:
        notes.append(_date_notes(result, MAINTAIN_DATES))
    if rejected:
        notes.append("Rejected operations: " + "; ".join(rejected) + ".")
    return dspy.Prediction(score=result.f1, feedback=" ".join(notes))


INVENTED_PENALTY = 0.25  # per line citing an id it was not shown
OVER_PENALTY = 0.25  # for a profile longer than max_chars


@dataclass(frozen=True)
class ProfileScore:
    """How a proposed profile meets the labels (see `profile_metric`)."""

    lines: int  # non-empty lines proposed
    invented: tuple[str, ...]  # lines citing ids that were not shown (the node refuses them)
    uncited: tuple[str, ...]  # lines citing nothing (the store refuses them)
    unsupported: tuple[str, ...]  # lines their cited memories do not carry
    outdated: tuple[str, ...]  # lines stating a superseded or deleted memory
    passing: tuple[str, ...]  # lines stating a detail that belongs out of the profile
    covered: tuple[str, ...]  # gold core facts some good line carries
    missed: tuple[str, ...]  # gold core facts no good line carries
    chars: int  # the profile's size as the store counts it
    max_chars: int

    @property
    def grounding(self) -> float:
        """The share of lines that rest on shown memories which carry their words."""
        bad = len(self.invented) + len(self.uncited) + len(self.unsupported)
        return (self.lines - bad) / self.lines if self.lines else 1.0

    @property
    def precision(self) -> float:
        """The share of lines that are grounded and state nothing that belongs out."""
        bad = len(self.invented) + len(self.uncited) + len(self.unsupported)
        bad += len(self.outdated) + len(self.passing)
        return (self.lines - bad) / self.lines if self.lines else 1.0

    @property
    def coverage(self) -> float:
        expected = len(self.covered) + len(self.missed)
        return len(self.covered) / expected if expected else 1.0

    @property
    def score(self) -> float:
        """F1 of precision and coverage, less `INVENTED_PENALTY` per line with an invented
        id and `OVER_PENALTY` past max_chars, within 0..1. An empty profile scores 1.0
        only when no core fact is expected."""
        p, c = self.precision, self.coverage
        f1 = 2 * p * c / (p + c) if p + c else 0.0
        f1 -= INVENTED_PENALTY * len(self.invented)
        f1 -= OVER_PENALTY if self.chars > self.max_chars else 0.0
        return min(1.0, max(0.0, f1))


def score_profile(
    lines: Sequence[CitedLine],
    memories: Sequence[NumberedMemory],
    max_chars: int,
    gold: Sequence[str],
    leave_out: Sequence[str] = (),
    outdated: Sequence[str] = (),
) -> ProfileScore:
    """Score proposed profile lines with the project's word rules (`carries`,
    `text_similarity`, both over `memory.keywords.content_words`):

    - a line is grounded when every id it cites was shown, it cites at least one, and the
      cited memories together carry its words (`nodes.maintain.carries`);
    - a line states an outdated memory (or a passing detail) when it is at least as close
      to it as `MATCH_THRESHOLD` and closer to it than to every expected core fact;
    - a core fact is covered when a good line (grounded, stating nothing to leave out) that
      fits within max_chars, as the store keeps lines, carries it (a line may state several).
    """
    shown = {m.id: m.text for m in memories}
    texts = [line for line in lines if (line.text or "").strip()]
    invented, uncited, unsupported, stale, passing = [], [], [], [], []
    good: list[CitedLine] = []
    for line in texts:
        if any(i not in shown for i in line.memory_ids):
            invented.append(line.text)
        elif not line.memory_ids:
            uncited.append(line.text)
        elif not carries(" ".join(shown[i] for i in line.memory_ids), line.text):
            unsupported.append(line.text)
        elif _states(line.text, outdated, gold):
            stale.append(line.text)
        elif _states(line.text, leave_out, gold):
            passing.append(line.text)
        else:
            good.append(line)
    # The store keeps what fits, in order (`memory.profile.fit`); the rest is never shown.
    kept, _ = fit([ProfileLine(text=g.text, memory_ids=[]) for g in good], [], max_chars)
    kept_texts = [k.text for k in kept]
    covered = [f for f in gold if any(carries(k, f) for k in kept_texts)]
    return ProfileScore(
        lines=len(texts),
        invented=tuple(invented),
        uncited=tuple(uncited),
        unsupported=tuple(unsupported),
        outdated=tuple(stale),
        passing=tuple(passing),
        covered=tuple(covered),
        missed=tuple(f for f in gold if f not in covered),
        chars=sum(len(line.text) + 1 for line in texts),
        max_chars=max_chars,
    )


def _states(line: str, unwanted: Sequence[str], gold: Sequence[str]) -> bool:
    if not unwanted:
        return False
    closest = max(text_similarity(line, u) for u in unwanted)
    if closest < MATCH_THRESHOLD:
        return False
    return all(text_similarity(line, g) < closest for g in gold)


def profile_metric(
    gold: dspy.Example,
    pred: dspy.Prediction,
    trace: Any = None,
    pred_name: str | None = None,
    pred_trace: Any = None,
) -> dspy.Prediction:
    result = score_profile(
        list(getattr(pred, "lines", None) or []),
        gold.memories,
        gold.max_chars,
        gold.gold_profile,
        gold.leave_out,
        gold.outdated,
    )
    notes = [
        f"Score {result.score:.2f}: {len(result.covered)} of "
        f"{len(result.covered) + len(result.missed)} core facts, grounding "
        f"{result.grounding:.2f}, {result.chars} of {result.max_chars} characters."
    ]
    if result.missed:
        notes.append("Core facts missing: " + "; ".join(result.missed) + ".")
    if result.invented:
        notes.append(
            "Lines citing ids that are not among the memories (such a line is refused "
            "whole; cite only the ids shown): " + "; ".join(result.invented) + "."
        )
    if result.uncited:
        notes.append(
            "Lines citing no memory (refused; every line gives the ids it rests on): "
            + "; ".join(result.uncited)
            + "."
        )
    if result.unsupported:
        notes.append(
            "Lines that say more than the memories they cite (state only what those "
            "memories say): " + "; ".join(result.unsupported) + "."
        )
    if result.outdated:
        notes.append(
            "Lines stating what is no longer true (the memories changed it; revise or drop "
            "the line): " + "; ".join(result.outdated) + "."
        )
    if result.passing:
        notes.append(
            "Passing details or one-off events that do not belong in a profile: "
            + "; ".join(result.passing)
            + "."
        )
    if result.chars > result.max_chars:
        notes.append(
            f"Too long: {result.chars} characters for a bound of {result.max_chars}; lines "
            "past it are dropped, so put the most important first and keep lines short."
        )
    return dspy.Prediction(score=result.score, feedback=" ".join(notes))


METRICS = {
    "decide_save": decide_save_metric,
    "extract": extract_metric,
    "maintain": maintain_metric,
    "profile": profile_metric,
}
