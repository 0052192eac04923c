"""Agent scopes through whole turns of the chat graph and `Memory.add`, with scripted LMs:
a private agent's facts stay its own, another agent's run (or one without an agent) never
recalls them, a thread keeps the agent it started with, and the profile is built from
shared memories only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.embeddings import Embeddings
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from engram.apps.python_api import AsyncMemory
from engram.clients import Clients
from engram.memory.store import MemoryStore
from engram.settings import Settings
from engram.state.context import ALL_AGENTS
from engram.state.errors import AccessDeniedError
from tests.helpers import facts, make_graph, make_store, ops, save, scripted_lm, turn

ASTHMA = "User has asthma"


@pytest.fixture
def store(local_embeddings: Embeddings, tmp_path: Path) -> Iterator[MemoryStore]:
    opened = make_store("edge", local_embeddings, tmp_path, private_agents=["health"])
    yield opened
    opened.engine.close()


def remembers_asthma() -> list[dict[str, object]]:
    return [
        save(),
        facts((ASTHMA, "health")),
        ops({"op": "ADD", "text": ASTHMA, "category": "health"}),
    ]


async def test_a_private_agents_fact_is_recalled_by_that_agent_only(store: MemoryStore) -> None:
    graph = make_graph(store, scripted_lm(*remembers_asthma(), save(False), save(False)))
    result = await turn(graph, "I have asthma", thread_id="h-1", agent_id="health")
    [applied] = result["applied"]
    memory = store.get("alice", applied.memory_id, agent_id="health")
    assert (memory.agent_id, memory.source.agent_id) == ("health", "health")
    assert store.memories("alice") == []  # not among the shared memories

    question = "Can I go running with asthma?"
    travel = await turn(graph, question, thread_id="t-1", agent_id="travel")
    nobody = await turn(graph, question, thread_id="n-1")
    assert travel["recalled"] == [] and nobody["recalled"] == []

    later = make_graph(store, scripted_lm(save(False)))
    again = await turn(later, question, thread_id="h-2", agent_id="health")
    assert [m.text for m in again["recalled"]] == [ASTHMA]


async def test_a_shared_agents_facts_are_every_agents(store: MemoryStore) -> None:
    lisbon = "User lives in Lisbon"
    graph = make_graph(
        store,
        scripted_lm(
            save(),
            facts((lisbon, "location")),
            ops({"op": "ADD", "text": lisbon, "category": "location"}),
            save(False),
        ),
    )
    await turn(graph, "I live in Lisbon", thread_id="t-1", agent_id="travel")
    [memory] = store.memories("alice")
    assert (memory.agent_id, memory.source.agent_id) == (None, "travel")
    recalled = await turn(graph, "Where do I live?", thread_id="h-1", agent_id="health")
    assert [m.text for m in recalled["recalled"]] == [lisbon]


async def test_a_thread_keeps_the_agent_it_started_with(store: MemoryStore) -> None:
    graph = make_graph(store, scripted_lm(save(False), save(False)))
    await turn(graph, "hello", thread_id="h-1", agent_id="health")
    for other in ({"agent_id": "travel"}, {}):
        with pytest.raises(AccessDeniedError, match="started with agent 'health'"):
            await turn(graph, "what did I tell you?", thread_id="h-1", **other)
    await turn(graph, "hello", thread_id="n-1")  # started without an agent
    with pytest.raises(AccessDeniedError, match="started with no agent"):
        await turn(graph, "and now?", thread_id="n-1", agent_id="health")
    await turn(graph, "still me", thread_id="h-1", agent_id="health")  # its own agent goes on


async def test_an_agent_run_never_gets_another_agents_memory_as_a_candidate(
    store: MemoryStore,
) -> None:
    asthma = store.add("alice", ASTHMA, "health", agent_id="health").memory_id
    assert asthma
    # travel's maintain step sees no candidate, so the model's UPDATE of "1" is unknown
    lm = scripted_lm(
        save(),
        facts(("User has no asthma", "health")),
        ops({"op": "UPDATE", "id": 1, "text": "User has no asthma", "category": "health"}),
    )
    result = await turn(make_graph(store, lm), "I don't have asthma", agent_id="travel")
    assert [r.op for r in result["rejected"]] == ["UPDATE"]
    [version] = store.history("alice", asthma, agent_id="health")  # never changed
    assert (version.status, version.text) == ("active", ASTHMA)


async def test_the_profile_is_built_from_shared_memories_only(store: MemoryStore) -> None:
    settings = Settings(llm_attempts=1, profile="on")
    lm = scripted_lm(*remembers_asthma())
    await turn(make_graph(store, lm, settings=settings), "I have asthma", agent_id="health")
    assert len(lm.history) == 3  # decide, extract, maintain: no profile call for a private fact
    assert store.profile("alice").lines == []


async def test_memory_add_as_an_agent_and_each_agent_reads_a_conversation_once(
    store: MemoryStore,
) -> None:
    lm = scripted_lm(
        *remembers_asthma(),
        # coach reads the same messages again (its own markers) and, seeing nothing of
        # health's, adds the fact to the shared memories
        save(),
        facts((ASTHMA, "health")),
        ops({"op": "ADD", "text": ASTHMA, "category": "health"}),
    )
    clients = Clients(
        Settings(llm_attempts=1),
        store=store,
        chat_model=FakeListChatModel(responses=["ok"]),
        memory_lm=lm,
    )
    memory = AsyncMemory(clients=clients)
    messages = [{"role": "user", "content": "I have asthma", "id": "m-1"}]
    first = await memory.add(messages, user_id="alice", agent_id="health")
    assert [a.result for a in first.applied] == ["added"]
    assert [m.agent_id for m in await memory.list(user_id="alice", agent_id=ALL_AGENTS)] == [
        "health"
    ]
    assert await memory.search("asthma", user_id="alice", agent_id="coach") == []
    coach = await memory.add(messages, user_id="alice", agent_id="coach")
    assert [a.result for a in coach.applied] == ["added"] and len(lm.history) == 6
    assert [m.text for m in await memory.list(user_id="alice")] == [ASTHMA]
