"""Whole turns through the compiled graph with scripted LMs: every branch of design 2 and
the bad outputs real models produce."""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Iterable
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from pydantic import ValidationError

from engram.clients import Clients
from engram.graph import build_graph, checkpoint_serde
from engram.memory.store import ApplyReport, MemoryStore, PlannedOp
from engram.nodes.decide_save import route_after_decide
from engram.nodes.extract import route_after_extract
from engram.nodes.retrieve_similar import similar_memories
from engram.settings import Settings
from engram.state.errors import InvalidInputError
from engram.state.graph_state import TURN_RESET
from tests.helpers import facts, make_graph, ops, save, scripted_lm, thread_values, turn


def texts(store: MemoryStore, user_id: str = "alice") -> list[str]:
    return [m.text for m in store.memories(user_id)]


async def test_no_save_ends_after_decide(store: MemoryStore) -> None:
    lm = scripted_lm(save(False))
    result = await turn(make_graph(store, lm, ["Hi there!"]), "hello!")
    assert result["save"] is False
    assert isinstance(result["messages"][-1], AIMessage)
    assert result["messages"][-1].text == "Hi there!"
    assert result["applied"] == [] and result.get("facts", []) == []
    assert len(lm.history) == 1  # only decide_save ran
    assert store.count("alice") == 0


async def test_save_with_no_facts_ends_after_extract(store: MemoryStore) -> None:
    lm = scripted_lm(save(), {"facts": []})
    graph = make_graph(store, lm)
    result = await turn(graph, "I had a long day")
    assert result["save"] is True and result["facts"] == []
    assert (await thread_values(graph))["candidates"] is None  # retrieve_similar did not run
    assert len(lm.history) == 2 and store.count("alice") == 0


async def test_add_records_provenance(store: MemoryStore) -> None:
    lm = scripted_lm(
        save(),
        facts(("User's sister is called Mia", "relationships")),
        ops({"op": "ADD", "text": "User's sister is called Mia", "category": "relationships"}),
    )
    graph = make_graph(store, lm)
    result = await graph.ainvoke(
        {
            "messages": [
                HumanMessage(
                    "My sister is called Mia",
                    additional_kwargs={"sent_at": "2026-01-05T10:00:00+00:00"},
                )
            ]
        },
        config={"configurable": {"thread_id": "t-42"}},
        context={"user_id": "alice"},
    )
    assert [f.text for f in result["extracted"]] == ["User's sister is called Mia"]
    assert [a.result for a in result["applied"]] == ["added"]
    memory = store.get("alice", result["applied"][0].memory_id)
    assert memory.category == "relationships"
    assert memory.observed_at.isoformat() == "2026-01-05T10:00:00+00:00"
    assert memory.created_at > memory.observed_at
    assert memory.source.thread_id == "t-42"
    human, reply = result["messages"][-2:]
    assert memory.source.message_ids == [human.id, reply.id]
    assert result["facts"] == []  # applied facts are no longer pending


async def test_update_delete_and_noop_in_one_call(store: MemoryStore) -> None:
    store.add("alice", "User lives in Paris", "location")
    store.add("alice", "User owns a red bike", "personal")
    store.add("alice", "User likes jazz", "preferences")
    new_facts = [
        ("User moved to Berlin", "location"),
        ("User sold the bike", "personal"),
        ("User likes jazz", "preferences"),
    ]
    # The order the candidates will be shown in decides the small ids the LLM uses.
    shown = similar_memories(store, "alice", [text for text, _ in new_facts])
    ref = {m.text: i for i, m in enumerate(shown, start=1)}
    lm = scripted_lm(
        save(),
        facts(*new_facts),
        ops(
            {"op": "UPDATE", "id": ref["User lives in Paris"], "text": "User lives in Berlin"},
            {"op": "DELETE", "id": ref["User owns a red bike"]},
            {"op": "NOOP", "id": ref["User likes jazz"]},
        ),
    )
    graph = make_graph(store, lm)
    result = await turn(graph, "I moved to Berlin and sold my bike. Still love jazz.")
    assert sorted(a.result for a in result["applied"]) == [
        "added",
        "deleted",
        "unchanged",
        "updated",
    ]
    assert result["rejected"] == []
    # A DELETE carries no fact: "sold the bike" is kept as it is (design: DELETE, then ADD).
    kept = [a for a in result["applied"] if a.result == "added"]
    assert [(a.text, a.detail) for a in kept] == [("User sold the bike", KEPT)]
    assert sorted(texts(store)) == ["User likes jazz", "User lives in Berlin", "User sold the bike"]
    deleted = store.memories("alice", status="deleted")
    assert [m.text for m in deleted] == ["User owns a red bike"]


