"""Answer first on the LangGraph server: a chat run ends with the answer and its memory steps
run as an ingest run of their own on the chat thread's memory thread (see
`engram.nodes.schedule_memory`), through the real `langgraph dev`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from engram.nodes.schedule_memory import memory_thread_id
from tests.fake_openai import FakeOpenAI, Hang, facts_answer, save_answer
from tests.servers import (
    DevServer,
    assistant_id,
    bearer,
    client_for,
    langgraph_dev,
    run_turn,
)


@pytest.fixture(scope="module")
def dev_server(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    with langgraph_dev(fake, tmp_path_factory.mktemp("answer-first")) as server:
        yield server


async def memory_texts(server: DevServer, user: str) -> list[str]:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        listed = await http.get("/memories", headers=bearer(user))
    assert listed.status_code == 200, listed.text
    return sorted(item["text"] for item in listed.json()["items"])


async def test_runs_wait_returns_the_answer_while_the_memory_steps_still_run(
    dev_server: DevServer, fake: FakeOpenAI
) -> None:
    fake.reset()
    alice = client_for(dev_server.url, "alice-first")
    fake.queue("chat", "Noted, Lisbon it is.")
    fake.queue("decide_save", Hang(3, then=save_answer(True)))
    fake.queue("extract", facts_answer(("User lives in Lisbon", "location")))
    thread_id = (await alice.threads.create())["thread_id"]
    output = await run_turn(alice, "I moved to Lisbon.", thread_id=thread_id, join_memory=False)

    assert output["messages"][-1]["content"] == "Noted, Lisbon it is."
    memory_run = output["memory_run"]
    assert memory_run["thread_id"] == memory_thread_id("alice-first", thread_id)
    run = await alice.runs.get(memory_run["thread_id"], memory_run["run_id"])
    assert run["status"] in ("pending", "running")  # decide_save is still thinking
    assert await memory_texts(dev_server, "alice-first") == []

    report = await alice.runs.join(memory_run["thread_id"], memory_run["run_id"])
    assert [(a["op"], a["text"]) for a in report["applied"]] == [("ADD", "User lives in Lisbon")]
    assert await memory_texts(dev_server, "alice-first") == ["User lives in Lisbon"]
    # The memory thread is alice's: her SDK reads it, nobody else's does.
    memory_thread = await alice.threads.get(memory_run["thread_id"])
    assert memory_thread["metadata"]["owner"] == "alice-first"
    async with httpx.AsyncClient(base_url=dev_server.url, timeout=60) as http:
        peeked = await http.get(f"/threads/{memory_run['thread_id']}", headers=bearer("bob"))
    assert peeked.status_code == 404


async def test_the_next_turn_is_answered_while_the_previous_memory_steps_run(
    dev_server: DevServer, fake: FakeOpenAI
) -> None:
    """The memory steps queue on their own thread, so the chat thread is free: the next
    turn (default multitask strategy, "reject") is answered at once, and both turns' facts
    are stored, in order."""
    fake.reset()
    carol = client_for(dev_server.url, "carol-first")
    thread_id = (await carol.threads.create())["thread_id"]
    fake.queue("chat", "Nice.", "Lovely.")
    fake.queue("decide_save", Hang(3, then=save_answer(True)), save_answer(True))
    fake.queue(
        "extract",
        facts_answer(("User has a dog named Rex", "relationships")),
        facts_answer(("User plays the cello", "hobbies")),
    )
    first = await run_turn(carol, "My dog is called Rex.", thread_id=thread_id, join_memory=False)
    second = await run_turn(carol, "I play the cello.", thread_id=thread_id, join_memory=False)
    assert second["messages"][-1]["content"] == "Lovely."
    first_run = await carol.runs.get(
        first["memory_run"]["thread_id"], first["memory_run"]["run_id"]
    )
    assert first_run["status"] in ("pending", "running")
    assert second["memory_run"]["thread_id"] == first["memory_run"]["thread_id"]

    for memory_run in (first["memory_run"], second["memory_run"]):
        report = await carol.runs.join(memory_run["thread_id"], memory_run["run_id"])
        assert report["memory_error"] is None, report
    assert await memory_texts(dev_server, "carol-first") == [
        "User has a dog named Rex",
        "User plays the cello",
    ]


async def test_failed_memory_steps_keep_their_work_for_the_next_turn(
    dev_server: DevServer, fake: FakeOpenAI
) -> None:
    fake.reset()
    dana = client_for(dev_server.url, "dana-first")
    thread_id = (await dana.threads.create())["thread_id"]
    fake.queue("chat", "Got it.", "Sure.")
    fake.queue("decide_save", save_answer(True), save_answer(False))
    fake.fail("extract", 400)
    first = await run_turn(dana, "I am allergic to peanuts.", thread_id=thread_id)
    assert first["applied"] == [] and first["memory_error"], first
    assert len(first["unextracted"]) == 1  # kept on the memory thread

    fake.clear("extract")
    fake.queue("extract", facts_answer(("User is allergic to peanuts", "health")))
    second = await run_turn(dana, "What a day.", thread_id=thread_id)
    assert [(a["op"], a["text"]) for a in second["applied"]] == [
        ("ADD", "User is allergic to peanuts")
    ]
    assert second["unextracted"] == []
    assert await memory_texts(dev_server, "dana-first") == ["User is allergic to peanuts"]


async def test_inline_memory_steps_are_a_context_switch(
    dev_server: DevServer, fake: FakeOpenAI
) -> None:
    fake.reset()
    erin = client_for(dev_server.url, "erin-first")
    fake.queue("chat", "Good to know.")
    fake.queue("extract", facts_answer(("User works as a nurse", "work")))
    output = await run_turn(erin, "I work as a nurse.", context={"memory_steps": "inline"})
    assert output["memory_run"] is None
    assert [(a["op"], a["text"]) for a in output["applied"]] == [("ADD", "User works as a nurse")]


async def test_a_squatted_memory_thread_falls_back_to_inline_steps(
    dev_server: DevServer, fake: FakeOpenAI
) -> None:
    """Another user who takes the id of a chat thread's memory thread first (it is derived
    from the chat thread's id) cannot see or stop the memory work: the turn runs its
    memory steps inline and says why."""
    fake.reset()
    frank = client_for(dev_server.url, "frank-first")
    mallory = client_for(dev_server.url, "mallory-first")
    thread_id = (await frank.threads.create())["thread_id"]
    await mallory.threads.create(thread_id=memory_thread_id("frank-first", thread_id))
    fake.queue("chat", "Enjoy!")
    fake.queue("extract", facts_answer(("User is learning Japanese", "education")))
    output = await run_turn(frank, "I am learning Japanese.", thread_id=thread_id)
    assert output["memory_run"] is None
    assert "ran inline" in output["memory_error"]
    assert [(a["op"], a["text"]) for a in output["applied"]] == [
        ("ADD", "User is learning Japanese")
    ]
    assert await memory_texts(dev_server, "mallory-first") == []
    state = await mallory.threads.get_state(memory_thread_id("frank-first", thread_id))
    assert not state["values"]


async def test_chat_run_graph_shows_the_card_and_the_hand_off(dev_server: DevServer) -> None:
    client = client_for(dev_server.url, "grace-first")
    drawn = await client.assistants.get_graph(await assistant_id(client))
    edges = {(edge["source"], edge["target"]) for edge in drawn["edges"]}
    assert {
        ("respond", "decide_save"),
        ("respond", "schedule_memory"),
        ("schedule_memory", "decide_save"),
        ("schedule_memory", "__end__"),
    } <= edges


async def test_message_ids_reused_across_conversations_are_two_messages(
    dev_server: DevServer, fake: FakeOpenAI
) -> None:
    """Clients often number messages per conversation ("1", "2", ...). Ingest considers each
    message id once per user, so the memory thread gets ids derived from the chat thread:
    the same id in a second conversation is still remembered, and each memory names the
    chat thread and the chat's own message id as its source."""
    fake.reset()
    hank = client_for(dev_server.url, "hank-first")
    fake.queue("chat", "Noted.", "Noted too.")
    fake.queue(
        "extract",
        facts_answer(("User owns a bakery", "work")),
        facts_answer(("User runs marathons", "hobbies")),
    )
    threads = []
    for text in ("I own a bakery.", "I run marathons."):
        thread_id = (await hank.threads.create())["thread_id"]
        output = await hank.runs.wait(
            thread_id,
            await assistant_id(hank),
            input={"messages": [{"role": "user", "content": text, "id": "1"}]},
        )
        assert isinstance(output, dict)
        memory_run = output["memory_run"]
        report = await hank.runs.join(memory_run["thread_id"], memory_run["run_id"])
        assert isinstance(report, dict) and report["memory_error"] is None, report
        threads.append(thread_id)

    async with httpx.AsyncClient(base_url=dev_server.url, timeout=60) as http:
        listed = await http.get("/memories", headers=bearer("hank-first"))
    sources = {item["text"]: item["source"] for item in listed.json()["items"]}
    assert sorted(sources) == ["User owns a bakery", "User runs marathons"]
    assert sources["User owns a bakery"]["thread_id"] == threads[0]
    assert sources["User runs marathons"]["thread_id"] == threads[1]
    assert sources["User owns a bakery"]["message_ids"][0] == "1"


