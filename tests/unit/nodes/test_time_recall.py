"""Time-aware recall: time references resolved against the message time, recall narrowed or
boosted by when the user said things, the dates the chat model sees, and history told out
of order through the whole graph."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from langchain_core.embeddings import Embeddings
from langchain_core.messages import HumanMessage
from langgraph.runtime import Runtime

from engram.memory.store import MemoryStore
from engram.memory.timeframe import time_reference
from engram.nodes import make_recall
from engram.nodes.recall import TIME_BOOST, recall_memories
from engram.nodes.respond import build_prompt
from engram.settings import Settings
from engram.state import EngramContext
from tests.helpers import facts, make_graph, ops, save, scripted_lm
from tests.unit.nodes.test_nodes import NoModels

BERLIN = timezone(timedelta(hours=2))
NOW = datetime(2024, 7, 10, 15, 0, tzinfo=BERLIN)  # a Wednesday


@pytest.mark.parametrize(
    ("text", "start", "end", "said"),
    [
        ("What did I tell you last week?", date(2024, 7, 1), date(2024, 7, 8), True),
        ("What did I say yesterday?", date(2024, 7, 9), date(2024, 7, 10), True),
        ("What did I mention this morning?", date(2024, 7, 10), date(2024, 7, 11), True),
        ("Where did I travel last summer?", date(2023, 6, 1), date(2023, 9, 1), False),
        ("Which books did I read in 2023?", date(2023, 1, 1), date(2024, 1, 1), False),
        ("What did I do in March 2023?", date(2023, 3, 1), date(2023, 4, 1), False),
        ("What did I do in March?", date(2024, 3, 1), date(2024, 4, 1), False),
        ("What happened last March?", date(2024, 3, 1), date(2024, 4, 1), False),
        ("What was on 14 March?", date(2024, 3, 14), date(2024, 3, 15), False),
        ("Remember August 3rd, 2022?", date(2022, 8, 3), date(2022, 8, 4), False),
        ("in the summer of 2022", date(2022, 6, 1), date(2022, 9, 1), False),
        ("two weeks ago", date(2024, 6, 24), date(2024, 7, 1), False),
        ("a couple of months ago", date(2024, 5, 1), date(2024, 6, 1), False),
        ("last weekend", date(2024, 7, 6), date(2024, 7, 8), False),
        ("last month", date(2024, 6, 1), date(2024, 7, 1), False),
        ("last year", date(2023, 1, 1), date(2024, 1, 1), False),
        ("winter 2023", date(2023, 12, 1), date(2024, 3, 1), False),
    ],
)
def test_time_references_resolve_on_the_users_calendar(
    text: str, start: date, end: date, said: bool
) -> None:
    reference = time_reference(text, NOW)
    assert reference is not None
    assert reference.span.start is not None and reference.span.end is not None
    assert (reference.span.start.date(), reference.span.end.date()) == (start, end)
    assert reference.span.start.tzinfo == BERLIN  # midnight in the user's zone
    assert reference.said is said


def test_open_ended_and_absent_references() -> None:
    since = time_reference("What changed since 2021?", NOW)
    assert since is not None and since.span.end is None
    assert since.span.start == datetime(2021, 1, 1, tzinfo=BERLIN)
    # Planning ahead, a request, or no time at all: nothing to narrow.
    for text in ["What should I cook today?", "May I ask you something?", "I like tea"]:
        assert time_reference(text, NOW) is None
    with pytest.raises(ValueError, match="timezone-aware"):
        time_reference("last week", datetime(2024, 7, 10))


def at(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, 12, tzinfo=UTC)


def fill(store: MemoryStore) -> None:
    store.add("alice", "User went hiking in Scotland", observed_at=at(2024, 3, 2))
    store.add("alice", "User went hiking in the Dolomites", observed_at=at(2023, 7, 15))
    store.add("alice", "User's daughter started violin lessons", observed_at=at(2024, 7, 2))
    store.add("alice", "User's favourite tea is genmaicha", observed_at=at(2024, 7, 4))


def runtime(user_id: str = "alice") -> Runtime[EngramContext]:
    return Runtime(context=EngramContext(user_id=user_id, top_k=3))


def message(text: str, sent: datetime = NOW) -> Any:
    return {"messages": [HumanMessage(text, additional_kwargs={"sent_at": sent.isoformat()})]}


async def test_asking_what_was_said_then_narrows_recall(store: MemoryStore) -> None:
    fill(store)
    recall = make_recall(NoModels(Settings(), store=store))
    update = await recall(message("What did I tell you last week?"), runtime())
    # Only last week's memories, though the question shares no word with them (no floor).
    assert {m.text for m in update["recalled"]} == {
        "User's daughter started violin lessons",
        "User's favourite tea is genmaicha",
    }
    # Nothing said in that span: nothing recalled, rather than other times' memories.
    quiet = await recall(message("What did I tell you in 2019?"), runtime())
    assert quiet["recalled"] == []


async def test_an_event_time_boosts_memories_said_then(store: MemoryStore) -> None:
    fill(store)
    question = "Where did I go hiking last summer?"
    plain = recall_memories(store, "alice", question, 3, reference=None, floor=None)
    assert plain[0].text == "User went hiking in Scotland"  # without the time: closest wording
    recall = make_recall(NoModels(Settings(), store=store))
    recalled = (await recall(message(question), runtime()))["recalled"]
    # Said in summer 2023: boosted to the top; the other hike is still recalled (a boost,
    # not a filter: people often tell of an event after it).
    assert [m.text for m in recalled[:2]] == [
        "User went hiking in the Dolomites",
        "User went hiking in Scotland",
    ]
    score = {m.text: m.score or 0 for m in recalled}
    base = {m.text: m.score or 0 for m in plain}
    assert score["User went hiking in Scotland"] == pytest.approx(
        base["User went hiking in Scotland"]
    )
    assert score["User went hiking in the Dolomites"] == pytest.approx(
        base["User went hiking in the Dolomites"] + TIME_BOOST
    )


async def test_a_boosted_recall_embeds_the_message_once(
    store: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A time reference takes two searches; with a remote embedding endpoint, a second
    embedding would be a second round trip before the answer."""
    fill(store)
    embedded: list[str] = []

    class Counted(Embeddings):
        def __init__(self, inner: Embeddings) -> None:
            self.inner = inner

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return self.inner.embed_documents(texts)

        def embed_query(self, text: str) -> list[float]:
            embedded.append(text)
            return self.inner.embed_query(text)

    monkeypatch.setattr(store, "embeddings", Counted(store.embeddings))
    recall = make_recall(NoModels(Settings(), store=store))
    recalled = (await recall(message("Where did I go hiking last summer?"), runtime()))["recalled"]
    assert recalled[0].text == "User went hiking in the Dolomites"  # boosted: both searches ran
    assert embedded == ["Where did I go hiking last summer?"]