@pytest.mark.parametrize(
    ("bad_op", "reason"),
    [
        (
            {"op": "UPDATE", "id": 7, "text": "User lives on Mars"},
            "unknown id 7: this turn showed ids 1-1",
        ),
        ({"op": "DELETE", "id": 0}, "unknown id 0"),
        ({"op": "DELETE", "id": -3}, "unknown id -3"),
        ({"op": "UPDATE", "id": None, "text": "x"}, "UPDATE without an id"),
        ({"op": "UPDATE", "id": 1, "text": "  "}, "UPDATE with empty text"),
        ({"op": "ADD", "text": ""}, "ADD with empty text"),
    ],
)
async def test_invalid_operations_are_rejected_and_reported(
    store: MemoryStore, bad_op: dict[str, Any], reason: str
) -> None:
    store.add("alice", "User lives in Paris", "location")
    lm = scripted_lm(save(), facts(("User lives in Lyon", "location")), ops(bad_op))
    result = await turn(make_graph(store, lm), "I live in Lyon now")
    assert len(result["rejected"]) == 1
    assert result["rejected"][0].reason.startswith(reason)
    # Nothing the model returned survived, so the user's fact is kept as it is.
    assert [(a.op, a.text, a.result) for a in result["applied"]] == [
        ("ADD", "User lives in Lyon", "added")
    ]
    assert result["applied"][0].detail == "kept: no operation of the model kept this fact"
    assert texts(store) == ["User lives in Paris", "User lives in Lyon"]


async def test_an_empty_operation_list_does_not_drop_the_facts(store: MemoryStore) -> None:
    lm = scripted_lm(save(), facts(("User speaks Dutch", "personal")), ops())
    result = await turn(make_graph(store, lm), "Ik spreek Nederlands: I speak Dutch")
    assert [a.result for a in result["applied"]] == ["added"]
    assert texts(store) == ["User speaks Dutch"]


async def test_noop_for_a_known_fact_is_visible(store: MemoryStore) -> None:
    store.add("alice", "User likes jazz", "preferences")
    lm = scripted_lm(
        save(), facts(("User likes jazz", "preferences")), ops({"op": "NOOP", "id": 1})
    )
    result = await turn(make_graph(store, lm), "I like jazz")
    assert [(a.op, a.result) for a in result["applied"]] == [("NOOP", "unchanged")]
    assert texts(store) == ["User likes jazz"]


async def test_same_id_twice_in_one_call_is_rejected_the_second_time(store: MemoryStore) -> None:
    store.add("alice", "User lives in Paris", "location")
    lm = scripted_lm(
        save(),
        facts(("User lives in Lyon", "location")),
        ops({"op": "UPDATE", "id": 1, "text": "User lives in Lyon"}, {"op": "DELETE", "id": 1}),
    )
    result = await turn(make_graph(store, lm), "I live in Lyon now")
    assert [a.result for a in result["applied"]] == ["updated"]
    assert "already changed" in result["rejected"][0].reason
    assert texts(store) == ["User lives in Lyon"]


async def test_delete_without_add_still_keeps_the_new_fact(store: MemoryStore) -> None:
    store.add("alice", "User lives in Paris", "location")
    lm = scripted_lm(
        save(), facts(("User moved to Berlin", "location")), ops({"op": "DELETE", "id": 1})
    )
    result = await turn(make_graph(store, lm), "I moved to Berlin")
    assert sorted(a.result for a in result["applied"]) == ["added", "deleted"]
    assert texts(store) == ["User moved to Berlin"]