async def test_stateless_turns_share_one_memory_thread_that_retries_failed_work(
    dev_server: DevServer, fake: FakeOpenAI
) -> None:
    """A stateless run's own thread is deleted when it ends; its memory steps go to the
    user's memory thread for stateless runs, so work that failed there is retried by the
    next stateless turn instead of being lost with the temporary thread."""
    fake.reset()
    ivy = client_for(dev_server.url, "ivy-first")
    fake.queue("chat", "Got it.", "Sure.")
    fake.queue("decide_save", save_answer(True), save_answer(False))
    fake.fail("extract", 400)

    async def stateless_turn(text: str) -> dict:
        output = await ivy.runs.wait(
            None,
            await assistant_id(ivy),
            input={"messages": [{"role": "user", "content": text}]},
        )
        assert isinstance(output, dict) and "__error__" not in output, output
        memory_run = output["memory_run"]
        assert memory_run["thread_id"] == memory_thread_id("ivy-first", None)
        report = await ivy.runs.join(memory_run["thread_id"], memory_run["run_id"])
        assert isinstance(report, dict), report
        return report

    first = await stateless_turn("I am allergic to shellfish.")
    assert first["applied"] == [] and len(first["unextracted"]) == 1, first
    fake.clear("extract")
    fake.queue("extract", facts_answer(("User is allergic to shellfish", "health")))
    second = await stateless_turn("What a day.")
    assert [(a["op"], a["text"]) for a in second["applied"]] == [
        ("ADD", "User is allergic to shellfish")
    ]
    assert await memory_texts(dev_server, "ivy-first") == ["User is allergic to shellfish"]