async def test_the_chat_model_sees_the_date_the_user_said_it(store: MemoryStore) -> None:
    said = datetime(2023, 5, 7, 20, 30, tzinfo=BERLIN)
    lm = scripted_lm(
        save(),
        facts(("User adopted a greyhound called Pip", "personal")),
        ops({"op": "ADD", "text": "User adopted a greyhound called Pip", "category": "personal"}),
        save(False),
    )
    graph = make_graph(store, lm)
    config: Any = {"configurable": {"thread_id": "t"}}
    await graph.ainvoke(
        message("I adopted a greyhound called Pip", said), config, context={"user_id": "alice"}
    )
    later = await graph.ainvoke(
        message("How is my greyhound Pip doing, do you think?"),
        config,
        context={"user_id": "alice"},
    )
    [memory] = later["recalled"]
    assert memory.observed_at == said
    prompt = build_prompt(later["messages"][:-1], later["recalled"], window=12, max_chars=8000)
    assert "User adopted a greyhound called Pip (personal; said 2023-05-07)" in prompt[0].text
    assert "Today is 2024-07-10." in prompt[0].text


async def test_history_told_out_of_order_keeps_the_newer_fact(store: MemoryStore) -> None:
    """The newer session is ingested first; the older one then cannot overwrite it."""
    lm = scripted_lm(
        save(),
        facts(("User lives in Berlin", "location")),
        ops({"op": "ADD", "text": "User lives in Berlin", "category": "location"}),
        save(),
        facts(("User lives in Paris", "location")),
        ops({"op": "UPDATE", "id": 1, "text": "User lives in Paris", "category": "location"}),
    )
    graph = make_graph(store, lm)
    config: Any = {"configurable": {"thread_id": "t"}}
    await graph.ainvoke(
        message("I live in Berlin now", at(2024, 5, 1)), config, context={"user_id": "alice"}
    )
    older = await graph.ainvoke(
        message("I live in Paris", at(2023, 1, 10)), config, context={"user_id": "alice"}
    )
    [applied] = older["applied"]
    assert applied.op == "UPDATE" and applied.result == "unchanged"
    assert "which is kept" in (applied.detail or "")
    assert [m.text for m in store.memories("alice")] == ["User lives in Berlin"]
    [current] = store.memories("alice")
    versions = store.history("alice", current.id)
    assert [(v.text, v.status, v.observed_at) for v in versions] == [
        ("User lives in Berlin", "active", at(2024, 5, 1)),
        ("User lives in Paris", "superseded", at(2023, 1, 10)),
    ]


async def test_the_time_boost_counts_against_the_floor(store: MemoryStore) -> None:
    """ "What did I do last week?" scores under the floor against what the user said then;
    with the boost it is within it."""
    store.add(
        "alice", "User is on a work trip in Tokyo", "location", observed_at=NOW - timedelta(days=7)
    )
    question = "What did I do last week?"
    plain = store.search("alice", question, 3)
    assert (plain[0].score or 0) < Settings().recall_floor
    recall = make_recall(NoModels(Settings(), store=store))  # the default floor
    recalled = (await recall(message(question), runtime()))["recalled"]
    assert [m.text for m in recalled] == ["User is on a work trip in Tokyo"]
