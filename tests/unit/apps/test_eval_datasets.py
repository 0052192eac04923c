"""Datasets: LoCoMo's JSON as published and Engram's JSONL read into one model, with clear
errors for malformed files; the shipped labelled set loads."""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from engram.apps.eval.datasets import DatasetError, Validity, load_dataset, parse_locomo_time
from engram.apps.eval.labelled import LABELLED
from tests.eval_fakes import TINY_LOCOMO, write_locomo


def test_locomo_as_published(tmp_path: Path) -> None:
    data = load_dataset(write_locomo(tmp_path / "locomo10.json", TINY_LOCOMO))
    assert (data.source, data.name) == ("locomo", "locomo10")
    first, second = data.conversations
    assert first.id == "conv-a" and first.users == ("Ana", "Ben")
    assert [s.number for s in first.sessions] == [1, 2]
    assert first.sessions[0].at == datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
    assert first.sessions[1].at == datetime(2023, 6, 27, 10, 37, tzinfo=UTC)
    bike = first.sessions[0].turns[3]
    assert bike.id == "D1:4" and bike.speaker == "Ben"
    assert bike.text == "Look at my new bike. [shares an image: a red bicycle leaning on a wall]"
    categories = [(q.category, q.answer) for q in first.questions]
    assert categories == [
        ("single-hop", "Porto"),
        ("single-hop", "cello"),
        ("multi-hop", "Pip"),
        ("temporal", "red"),
        ("adversarial", None),  # category 5 has no answer
    ]
    assert first.questions[0].at == first.sessions[-1].at + timedelta(days=1)
    assert [o.text for o in first.observations][:2] == [
        "Ana lives in Lisbon by the river.",
        "Ben started learning the cello.",
    ]
    assert first.observations[0].evidence == ("D1:3",)
    assert second.observations == ()  # the field is optional
    assert data.limited(1, 2).conversations[0].questions == first.questions[:2]
    assert len(data.limited(1, None).conversations) == 1


def test_locomo_quirks_are_read(tmp_path: Path) -> None:
    samples: list[dict[str, Any]] = copy.deepcopy(TINY_LOCOMO[1:])
    samples[0]["sample_id"] = 7  # an int in some copies
    samples[0]["qa"][0]["evidence"] = ["D1:1; D1:2"]  # two ids in one string
    samples[0]["qa"][1]["answer"] = 2022  # a number
    data = load_dataset(write_locomo(tmp_path / "quirks.json", samples))
    [conversation] = data.conversations
    assert conversation.id == "7"
    assert conversation.questions[0].evidence == ("D1:1", "D1:2")
    assert conversation.questions[1].answer == "2022"
    assert parse_locomo_time("12:05 am on 1 January, 2024", "x") == datetime(
        2024, 1, 1, 0, 5, tzinfo=UTC
    )
    assert parse_locomo_time("12:30 pm on 3 March, 2024", "x").hour == 12
    with pytest.raises(DatasetError, match="cannot read the date"):
        parse_locomo_time("sometime in spring", "session 3")


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", "utf-8")
    return path


SESSION = {
    "type": "session",
    "conversation": "c1",
    "date": "2024-03-02T18:30:00+01:00",
    "turns": [
        {
            "id": "c1-1",
            "role": "user",
            "text": "I moved to Lyon.",
            "save": True,
            "facts": ["User lives in Lyon"],
        },
        {"id": "c1-2", "role": "assistant", "text": "How exciting!"},
    ],
}
QUESTION = {
    "type": "question",
    "conversation": "c1",
    "id": "q1",
    "question": "Where do I live?",
    "answer": "Lyon",
    "evidence": ["c1-1"],
    "category": "single-hop",
}


def _dated_fact(fact: dict[str, Any]) -> dict[str, Any]:
    return {"id": "x", "role": "user", "text": "I'm in Tokyo until Friday.", "facts": [fact]}


def test_engram_jsonl_dates_on_facts_and_memories(tmp_path: Path) -> None:
    turn = {
        "id": "c1-1",
        "role": "user",
        "text": "I'm in Tokyo until Friday; I'm a pharmacist.",
        "facts": [
            {"text": "User is in Tokyo", "valid_until": "2025-04-11"},
            "User is a pharmacist",
        ],
        "memories": [
            "User is a pharmacist",
            {"text": "User is in Tokyo", "valid_until": "2025-04-11"},
        ],
    }
    data = load_dataset(write_jsonl(tmp_path / "dated.jsonl", [{**SESSION, "turns": [turn]}]))
    [read] = data.conversations[0].sessions[0].turns
    assert read.facts == ("User is in Tokyo", "User is a pharmacist")  # texts, as before
    friday = Validity(valid_until=date(2025, 4, 11))
    assert read.dated_facts() == [
        ("User is in Tokyo", friday),
        ("User is a pharmacist", Validity()),
    ]
    assert read.dated_memories() == [
        ("User is a pharmacist", Validity()),
        ("User is in Tokyo", friday),
    ]
    assert [o.text for o in data.conversations[0].observations] == list(read.facts)
    # Texts alone: lasting, as every label was before dates existed.
    plain = load_dataset(write_jsonl(tmp_path / "plain.jsonl", [SESSION]))
    assert plain.conversations[0].sessions[0].turns[0].dated_facts() == [
        ("User lives in Lyon", Validity())
    ]


