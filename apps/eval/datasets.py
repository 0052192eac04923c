"""Evaluation datasets: LoCoMo's JSON as published, and Engram's own JSONL format, read into
one data model.

LoCoMo (`locomo10.json`, Maharana et al. 2024; CC BY-NC, not shipped: see docs/evaluation.md) is a
list of samples: `sample_id`; `conversation` with `speaker_a`, `speaker_b`, `session_N`
(turns `{speaker, dia_id, text}`, optionally an image's `blip_caption`) and
`session_N_date_time` ("1:56 pm on 8 May, 2023", read as UTC); `qa` items `{question,
answer, evidence: [dia_id...], category}`; and `observation` (facts per session and speaker
with the turns they come from). Categories are named as in Mem0's evaluation: 1 multi-hop,
2 temporal, 3 open-domain, 4 single-hop, 5 adversarial (no `answer`: never judged). Both
speakers are people: each gets an Engram user of their own, the other one playing the
assistant.

Engram's JSONL format (one JSON object per line, conversations in the order of their lines):

    {"type": "session", "conversation": "c1", "date": "2024-03-02T18:30:00+01:00",
     "turns": [{"id": "c1-1", "role": "user", "text": "I moved to Lyon last week."},
               {"id": "c1-2", "role": "assistant", "text": "How exciting!"}]}
    {"type": "question", "conversation": "c1", "id": "c1-q1", "question": "Where do I live?",
     "answer": "Lyon", "evidence": ["c1-1"], "category": "single-hop"}

`date` is ISO 8601 with a UTC offset (the time of every message of the session). A
question may carry its own `date` (when it is asked; default: a day after the last
session) and `answer: null` (nothing to judge: retrieval only). A user turn may carry
labels for `engram optimize`: `save` (worth remembering?), `facts` (the atomic facts it
states), `memories` (the user's whole memory after it, as texts), `profile` (the core facts
the user's profile should state after it) and `not_profile` (memories after it that are
passing details, to be left out of the profile). An item of `facts` or `memories` may be an
object instead of a text, to give the dates it holds between:
`{"text": "User is in Tokyo", "valid_until": "2025-04-11"}` (`valid_from`, `valid_until`:
ISO days, either may be left out); a text alone holds with no dates (a lasting fact). A
first line `{"type": "dataset", "name": ..., "description": ...}` is optional.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from engram.state.errors import EngramError

LOCOMO_CATEGORIES = {
    "1": "multi-hop",
    "2": "temporal",
    "3": "open-domain",
    "4": "single-hop",
    "5": "adversarial",
}
ASKED_AFTER = timedelta(days=1)  # default time of a question: a day after the last session
_DIA_ID = re.compile(r"D\d+:\d+")
_LOCOMO_TIME = re.compile(
    r"(?P<hour>\d{1,2}):(?P<minute>\d{2})\s*(?P<half>am|pm)\s+on\s+(?P<day>\d{1,2})\s+"
    r"(?P<month>[A-Za-z]+),?\s+(?P<year>\d{4})",
    re.IGNORECASE,
)


class DatasetError(EngramError, ValueError):
    """A dataset file is malformed; the message names the place."""


@dataclass(frozen=True)
class Validity:
    """When a labelled fact or memory is true (None: from when it was said; with no end)."""

    valid_from: date | None = None
    valid_until: date | None = None

    def is_past(self, today: date) -> bool:
        return self.valid_until is not None and self.valid_until < today


LASTING = Validity()


@dataclass(frozen=True)
class Turn:
    id: str
    speaker: str
    text: str
    # Labels (Engram format, user turns): for `engram optimize`.
    save: bool | None = None
    facts: tuple[str, ...] | None = None
    memories: tuple[str, ...] | None = None
    profile: tuple[str, ...] | None = None
    not_profile: tuple[str, ...] | None = None
    # The dates of `facts` and `memories`, item by item (empty: all lasting).
    fact_dates: tuple[Validity, ...] = ()
    memory_dates: tuple[Validity, ...] = ()

    def dated_facts(self) -> list[tuple[str, Validity]]:
        return _dated(self.facts, self.fact_dates)

    def dated_memories(self) -> list[tuple[str, Validity]]:
        return _dated(self.memories, self.memory_dates)


def _dated(
    texts: tuple[str, ...] | None, dates: tuple[Validity, ...]
) -> list[tuple[str, Validity]]:
    return [(text, dates[i] if i < len(dates) else LASTING) for i, text in enumerate(texts or ())]


LABELS = ("save", "facts", "memories", "profile", "not_profile")


@dataclass(frozen=True)
class Session:
    number: int
    at: datetime
    turns: tuple[Turn, ...]


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    answer: str | None  # None: nothing to judge (LoCoMo's adversarial questions)
    evidence: tuple[str, ...]  # turn ids
    category: str
    at: datetime  # when it is asked


@dataclass(frozen=True)
class Observation:
    """A gold fact of a speaker (LoCoMo's observations, or the labelled facts of a turn)."""

    id: str
    speaker: str
    text: str
    evidence: tuple[str, ...]
    at: datetime


@dataclass(frozen=True)
class Conversation:
    id: str
    users: tuple[str, ...]  # the speakers whose memories Engram keeps, one user each
    sessions: tuple[Session, ...]
    questions: tuple[Question, ...]
    observations: tuple[Observation, ...] = ()

    def turns(self) -> Iterator[tuple[Session, Turn]]:
        for session in self.sessions:
            for turn in session.turns:
                yield session, turn


@dataclass(frozen=True)
class Dataset:
    name: str
    source: str  # "locomo" or "engram"
    conversations: tuple[Conversation, ...]
    fingerprint: str  # of the file: a resumed run must read the same data
    description: str = ""
    categories: tuple[str, ...] = field(default=())

    def limited(self, conversations: int | None, questions: int | None) -> Dataset:
        """The first `conversations`, each with its first `questions` questions."""
        chosen = self.conversations[:conversations] if conversations else self.conversations
        if questions is not None:
            chosen = tuple(
                Conversation(c.id, c.users, c.sessions, c.questions[:questions], c.observations)
                for c in chosen
            )
        return Dataset(
            self.name, self.source, chosen, self.fingerprint, self.description, self.categories
        )


def load_dataset(path: Path) -> Dataset:
    """LoCoMo's JSON (`.json`) or Engram's JSONL (`.jsonl`), by the file's content."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DatasetError(f"cannot read {path}: {error}") from None
    fingerprint = hashlib.sha256(raw).hexdigest()[:16]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DatasetError(f"{path} is not UTF-8 text") from None
    if text.lstrip().startswith("["):
        try:
            samples = json.loads(text)
        except json.JSONDecodeError as error:
            raise DatasetError(f"{path} is not valid JSON: {error}") from None
        return _locomo(path, samples, fingerprint)
    return _engram(path, text.splitlines(), fingerprint)


# -- LoCoMo ---------------------------------------------------------------------------------


def _locomo(path: Path, samples: Any, fingerprint: str) -> Dataset:
    if not isinstance(samples, list) or not samples:
        raise DatasetError(f"{path}: LoCoMo's JSON is a non-empty list of samples")
    conversations = tuple(_locomo_sample(path, i, s) for i, s in enumerate(samples))
    categories = tuple(LOCOMO_CATEGORIES.values())
    return Dataset(path.stem, "locomo", conversations, fingerprint, "LoCoMo", categories)


def _locomo_sample(path: Path, index: int, sample: Any) -> Conversation:
    where = f"{path}: sample {index}"
    if not isinstance(sample, dict) or not isinstance(sample.get("conversation"), dict):
        raise DatasetError(f"{where} has no `conversation`")
    conversation = sample["conversation"]
    sample_id = str(sample.get("sample_id", index))
    speakers = (str(conversation.get("speaker_a", "")), str(conversation.get("speaker_b", "")))
    if not all(speakers):
        raise DatasetError(f"{where} ({sample_id}) needs speaker_a and speaker_b")
    numbers = sorted(
        int(match.group(1))
        for key in conversation
        if (match := re.fullmatch(r"session_(\d+)", key)) and conversation[key]
    )
    if not numbers:
        raise DatasetError(f"{where} ({sample_id}) has no sessions")
    sessions: list[Session] = []
    for number in numbers:
        when = conversation.get(f"session_{number}_date_time")
        at = parse_locomo_time(str(when), f"{where} session {number}")
        turns = tuple(
            _locomo_turn(f"{where} session {number}", turn)
            for turn in conversation[f"session_{number}"]
        )
        sessions.append(Session(number, at, turns))
    asked = sessions[-1].at + ASKED_AFTER
    questions = tuple(
        _locomo_question(f"{where} qa {i}", f"{sample_id}-q{i + 1}", item, asked)
        for i, item in enumerate(sample.get("qa") or [])
    )
    dates = {s.number: s.at for s in sessions}
    observations = tuple(_locomo_observations(sample_id, sample.get("observation"), dates))
    return Conversation(sample_id, speakers, tuple(sessions), questions, observations)


def parse_locomo_time(text: str, where: str) -> datetime:
    """LoCoMo's "1:56 pm on 8 May, 2023", as UTC (the dataset names no zone)."""
    match = _LOCOMO_TIME.search(text)
    if not match:
        raise DatasetError(f"{where}: cannot read the date {text!r}")
    hour = int(match["hour"]) % 12 + (12 if match["half"].lower() == "pm" else 0)
    try:
        day = datetime.strptime(f"{match['day']} {match['month']} {match['year']}", "%d %B %Y")
    except ValueError:
        raise DatasetError(f"{where}: cannot read the date {text!r}") from None
    return day.replace(hour=hour, minute=int(match["minute"]), tzinfo=UTC)


def _locomo_turn(where: str, turn: Any) -> Turn:
    if not isinstance(turn, dict) or not {"speaker", "dia_id", "text"} <= set(turn):
        raise DatasetError(f"{where}: a turn needs speaker, dia_id and text")
    text = str(turn["text"])
    if turn.get("blip_caption"):  # the image a speaker shared, as LoCoMo's own baselines read it
        text = f"{text} [shares an image: {turn['blip_caption']}]"
    return Turn(id=str(turn["dia_id"]), speaker=str(turn["speaker"]), text=text)


def _locomo_question(where: str, question_id: str, item: Any, asked: datetime) -> Question:
    if not isinstance(item, dict) or "question" not in item:
        raise DatasetError(f"{where}: a qa item needs a question")
    category = str(item.get("category", ""))
    answer = item.get("answer")
    return Question(
        id=question_id,
        question=str(item["question"]),
        answer=None if answer is None else str(answer),
        evidence=tuple(_dia_ids(item.get("evidence") or [])),
        category=LOCOMO_CATEGORIES.get(category, category or "uncategorized"),
        at=asked,
    )


def _dia_ids(values: Iterable[Any]) -> Iterator[str]:
    """Turn ids in evidence, also where the dataset joins several in one string."""
    seen: set[str] = set()
    for value in values:
        for dia_id in _DIA_ID.findall(str(value)):
            if dia_id not in seen:
                seen.add(dia_id)
                yield dia_id


def _locomo_observations(
    sample_id: str, raw: Any, dates: dict[int, datetime]
) -> Iterator[Observation]:
    if not isinstance(raw, dict):
        return
    for key, by_speaker in raw.items():
        match = re.fullmatch(r"session_(\d+)_observation", str(key))
        if not match or not isinstance(by_speaker, dict) or int(match[1]) not in dates:
            continue
        for speaker, items in by_speaker.items():
            for n, item in enumerate(items or []):
                if isinstance(item, list | tuple) and item:
                    text, evidence = str(item[0]), item[1:] if len(item) > 1 else []
                    flat = [
                        e for part in evidence for e in (part if isinstance(part, list) else [part])
                    ]
                    yield Observation(
                        id=f"{sample_id}-s{match[1]}-{speaker}-{n + 1}",
                        speaker=str(speaker),
                        text=text,
                        evidence=tuple(_dia_ids(flat)),
                        at=dates[int(match[1])],
                    )


# -- Engram's JSONL -------------------------------------------------------------------------


@dataclass
class _Building:
    sessions: list[Session] = field(default_factory=list)
    questions: list[tuple[int, dict[str, Any]]] = field(default_factory=list)


def _engram(path: Path, lines: list[str], fingerprint: str) -> Dataset:
    name, description = path.stem, ""
    building: dict[str, _Building] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DatasetError(f"{where}: not valid JSON: {error}") from None
        if not isinstance(row, dict):
            raise DatasetError(f"{where}: each line is a JSON object")
        kind = row.get("type")
        if kind == "dataset":
            name = str(row.get("name") or name)
            description = str(row.get("description") or "")
            continue
        conversation = _text(row, "conversation", where)
        built = building.setdefault(conversation, _Building())
        if kind == "session":
            built.sessions.append(_engram_session(row, len(built.sessions) + 1, where))
        elif kind == "question":
            built.questions.append((number, row))
        else:
            raise DatasetError(f"{where}: `type` must be dataset, session or question")
    if not building:
        raise DatasetError(f"{path} holds no conversations")
    conversations = tuple(
        _engram_conversation(path, conversation, built) for conversation, built in building.items()
    )
    categories = tuple(dict.fromkeys(q.category for c in conversations for q in c.questions))
    return Dataset(name, "engram", conversations, fingerprint, description, categories)


def _engram_session(row: dict[str, Any], number: int, where: str) -> Session:
    at = _time(row.get("date"), where)
    turns = row.get("turns")
    if not isinstance(turns, list) or not turns:
        raise DatasetError(f"{where}: a session needs a non-empty `turns` list")
    return Session(number, at, tuple(_engram_turn(turn, where) for turn in turns))


def _engram_turn(turn: Any, where: str) -> Turn:
    if not isinstance(turn, dict):
        raise DatasetError(f"{where}: each turn is an object")
    role = _text(turn, "role", where)
    if role not in ("user", "assistant"):
        raise DatasetError(f"{where}: a turn's role is user or assistant, not {role!r}")
    labels = {name: turn.get(name) for name in LABELS}
    if role == "assistant" and any(v is not None for v in labels.values()):
        raise DatasetError(f"{where}: only user turns carry labels")
    save = labels["save"]
    if save is not None and not isinstance(save, bool):
        raise DatasetError(f"{where}: `save` is true or false")
    facts, fact_dates = _dated_texts(labels["facts"], "facts", where)
    memories, memory_dates = _dated_texts(labels["memories"], "memories", where)
    return Turn(
        id=_text(turn, "id", where),
        speaker=role,
        text=_text(turn, "text", where),
        save=save,
        facts=facts,
        memories=memories,
        profile=_texts(labels["profile"], "profile", where),
        not_profile=_texts(labels["not_profile"], "not_profile", where),
        fact_dates=fact_dates,
        memory_dates=memory_dates,
    )


def _engram_conversation(path: Path, conversation: str, built: _Building) -> Conversation:
    if not built.sessions:
        raise DatasetError(f"{path}: conversation {conversation!r} has questions but no sessions")
    turn_ids: set[str] = set()
    for session in built.sessions:
        for turn in session.turns:
            if turn.id in turn_ids:
                raise DatasetError(f"{path}: turn id {turn.id!r} appears twice in {conversation!r}")
            turn_ids.add(turn.id)
    asked = max(s.at for s in built.sessions) + ASKED_AFTER
    questions: list[Question] = []
    for number, row in built.questions:
        where = f"{path}:{number}"
        evidence = row.get("evidence") or []
        if not isinstance(evidence, list) or not all(isinstance(e, str) for e in evidence):
            raise DatasetError(f"{where}: `evidence` is a list of turn ids")
        unknown = [e for e in evidence if e not in turn_ids]
        if unknown:
            raise DatasetError(f"{where}: evidence names unknown turns {unknown}")
        answer = row.get("answer")
        questions.append(
            Question(
                id=_text(row, "id", where),
                question=_text(row, "question", where),
                answer=None if answer is None else str(answer),
                evidence=tuple(evidence),
                category=str(row.get("category") or "uncategorized"),
                at=_time(row["date"], where) if row.get("date") else asked,
            )
        )
    observations = tuple(
        Observation(f"{turn.id}-f{n}", turn.speaker, text, (turn.id,), session.at)
        for session in built.sessions
        for turn in session.turns
        for n, text in enumerate(turn.facts or (), 1)
    )
    return Conversation(
        conversation, ("user",), tuple(built.sessions), tuple(questions), observations
    )


def _text(row: dict[str, Any], name: str, where: str) -> str:
    value = row.get(name)
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(f"{where}: `{name}` must be a non-empty string")
    return value


def _texts(value: Any, name: str, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise DatasetError(f"{where}: `{name}` is a list of non-empty strings")
    return tuple(value)


def _dated_texts(
    value: Any, name: str, where: str
) -> tuple[tuple[str, ...] | None, tuple[Validity, ...]]:
    """A label list whose items are texts or `{"text", "valid_from", "valid_until"}`."""
    if value is None:
        return None, ()
    if not isinstance(value, list):
        raise DatasetError(f"{where}: `{name}` is a list of texts or {{text, valid_until}}")
    texts: list[str] = []
    dates: list[Validity] = []
    for item in value:
        if isinstance(item, str) and item.strip():
            texts.append(item)
            dates.append(LASTING)
            continue
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise DatasetError(
                f"{where}: each of `{name}` is a non-empty text or an object with `text`"
            )
        unknown = set(item) - {"text", "valid_from", "valid_until"}
        if unknown or not item["text"].strip():
            raise DatasetError(
                f"{where}: an item of `{name}` has `text`, and optionally `valid_from` and "
                f"`valid_until`{f', not {sorted(unknown)}' if unknown else ''}"
            )
        validity = Validity(
            _day(item.get("valid_from"), f"{where}: `{name}`"),
            _day(item.get("valid_until"), f"{where}: `{name}`"),
        )
        if (
            validity.valid_from
            and validity.valid_until
            and validity.valid_until < validity.valid_from
        ):
            raise DatasetError(f"{where}: {item['text']!r} ends before it starts")
        texts.append(item["text"])
        dates.append(validity)
    return tuple(texts), tuple(dates) if any(d != LASTING for d in dates) else ()


def _day(value: Any, where: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise DatasetError(f"{where}: {value!r} is not a day (YYYY-MM-DD)") from None


def _time(value: Any, where: str) -> datetime:
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        raise DatasetError(f"{where}: `date` {value!r} is not ISO 8601") from None
    if moment.tzinfo is None:
        raise DatasetError(f"{where}: `date` {value!r} needs a UTC offset (e.g. +01:00)")
    return moment
