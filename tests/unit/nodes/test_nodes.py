"""Each node on its own, through its real code path, with scripted LMs."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, date, datetime
from typing import Any

import pytest
from dspy.utils import DummyLM
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.runtime import Runtime

from engram.clients import Clients
from engram.memory.keywords import content_words
from engram.memory.store import MemoryStore
from engram.nodes import (
    DecideSave,
    ExtractFacts,
    MaintainMemory,
    make_decide_save,
    make_extract,
    make_maintain,
    make_recall,
    make_respond,
    make_retrieve_similar,
)
from engram.nodes.extract import MAX_UNEXTRACTED, grounded_in_user
from engram.nodes.maintain import plan_operations
from engram.nodes.programs import MAX_BACKOFF_SECONDS, retry_delay, run_program
from engram.nodes.respond import build_prompt
from engram.settings import Settings
from engram.state import (
    Candidate,
    EngramContext,
    MemoryOp,
    MemoryRecord,
    ObservedFact,
    Unextracted,
)
from engram.state.errors import MemoryStepError
from tests.helpers import facts, ops, save, scripted_lm

CONFIG: Any = {"configurable": {"thread_id": "t1"}}


def dspy_input(prompt: str, name: str) -> Any:
    """One input field of a DSPy ChatAdapter prompt, parsed as the JSON the program sent."""
    value = prompt.split(f"[[ ## {name} ## ]]\n", 1)[1]
    value = value.split("\n\n[[ ## ", 1)[0].split("\n\nRespond with", 1)[0]
    return json.loads(value)


def runtime(user_id: str = "alice", **knobs: Any) -> Runtime[EngramContext]:
    return Runtime(context=EngramContext(user_id=user_id, **knobs))


def clients(store: MemoryStore, lm: Any = None, **settings: Any) -> Clients:
    return Clients(
        Settings(llm_attempts=1, **settings),
        store=store,
        chat_model=FakeListChatModel(responses=["ok"]),
        memory_lm=lm,
    )


class NoModels(Clients):
    """Clients that fail the test if a node asks for any model."""

    def chat_model(self, name: str | None = None) -> Any:
        raise AssertionError("this node must not use the chat model")

    def memory_lm(self, name: str | None = None) -> Any:
        raise AssertionError("this node must not call an LLM")


async def test_recall_fetches_top_k_of_this_user_without_an_llm(store: MemoryStore) -> None:
    food = ["User likes sushi", "User likes ramen"]
    unrelated = ["User has a cat", "User is a pilot", "User plays chess", "User lives in Oslo"]
    for text in [*unrelated, *food]:
        store.add("alice", text, "preferences")
    bob = store.add("bob", "User loves Japanese food, sushi and ramen", "preferences")
    recall = make_recall(NoModels(Settings(), store=store))
    state: Any = {"messages": [HumanMessage("Any Japanese food ideas? I love sushi and ramen.")]}

    update = await recall(state, runtime(top_k=2))
    recalled = update["recalled"]
    assert len(recalled) == 2  # k honoured although alice has six memories
    assert {m.user_id for m in recalled} == {"alice"}
    assert bob.memory_id not in {m.id for m in recalled}
    assert sorted(m.text for m in recalled) == sorted(food)  # the relevant ones, not the first
    scores = [m.score or 0 for m in recalled]
    assert scores == sorted(scores, reverse=True)  # best first

    # The relevance floor keeps unrelated memories out of the prompt, whatever k is ...
    wider = (await recall(state, runtime(top_k=6)))["recalled"]
    assert sorted(m.text for m in wider) == sorted(food)
    # ... and without it they come, ranked below the relevant ones.
    unfloored = make_recall(NoModels(Settings(recall_floor=-1), store=store))
    everything = (await unfloored(state, runtime(top_k=6)))["recalled"]
    assert len(everything) == 6 and {m.user_id for m in everything} == {"alice"}
    assert {m.text for m in everything[:2]} == set(food)


async def test_respond_answers_from_a_bounded_prompt(store: MemoryStore) -> None:
    store.add("alice", "User is vegan", "health")
    memories = store.memories("alice")
    long_chat: list[Any] = []
    for n in range(300):
        long_chat += [HumanMessage(f"message {n} " + "y" * 50_000), AIMessage(f"reply {n}")]
    long_chat.append(HumanMessage("What should I cook?"))
    prompt = build_prompt(long_chat, memories, window=12, max_chars=8000)
    assert len(prompt) <= 13
    assert sum(len(m.text) for m in prompt) < 13 * 8000 + 1000
    assert "User is vegan (health; said " in prompt[0].text
    assert prompt[-1].text == "What should I cook?"
    assert isinstance(prompt[1], HumanMessage)  # the window starts on a user turn

    respond = make_respond(clients(store))
    update = await respond({"messages": long_chat, "recalled": memories}, runtime())
    assert update["messages"][0].text == "ok"


async def test_decide_save_reads_the_models_answer(store: MemoryStore) -> None:
    lm = scripted_lm(save(False))
    decide = make_decide_save(clients(store, lm), DecideSave())
    state: Any = {"messages": [HumanMessage("hi"), AIMessage("hello")], "recalled": []}
    assert await decide(state, runtime()) == {"save": False}
    prompt = lm.history[0]["messages"][-1]["content"]
    assert "hi" in prompt and "hello" in prompt


async def test_decide_save_policy_skips_the_llm(store: MemoryStore) -> None:
    lm = scripted_lm()
    decide = make_decide_save(clients(store, lm), DecideSave())
    state: Any = {"messages": [HumanMessage("hi"), AIMessage("hello")]}
    assert await decide(state, runtime(save_policy="always")) == {"save": True}
    assert await decide(state, runtime(save_policy="never")) == {"save": False}
    assert lm.history == []


async def test_extract_cleans_categories_drops_empty_and_dedupes(store: MemoryStore) -> None:
    lm = scripted_lm(
        {
            "facts": [
                {"text": "User starts a new job on 2026-03-02", "category": "  Work Life "},
                {"text": "   ", "category": "other"},
                {"text": "User starts a new job on 2026-03-02.", "category": "work"},
                {"text": "User's new job is at a bakery", "category": ""},
            ]
        }
    )
    extract = make_extract(clients(store, lm), ExtractFacts())
    human = HumanMessage(
        "I start my new job at a bakery next Monday",
        id="h1",
        additional_kwargs={"sent_at": "2026-02-25T09:00:00Z"},
    )
    state: Any = {"messages": [human, AIMessage("Congrats!", id="a1")], "save": True}
    update = await extract(state, CONFIG, runtime())
    assert [(f.text, f.category) for f in update["facts"]] == [
        ("User starts a new job on 2026-03-02.", "work"),
        ("User's new job is at a bakery", "other"),
    ]
    assert update["facts"][0].observed_at == datetime(2026, 2, 25, 9, tzinfo=UTC)
    assert update["facts"][0].message_ids == ["h1", "a1"]
    assert update["facts"][0].thread_id == "t1"
    assert [r.reason for r in update["rejected"]] == ["empty fact"]
    assert (
        "[[ ## message_time ## ]]\n2026-02-25T09:00:00Z\n"
        in lm.history[0]["messages"][-1]["content"]
    )


def test_content_words_merge_word_forms() -> None:
    assert len(content_words("live lives living lived")) == 1
    assert len(content_words("move moved moving moves")) == 1
    assert len(content_words("study studies studied")) == 1
    assert len(content_words("run running")) == 1 and len(content_words("call called")) == 1
    assert content_words("User is allergic to peanuts") == content_words("allergic, peanut")
    assert content_words("The user and you") == set()  # stopwords carry no meaning


def test_grounding_rule() -> None:
    assert grounded_in_user("User lives in Lisbon", "I live in Lisbon")
    assert grounded_in_user("User is moving abroad", "we moved last year")  # stems merge
    assert not grounded_in_user("User owns a yacht", "hi")
    # Changed on purpose: a paraphrase sharing no word with the user is no longer kept.
    assert not grounded_in_user("User is vegetarian", "I don't eat meat")


async def test_extract_rejects_facts_not_found_in_the_users_words(store: MemoryStore) -> None:
    lm = scripted_lm(
        facts(
            ("User owns a yacht", "personal"),
            ("User lives in Lisbon", "location"),
            ("User sails a lot", "preferences"),
        )
    )
    extract = make_extract(clients(store, lm), ExtractFacts())
    state: Any = {
        "messages": [
            HumanMessage("hi, I sail a lot", id="h1"),
            AIMessage("You live in Lisbon!", id="a1"),
        ],
        "save": True,
    }
    update = await extract(state, CONFIG, runtime())
    assert [f.text for f in update["facts"]] == ["User sails a lot"]
    assert [(r.text, r.reason) for r in update["rejected"]] == [
        ("User owns a yacht", "not found in the user's words"),
        ("User lives in Lisbon", "stated by the assistant, not the user"),
    ]


async def test_retrieve_similar_merges_and_numbers_candidates(store: MemoryStore) -> None:
    for text in (
        "User likes sushi",
        "User likes ramen",
        "User has a cat named Tom",
        "User's cat is twelve years old",
        "User plays chess",
    ):
        store.add("alice", text, "other")
    store.add("bob", "User has a cat named Tom", "other")
    retrieve = make_retrieve_similar(clients(store))
    now = datetime.now(UTC)
    state: Any = {
        "facts": [
            ObservedFact(text="User adopted a second cat", category="personal", observed_at=now),
            ObservedFact(
                text="User loves Japanese noodles", category="preferences", observed_at=now
            ),
        ]
    }
    update = await retrieve(state, runtime())
    candidates = update["candidates"]
    assert [c.ref for c in candidates] == list(range(1, len(candidates) + 1))
    ids = [c.memory.id for c in candidates]
    assert len(ids) == len(set(ids)) <= 6
    assert {c.memory.user_id for c in candidates} == {"alice"}
    assert {"User has a cat named Tom", "User likes ramen"} <= {c.memory.text for c in candidates}


def test_plan_maps_small_ids_and_never_trusts_others(store: MemoryStore) -> None:
    store.add("alice", "User lives in Paris", "location")
    memory = store.memories("alice")[0]
    fact = ObservedFact(
        text="User lives in Rome",
        category="location",
        observed_at=datetime(2026, 5, 1, tzinfo=UTC),
        thread_id="t9",
        message_ids=["m1"],
    )
    planned, rejected = plan_operations(
        [
            MemoryOp(op="UPDATE", id=1, text="User lives in Rome"),
            MemoryOp(op="DELETE", id=2),
            MemoryOp(op="NOOP", id=5),
        ],
        [Candidate(ref=1, memory=memory)],
        [fact],
    )
    assert [(p.op, p.target_id, p.category) for p in planned] == [("UPDATE", memory.id, "location")]
    assert planned[0].observed_at == fact.observed_at
    assert planned[0].source.thread_id == "t9" and planned[0].source.message_ids == ["m1"]
    assert [r.reason for r in rejected] == [
        "unknown id 2: this turn showed ids 1-1",
        "unknown id 5: this turn showed ids 1-1",
    ]
    _, rejected = plan_operations([MemoryOp(op="DELETE", id=1)], [], [fact])
    assert rejected[0].reason == "unknown id 1: this turn showed no existing memories"


async def test_maintain_applies_the_models_operations(store: MemoryStore) -> None:
    # Said before the fact below: an older statement would not be replaced (see memory.store).
    store.add(
        "alice", "User lives in Paris", "location", observed_at=datetime(2026, 1, 1, tzinfo=UTC)
    )
    memory = store.memories("alice")[0]
    lm = scripted_lm(
        {
            "reasoning": "moved",
            "operations": [
                {"op": "UPDATE", "id": 1, "text": "User lives in Oslo", "category": "location"}
            ],
        }
    )
    maintain = make_maintain(clients(store, lm), MaintainMemory())
    fact = ObservedFact(
        text="User moved to Oslo", category="location", observed_at=datetime(2026, 4, 1, tzinfo=UTC)
    )
    state: Any = {"facts": [fact], "candidates": [Candidate(ref=1, memory=memory)]}
    update = await maintain(state, runtime())
    assert [(a.op, a.result) for a in update["applied"]] == [("UPDATE", "updated")]
    assert update["facts"] == []
    prompt = lm.history[0]["messages"][-1]["content"]
    said = memory.observed_at.date().isoformat()
    assert dspy_input(prompt, "existing_memories") == [
        {"id": 1, "text": "User lives in Paris", "category": "location", "said": said}
    ]
    assert dspy_input(prompt, "new_facts") == [
        {"text": "User moved to Oslo", "category": "location"}
    ]
    assert memory.id not in prompt  # real point ids are never shown
    assert [m.text for m in store.memories("alice")] == ["User lives in Oslo"]
    assert store.memories("alice")[0].observed_at == fact.observed_at


async def test_maintain_without_retrieved_candidates_keeps_the_facts(store: MemoryStore) -> None:
    lm = scripted_lm()
    maintain = make_maintain(clients(store, lm), MaintainMemory())
    fact = ObservedFact(
        text="User moved to Oslo", category="location", observed_at=datetime(2026, 4, 1, tzinfo=UTC)
    )
    assert await maintain({"facts": [fact], "candidates": None}, runtime()) == {}
    assert lm.history == []


KEPT = "kept: no operation of the model kept this fact"


def observed(text: str, category: str = "other") -> ObservedFact:
    return ObservedFact(text=text, category=category, observed_at=datetime(2026, 5, 1, tzinfo=UTC))


def record(text: str, category: str = "other") -> MemoryRecord:
    at = datetime(2026, 1, 2, tzinfo=UTC)
    return MemoryRecord(
        id=str(uuid.uuid4()),
        user_id="alice",
        text=text,
        category=category,
        status="active",
        created_at=at,
        updated_at=at,
        observed_at=at,
        lineage_id=str(uuid.uuid4()),
    )


def test_plan_keeps_each_fact_that_no_operation_carries() -> None:
    lyon, peanuts = observed("User lives in Lyon"), observed("User is allergic to peanuts")
    planned, rejected = plan_operations(
        [MemoryOp(op="ADD", text="User lives in Lyon", category="location")], [], [lyon, peanuts]
    )
    assert [(p.op, p.text, p.detail) for p in planned] == [
        ("ADD", "User lives in Lyon", None),
        ("ADD", "User is allergic to peanuts", KEPT),
    ]
    assert rejected == []


def test_plan_noop_without_an_id_covers_nothing() -> None:
    peanuts = observed("User is allergic to peanuts", "health")
    planned, rejected = plan_operations([MemoryOp(op="NOOP")], [], [peanuts])
    assert [(p.op, p.text, p.category, p.detail) for p in planned] == [
        ("ADD", "User is allergic to peanuts", "health", KEPT)
    ]
    assert [r.reason for r in rejected] == ["NOOP without an id"]


def test_plan_noop_covers_only_the_facts_its_memory_holds() -> None:
    jazz, cello = observed("User likes jazz"), observed("User plays the cello")
    known = Candidate(ref=1, memory=record("User likes jazz music"))
    planned, _ = plan_operations([MemoryOp(op="NOOP", id=1)], [known], [jazz, cello])
    assert [(p.op, p.target_id, p.text, p.detail) for p in planned] == [
        ("NOOP", known.memory.id, None, None),
        ("ADD", None, "User plays the cello", KEPT),
    ]


def test_plan_update_with_merged_text_carries_its_fact() -> None:
    paris = Candidate(ref=1, memory=record("User lives in Paris"))
    berlin, bike = observed("User moved to Berlin"), observed("User sold the bike")
    planned, _ = plan_operations(
        [MemoryOp(op="UPDATE", id=1, text="User lives in Berlin now")], [paris], [berlin, bike]
    )
    # "moved"/"lives" differ, but "Berlin" is half of the fact's words: carried.
    assert [(p.op, p.text, p.detail) for p in planned] == [
        ("UPDATE", "User lives in Berlin now", None),
        ("ADD", "User sold the bike", KEPT),
    ]


def failing_lm(message: str = "HTTP 503 from provider") -> DummyLM:
    """A memory LM whose endpoint is down: every call raises."""
    lm = DummyLM([])

    async def down(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError(message)

    lm.acall = down  # type: ignore[method-assign]
    return lm


async def test_extract_keeps_only_the_latest_failed_messages_and_reports_the_rest(
    store: MemoryStore,
) -> None:
    older = MAX_UNEXTRACTED + 2
    messages: list[Any] = []
    pending = []
    for n in range(older):
        messages += [HumanMessage(f"detail {n}", id=f"h{n}"), AIMessage("ok", id=f"a{n}")]
        pending.append(
            Unextracted(message_id=f"h{n}", observed_at=datetime(2026, 1, n + 1, tzinfo=UTC))
        )
    messages += [HumanMessage("the newest detail", id="new"), AIMessage("ok", id="a-new")]
    extract = make_extract(clients(store, failing_lm()), ExtractFacts())
    state: Any = {"messages": messages, "save": True, "unextracted": pending}

    update = await extract(state, CONFIG, runtime())

    kept = [u.message_id for u in update["unextracted"]]
    assert len(kept) == MAX_UNEXTRACTED
    assert kept == [*[f"h{n}" for n in range(older)], "new"][-MAX_UNEXTRACTED:]
    given_up = [r for r in update["rejected"] if r.op == "EXTRACT"]
    dropped = [f"h{n}" for n in range(older + 1 - MAX_UNEXTRACTED)]
    assert [r.text for r in given_up] == [f"detail {n}" for n in range(len(dropped))]
    for item, message_id in zip(given_up, dropped, strict=True):
        assert f"message {message_id}" in item.reason and "gave up" in item.reason
    assert "extract failed" in update["memory_error"]


async def test_memory_retries_back_off_exponentially_without_blocking_the_loop() -> None:
    calls: list[float] = []
    lm = DummyLM([])

    async def down(*args: Any, **kwargs: Any) -> Any:
        calls.append(time.monotonic())
        raise ConnectionError("HTTP 503")

    lm.acall = down  # type: ignore[method-assign]
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticking = asyncio.create_task(ticker())
    try:
        with pytest.raises(MemoryStepError, match="after 3 attempt"):
            await run_program(
                "decide_save",
                DecideSave(),
                lm,
                attempts=3,
                seconds=5,
                backoff=0.1,
                known_memories=[],
                user_message="hi",
                assistant_message="hello",
            )
    finally:
        ticking.cancel()
    first_wait, second_wait = calls[1] - calls[0], calls[2] - calls[1]
    assert first_wait >= 0.1 and second_wait >= 0.2  # base, then doubled
    assert ticks >= 10  # the loop kept running while the step waited
    assert retry_delay(1, 0.5) == 0.5 and retry_delay(2, 0.5) == 1.0
    assert retry_delay(20, 0.5) == MAX_BACKOFF_SECONDS  # capped
    assert retry_delay(3, 0) == 0  # tests and callers can turn it off


async def test_maintain_keeps_the_facts_when_the_store_cannot_open() -> None:
    class StoreDown(Clients):
        def store(self) -> MemoryStore:
            raise ConnectionError("Connection refused: Qdrant at localhost:6333")

    lm = scripted_lm(ops({"op": "ADD", "text": "User grows tomatoes", "category": "hobby"}))
    maintain = make_maintain(StoreDown(Settings(llm_attempts=1), memory_lm=lm), MaintainMemory())
    fact = observed("User grows tomatoes")
    state: Any = {"facts": [fact], "candidates": [], "messages": [HumanMessage("I grow tomatoes")]}

    update = await maintain(state, runtime())

    assert "maintain could not write: Connection refused" in update["memory_error"]
    assert "facts" not in update  # still pending for the next turn


def test_plan_a_closing_update_carries_no_new_fact() -> None:
    google = Candidate(ref=1, memory=record("User works at Google"))
    meta = observed("User works at Meta")
    planned, _ = plan_operations(
        [MemoryOp(op="UPDATE", id=1, text="User works at Google", valid_until=date(2026, 2, 27))],
        [google],
        [meta],
    )
    # The model closed Google but forgot the ADD: Meta is kept all the same.
    assert [(p.op, p.text, p.valid_until, p.detail) for p in planned] == [
        ("UPDATE", "User works at Google", date(2026, 2, 27), None),
        ("ADD", "User works at Meta", None, KEPT),
    ]


def test_plan_an_update_with_a_new_text_takes_its_facts_dates() -> None:
    tokyo = Candidate(ref=1, memory=record("User is in Tokyo"))
    until = observed("User is in Tokyo until Friday").model_copy(
        update={"valid_until": date(2026, 3, 13)}
    )
    planned, _ = plan_operations(
        [MemoryOp(op="UPDATE", id=1, text="User is in Tokyo until Friday")], [tokyo], [until]
    )
    assert [(p.op, p.valid_until) for p in planned] == [("UPDATE", date(2026, 3, 13))]