def test_engram_jsonl(tmp_path: Path) -> None:
    data = load_dataset(write_jsonl(tmp_path / "mine.jsonl", [SESSION, QUESTION]))
    [conversation] = data.conversations
    assert data.source == "engram" and conversation.users == ("user",)
    assert conversation.sessions[0].at == datetime(
        2024, 3, 2, 18, 30, tzinfo=timezone(timedelta(hours=1))
    )
    user = conversation.sessions[0].turns[0]
    assert (user.save, user.facts, user.memories) == (True, ("User lives in Lyon",), None)
    assert [o.text for o in conversation.observations] == ["User lives in Lyon"]
    assert conversation.observations[0].evidence == ("c1-1",)
    assert conversation.questions[0].evidence == ("c1-1",)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"type": "nonsense", "conversation": "c1"}], ":1: `type` must be"),
        ([{**SESSION, "date": "2024-03-02T18:30:00"}], "needs a UTC offset"),
        ([{**SESSION, "turns": []}], "non-empty `turns`"),
        ([SESSION, {**QUESTION, "evidence": ["c1-9"]}], "unknown turns"),
        ([QUESTION], "has questions but no sessions"),
        (
            [{**SESSION, "turns": [{"id": "x", "role": "assistant", "text": "hi", "save": True}]}],
            "only user turns carry labels",
        ),
        (
            [{**SESSION, "turns": [{"id": "x", "role": "user", "text": "hi", "profile": "x"}]}],
            "`profile` is a list of non-empty strings",
        ),
        ([{**SESSION, "turns": [{"id": "x", "role": "bot", "text": "hi"}]}], "role is user or"),
        (
            [{**SESSION, "turns": [_dated_fact({"text": "x", "valid_until": "Friday"})]}],
            "'Friday' is not a day",
        ),
        (
            [
                {
                    **SESSION,
                    "turns": [
                        _dated_fact(
                            {"text": "x", "valid_from": "2025-04-14", "valid_until": "2025-04-13"}
                        )
                    ],
                }
            ],
            "'x' ends before it starts",
        ),
        (
            [{**SESSION, "turns": [_dated_fact({"text": "x", "until": "2025-04-13"})]}],
            r"optionally `valid_from` and `valid_until`, not \['until'\]",
        ),
        ([SESSION, SESSION], "appears twice"),
    ],
)
def test_malformed_jsonl_names_the_place(
    tmp_path: Path, rows: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(DatasetError, match=message):
        load_dataset(write_jsonl(tmp_path / "bad.jsonl", rows))


def test_malformed_files(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(DatasetError, match="not valid JSON"):
        load_dataset(tmp_path / "broken.json")
    with pytest.raises(DatasetError, match="cannot read"):
        load_dataset(tmp_path / "missing.json")
    (tmp_path / "empty.json").write_text("[{}]")
    with pytest.raises(DatasetError, match="has no `conversation`"):
        load_dataset(tmp_path / "empty.json")


def test_the_shipped_labelled_set() -> None:
    data = load_dataset(LABELLED)
    assert data.name == "engram-labelled"
    assert len(data.conversations) == 9
    assert sum(len(c.questions) for c in data.conversations) == 50
    assert set(data.categories) == {
        "single-hop",
        "multi-hop",
        "temporal",
        "knowledge-update",
        "profile",  # the answer rests on a core fact the question does not name
        "validity",  # the answer rests on when a fact holds: expired, past, an event's day
    }
    user_turns = [t for c in data.conversations for _, t in c.turns() if t.speaker == "user"]
    assert all(t.save is not None and t.facts is not None for t in user_turns)
    assert all(t.save == bool(t.facts) for t in user_turns)
    # Profile labels name texts of the memory after their turn.
    profiled = [t for t in user_turns if t.profile is not None]
    assert len(profiled) == 19
    for turn in profiled:
        assert turn.memories is not None
        assert set(turn.profile or ()) | set(turn.not_profile or ()) <= set(turn.memories)
    # Facts that hold for a time carry their dates (until Friday, next Monday's exam, used
    # to); every other fact is lasting. A move closes the old home in the memory.
    dated = {text: v for t in user_turns for text, v in t.dated_facts() if v != Validity()}
    assert dated == {
        "User used to play the violin in a student orchestra": Validity(None, date(2025, 1, 12)),
        "User lives in Berlin, in Kreuzberg": Validity(date(2025, 3, 1), None),
        "User is in Tokyo for a pharmacy conference": Validity(None, date(2025, 4, 11)),
        "User has a German B1 exam on 14 April 2025": Validity(
            date(2025, 4, 14), date(2025, 4, 14)
        ),
    }
    moved = next(t for t in user_turns if t.id == "hana-t5")
    assert (
        "User lives in Paris, in the 11th arrondissement",
        Validity(None, date(2025, 2, 28)),
    ) in (moved.dated_memories())
    timed = [q for c in data.conversations for q in c.questions if q.category == "validity"]
    assert [(q.question, q.at.date().isoformat()) for q in timed] == [
        ("When is my exam?", "2025-04-09"),  # before its day
        ("Where am I this weekend?", "2025-04-19"),  # the week after the stay ended
        ("Where was I last week?", "2025-04-14"),  # about the past: the stay
        ("When did I live in Paris?", "2025-04-08"),  # after the move
        ("What instrument did I use to play?", "2025-04-08"),
    ]
    # Every kind the issue names is in it.
    texts = " ".join(t.text for t in user_turns)
    for phrase in [
        "Actually, I like tea more",
        "I no longer",
        "moved to",
        "new job",
        "last week",
        "Thanks!",
        "until Friday",
        "next Monday",
        "I used to",
    ]:
        assert phrase in texts