async def test_delete_everything_is_bounded_to_this_turns_candidates(
    store: MemoryStore,
) -> None:
    for index in range(12):
        store.add("alice", f"User collects stamps from country number {index}", "preferences")
    store.add("alice", "User is a nurse", "work")
    lm = scripted_lm(
        save(),
        facts(("User wants all stamp memories gone", "preferences")),
        ops(*[{"op": "DELETE", "id": i} for i in range(1, 40)]),
    )
    said = "Delete everything you know about me, all the stamp memories!"
    graph = make_graph(store, lm)
    result = await turn(graph, said)
    shown = len((await thread_values(graph))["candidates"])
    assert shown == 3  # PER_FACT nearest memories of the single fact
    deleted = [a for a in result["applied"] if a.op == "DELETE"]
    assert len(deleted) == shown
    assert len([r for r in result["rejected"] if "unknown id" in r.reason]) == 39 - shown
    # Everything not shown survives; the (odd) fact itself is kept, as every fact is.
    assert store.count("alice", status="active") == 13 - shown + 1
    assert "User is a nurse" in texts(store)


async def test_other_users_memories_are_never_recalled_nor_touched(
    store: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    bob = store.add("bob", "User lives in Paris", "location")
    bob_before = store.get("bob", bob.memory_id or "")
    store.add("alice", "User lives in a flat", "location")
    shown = similar_memories(store, "alice", ["User lives in Paris"])
    assert shown and {m.user_id for m in shown} == {"alice"}
    unshown = len(shown) + 1  # a small id of the kind the model sees, but not shown this turn
    lm = scripted_lm(
        save(),
        facts(("User lives in Paris", "location")),
        ops(
            {"op": "DELETE", "id": unshown},
            {"op": "UPDATE", "id": unshown + 1, "text": "User lives in Rome"},
            {"op": "DELETE", "id": 0},  # ids that map to nothing at all
            {"op": "NOOP", "id": -1},
            {"op": "UPDATE", "id": 99, "text": "User lives in Rome"},
        ),
    )
    sent_to_store: list[tuple[str, list[PlannedOp]]] = []
    apply = store.apply

    def spy(user_id: str, planned: Iterable[PlannedOp], **kwargs: Any) -> ApplyReport:
        planned = list(planned)
        sent_to_store.append((user_id, planned))
        return apply(user_id, planned, **kwargs)

    monkeypatch.setattr(store, "apply", spy)
    graph = make_graph(store, lm)
    result = await turn(graph, "Where do I live? I live in Paris.")

    assert {m.user_id for m in result["recalled"]} == {"alice"}  # bob's twin never recalled
    candidates = (await thread_values(graph))["candidates"]
    assert [c.memory.id for c in candidates] == [m.id for m in shown]
    assert sorted(r.ref for r in result["rejected"] if r.ref is not None) == sorted(
        [unshown, unshown + 1, 0, -1, 99]
    )
    assert all(r.reason.startswith(f"unknown id {r.ref}:") for r in result["rejected"])
    # The store got alice's own kept fact and nothing aimed at any existing memory.
    assert [(u, [(p.op, p.target_id, p.text) for p in ops]) for u, ops in sent_to_store] == [
        ("alice", [("ADD", None, "User lives in Paris")])
    ]
    assert store.get("bob", bob.memory_id or "") == bob_before
    assert len(store.history("bob", bob.memory_id or "")) == 1
    assert texts(store, "bob") == ["User lives in Paris"]
    assert sorted(texts(store)) == ["User lives in Paris", "User lives in a flat"]


async def test_assistant_statements_never_become_user_facts(store: MemoryStore) -> None:
    lm = scripted_lm(
        save(),
        facts(("User lives in Lisbon", "location"), ("User has a dog named Rex", "personal")),
        ops({"op": "ADD", "text": "User has a dog named Rex", "category": "personal"}),
    )
    graph = make_graph(store, lm, ["You live in Lisbon, right? Lisbon is lovely."])
    result = await turn(graph, "My dog is called Rex.")
    assert [r.reason for r in result["rejected"]] == ["stated by the assistant, not the user"]
    assert [f.text for f in result["facts"]] == []
    assert texts(store) == ["User has a dog named Rex"]
    maintain_prompt = lm.history[-1]["messages"][-1]["content"]
    assert "Lisbon" not in maintain_prompt


async def test_malformed_extract_output_is_retried_then_kept_for_next_turn(
    store: MemoryStore,
) -> None:
    lm = scripted_lm(
        save(),
        {"facts": "this is not json"},
        {"facts": "still not json"},  # chat + JSON fallback
        {"facts": "[{'text': broken"},
        {"facts": "nope"},  # second attempt
        # next turn: nothing new, but the failed message is extracted again
        save(False),
        facts(("User's favourite colour is teal", "preferences")),
        ops({"op": "ADD", "text": "User's favourite colour is teal", "category": "preferences"}),
    )
    graph = make_graph(store, lm, settings=Settings(llm_attempts=2))
    first = await turn(graph, "My favourite colour is teal")
    assert first["messages"][-1].text == "Noted."  # the user still got the answer
    assert "extract failed after 2 attempt(s)" in first["memory_error"]
    assert [u.message_id for u in first["unextracted"]] == [first["messages"][-2].id]
    assert store.count("alice") == 0

    second = await turn(graph, "ok thanks")
    assert second["memory_error"] is None and second["unextracted"] == []
    assert texts(store) == ["User's favourite colour is teal"]
    memory = store.memories("alice")[0]
    assert memory.source.message_ids[0] == first["messages"][-2].id


async def test_failing_maintain_keeps_facts_and_the_next_turn_applies_them(
    store: MemoryStore,
) -> None:
    lm = scripted_lm(
        save(),
        facts(("User runs marathons", "preferences")),
        {"reasoning": "x", "operations": "{not a list"},
        {"operations": "nope"},
        save(False),
        ops({"op": "ADD", "text": "User runs marathons", "category": "preferences"}),
    )
    graph = make_graph(store, lm)
    first = await turn(graph, "I run marathons")
    assert "maintain failed after 1 attempt(s)" in first["memory_error"]
    assert [f.text for f in first["facts"]] == ["User runs marathons"]
    assert store.count("alice") == 0

    second = await turn(graph, "what's the weather like?")
    assert [a.result for a in second["applied"]] == ["added"]
    assert second["facts"] == [] and texts(store) == ["User runs marathons"]


async def test_endpoint_exception_in_decide_fails_open(store: MemoryStore) -> None:
    class Boom(Exception):
        pass

    lm = scripted_lm(
        facts(("User is learning Greek", "plans")),
        ops({"op": "ADD", "text": "User is learning Greek", "category": "plans"}),
    )
    original = lm.acall

    calls = {"n": 0}

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise Boom("HTTP 503 from provider")
        return await original(*args, **kwargs)

    lm.acall = flaky  # type: ignore[method-assign]
    result = await turn(make_graph(store, lm), "I'm learning Greek")
    assert "decide_save failed" in result["memory_error"]
    assert "Boom: HTTP 503" in result["memory_error"]
    assert texts(store) == ["User is learning Greek"]


@pytest.mark.parametrize(
    ("context", "refusal"),
    [
        ({}, InvalidInputError),  # no server user to fill it in (identity.run_context)
        ({"user_id": ""}, InvalidInputError),
        ({"user_id": "   "}, ValidationError),
    ],
)
async def test_missing_or_blank_user_id_is_refused(
    store: MemoryStore, context: dict[str, Any], refusal: type[Exception]
) -> None:
    graph = make_graph(store, scripted_lm())
    with pytest.raises(refusal, match="user_id"):
        await graph.ainvoke(
            {"messages": [("user", "hi")]},
            config={"configurable": {"thread_id": "t"}},
            context=context,
        )
    assert store.count("alice") == 0


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "the user message is empty"),
        ("   \n", "the user message is empty"),
        ("x" * 8001, "8001 characters; the limit is 8000"),
    ],
)
async def test_empty_or_oversized_message_is_refused(
    store: MemoryStore, text: str, error: str
) -> None:
    lm = scripted_lm(save(), facts(("x", "other")))
    with pytest.raises(InvalidInputError, match=error):
        await turn(make_graph(store, lm), text)
    assert lm.history == [] and store.count("alice") == 0


