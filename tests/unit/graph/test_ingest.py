"""The ingest graph from Python: batches of messages an app already answered go through
decide_save → extract → retrieve_similar → maintain, every new user message considered,
re-sent ids changing nothing. Real store (Qdrant Edge, local embeddings), scripted LMs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from dspy.utils import DummyLM
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph.state import CompiledStateGraph
from langgraph.store.base import BaseStore
from langgraph.store.memory import InMemoryStore

from engram.clients import Clients
from engram.graph import build_ingest_graph, checkpoint_serde
from engram.memory.conversations import forget_conversations
from engram.memory.store import MemoryStore
from engram.nodes.extract import MAX_UNEXTRACTED
from engram.settings import Settings
from engram.state.errors import AccessDeniedError

# The maintain prompt is the only one that carries this header: listed first, so a fact
# text that repeats a message's words never answers for maintain.
MAINTAIN = "[[ ## new_facts ## ]]"
KEEP_EVERY_FACT = {"reasoning": "scripted", "operations": "[]"}  # uncarried facts are added


def keyed_lm(answers: dict[str, dict[str, Any]]) -> DummyLM:
    """Answers chosen by a text the prompt contains, so concurrent calls cannot take each
    other's answers. Each message's entry answers both its decide_save and its extract."""
    return DummyLM(
        {key: encoded(answer) for key, answer in {MAINTAIN: KEEP_EVERY_FACT, **answers}.items()}
    )


def encoded(answer: dict[str, Any]) -> dict[str, str]:
    """An answer as the model writes it: lists and dicts as JSON."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in answer.items()}


def remember(*facts: tuple[str, str]) -> dict[str, Any]:
    return {"save": "True", "facts": [{"text": t, "category": c} for t, c in facts]}


NOTHING = {"save": "False", "facts": []}


def steps(lm: DummyLM) -> list[str]:
    """Which program each LM call served, in order."""
    names = []
    for entry in lm.history:
        prompt = json.dumps(entry["messages"])
        names.append(
            "maintain"
            if "new_facts" in prompt
            else "extract"
            if "[[ ## facts ## ]]" in prompt
            else "decide_save"
        )
    return names


def ingest_graph(
    store: MemoryStore,
    lm: DummyLM,
    *,
    checkpointer: bool = True,
    run_store: BaseStore | None = None,
    **settings: Any,
) -> CompiledStateGraph[Any, Any, Any, Any]:
    clients = Clients(
        Settings(llm_attempts=1, **settings),
        store=store,
        chat_model=FakeListChatModel(responses=["unused"]),
        memory_lm=lm,
    )
    saver = InMemorySaver(serde=checkpoint_serde()) if checkpointer else None
    return build_ingest_graph(clients).compile(checkpointer=saver, store=run_store)


async def ingest(
    graph: CompiledStateGraph[Any, Any, Any, Any],
    messages: list[AnyMessage],
    user_id: str = "alice",
    thread_id: str | None = "conversation-1",
    **context: Any,
) -> dict[str, Any]:
    config: Any = {"configurable": {"thread_id": thread_id}} if thread_id else None
    result: dict[str, Any] = await graph.ainvoke(
        {"messages": messages}, config=config, context={"user_id": user_id, **context}
    )
    return result


def conversation() -> list[AnyMessage]:
    return [
        HumanMessage(
            "I live in Paris", id="u1", additional_kwargs={"sent_at": "2026-03-01T09:00:00+01:00"}
        ),
        AIMessage("Paris is lovely.", id="a1"),
        HumanMessage("What's the weather like?", id="u2"),
        AIMessage("Sunny.", id="a2"),
        HumanMessage(
            "My sister is called Mia",
            id="u3",
            additional_kwargs={"sent_at": "2026-03-02T18:30:00+01:00"},
        ),
        AIMessage("Nice name!", id="a3"),
    ]


