"""End to end through the real clients: `ChatOpenAI`, `OpenAIEmbeddings` and `dspy.LM`
(litellm), all built by `Clients` from `Settings`, talking HTTP to a local fake
OpenAI-compatible server (tests/fake_openai.py). Qdrant runs in memory."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import date
from typing import Any

import dspy
import pytest
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_openai import ChatOpenAI
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph.state import CompiledStateGraph
from pydantic import SecretStr
from qdrant_client import QdrantClient

from engram.clients import Clients, build_embeddings
from engram.graph import build_graph, checkpoint_serde
from engram.memory.store import MemoryStore
from engram.nodes.programs import DecideSave, MaintainMemory
from engram.settings import Settings
from engram.state import Fact
from engram.state.errors import ConfigurationError, EndpointError
from tests.fake_openai import (
    FakeOpenAI,
    Hang,
    RecordedRequest,
    add_op,
    closed_port_url,
    facts_answer,
    operations_answer,
    save_answer,
)
from tests.helpers import turn

Graph = CompiledStateGraph[Any, Any, Any, Any]


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(dims=64) as server:
        yield server


def e2e_settings(base_url: str, **overrides: Any) -> Settings:
    # The fake's embeddings know words, not meanings ("live" and "lives" are unrelated to
    # it): no relevance floor, which is tuned for real models.
    values: dict[str, Any] = {
        "llm_attempts": 1,
        "llm_timeout": 10.0,
        "recall_floor": -1.0,
        **overrides,
    }
    return Settings(openai_base_url=base_url, openai_api_key="test", **values)


def openai_store(settings: Settings) -> MemoryStore:
    """An in-memory Qdrant store embedding through the (fake) OpenAI endpoint."""
    return MemoryStore(QdrantClient(":memory:"), build_embeddings(settings), dims=64)


def e2e_graph(settings: Settings, store: MemoryStore) -> Graph:
    clients = Clients(settings, store=store)
    return build_graph(clients).compile(checkpointer=InMemorySaver(serde=checkpoint_serde()))


def llm_steps(fake: FakeOpenAI) -> list[str]:
    return [step for step in fake.steps() if step != "embeddings"]


# -- the fake speaks both clients' dialects -------------------------------------------------


async def test_fake_server_answers_the_real_clients(fake: FakeOpenAI) -> None:
    seen: list[str] = []

    def responder(request: RecordedRequest) -> str | None:
        seen.append(request.step)
        if request.step == "maintain":  # the program's typed inputs arrive as JSON
            facts = json.loads(request.inputs["new_facts"])
            return operations_answer(*[add_op(f["text"], f["category"]) for f in facts])
        return "Scripted by the responder." if request.step == "chat" else None

    fake.responder = responder
    settings = e2e_settings(fake.url)
    clients = Clients(settings)

    streamed = [chunk async for chunk in clients.chat_model().astream("Hello")]
    assert len(streamed) > 2
    assert "".join(chunk.text for chunk in streamed) == "Scripted by the responder."
    plain = ChatOpenAI(model="m", api_key=SecretStr("test"), base_url=fake.url, max_retries=0)
    assert (await plain.ainvoke("Hello")).text == "Scripted by the responder."
    assert [r.stream for r in fake.requests_for("chat")] == [True, False]

    with dspy.context(lm=clients.memory_lm()):
        decided = await DecideSave().acall(
            known_memories=[], user_message="I live in Paris", assistant_message="Nice."
        )
        maintained = await MaintainMemory().acall(
            new_facts=[Fact(text="User lives in Paris", category="location")],
            existing_memories=[],
            today=date(2026, 3, 1),
        )
    assert decided.save is True
    assert [(op.op, op.text, op.category) for op in maintained.operations] == [
        ("ADD", "User lives in Paris", "location")
    ]
    assert seen == ["chat", "chat", "decide_save", "maintain"]

    embeddings = build_embeddings(settings)
    paris, lives, tea = embeddings.embed_documents(
        ["User lives in Paris", "lives in Paris", "Green tea every morning"]
    )
    assert len(paris) == 64

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(paris, lives) > 0.7 > cosine(paris, tea)
    assert embeddings.embed_query("User lives in Paris") == pytest.approx(paris, abs=1e-6)


# -- the happy path ------------------------------------------------------------------------


async def test_alice_remembers_across_turns_and_bob_sees_nothing(fake: FakeOpenAI) -> None:
    settings = e2e_settings(fake.url)
    store = openai_store(settings)
    graph = e2e_graph(settings, store)

    fake.queue("extract", facts_answer(("User lives in Paris", "location")))
    fake.queue("chat", "Paris is a lovely place to live.")
    first = await turn(graph, "I live in Paris.", user_id="alice", thread_id="alice-1")

    assert llm_steps(fake) == ["chat", "decide_save", "extract", "maintain"]
    assert isinstance(first["messages"][-1], AIMessage)
    assert first["messages"][-1].text == "Paris is a lovely place to live."
    assert [(a.op, a.result, a.text) for a in first["applied"]] == [
        ("ADD", "added", "User lives in Paris")
    ]
    assert first["memory_error"] is None
    assert [m.text for m in store.memories("alice")] == ["User lives in Paris"]
    # What the real clients sent: the key, the embedding size, the model names.
    assert {r.headers.get("authorization") for r in fake.requests} == {"Bearer test"}
    embedding_requests = fake.requests_for("embeddings")
    assert embedding_requests
    assert {r.body.get("dimensions") for r in embedding_requests} == {64}
    assert {r.body.get("model") for r in embedding_requests} == {"text-embedding-3-small"}
    maintain_request = fake.requests_for("maintain")[0]
    assert json.loads(maintain_request.inputs["new_facts"]) == [
        {"text": "User lives in Paris", "category": "location"}
    ]
    assert json.loads(maintain_request.inputs["existing_memories"]) == []

    # Turn 2, same thread: the memory is recalled and shown to the chat model.
    fake.queue("decide_save", save_answer(False))
    fake.queue("chat", "You live in Paris.")
    second = await turn(graph, "Where do I live?", user_id="alice", thread_id="alice-1")
    assert [m.text for m in second["recalled"]] == ["User lives in Paris"]
    chat_request = fake.requests_for("chat")[-1]
    assert "User lives in Paris (location; said " in chat_request.system_prompt
    assert second["messages"][-1].text == "You live in Paris."
    assert second["applied"] == []
    assert len(fake.requests_for("extract")) == 1  # nothing new to save on turn 2

    # A fresh thread of alice: only recall can have brought the memory back.
    fake.queue("decide_save", save_answer(False))
    fresh = await turn(graph, "Remind me where I live", user_id="alice", thread_id="alice-2")
    assert [m.text for m in fresh["recalled"]] == ["User lives in Paris"]
    assert len(fresh["messages"]) == 2
    assert "User lives in Paris" in fake.requests_for("chat")[-1].system_prompt

    # Bob, on his own thread, recalls nothing of alice's.
    fake.queue("decide_save", save_answer(False))
    bob = await turn(graph, "Where do I live?", user_id="bob", thread_id="bob-1")
    assert bob["recalled"] == []
    bob_prompt = fake.requests_for("chat")[-1].system_prompt
    assert "Paris" not in bob_prompt
    assert "(with the date they told you):\nnone\n" in bob_prompt
    assert store.memories("bob") == []
    assert fake.pending("decide_save") == fake.pending("chat") == fake.pending("extract") == 0


async def test_chat_prompt_stays_bounded_as_the_thread_grows(fake: FakeOpenAI) -> None:
    settings = e2e_settings(fake.url, history_window=4)
    graph = e2e_graph(settings, openai_store(settings))
    for number in range(1, 8):
        await turn(graph, f"message number {number}", save_policy="never")

    chat_requests = fake.requests_for("chat")
    assert len(chat_requests) == 7
    assert llm_steps(fake) == ["chat"] * 7  # save_policy=never: no memory step called
    for request in chat_requests:
        roles = [m["role"] for m in request.messages]
        assert roles[0] == "system"
        assert len(roles) <= 1 + 4
    last = chat_requests[-1]
    assert "message number 7" in last.last_user_text
    assert all("message number 1" not in str(m.get("content")) for m in last.messages)
    assert last.prompt_chars < 2 * chat_requests[2].prompt_chars


async def test_respond_streams_several_chunks(fake: FakeOpenAI) -> None:
    settings = e2e_settings(fake.url)
    graph = e2e_graph(settings, openai_store(settings))
    reply = "Hello Alice, nice to meet you again today."
    fake.queue("chat", reply)

    chunks: list[AIMessageChunk] = []
    async for message, metadata in graph.astream(  # (chunk, metadata) in "messages" mode
        {"messages": [("user", "Hi there")]},
        config={"configurable": {"thread_id": "stream-1"}},
        context={"user_id": "alice", "save_policy": "never"},
        stream_mode="messages",
    ):
        node = metadata.get("langgraph_node") if isinstance(metadata, dict) else None
        if node == "respond" and isinstance(message, AIMessageChunk):
            chunks.append(message)

    assert len([c for c in chunks if c.text]) >= 5
    assert "".join(c.text for c in chunks) == reply
    assert fake.requests_for("chat")[0].stream is True
    state = await graph.aget_state({"configurable": {"thread_id": "stream-1"}})
    assert state.values["messages"][-1].text == reply


# -- endpoint failures ---------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 401])
async def test_chat_endpoint_http_error_is_endpoint_error(fake: FakeOpenAI, status: int) -> None:
    settings = e2e_settings(fake.url)
    store = openai_store(settings)
    graph = e2e_graph(settings, store)
    fake.fail("chat", status=status, message="the model is on fire")

    with pytest.raises(EndpointError) as caught:
        await turn(graph, "I live in Paris.")

    message = str(caught.value)
    assert f"chat model at {fake.url} answered HTTP {status}" in message
    assert "the model is on fire" in message
    assert llm_steps(fake) and set(llm_steps(fake)) == {"chat"}  # no memory step ran
    assert store.count("alice") == 0


@pytest.mark.parametrize("refused", ["chat", "everything"])
async def test_connection_refused_is_endpoint_error(fake: FakeOpenAI, refused: str) -> None:
    closed = closed_port_url()
    settings = e2e_settings(closed)
    # "chat": embeddings still work (the store talks to the fake), only the LLM is down.
    store = openai_store(e2e_settings(fake.url) if refused == "chat" else settings)
    graph = e2e_graph(settings, store)

    with pytest.raises(EndpointError) as caught:
        await turn(graph, "I live in Paris.")

    what = "chat model" if refused == "chat" else "embedding model"
    assert f"{what} at {closed} could not be reached" in str(caught.value)
    assert store.count("alice") == 0
    assert llm_steps(fake) == []


async def test_chat_timeout_is_endpoint_error(fake: FakeOpenAI) -> None:
    settings = e2e_settings(fake.url, llm_timeout=0.5)
    store = openai_store(settings)
    graph = e2e_graph(settings, store)
    fake.hang("chat", 30)

    started = time.monotonic()
    with pytest.raises(EndpointError, match=r"chat model at .* timed out"):
        await turn(graph, "I live in Paris.")

    assert time.monotonic() - started < 15  # the client gave up; it did not wait 30 s
    assert fake.requests_for("chat")
    assert llm_steps(fake) == ["chat"] * len(fake.requests_for("chat"))
    assert store.count("alice") == 0


async def test_embedding_endpoint_error_fails_recall_before_the_chat(fake: FakeOpenAI) -> None:
    settings = e2e_settings(fake.url)
    graph = e2e_graph(settings, openai_store(settings))
    fake.fail("embeddings", status=503, message="embeddings are down")

    with pytest.raises(EndpointError, match=r"embedding model at .* answered HTTP 503"):
        await turn(graph, "I live in Paris.")
    assert llm_steps(fake) == []


async def test_memory_step_failure_keeps_the_answer_and_the_facts(fake: FakeOpenAI) -> None:
    settings = e2e_settings(fake.url)
    store = openai_store(settings)
    graph = e2e_graph(settings, store)
    fake.queue("chat", "Noted, Paris!")
    fake.queue("extract", facts_answer(("User lives in Paris", "location")))
    fake.fail("maintain", status=500)

    result = await turn(graph, "I live in Paris.")

    assert result["messages"][-1].text == "Noted, Paris!"
    assert result["memory_error"] and "maintain failed" in result["memory_error"]
    assert "scripted HTTP 500 for maintain" in result["memory_error"]
    assert [f.text for f in result["facts"]] == ["User lives in Paris"]
    assert result["applied"] == []
    assert fake.requests_for("maintain")
    assert store.count("alice") == 0  # every status: nothing written at all

    # The endpoint recovers: the next turn applies the facts that were kept.
    fake.clear("maintain")
    fake.queue("decide_save", save_answer(False))
    fake.queue("chat", "Sure.")
    later = await turn(graph, "Thanks!")
    assert later["memory_error"] is None
    assert [(a.op, a.text) for a in later["applied"]] == [("ADD", "User lives in Paris")]
    assert later["facts"] == []
    assert [m.text for m in store.memories("alice")] == ["User lives in Paris"]
    assert len(fake.requests_for("extract")) == 1  # the kept facts were not re-extracted


async def test_memory_step_timeout_is_reported_not_raised(fake: FakeOpenAI) -> None:
    settings = e2e_settings(fake.url, llm_timeout=1.0)
    store = openai_store(settings)
    graph = e2e_graph(settings, store)
    fake.queue("chat", "Noted.")
    fake.queue("decide_save", Hang(30))  # fails open: extraction still runs
    fake.queue("extract", facts_answer(("User lives in Paris", "location")))

    result = await turn(graph, "I live in Paris.")

    assert result["messages"][-1].text == "Noted."
    assert result["memory_error"] and "decide_save failed" in result["memory_error"]
    assert [a.text for a in result["applied"]] == ["User lives in Paris"]
    assert [m.text for m in store.memories("alice")] == ["User lives in Paris"]


# -- configuration ---------------------------------------------------------------------------


def test_missing_key_and_endpoint_is_a_configuration_error() -> None:
    clients = Clients(Settings())
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        clients.chat_model()
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        clients.memory_lm()
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        build_embeddings(Settings())