async def test_never_policy_is_read_only(store: MemoryStore) -> None:
    store.add("alice", "User likes tea", "preferences")
    lm = scripted_lm()
    result = await turn(make_graph(store, lm), "I now prefer coffee", save_policy="never")
    assert [m.text for m in result["recalled"]] == ["User likes tea"]
    assert lm.history == [] and texts(store) == ["User likes tea"]


async def test_a_thread_belongs_to_its_first_user(store: MemoryStore) -> None:
    lm = scripted_lm(
        save(),
        facts(("User keeps bees", "preferences")),
        {"reasoning": "x", "operations": "{broken"},
        {"operations": "broken"},
    )
    graph = make_graph(store, lm)
    first = await turn(graph, "I keep bees", user_id="alice", thread_id="shared")
    assert [f.text for f in first["facts"]] == ["User keeps bees"]  # pending for alice
    with pytest.raises(InvalidInputError, match="this thread belongs to another user"):
        await turn(graph, "hello", user_id="bob", thread_id="shared")
    assert store.count("bob") == 0 and store.count("alice") == 0


async def test_malformed_sent_at_is_refused_before_the_answer(store: MemoryStore) -> None:
    lm = scripted_lm()
    graph = make_graph(store, lm)
    with pytest.raises(InvalidInputError, match="is not an ISO 8601 time"):
        await graph.ainvoke(
            {"messages": [HumanMessage("hi", additional_kwargs={"sent_at": "yesterday"})]},
            config={"configurable": {"thread_id": "t"}},
            context={"user_id": "alice"},
        )
    assert lm.history == []


