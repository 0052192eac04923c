"""The profile through the compiled graph with scripted models: built after memory changes
that may belong in it, followed when its memories change, never called on turns that
change nothing, kept and retried when its program fails, in every answer's prompt within
its bound, and off when ENGRAM_PROFILE=off."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver

from engram.clients import Clients
from engram.graph import build_graph, build_ingest_graph, checkpoint_serde
from engram.memory.store import MemoryStore
from engram.nodes.update_profile import PROFILE_BATCH
from engram.settings import Settings
from engram.state.contracts import Profile, ProfileLine, Source
from tests.eval_fakes import MemoryEchoChat
from tests.helpers import facts, ops, save, scripted_lm, thread_values, turn


def profile(*lines: tuple[str, list[int]]) -> dict[str, Any]:
    return {"lines": [{"text": text, "memory_ids": ids} for text, ids in lines]}


def graph_of(store: MemoryStore, lm: Any, **settings: Any) -> tuple[Any, MemoryEchoChat]:
    chat = MemoryEchoChat(prompts=[])
    options: dict[str, Any] = {"llm_attempts": 1, "profile": "on", **settings}
    clients = Clients(Settings(**options), store=store, chat_model=chat, memory_lm=lm)
    graph = build_graph(clients).compile(checkpointer=InMemorySaver(serde=checkpoint_serde()))
    return graph, chat


def lines(store: MemoryStore, user_id: str = "alice") -> list[str]:
    return [line.text for line in store.profile(user_id).lines]


def calls(lm: Any) -> int:
    return len(lm.history)


async def test_the_first_core_fact_builds_the_profile_and_the_next_answer_sees_it(
    store: MemoryStore,
) -> None:
    lm = scripted_lm(
        save(),
        facts(("User is vegetarian", "health")),
        ops({"op": "ADD", "text": "User is vegetarian", "category": "health"}),
        profile(("Vegetarian.", [1])),
        save(False),
    )
    graph, chat = graph_of(store, lm)
    first = await turn(graph, "I'm vegetarian, by the way")
    assert lines(store) == ["Vegetarian."]
    veg = store.memories("alice")[0]
    assert store.profile("alice").lines[0].memory_ids == [veg.id]
    assert first["profile"] is not None and first["profile"].lines[0].text == "Vegetarian."
    kept = (await thread_values(graph))["profile"]  # the checkpoint holds the contract
    assert isinstance(kept, Profile) and kept.lines[0].text == "Vegetarian."
    history = store.profile_history("alice")
    assert history[0].events[0].source.actor == "profile"
    assert history[0].events[0].source.thread_id == "thread-1"

    second = await turn(graph, "Can you suggest a dinner for tonight?")
    system = chat.prompts[-1]
    assert "The user's profile" in system and "- Vegetarian." in system
    # what the profile states is not recalled a second time
    assert all(m.id != veg.id for m in second["recalled"])
    assert "User is vegetarian (" not in system
    assert calls(lm) == 5  # the second turn: decide_save only


async def test_a_turn_that_changes_nothing_calls_no_profile_program(store: MemoryStore) -> None:
    lm = scripted_lm(save(False), save(), {"facts": []})
    graph, _ = graph_of(store, lm)
    await turn(graph, "hello!")
    await turn(graph, "I had a long day")
    assert calls(lm) == 3  # decide_save, decide_save, extract: no profile call
    assert store.profile_history("alice") == []


async def test_new_memories_gather_until_a_batch_before_the_program_runs(
    store: MemoryStore,
) -> None:
    first = store.add("alice", "User lives in Berlin", "location").memory_id
    assert first
    store.save_profile("alice", [ProfileLine(text="Berlin.", memory_ids=[first])], source=Source())
    script: list[dict[str, Any]] = []
    said = ["User plays the cello", "User works as a nurse", "User has a son named Leo"]
    for text in said:
        script += [save(), facts((text, "personal")), ops({"op": "ADD", "text": text})]
    script.append(profile(("Berlin.", [1]), ("Nurse with a son, Leo.", [3, 4])))
    lm = scripted_lm(*script)
    graph, _ = graph_of(store, lm)
    for n, text in enumerate(said, 1):
        await turn(graph, text.replace("User", "I"))
        if n < PROFILE_BATCH:
            assert calls(lm) == 3 * n and lines(store) == ["Berlin."]
    assert lines(store) == ["Berlin.", "Nurse with a son, Leo."]
    assert calls(lm) == 3 * 3 + 1
    assert "3 new memories" in (store.profile_history("alice")[-1].events[0].detail or "")


async def test_coffee_to_tea_updates_the_line_and_a_delete_drops_it(store: MemoryStore) -> None:
    coffee = store.add("alice", "User drinks coffee every morning", "preferences").memory_id
    city = store.add("alice", "User lives in Porto", "location").memory_id
    assert coffee and city
    store.save_profile(
        "alice",
        [
            ProfileLine(text="Coffee every morning.", memory_ids=[coffee]),
            ProfileLine(text="Lives in Porto.", memory_ids=[city]),
        ],
        source=Source(),
    )
    seen: list[str] = []

    def shown(answer: dict[str, Any]) -> dict[str, Any]:
        seen.append("")
        return answer

    lm = scripted_lm(
        save(),
        facts(("User now drinks tea every morning", "preferences")),
        ops({"op": "UPDATE", "id": 1, "text": "User drinks tea every morning"}),
        shown(profile(("Tea every morning.", [1]), ("Lives in Porto.", [2]))),
        save(),
        facts(("User moved away from Porto", "location")),
        ops({"op": "DELETE", "id": 1}),
        profile(("Tea every morning.", [1])),
    )
    graph, _ = graph_of(store, lm)
    await turn(graph, "I switched to tea in the mornings")
    assert lines(store) == ["Tea every morning.", "Lives in Porto."]
    # the program saw the current line citing the memory as it is now (the tea version)
    request = lm.history[3]["messages"][-1]["content"]
    assert "drinks tea every morning" in request and "Coffee every morning." in request

    await turn(graph, "I don't live in Porto anymore")
    assert lines(store) == ["Tea every morning."]


async def test_invented_ids_and_foreign_memories_never_reach_the_profile(
    store: MemoryStore,
) -> None:
    theirs = store.add("bob", "User has a cat named Tom", "personal").memory_id
    assert theirs
    lm = scripted_lm(
        save(),
        facts(("User works as a pilot", "work")),
        ops({"op": "ADD", "text": "User works as a pilot", "category": "work"}),
        profile(("Pilot.", [1]), ("Has a cat named Tom.", [7]), ("Rich.", []), ("Odd.", [-1])),
    )
    graph, _ = graph_of(store, lm)
    result = await turn(graph, "I work as a pilot")
    assert lines(store) == ["Pilot."]
    refused = {r.text: r.reason for r in result["rejected"] if r.op == "PROFILE"}
    assert set(refused) == {"Has a cat named Tom.", "Rich.", "Odd."}
    assert "unknown id(s) 7" in refused["Has a cat named Tom."]
    assert "rests on no memory" in refused["Rich."]
    assert lines(store, "bob") == []


async def test_an_empty_answer_leaves_an_empty_profile_not_an_error(store: MemoryStore) -> None:
    lm = scripted_lm(
        save(),
        facts(("User likes jazz", "preferences")),
        ops({"op": "ADD", "text": "User likes jazz", "category": "preferences"}),
        profile(),
    )
    graph, _ = graph_of(store, lm)
    result = await turn(graph, "I like jazz")
    assert result["memory_error"] is None and lines(store) == []


async def test_a_failing_profile_call_keeps_the_old_profile_and_is_retried(
    store: MemoryStore,
) -> None:
    berlin = store.add("alice", "User lives in Berlin", "location").memory_id
    assert berlin
    store.save_profile("alice", [ProfileLine(text="Berlin.", memory_ids=[berlin])], source=Source())
    lm = scripted_lm(
        save(),
        facts(("User lives in Hamburg now", "location")),
        ops({"op": "UPDATE", "id": 1, "text": "User lives in Hamburg"}),
        {"lines": "this is not a list"},  # malformed: the update fails
        {"lines": "still not a list"},  # (DSPy's JSON fallback)
        save(False),
        profile(("Hamburg.", [1])),  # the next turn retries
    )
    graph, _ = graph_of(store, lm)
    failed = await turn(graph, "I moved to Hamburg")
    assert "update_profile failed" in (failed["memory_error"] or "")
    assert store.profile("alice", as_stored=True).lines[0].text == "Berlin."
    assert lines(store) == []  # its memory changed: out of the prompt until revised
    assert (await thread_values(graph))["profile_due"] is True

    retried = await turn(graph, "thanks!")
    assert retried["memory_error"] is None
    assert lines(store) == ["Hamburg."]
    assert (await thread_values(graph))["profile_due"] is False


async def test_the_system_prompt_holds_the_profile_within_its_bound(store: MemoryStore) -> None:
    ids = [
        store.add(
            "alice", f"User's friend number {n} is called Friend{n}", "relationships"
        ).memory_id
        or ""
        for n in range(30)
    ]
    store.profile_chars = 200
    store.save_profile(
        "alice",
        [
            ProfileLine(text=f"Friend{n} is a friend of theirs.", memory_ids=[i])
            for n, i in enumerate(ids)
        ],
        source=Source(),
    )
    lm = scripted_lm(save(False))
    graph, chat = graph_of(store, lm, profile_chars=200)
    await turn(graph, "hi")
    system = chat.prompts[-1]
    section = system.split("The user's profile")[1].split("What you remember")[0]
    stated = [line for line in section.splitlines() if line.startswith("- ")]
    assert stated and sum(len(line) + 1 for line in stated) <= 200


@pytest.mark.parametrize("setting", ["off"])
async def test_profile_off_calls_nothing_and_prompts_nothing(
    store: MemoryStore, setting: str
) -> None:
    city = store.add("alice", "User lives in Oslo", "location").memory_id
    assert city
    store.save_profile("alice", [ProfileLine(text="Oslo.", memory_ids=[city])], source=Source())
    lm = scripted_lm(
        save(),
        facts(("User is a teacher", "work")),
        ops({"op": "ADD", "text": "User is a teacher", "category": "work"}),
    )
    graph, chat = graph_of(store, lm, profile=setting)
    result = await turn(graph, "I'm a teacher")
    assert calls(lm) == 3 and result["profile"] is None
    assert "The user's profile" not in chat.prompts[-1]
    assert len(store.profile_history("alice")) == 1


async def test_the_ingest_graph_keeps_the_profile_too(store: MemoryStore) -> None:
    """On a LangGraph server the memory steps run as ingest runs: the profile follows."""
    lm = scripted_lm(
        save(),
        facts(("User's daughter is called Lea", "relationships")),
        ops({"op": "ADD", "text": "User's daughter is called Lea", "category": "relationships"}),
        profile(("Daughter: Lea.", [1])),
    )
    clients = Clients(
        Settings(llm_attempts=1, profile="on"),
        store=store,
        chat_model=MemoryEchoChat(prompts=[]),
        memory_lm=lm,
    )
    graph = build_ingest_graph(clients).compile(checkpointer=InMemorySaver())
    await graph.ainvoke(
        {
            "messages": [
                HumanMessage("My daughter is called Lea", id="u1"),
                AIMessage("Lovely name!", id="a1"),
            ]
        },
        config={"configurable": {"thread_id": "memory-thread"}},
        context={"user_id": "alice"},
    )
    assert lines(store) == ["Daughter: Lea."]
    assert store.profile("alice").lines[0].memory_ids == [store.memories("alice")[0].id]


async def test_an_answer_citing_only_invented_ids_keeps_the_profile(store: MemoryStore) -> None:
    city = store.add("alice", "User lives in Porto", "location").memory_id
    assert city
    store.save_profile("alice", [ProfileLine(text="Porto.", memory_ids=[city])], source=Source())
    lm = scripted_lm(
        save(),
        facts(("User lives in Braga now", "location")),
        ops({"op": "UPDATE", "id": 1, "text": "User lives in Braga"}),
        profile(("Braga.", [9]), ("Rich.", [12])),
    )
    graph, _ = graph_of(store, lm)
    result = await turn(graph, "I moved to Braga")
    assert "cited unknown ids" in (result["memory_error"] or "")
    assert store.profile("alice", as_stored=True).lines[0].text == "Porto."  # kept
    assert (await thread_values(graph))["profile_due"] is True


async def test_an_unchanged_answer_is_not_asked_again_on_the_next_turn(
    store: MemoryStore,
) -> None:
    city = store.add("alice", "User lives in Porto", "location").memory_id
    assert city
    store.save_profile("alice", [ProfileLine(text="Porto.", memory_ids=[city])], source=Source())
    said = ["User plays chess", "User likes jazz", "User runs", "User bakes bread"]
    script: list[dict[str, Any]] = []
    for n, text in enumerate(said):
        script += [save(), facts((text, "preferences")), ops({"op": "ADD", "text": text})]
        if n == 2:
            script.append(profile(("Porto.", [1])))  # the third: due; the same lines
    lm = scripted_lm(*script)
    graph, _ = graph_of(store, lm)
    for text in said:
        await turn(graph, text.replace("User", "I"))
    assert calls(lm) == 4 * 3 + 1  # the fourth memory alone is not a batch
    assert len(store.profile_history("alice")) == 1  # nothing changed, nothing written


async def test_the_profile_judges_what_is_current_by_the_users_date(
    store: MemoryStore,
) -> None:
    """A memory true until the day of the message is current for that turn's profile,
    whatever today's date where the server runs."""
    lima = store.add("alice", "User is in Lima for work", "plans", valid_until=date(2020, 5, 1))
    assert lima.memory_id
    lm = scripted_lm(
        save(),
        facts(("User is a geologist", "work")),
        ops({"op": "ADD", "text": "User is a geologist", "category": "work"}),
        profile(("Geologist.", [1]), ("In Lima for work.", [2])),
    )
    graph, _ = graph_of(store, lm)
    message = HumanMessage(
        "I'm a geologist", additional_kwargs={"sent_at": "2020-05-01T20:00:00-05:00"}
    )
    await graph.ainvoke(
        {"messages": [message]},
        config={"configurable": {"thread_id": "thread-1"}},
        context={"user_id": "alice"},
    )
    shown = lm.history[3]["messages"][-1]["content"]
    assert "User is in Lima for work" in shown
    stored = store.profile("alice", as_stored=True)
    assert [line.text for line in stored.lines] == ["Geologist.", "In Lima for work."]