def conversation_lm() -> DummyLM:
    return keyed_lm(
        {
            "I live in Paris": remember(("User lives in Paris", "location")),
            "What's the weather like?": NOTHING,
            "My sister is called Mia": remember(("User's sister is called Mia", "relationships")),
        }
    )


async def test_every_new_user_message_of_a_batch_is_considered(store: MemoryStore) -> None:
    lm = conversation_lm()
    result = await ingest(ingest_graph(store, lm), conversation())

    # decide_save once per user message; extract for the two worth saving; one maintain.
    assert sorted(steps(lm)) == ["decide_save"] * 3 + ["extract"] * 2 + ["maintain"]
    assert steps(lm)[-1] == "maintain"
    by_text = {f.text: f for f in result["extracted"]}
    assert set(by_text) == {"User lives in Paris", "User's sister is called Mia"}
    assert by_text["User lives in Paris"].message_ids == ["u1", "a1"]
    assert by_text["User lives in Paris"].observed_at.isoformat() == "2026-03-01T09:00:00+01:00"
    assert by_text["User's sister is called Mia"].message_ids == ["u3", "a3"]
    assert sorted(a.result for a in result["applied"]) == ["added", "added"]
    assert result["rejected"] == [] and result["memory_error"] is None
    assert sorted(m.text for m in store.memories("alice")) == [
        "User lives in Paris",
        "User's sister is called Mia",
    ]
    paris = next(m for m in store.memories("alice") if "Paris" in m.text)
    assert paris.observed_at.isoformat() == "2026-03-01T09:00:00+01:00"
    assert paris.source.thread_id == "conversation-1"
    assert store.count("bob") == 0


async def test_resending_the_same_message_ids_changes_nothing(store: MemoryStore) -> None:
    lm = conversation_lm()
    graph = ingest_graph(store, lm)
    await ingest(graph, conversation())
    calls, before = len(lm.history), store.memories("alice", status=None)

    again = await ingest(graph, conversation())
    assert len(lm.history) == calls  # no model was asked anything
    assert again["extracted"] == [] and again["applied"] == [] and again["rejected"] == []
    assert store.memories("alice", status=None) == before

    # A later batch on the same thread: only its new message is considered.
    lm.answers["I work as a nurse"] = {  # type: ignore[index]
        "save": "True",
        "facts": json.dumps([{"text": "User works as a nurse", "category": "work"}]),
    }
    later = await ingest(graph, [*conversation(), HumanMessage("I work as a nurse", id="u4")])
    assert steps(lm)[calls:] == ["decide_save", "extract", "maintain"]
    assert [f.text for f in later["extracted"]] == ["User works as a nurse"]
    assert [a.result for a in later["applied"]] == ["added"]


async def test_a_seen_id_with_another_text_is_reported_not_ingested(store: MemoryStore) -> None:
    lm = conversation_lm()
    graph = ingest_graph(store, lm)
    await ingest(graph, conversation())
    calls = len(lm.history)
    edited = HumanMessage("I live in Rome", id="u1")
    result = await ingest(graph, [edited])
    assert len(lm.history) == calls
    assert [(r.op, r.text) for r in result["rejected"]] == [("INGEST", "I live in Rome")]
    assert "u1 was ingested before with another text" in result["rejected"][0].reason
    assert "User lives in Paris" in [m.text for m in store.memories("alice")]


async def test_invalid_messages_are_rejected_and_ingest_once_fixed(store: MemoryStore) -> None:
    lm = keyed_lm(
        {
            "I keep bees": remember(("User keeps bees", "preferences")),
            "I play the cello": remember(("User plays the cello", "preferences")),
        }
    )
    graph = ingest_graph(store, lm, max_message_chars=40)
    bad_time = HumanMessage("I keep bees", id="u1", additional_kwargs={"sent_at": "yesterday"})
    too_long = HumanMessage("I play the cello " + "la " * 20, id="u2")
    result = await ingest(graph, [bad_time, too_long])
    reasons = sorted(r.reason for r in result["rejected"])
    assert "sent_at 'yesterday' is not an ISO 8601 time" in reasons[0]
    assert "u2 is 77 characters; the limit is 40" in reasons[1]
    assert lm.history == [] and store.count("alice") == 0

    fixed = [
        HumanMessage("I keep bees", id="u1", additional_kwargs={"sent_at": "2026-01-02"}),
        HumanMessage("I play the cello", id="u2"),
    ]
    result = await ingest(graph, fixed)
    assert result["rejected"] == []
    assert sorted(m.text for m in store.memories("alice")) == [
        "User keeps bees",
        "User plays the cello",
    ]


