"""Validity dates through the graph with scripted models: extraction's dates reach the
store, maintain closes an old fact instead of deleting it, recall leaves out what is no
longer true unless the message asks about the past, and the prompt shows the dates."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver

from engram.clients import Clients
from engram.graph import build_graph, checkpoint_serde
from engram.memory.store import MemoryStore, PlannedOp
from engram.settings import Settings
from tests.eval_fakes import MemoryEchoChat
from tests.helpers import ops, save, scripted_lm


def graph_of(store: MemoryStore, lm: Any) -> tuple[Any, MemoryEchoChat]:
    chat = MemoryEchoChat(prompts=[])
    clients = Clients(Settings(llm_attempts=1), store=store, chat_model=chat, memory_lm=lm)
    return build_graph(clients).compile(checkpointer=InMemorySaver(serde=checkpoint_serde())), chat


async def say(graph: Any, text: str, day: str) -> dict[str, Any]:
    message = HumanMessage(text, additional_kwargs={"sent_at": f"{day}T09:00:00+00:00"})
    result: dict[str, Any] = await graph.ainvoke(
        {"messages": [message]},
        config={"configurable": {"thread_id": "t"}},
        context={"user_id": "alice"},
    )
    return result


async def test_until_friday_is_stored_recalled_until_then_and_past_after(
    store: MemoryStore,
) -> None:
    lm = scripted_lm(
        save(),
        {
            "facts": [
                {"text": "User is in Tokyo", "category": "location", "valid_until": "2026-03-13"}
            ]
        },
        ops({"op": "ADD", "text": "User is in Tokyo", "category": "location"}),
        save(False),
        save(False),
        save(False),
    )
    graph, chat = graph_of(store, lm)
    await say(graph, "I'm in Tokyo until Friday", "2026-03-09")
    [memory] = store.memories("alice")
    assert memory.valid_until == date(2026, 3, 13)  # the fact's date, kept by maintain

    thursday = await say(graph, "Any tips for my stay in Tokyo?", "2026-03-12")
    assert [m.text for m in thursday["recalled"]] == ["User is in Tokyo"]
    assert "true until 2026-03-13" in chat.prompts[-1]

    saturday = await say(graph, "Any tips for my stay in Tokyo?", "2026-03-14")
    assert saturday["recalled"] == []

    past = await say(graph, "Was I in Tokyo before?", "2026-03-14")
    assert [m.text for m in past["recalled"]] == ["User is in Tokyo"]
    assert "no longer true: it held until 2026-03-13" in chat.prompts[-1]


async def test_a_move_closes_the_old_home_and_keeps_it_answerable(store: MemoryStore) -> None:
    lived = datetime(2024, 1, 1, tzinfo=UTC)
    report = store.apply(
        "alice",
        [PlannedOp("ADD", text="User lives in Paris", category="location", observed_at=lived)],
    )
    paris = report.applied[0].memory_id
    lm = scripted_lm(
        save(),
        {"facts": [{"text": "User moved to Berlin", "category": "location"}]},
        ops(
            {"op": "UPDATE", "id": 1, "text": "User lives in Paris", "valid_until": "2026-02-28"},
            {"op": "ADD", "text": "User lives in Berlin", "category": "location"},
        ),
        save(False),
        save(False),
    )
    graph, _ = graph_of(store, lm)
    await say(graph, "I moved to Berlin at the start of March", "2026-03-02")
    current = {m.text: m.valid_until for m in store.memories("alice")}
    assert current == {"User lives in Paris": date(2026, 2, 28), "User lives in Berlin": None}
    assert paris and store.history("alice", paris)[0].status == "superseded"

    now = await say(graph, "Which city should I explore this weekend?", "2026-03-05")
    assert [m.text for m in now["recalled"]] == ["User lives in Berlin"]
    then = await say(graph, "When did I live in Paris?", "2026-03-05")
    assert "User lives in Paris" in [m.text for m in then["recalled"]]


async def test_restating_a_plan_renews_its_time_to_live(store: MemoryStore) -> None:
    store.ttl_days = {"plans": 90}
    said = datetime(2026, 1, 10, 9, tzinfo=UTC)
    store.apply(
        "alice",
        [PlannedOp("ADD", text="User plans a trip to Peru", category="plans", observed_at=said)],
    )
    assert store.memories("alice")[0].valid_until == date(2026, 4, 10)
    lm = scripted_lm(
        save(),
        {"facts": [{"text": "User plans a trip to Peru", "category": "plans"}]},
        ops({"op": "NOOP", "id": 1}),
    )
    graph, _ = graph_of(store, lm)
    result = await say(graph, "Still planning that Peru trip!", "2026-03-01")
    assert [(a.op, a.result) for a in result["applied"]] == [("NOOP", "updated")]
    [memory] = store.memories("alice")
    assert (memory.text, memory.valid_until) == ("User plans a trip to Peru", date(2026, 5, 30))
