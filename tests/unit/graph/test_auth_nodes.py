"""The guard every node runs behind (`engram.graph.guard`), from Python: the run's user is the
authenticated one when a server gives one, a thread is its owner's at every node, models
are bounded before any client is built, and graphs compiled for a server keep plain data
in their checkpoints. Real store (Qdrant Edge), scripted LMs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.types import Command

from engram.clients import Clients
from engram.graph import build_graph, build_ingest_graph, checkpoint_serde
from engram.memory.store import MemoryStore
from engram.settings import Settings
from engram.state.contracts import AppliedOp, ObservedFact
from engram.state.errors import AccessDeniedError, InvalidInputError
from tests.helpers import facts, make_graph, ops, save, scripted_lm, turn

NODES = ["recall", "respond", "decide_save", "extract", "retrieve_similar", "maintain"]


@dataclass
class ServerUser:
    """What a LangGraph server puts in `configurable.langgraph_auth_user`."""

    identity: str
    is_authenticated: bool = True


def served(thread_id: str, user: str | None) -> dict[str, Any]:
    """A run's config as a LangGraph server builds it (clients cannot set these keys)."""
    configurable: dict[str, Any] = {"thread_id": thread_id, "graph_id": "engram"}
    if user is not None:
        configurable["langgraph_auth_user"] = ServerUser(user)
    return {"configurable": configurable}


def said(text: str) -> dict[str, Any]:
    return {"messages": [HumanMessage(text)]}


async def test_a_served_run_is_the_authenticated_users(store: MemoryStore) -> None:
    graph = make_graph(store, scripted_lm(save(False)))
    result = await graph.ainvoke(said("hi"), served("t1", "alice"), context={"user_id": "alice"})
    assert result["user_id"] == "alice"
    with pytest.raises(AccessDeniedError, match="'bob' is not the authenticated user"):
        await graph.ainvoke(said("hi"), served("t2", "alice"), context={"user_id": "bob"})
    with pytest.raises(AccessDeniedError, match="without an authenticated user"):
        await graph.ainvoke(said("hi"), served("t3", None), context={"user_id": "alice"})


async def test_a_served_run_naming_nobody_acts_for_the_authenticated_user(
    store: MemoryStore,
) -> None:
    """Aegra drops the auth handler's `context.user_id` (crons, runs): the node fills it in
    from the server's user; from plain Python a run must still name its user."""
    graph = make_graph(store, scripted_lm(save(False), save(False)))
    assert (await graph.ainvoke(said("hi"), served("t1", "alice"), context={}))[
        "user_id"
    ] == "alice"
    assert (await graph.ainvoke(said("hi"), served("t2", "alice")))["user_id"] == "alice"
    with pytest.raises(InvalidInputError, match="every run needs"):
        await graph.ainvoke(said("hi"), {"configurable": {"thread_id": "t3"}}, context={})
    anonymous = served("t4", None)  # Aegra's stand-in when its auth module did not load
    anonymous["configurable"]["langgraph_auth_user"] = ServerUser("anonymous", False)
    with pytest.raises(AccessDeniedError, match="did not authenticate this user"):
        await graph.ainvoke(said("hi"), anonymous)


async def test_no_node_of_a_thread_runs_for_another_user(store: MemoryStore) -> None:
    lm = scripted_lm(
        save(),
        facts(("User is allergic to cats", "health")),
        {"reasoning": "x", "operations": "{broken"},  # maintain fails: the fact stays pending
    )
    graph = make_graph(store, lm, settings=Settings(llm_attempts=1))
    first = await turn(graph, "I am allergic to cats", user_id="alice", thread_id="hers")
    assert [f.text for f in first["facts"]] == ["User is allergic to cats"]
    calls = len(lm.history)
    for node in NODES:
        for context, config in (
            ({"user_id": "bob"}, {"configurable": {"thread_id": "hers"}}),  # plain Python
            ({"user_id": "bob"}, served("hers", "bob")),  # a server's bob
        ):
            with pytest.raises(AccessDeniedError, match="belongs to another user"):
                await graph.ainvoke(Command(goto=node), config, context=context)
    assert len(lm.history) == calls
    assert store.count("bob") == 0 and store.count("alice") == 0
    state = (await graph.aget_state({"configurable": {"thread_id": "hers"}})).values
    assert [f.text for f in state["facts"]] == ["User is allergic to cats"]