async def test_save_policies_always_and_never(store: MemoryStore) -> None:
    lm = conversation_lm()
    graph = ingest_graph(store, lm)
    nothing = await ingest(graph, conversation(), thread_id="t-never", save_policy="never")
    assert lm.history == [] and nothing["applied"] == [] and store.count("alice") == 0

    # "never" left the messages unseen: the same thread ingests them later.
    result = await ingest(graph, conversation(), thread_id="t-never", save_policy="always")
    assert "decide_save" not in steps(lm)  # "always" asks no model whether to save
    assert steps(lm).count("extract") == 3  # every user message, the small talk too
    assert sorted(a.result for a in result["applied"]) == ["added", "added"]


async def test_without_a_checkpointer_or_store_a_batch_is_one_off(store: MemoryStore) -> None:
    lm = conversation_lm()
    graph = ingest_graph(store, lm, checkpointer=False)
    result = await ingest(graph, conversation(), thread_id=None)
    assert sorted(a.result for a in result["applied"]) == ["added", "added"]
    assert {f.thread_id for f in result["extracted"]} == {None}
    # Stateless: the same batch is considered again; the store keeps one copy of each fact.
    again = await ingest(graph, conversation(), thread_id=None)
    assert sorted(a.result for a in again["applied"]) == ["duplicate", "duplicate"]
    assert store.count("alice") == 2


async def test_with_a_store_a_message_is_ingested_once_per_user_on_any_thread(
    store: MemoryStore,
) -> None:
    """As on the LangGraph server: a stateless run, or another thread, re-sending ids."""
    lm = conversation_lm()
    seen = InMemoryStore()
    stateless = ingest_graph(store, lm, checkpointer=False, run_store=seen)
    first = await ingest(stateless, conversation(), thread_id=None)
    assert sorted(a.result for a in first["applied"]) == ["added", "added"]
    assert {m.source.actor for m in store.memories("alice")} == {"ingest"}  # not "chat"
    calls = len(lm.history)

    again = await ingest(stateless, conversation(), thread_id=None)
    assert len(lm.history) == calls and again["applied"] == [] and again["extracted"] == []
    threaded = ingest_graph(store, lm, run_store=seen)
    other_thread = await ingest(threaded, conversation(), thread_id="another")
    assert len(lm.history) == calls and other_thread["applied"] == []
    edited = await ingest(stateless, [HumanMessage("I live in Rome", id="u1")], thread_id=None)
    assert "u1 was ingested before with another text" in edited["rejected"][0].reason

    # Message ids are the user's own: bob's u1 is another message.
    bob = await ingest(stateless, conversation(), user_id="bob", thread_id=None)
    assert sorted(a.result for a in bob["applied"]) == ["added", "added"]
    # Forgetting alice forgets which of her messages were ingested, and nothing of bob's.
    await forget_conversations(seen, "alice")
    assert await seen.asearch(("ingested",), limit=100) != []
    assert all(item.namespace[1] == "bob" for item in await seen.asearch(("ingested",)))
    lm_calls = len(lm.history)
    await ingest(stateless, conversation(), thread_id=None)
    assert len(lm.history) > lm_calls


