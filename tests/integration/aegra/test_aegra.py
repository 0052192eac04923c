"""AEGRA TEST: Engram's langgraph.json, unchanged, served by Aegra (`aegra serve`, the open
reimplementation of the LangGraph server API) on a real Postgres from Debian's packages
(`tests.postgres`): authentication, ownership, chat and ingest runs, `/memories`, and
threads and memories surviving a restart of both. Aegra needs Python >= 3.12: it runs from
.ci/run's `.venv-aegra` (see `tests.servers.aegra_command`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from langgraph_sdk.errors import NotFoundError

from tests import postgres
from tests.fake_openai import FakeOpenAI, facts_answer
from tests.integration.server.test_server_mcp import call, connect
from tests.servers import MCP_HEADERS, DevServer, aegra_command, aegra_serve, bearer, client_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(dims=64) as server:
        yield server


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    aegra_command()  # skip (or fail, in CI) before starting anything without Aegra
    if postgres.pg_bin() is None:
        pytest.fail("no PostgreSQL server: apt-get install -y postgresql (.ci/run does)")
    return tmp_path_factory.mktemp("aegra")


@pytest.fixture(scope="module")
def database(workdir: Path) -> Iterator[str]:
    with postgres.postgres() as cluster:
        yield cluster.url


@pytest.fixture(scope="module")
def aegra(fake: FakeOpenAI, workdir: Path, database: str) -> Iterator[DevServer]:
    with aegra_serve(fake, workdir, database) as server:
        yield server


async def memory_texts(server: DevServer, user: str) -> list[str]:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        listed = await http.get("/memories", headers=bearer(user))
    assert listed.status_code == 200, listed.text
    return sorted(item["text"] for item in listed.json()["items"])


async def test_every_request_needs_a_valid_token(aegra: DevServer) -> None:
    async with httpx.AsyncClient(base_url=aegra.url, timeout=60) as http:
        for path in ("/threads/search", "/memories/search"):
            missing = await http.request("POST" if "threads" in path else "GET", path, json={})
            assert missing.status_code == 401, (path, missing.text)
        forged = await http.get("/memories", headers=bearer("alice", secret="x" * 40))
        assert forged.status_code == 401
        tools = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
        for headers in ({}, bearer("alice", secret="x" * 40)):
            refused = await http.post("/mcp", json=tools, headers={**MCP_HEADERS, **headers})
            assert refused.status_code == 401, refused.text


async def test_a_chat_turn_is_the_token_users_and_nobody_elses(
    aegra: DevServer, fake: FakeOpenAI
) -> None:
    fake.reset()
    alice, bob = client_for(aegra.url, "alice-aegra"), client_for(aegra.url, "bob-aegra")
    thread_id = (await alice.threads.create())["thread_id"]
    fake.queue("chat", "Porto is lovely.")
    fake.queue("extract", facts_answer(("User lives in Porto", "location")))
    output = await alice.runs.wait(
        thread_id, "engram", input={"messages": [{"role": "user", "content": "I live in Porto."}]}
    )
    assert isinstance(output, dict)
    assert output["messages"][-1]["content"] == "Porto is lovely."
    assert output["user_id"] == "alice-aegra"
    # Aegra has no in-process API to queue a run with: the memory steps ran in the run.
    assert output["memory_run"] is None
    assert [(a["op"], a["text"]) for a in output["applied"]] == [("ADD", "User lives in Porto")]
    assert await memory_texts(aegra, "alice-aegra") == ["User lives in Porto"]
    assert await memory_texts(aegra, "bob-aegra") == []

    for attempt in (bob.threads.get(thread_id), bob.threads.get_state(thread_id)):
        with pytest.raises(NotFoundError):
            await attempt
    with pytest.raises(httpx.HTTPStatusError) as refused:
        await bob.runs.wait(thread_id, "engram", input={"messages": [("user", "tell me")]})
    assert refused.value.response.status_code in (403, 404)
    assert all(t["thread_id"] != thread_id for t in await bob.threads.search())
    with pytest.raises(httpx.HTTPStatusError) as impersonating:
        await bob.runs.wait(
            None,
            "engram",
            input={"messages": [("user", "hi")]},
            context={"user_id": "alice-aegra"},
        )
    assert impersonating.value.response.status_code == 403
    assert await memory_texts(aegra, "alice-aegra") == ["User lives in Porto"]


async def test_ingest_and_the_memories_routes(aegra: DevServer, fake: FakeOpenAI) -> None:
    fake.reset()
    carol = client_for(aegra.url, "carol-aegra")
    fake.queue("extract", facts_answer(("User is a welder", "work")))
    report = await carol.runs.wait(
        None,
        "engram_ingest",
        input={"messages": [{"type": "human", "id": "m1", "content": "I work as a welder."}]},
    )
    assert isinstance(report, dict)
    assert [(a["op"], a["text"]) for a in report["applied"]] == [("ADD", "User is a welder")]
    async with httpx.AsyncClient(base_url=aegra.url, timeout=60) as http:
        created = await http.post(
            "/memories",
            json={"text": "User prefers tea", "category": "preferences"},
            headers=bearer("carol-aegra"),
        )
        assert created.status_code == 201, created.text
        found = await http.get(
            "/memories/search", params={"query": "tea"}, headers=bearer("carol-aegra")
        )
        assert found.json()[0]["text"] == "User prefers tea"
        await carol.threads.create()
        forgot = await http.post(
            "/memories/forget", json={"confirm": True}, headers=bearer("carol-aegra")
        )
        assert forgot.status_code == 200, forgot.text
        assert forgot.json()["memories"] == 2 and forgot.json()["threads"] >= 1
    assert await memory_texts(aegra, "carol-aegra") == []
    assert await carol.threads.search() == []


async def test_the_memory_tools_answer_over_mcp_on_aegra(aegra: DevServer) -> None:
    """Aegra serves Engram's HTTP app as its own, so /mcp's memory tools are there too (the
    ones that run graphs, `chat` and `remember` with messages, need LangGraph's in-process
    API and say so)."""
    async with connect(aegra, "erin-aegra") as session:
        tools = {tool.name for tool in (await session.list_tools()).tools}
        assert {"remember", "search_memories", "list_memories", "forget_memory"} <= tools
        await call(session, "remember", text="User keeps bees", category="hobbies")
        found = await call(session, "search_memories", query="bees")
        assert [m["text"] for m in found["memories"]] == ["User keeps bees"]
    async with connect(aegra, "frank-aegra") as session:
        assert (await call(session, "list_memories"))["memories"] == []


async def test_threads_and_memories_survive_a_restart(fake: FakeOpenAI, workdir: Path) -> None:
    """Stop Aegra and Postgres, start both again on the same data: the conversation and the
    memories are there, and the next turn continues the thread. (A server and database of
    this test's own: the embedded store admits one process at a time.)"""
    fake.reset()
    root = workdir / "restart"
    root.mkdir()
    with postgres.postgres() as cluster:
        with aegra_serve(fake, root, cluster.url) as first:
            dana = client_for(first.url, "dana-aegra")
            thread_id = (await dana.threads.create())["thread_id"]
            fake.queue("chat", "Noted.")
            fake.queue("extract", facts_answer(("User plays the oboe", "hobbies")))
            said = {"messages": [{"role": "user", "content": "I play the oboe."}]}
            await dana.runs.wait(thread_id, "engram", input=said)
            before = (await dana.threads.get_state(thread_id))["values"]
        cluster.restart()
        with aegra_serve(fake, root, cluster.url) as second:
            dana = client_for(second.url, "dana-aegra")
            after = (await dana.threads.get_state(thread_id))["values"]
            assert after["messages"] == before["messages"]
            assert await memory_texts(second, "dana-aegra") == ["User plays the oboe"]
            fake.queue("chat", "You play the oboe.")
            asked = {"messages": [{"role": "user", "content": "What do I play?"}]}
            output = await dana.runs.wait(thread_id, "engram", input=asked)
            assert isinstance(output, dict)
            assert [m["text"] for m in output["recalled"]] == ["User plays the oboe"]
            assert len(output["messages"]) == 4
