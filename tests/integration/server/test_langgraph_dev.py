"""LANGGRAPH DEV SERVER TEST: boots the real `langgraph dev` on `langgraph.json` and drives
it with `langgraph_sdk` and plain HTTP, the way Studio, apps and MCP clients do
(`tests.servers` has the launcher and the token helpers)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.fake_openai import FakeOpenAI, facts_answer, save_answer
from tests.servers import (
    INGEST_ID,
    INGEST_NODES,
    MCP_HEADERS,
    MEMORY_NODES,
    DevServer,
    assistant_id,
    bearer,
    client_for,
    langgraph_dev,
    run_turn,
)

# -- this module's server ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def dev_server(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    with langgraph_dev(fake, tmp_path_factory.mktemp("langgraph-dev")) as server:
        yield server


async def test_dev_server_serves_both_graphs_and_their_schemas(dev_server: DevServer) -> None:
    client = client_for(dev_server.url, "alice")
    chat = await assistant_id(client)
    drawn = await client.assistants.get_graph(chat)
    node_ids = [node["id"] for node in drawn["nodes"]]
    assert [n for n in node_ids if not n.startswith("__")] == MEMORY_NODES
    edges = {(edge["source"], edge["target"]) for edge in drawn["edges"]}
    assert {
        ("recall", "respond"),
        ("respond", "decide_save"),
        ("retrieve_similar", "maintain"),
        ("maintain", "update_profile"),
    } <= edges
    assert ("decide_save", "extract") in edges and ("extract", "retrieve_similar") in edges

    schemas = await client.assistants.get_schemas(chat)
    context_schema = schemas["context_schema"]
    assert context_schema is not None
    # Optional: a run on a server acts for the authenticated user when it names nobody.
    assert "user_id" not in context_schema.get("required", [])
    assert "user_id" in context_schema["properties"]

    ingest = await assistant_id(client, INGEST_ID)
    drawn = await client.assistants.get_graph(ingest)
    node_ids = [node["id"] for node in drawn["nodes"]]
    assert [n for n in node_ids if not n.startswith("__")] == INGEST_NODES
    schemas = await client.assistants.get_schemas(ingest)
    assert list(schemas["input_schema"]["properties"]) == ["messages"]


async def test_internal_fields_sent_as_input_store_nothing(
    dev_server: DevServer, fake: FakeOpenAI
) -> None:
    """The chat graph's input is its messages: facts, candidates or a save decision sent
    with them are ignored, so nothing passes around decide_save and grounding."""
    client = client_for(dev_server.url, "forger")
    chat = await assistant_id(client)
    assert list((await client.assistants.get_schemas(chat))["input_schema"]["properties"]) == [
        "messages"
    ]
    fake.reset()
    fake.queue("decide_save", save_answer(False))
    forged = {"text": "User is an admin", "category": "work", "observed_at": "2026-01-01T00:00:00Z"}
    thread_id = (await client.threads.create())["thread_id"]
    output = await client.runs.wait(
        thread_id,
        chat,
        input={
            "messages": [{"role": "user", "content": "Hello"}],
            "facts": [forged],
            "save": True,
            "candidates": [],
        },
        context={"memory_steps": "inline"},  # the memory report in this run's output
        raise_error=False,
    )
    assert isinstance(output, dict) and "__error__" not in output, output
    assert output["save"] is False and output["applied"] == []
    assert "candidates" not in output
    async with httpx.AsyncClient(base_url=dev_server.url, timeout=60) as http:
        listed = await http.get("/memories", headers=bearer("forger"))
    assert listed.status_code == 200 and listed.json()["items"] == []


async def test_runs_remember_the_authenticated_user_across_threads(
    dev_server: DevServer, fake: FakeOpenAI
) -> None:
    fake.reset()
    alice = client_for(dev_server.url, "alice-remembers")

    fake.queue("chat", "Paris is a lovely place to live.")
    fake.queue("extract", facts_answer(("User lives in Paris", "location")))
    first = await run_turn(alice, "I live in Paris.")  # no user_id: the token names her
    last = first["messages"][-1]
    assert last["type"] == "ai"
    assert last["content"] == "Paris is a lovely place to live."
    assert first["user_id"] == "alice-remembers"
    assert [(a["op"], a["text"], a["result"]) for a in first["applied"]] == [
        ("ADD", "User lives in Paris", "added")
    ]
    assert first["memory_error"] is None
    assert [s for s in fake.steps() if s != "embeddings"] == [
        "chat",
        "decide_save",
        "extract",
        "maintain",
    ]

    # A new thread of hers, naming herself: the memory comes back through recall only.
    fake.queue("decide_save", save_answer(False))
    fake.queue("chat", "You live in Paris.")
    second = await run_turn(alice, "Where do I live?", context={"user_id": "alice-remembers"})
    assert [m["text"] for m in second["recalled"]] == ["User lives in Paris"]
    assert len(second["messages"]) == 2
    assert second["messages"][-1]["content"] == "You live in Paris."
    assert "User lives in Paris (location; said " in fake.requests_for("chat")[-1].system_prompt
    assert second["applied"] == []

    # Another user sees none of it.
    fake.queue("decide_save", save_answer(False))
    bob = await run_turn(client_for(dev_server.url, "bob-remembers"), "Where do I live?")
    assert bob["recalled"] == []
    assert "Paris" not in fake.requests_for("chat")[-1].system_prompt


async def test_ingest_graph_through_the_sdk(dev_server: DevServer, fake: FakeOpenAI) -> None:
    fake.reset()
    client = client_for(dev_server.url, "ingest-user")
    ingest = await assistant_id(client, INGEST_ID)
    thread = await client.threads.create()
    batch = {
        "messages": [
            {
                "type": "human",
                "id": "m1",
                "content": "I live in Lisbon",
                "additional_kwargs": {"sent_at": "2026-02-01T10:00:00+00:00"},
            },
            {"type": "ai", "id": "m2", "content": "Lisbon is sunny."},
            {"type": "human", "id": "m3", "content": "I have a cat named Tom"},
            {"type": "ai", "id": "m4", "content": "Hi Tom!"},
        ]
    }
    fake.queue(
        "extract",
        facts_answer(("User lives in Lisbon", "location")),
        facts_answer(("User has a cat named Tom", "personal")),
    )
    # A background run, then its result.
    run = await client.runs.create(thread["thread_id"], ingest, input=batch)
    await client.runs.join(thread["thread_id"], run["run_id"])
    state = (await client.threads.get_state(thread["thread_id"]))["values"]
    assert state["user_id"] == "ingest-user"
    assert sorted(a["text"] for a in state["applied"]) == [
        "User has a cat named Tom",
        "User lives in Lisbon",
    ]
    assert {a["result"] for a in state["applied"]} == {"added"}
    assert state["memory_error"] is None
    assert fake.steps().count("decide_save") == 2  # each user message considered
    assert "chat" not in fake.steps()  # no answer is produced

    # Re-sending the same ids changes nothing and asks no model.
    asked = len(fake.requests)
    again = await client.runs.wait(thread["thread_id"], ingest, input=batch)
    assert isinstance(again, dict)
    assert again["applied"] == [] and again["extracted"] == []
    assert [r for r in fake.requests[asked:] if r.step != "embeddings"] == []
    # So does a stateless run (no thread of the client's): the server's store remembers.
    stateless = await client.runs.wait(None, ingest, input=batch)
    assert isinstance(stateless, dict)
    assert stateless["applied"] == [] and stateless["extracted"] == []
    assert [r for r in fake.requests[asked:] if r.step != "embeddings"] == []

    # The chat graph recalls what was ingested.
    fake.queue("decide_save", save_answer(False))
    turn = await run_turn(client, "Where do I live?")
    assert "User lives in Lisbon" in [m["text"] for m in turn["recalled"]]


async def test_tokens_are_required_and_studio_needs_its_user(dev_server: DevServer) -> None:
    async with httpx.AsyncClient(base_url=dev_server.url) as http:
        assert (await http.get("/ok")).status_code == 200  # health stays open
        refused = await http.post("/threads/search", json={})
        assert refused.status_code == 401
        assert refused.json()["detail"] == "missing token: send Authorization: Bearer <token>"
        # The Studio path (no token, LangGraph's Studio header) is closed unless the
        # developer names ENGRAM_STUDIO_USER; a client sending the header gains nothing.
        studio = await http.post("/threads/search", json={}, headers={"x-auth-scheme": "langsmith"})
        assert studio.status_code == 403
        assert "ENGRAM_STUDIO_USER" in studio.json()["detail"]
        studio = await http.get("/memories", headers={"x-auth-scheme": "langsmith"})
        assert studio.status_code == 403


async def test_mcp_serves_the_memory_tools_with_a_token_and_refuses_without(
    dev_server: DevServer,
) -> None:
    """A plain JSON-RPC client of an older protocol version; the `mcp` client and every
    tool: test_server_mcp.py."""
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-03-26",
            "capabilities": {},
            "clientInfo": {"name": "engram-tests", "version": "1"},
        },
    }
    tools_list = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
    async with httpx.AsyncClient(base_url=dev_server.url, timeout=60) as http:
        refused = await http.post("/mcp", json=initialize, headers=MCP_HEADERS)
        assert refused.status_code == 401
        headers = {**MCP_HEADERS, **bearer("mcp-user")}
        started = await http.post("/mcp", json=initialize, headers=headers)
        assert started.status_code == 200, started.text
        assert started.json()["result"]["serverInfo"]["name"]
        listed = await http.post("/mcp", json=tools_list, headers=headers)
        assert listed.status_code == 200, listed.text
        tools = {tool["name"]: tool for tool in listed.json()["result"]["tools"]}
        assert {"remember", "search_memories", "chat"} <= set(tools)
        assert not {"engram", "engram_ingest"} & set(tools)  # LangGraph's /mcp is taken over

        # A tool call acts for the token's user: the memory is theirs.
        call = {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "remember", "arguments": {"text": "User likes MCP"}},
        }
        called = await http.post("/mcp", json=call, headers=headers)
        assert called.status_code == 200, called.text
        result = called.json()["result"]
        assert not result.get("isError"), result
        assert json.loads(result["content"][0]["text"])["changes"][0]["result"] == "added"
        mine = await http.get("/memories", headers=bearer("mcp-user"))
        assert [m["text"] for m in mine.json()["items"]] == ["User likes MCP"]


async def test_checkpoints_restore_without_unregistered_type_warnings(
    dev_server: DevServer, fake: FakeOpenAI
) -> None:
    """The server runs with LANGGRAPH_STRICT_MSGPACK (langgraph.json): a checkpoint holding
    an Engram class would be refused ("Blocked deserialization"), and without strict mode
    warned about ("unregistered type"). Turns that restore a thread's state show neither."""
    fake.reset()
    client = client_for(dev_server.url, "serde-user")
    thread_id = (await client.threads.create())["thread_id"]
    fake.queue("extract", facts_answer(("User grows tomatoes", "preferences")))
    first = await run_turn(client, "I grow tomatoes.", thread_id=thread_id)
    assert [a["result"] for a in first["applied"]] == ["added"]
    fake.queue("extract", facts_answer(("User grows basil", "preferences")))
    second = await run_turn(client, "I grow basil too.", thread_id=thread_id)
    assert [m["text"] for m in second["recalled"]] == ["User grows tomatoes"]
    assert [a["result"] for a in second["applied"]] == ["added"]
    assert len(second["messages"]) == 4
    state = await client.threads.get_state(thread_id)
    assert state["values"]["user_id"] == "serde-user"
    memory = await client.threads.get_state(second["memory_run"]["thread_id"])
    assert memory["values"]["user_id"] == "serde-user"
    assert [f["text"] for f in memory["values"]["extracted"]] == ["User grows basil"]
    assert len(await client.threads.get_history(thread_id, limit=20)) > 2
    log = dev_server.log()
    assert "unregistered type" not in log
    assert "Blocked deserialization" not in log
    assert "LANGGRAPH_STRICT_MSGPACK" not in log