async def test_an_ingest_thread_belongs_to_its_first_user(store: MemoryStore) -> None:
    lm = conversation_lm()
    graph = ingest_graph(store, lm)
    await ingest(graph, conversation(), user_id="alice", thread_id="shared")
    calls = len(lm.history)
    with pytest.raises(AccessDeniedError, match="this thread belongs to another user"):
        await ingest(graph, [HumanMessage("I live in Oslo", id="b1")], "bob", "shared")
    assert len(lm.history) == calls and store.count("bob") == 0


async def test_ingest_takes_only_messages_as_input(store: MemoryStore) -> None:
    schema = ingest_graph(store, conversation_lm()).get_input_jsonschema()
    assert list(schema["properties"]) == ["messages"]


FAILS = {"save": "True", "facts": "not a list of facts"}  # decide says yes; extract fails


async def test_a_failed_extraction_is_retried_when_a_stateless_run_is_resent(
    store: MemoryStore,
) -> None:
    """As on the server: the stateless run's thread, and its pending work, are thrown away,
    so the failed message must stay unseen for the re-sent batch to retry it."""
    lm = keyed_lm(
        {
            "I live in Paris": FAILS,
            "What's the weather like?": NOTHING,
            "My sister is called Mia": remember(("User's sister is called Mia", "relationships")),
        }
    )
    stateless = ingest_graph(store, lm, checkpointer=False, run_store=InMemoryStore())
    first = await ingest(stateless, conversation(), thread_id=None)
    assert "extract" in (first["memory_error"] or "")
    assert [u.message_id for u in first["unextracted"]] == ["u1"]
    assert [m.text for m in store.memories("alice")] == ["User's sister is called Mia"]
    calls = len(lm.history)

    lm.answers["I live in Paris"] = encoded(remember(("User lives in Paris", "location")))  # type: ignore[index]
    again = await ingest(stateless, conversation(), thread_id=None)
    # Only the failed message is worked on again; the others were done and ask nothing.
    assert steps(lm)[calls:] == ["decide_save", "extract", "maintain"]
    assert [f.text for f in again["extracted"]] == ["User lives in Paris"]
    assert again["memory_error"] is None and again["unextracted"] == []
    assert sorted(m.text for m in store.memories("alice", status=None)) == [
        "User lives in Paris",
        "User's sister is called Mia",
    ]
    calls = len(lm.history)
    await ingest(stateless, conversation(), thread_id=None)
    assert len(lm.history) == calls  # now every message is done


async def test_facts_maintain_could_not_apply_are_retried_when_resent(store: MemoryStore) -> None:
    lm = keyed_lm(
        {
            MAINTAIN: {"reasoning": "scripted", "operations": "not a list"},
            "I live in Paris": remember(("User lives in Paris", "location")),
        }
    )
    stateless = ingest_graph(store, lm, checkpointer=False, run_store=InMemoryStore())
    paris = conversation()[:2]
    first = await ingest(stateless, paris, thread_id=None)
    assert "maintain" in (first["memory_error"] or "") and store.count("alice") == 0
    assert [f.text for f in first["facts"]] == ["User lives in Paris"]  # pending, then lost

    lm.answers[MAINTAIN] = KEEP_EVERY_FACT  # type: ignore[index]
    again = await ingest(stateless, paris, thread_id=None)
    assert [a.result for a in again["applied"]] == ["added"]
    assert [m.text for m in store.memories("alice", status=None)] == ["User lives in Paris"]


async def test_a_message_pending_on_its_thread_is_retried_there_without_a_new_decision(
    store: MemoryStore,
) -> None:
    lm = keyed_lm({"I live in Paris": FAILS})
    graph = ingest_graph(store, lm, run_store=InMemoryStore())
    paris = conversation()[:2]
    await ingest(graph, paris)
    calls = len(lm.history)
    lm.answers["I live in Paris"] = encoded(remember(("User lives in Paris", "location")))  # type: ignore[index]
    again = await ingest(graph, paris)
    assert steps(lm)[calls:] == ["extract", "maintain"]  # the thread's retry, no decide_save
    assert [a.result for a in again["applied"]] == ["added"]
    calls = len(lm.history)
    await ingest(graph, paris)
    assert len(lm.history) == calls and store.count("alice") == 1