async def test_the_first_node_on_a_thread_stamps_its_owner(store: MemoryStore) -> None:
    graph = make_graph(store, scripted_lm(ops()))
    config = {"configurable": {"thread_id": "entered-late"}}
    fact = ObservedFact(text="User rows", category="sport", observed_at="2026-01-01T00:00:00Z")
    await graph.aupdate_state(
        config, {"facts": [fact], "candidates": []}, as_node="retrieve_similar"
    )
    result = await graph.ainvoke(Command(goto="maintain"), config, context={"user_id": "bob"})
    assert result["user_id"] == "bob"
    assert [m.text for m in store.memories("bob")] == ["User rows"]
    with pytest.raises(AccessDeniedError, match="belongs to another user"):
        await graph.ainvoke(Command(goto="maintain"), config, context={"user_id": "alice"})


async def test_a_model_outside_the_allowed_ones_is_refused_before_any_client_exists(
    store: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[str] = []
    monkeypatch.setattr(Clients, "_build_chat_model", lambda self, name: built.append(name))
    monkeypatch.setattr(Clients, "_build_memory_lm", lambda self, name: built.append(name))
    clients = Clients(Settings(openai_api_key="test", chat_model="small"), store=store)
    graph = build_graph(clients).compile(checkpointer=InMemorySaver())
    for knob in ({"chat_model": "huge"}, {"memory_model": "huge"}):
        with pytest.raises(AccessDeniedError, match=r"'huge' is not allowed.*allowed: small"):
            await graph.ainvoke(
                said("hi"),
                {"configurable": {"thread_id": str(knob)}},
                context={"user_id": "a", **knob},
            )
    assert built == []
    allowed = Settings(openai_api_key="test", chat_model="small", allowed_models=["small", "huge"])
    assert allowed.permitted_models == {"small", "huge"}


async def test_graphs_for_a_server_keep_only_plain_data_in_checkpoints(store: MemoryStore) -> None:
    """Their checkpoints hold no Engram class, so a checkpointer that trusts none (the
    strictest future LangGraph) restores them without a warning; nodes still see Engram's
    types."""
    lm = scripted_lm(
        save(),
        facts(("User lives in Oslo", "location")),
        ops({"op": "ADD", "text": "User lives in Oslo", "category": "location"}),
        save(),
        facts(("User moved to Bergen", "location")),
        ops({"op": "UPDATE", "id": 1, "text": "User lives in Bergen", "category": "location"}),
    )
    clients = Clients(
        Settings(llm_attempts=1),
        store=store,
        chat_model=FakeListChatModel(responses=["Noted."]),
        memory_lm=lm,
    )
    strict = InMemorySaver(serde=JsonPlusSerializer(allowed_msgpack_modules=None))
    graph = build_graph(clients, plain_checkpoints=True).compile(checkpointer=strict)
    first = await turn(graph, "I live in Oslo")
    assert first["applied"] == [
        AppliedOp(
            op="ADD",
            memory_id=first["applied"][0]["memory_id"],
            text="User lives in Oslo",
            result="added",
        ).model_dump()
    ]
    second = await turn(graph, "I moved to Bergen")  # restores the first turn's state
    assert [a["result"] for a in second["applied"]] == ["updated"]
    assert [m.text for m in store.memories("alice")] == ["User lives in Bergen"]
    # No Engram class was written, so none has to be trusted when it is read back.
    stored = repr(strict.storage) + repr(strict.writes)
    assert "engram.state.contracts" not in stored

    lm.answers = iter(  # type: ignore[assignment]
        [
            {"save": "True"},
            {"facts": '[{"text": "User has a boat", "category": "personal"}]'},
            {"reasoning": "x", "operations": "[]"},
        ]
    )
    ingest = build_ingest_graph(clients, plain_checkpoints=True).compile(checkpointer=strict)
    ingested = await ingest.ainvoke(
        {"messages": [HumanMessage("I have a boat", id="m1")]},
        {"configurable": {"thread_id": "ingest-1"}},
        context={"user_id": "alice"},
    )
    assert [a["result"] for a in ingested["applied"]] == ["added"]
    assert "engram.state.contracts" not in repr(strict.storage) + repr(strict.writes)


async def test_plain_python_graphs_keep_engrams_types(store: MemoryStore) -> None:
    graph = make_graph(
        store,
        scripted_lm(
            save(),
            facts(("User sings", "preferences")),
            ops({"op": "ADD", "text": "User sings", "category": "preferences"}),
        ),
    )
    result = await turn(graph, "I sing")
    assert isinstance(result["applied"][0], AppliedOp)
    assert isinstance(result["extracted"][0], ObservedFact)
    assert checkpoint_serde() is not None