async def test_store_failure_during_maintain_keeps_the_facts(
    store: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    lm = scripted_lm(
        save(),
        facts(("User grows tomatoes", "preferences")),
        ops({"op": "ADD", "text": "User grows tomatoes", "category": "preferences"}),
    )

    def qdrant_down(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Connection refused: Qdrant at localhost:6333")

    monkeypatch.setattr(store, "apply", qdrant_down)
    result = await turn(make_graph(store, lm, ["Nice!"]), "I grow tomatoes")
    assert result["messages"][-1].text == "Nice!"
    assert "maintain could not write: Connection refused" in result["memory_error"]
    assert [f.text for f in result["facts"]] == ["User grows tomatoes"]


KEPT = "kept: no operation of the model kept this fact"


async def test_every_fact_is_kept_when_the_model_covers_only_some(store: MemoryStore) -> None:
    lm = scripted_lm(
        save(),
        facts(("User lives in Lyon", "location"), ("User is allergic to peanuts", "health")),
        ops({"op": "ADD", "text": "User lives in Lyon", "category": "location"}),
    )
    result = await turn(make_graph(store, lm), "I live in Lyon and I'm allergic to peanuts")
    assert [(a.op, a.text, a.result, a.detail) for a in result["applied"]] == [
        ("ADD", "User lives in Lyon", "added", None),
        ("ADD", "User is allergic to peanuts", "added", KEPT),
    ]
    assert result["rejected"] == [] and result["facts"] == []
    assert sorted(texts(store)) == ["User is allergic to peanuts", "User lives in Lyon"]


async def test_a_noop_without_an_id_does_not_drop_the_fact(store: MemoryStore) -> None:
    lm = scripted_lm(save(), facts(("User is allergic to peanuts", "health")), ops({"op": "NOOP"}))
    result = await turn(make_graph(store, lm), "I'm allergic to peanuts")
    assert [r.reason for r in result["rejected"]] == ["NOOP without an id"]
    assert [(a.op, a.detail) for a in result["applied"]] == [("ADD", KEPT)]
    assert texts(store) == ["User is allergic to peanuts"]


async def test_a_store_that_cannot_open_in_maintain_keeps_the_facts(store: MemoryStore) -> None:
    class StoreGoesDown(Clients):
        """The store serves recall and retrieve_similar, then Qdrant goes away."""

        opened = 0

        def store(self) -> MemoryStore:
            self.opened += 1
            if self.opened > 2:
                raise ConnectionError("Connection refused: Qdrant at localhost:6333")
            return super().store()

    lm = scripted_lm(
        save(),
        facts(("User grows tomatoes", "preferences")),
        ops({"op": "ADD", "text": "User grows tomatoes", "category": "preferences"}),
    )
    clients = StoreGoesDown(
        Settings(llm_attempts=1),
        store=store,
        chat_model=FakeListChatModel(responses=["Nice!"]),
        memory_lm=lm,
    )
    graph = build_graph(clients).compile(checkpointer=InMemorySaver(serde=checkpoint_serde()))
    result = await turn(graph, "I grow tomatoes")
    assert clients.opened == 3  # recall, retrieve_similar, maintain
    assert result["messages"][-1].text == "Nice!"
    assert "maintain could not write: Connection refused" in result["memory_error"]
    assert [f.text for f in result["facts"]] == ["User grows tomatoes"]
    assert store.count("alice") == 0


async def test_rejections_add_up_within_a_turn_and_reset_on_the_next(
    store: MemoryStore,
) -> None:
    lm = scripted_lm(
        save(),
        facts(("User lives in Lisbon", "location"), ("User has a dog named Rex", "personal")),
        ops({"op": "DELETE", "id": 5}),
    )
    graph = make_graph(store, lm, ["You live in Lisbon, right?"])
    first = await turn(graph, "My dog is called Rex.")
    assert [r.op for r in first["rejected"]] == ["FACT", "DELETE"]  # extract's, then maintain's
    config: Any = {"configurable": {"thread_id": "thread-1"}}
    # What `engram memories retry` sends: the reset must clear what the reducer added up.
    retried = await graph.ainvoke(
        Command(update={**TURN_RESET, "save": False}, goto="extract"),
        config,
        context={"user_id": "alice"},
    )
    assert retried["rejected"] == [] and retried["memory_error"] is None


async def test_edge_routes_run_on_the_event_loop(
    store: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LangGraph runs a plain function on an edge in a worker thread when the graph runs
    asynchronously (a thread hop per route per turn): the routes must stay coroutines."""
    threads: dict[str, int] = {}

    def recorded(route: Any) -> Any:
        name = route.__name__
        if inspect.iscoroutinefunction(route):

            @functools.wraps(route)
            async def on_loop(*args: Any, **kwargs: Any) -> Any:
                threads[name] = threading.get_ident()
                return await route(*args, **kwargs)

            return on_loop

        @functools.wraps(route)
        def plain(*args: Any, **kwargs: Any) -> Any:
            threads[name] = threading.get_ident()
            return route(*args, **kwargs)

        return plain

    monkeypatch.setattr("engram.graph.route_after_decide", recorded(route_after_decide))
    monkeypatch.setattr("engram.graph.route_after_extract", recorded(route_after_extract))
    lm = scripted_lm(
        save(),
        facts(("User keeps bees", "hobbies")),
        ops({"op": "ADD", "text": "User keeps bees", "category": "hobbies"}),
    )
    result = await turn(make_graph(store, lm), "I keep bees on my roof")
    assert [a.result for a in result["applied"]] == ["added"]  # both routes went on
    assert threads == {
        "route_after_decide": threading.get_ident(),
        "route_after_extract": threading.get_ident(),
    }