async def test_more_failed_messages_than_a_thread_retries_stay_unseen(store: MemoryStore) -> None:
    texts = [f"I collect stamps from country {n}" for n in range(MAX_UNEXTRACTED + 2)]
    lm = keyed_lm({text: FAILS for text in texts})
    seen = InMemoryStore()
    graph = ingest_graph(store, lm, run_store=seen)
    batch: list[AnyMessage] = [HumanMessage(text, id=f"u{n}") for n, text in enumerate(texts)]
    result = await ingest(graph, batch)
    assert len(result["unextracted"]) == MAX_UNEXTRACTED
    given_up = [r for r in result["rejected"] if r.op == "EXTRACT"]
    assert [r.text for r in given_up] == texts[:2]
    assert "send it again to retry" in given_up[0].reason
    assert await seen.asearch(("ingested",)) == []  # none of them is seen


async def test_a_thread_keeps_only_the_messages_whose_work_is_pending(store: MemoryStore) -> None:
    """A thread that ingests a long conversation batch after batch (a chat thread's memory
    thread on a server) does not grow with it: finished exchanges leave its state, pending
    ones stay for their retry, and a re-sent message is still recognised."""
    lm = keyed_lm(
        {
            "I live in Paris": remember(("User lives in Paris", "location")),
            "What's the weather like?": NOTHING,
            "My sister is called Mia": FAILS,
            "Hello again": NOTHING,
        }
    )
    graph = ingest_graph(store, lm)
    config: Any = {"configurable": {"thread_id": "conversation-1"}}
    batches = [conversation()[0:2], conversation()[2:4], conversation()[4:6]]
    for batch in batches:
        await ingest(graph, batch)
    await ingest(graph, [HumanMessage("Hello again", id="u4")])
    state = (await graph.aget_state(config)).values
    assert [m.id for m in state["messages"]] == ["u3", "a3"]  # Mia's extraction failed
    assert [item.message_id for item in state["unextracted"]] == ["u3"]
    assert set(state["ingested"]) >= {"u1", "u2", "u4"}

    calls = len(lm.history)
    await ingest(graph, batches[0])  # seen before, though no longer in the state
    asked = [json.dumps(entry["messages"]) for entry in lm.history[calls:]]
    assert asked and all("Mia" in prompt and "Paris" not in prompt for prompt in asked)
    assert [m.text for m in store.memories("alice")] == ["User lives in Paris"]


async def test_forwarded_messages_keep_their_origin_as_the_source(store: MemoryStore) -> None:
    """A message that names where it was first sent (`origin`: what a chat turn's memory
    steps on the server carry) yields memories whose source is that thread and message;
    a malformed origin is ignored."""
    lm = keyed_lm(
        {
            "I live in Paris": remember(("User lives in Paris", "location")),
            "My sister is called Mia": remember(("User's sister is called Mia", "relationships")),
        }
    )
    origin = {"thread_id": "chat-7", "message_id": "1"}
    messages: list[AnyMessage] = [
        HumanMessage("I live in Paris", id="m-u1", additional_kwargs={"origin": origin}),
        AIMessage(
            "Lovely.", id="m-a1", additional_kwargs={"origin": {**origin, "message_id": "2"}}
        ),
        HumanMessage("My sister is called Mia", id="m-u3", additional_kwargs={"origin": "x"}),
    ]
    await ingest(ingest_graph(store, lm), messages, thread_id="memory-thread")

    sources = {m.text: m.source for m in store.memories("alice")}
    assert sources["User lives in Paris"].thread_id == "chat-7"
    assert sources["User lives in Paris"].message_ids == ["1", "2"]
    assert sources["User's sister is called Mia"].thread_id == "memory-thread"
    assert sources["User's sister is called Mia"].message_ids == ["m-u3"]