async def test_forget_stops_memory_steps_still_running(
    dev_server: DevServer, fake: FakeOpenAI
) -> None:
    """A turn's memory steps still running when the user forgets everything are stopped
    before the erase: nothing they would have written survives it."""
    fake.reset()
    kim = client_for(dev_server.url, "kim-first")
    fake.queue("chat", "Noted.")
    fake.queue("decide_save", Hang(3, then=save_answer(True)))
    fake.queue("extract", facts_answer(("User's PIN is 4321", "personal")))
    output = await run_turn(kim, "My PIN is 4321.", join_memory=False)
    memory_run = output["memory_run"]
    for _ in range(50):  # until the server's queue has picked the memory run up
        run = await kim.runs.get(memory_run["thread_id"], memory_run["run_id"])
        if run["status"] == "running":
            break
        await asyncio.sleep(0.1)
    assert run["status"] == "running"

    async with httpx.AsyncClient(base_url=dev_server.url, timeout=60) as http:
        forgot = await http.post(
            "/memories/forget", json={"confirm": True}, headers=bearer("kim-first")
        )
        assert forgot.status_code == 200, forgot.text
        await asyncio.sleep(4)  # past the point where decide_save would have answered
        assert await memory_texts(dev_server, "kim-first") == []


async def test_the_memory_run_keeps_the_profile_and_the_next_answer_has_it(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    """On the server the profile is updated in the memory run (after the answer) and read
    by the next chat run's recall: a diet reaches a question that does not mention it."""
    fake.reset()
    with langgraph_dev(fake, tmp_path, ENGRAM_PROFILE="on") as profiled:
        await profile_turns(profiled, fake)


async def profile_turns(dev_server: DevServer, fake: FakeOpenAI) -> None:
    dana = client_for(dev_server.url, "dana-profile")
    fake.queue("extract", facts_answer(("User is vegetarian", "health")))
    first = await run_turn(dana, "I'm vegetarian.")
    assert first["memory_error"] is None
    assert len(fake.requests_for("profile")) == 1
    async with httpx.AsyncClient(base_url=dev_server.url, timeout=60) as http:
        shown = await http.get("/memories/profile", headers=bearer("dana-profile"))
        theirs = await http.get("/memories/profile", headers=bearer("bob"))
    assert [line["text"] for line in shown.json()["lines"]] == ["User is vegetarian"]
    assert theirs.json()["lines"] == []

    fake.queue("decide_save", save_answer(False))
    second = await run_turn(dana, "Can you suggest a dinner for tonight?")
    assert second["profile"]["lines"][0]["text"] == "User is vegetarian"
    system = fake.requests_for("chat")[-1].system_prompt
    assert "- User is vegetarian" in system.split("What you remember")[0]
    assert len(fake.requests_for("profile")) == 1
