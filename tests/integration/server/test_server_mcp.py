"""Engram's `/mcp` memory tools through a real `langgraph dev`, driven by the `mcp`
package's own client over streamable HTTP: small schemas, the token's user only (never a
tool argument), one-line refusals, and `chat` / `remember` with messages running the real
graphs on threads the caller owns."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import httpx2
import pytest
from mcp import ClientSession, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent

from tests.fake_openai import FakeOpenAI
from tests.servers import MCP_HEADERS, DevServer, bearer, client_for, langgraph_dev

TOOLS = {
    "remember",
    "search_memories",
    "list_memories",
    "forget_memory",
    "restore_memory",
    "set_validity",
    "get_profile",
    "pin_memory",
    "unpin_memory",
    "chat",
}
RECORD_FIELDS = {"id", "text", "category", "observed_at", "updated_at", "score"}
SCHEMA_LIMIT = 1000  # characters of each tool's input (and output) schema


@pytest.fixture(scope="module")
def server(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    with langgraph_dev(fake, tmp_path_factory.mktemp("langgraph-mcp")) as running:
        yield running


@contextlib.asynccontextmanager
async def connect(
    server: DevServer, user: str | None, headers: dict[str, str] | None = None
) -> AsyncIterator[ClientSession]:
    """An initialized MCP session as `user` (None: no token), as an MCP client makes it."""
    sent = {**(bearer(user) if user is not None else {}), **(headers or {})}
    async with (
        httpx2.AsyncClient(headers=sent, timeout=httpx2.Timeout(30, read=120)) as http,
        streamable_http_client(f"{server.url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def call(session: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    """A tool call that must succeed: its structured result, which its text repeats."""
    result = await session.call_tool(tool, arguments)
    assert isinstance(result, CallToolResult)
    assert not result.is_error, (tool, result.content)
    [text] = result.content
    assert isinstance(text, TextContent)
    structured = result.structured_content
    assert isinstance(structured, dict)
    assert json.loads(text.text) == structured
    return structured


async def refused(session: ClientSession, tool: str, **arguments: Any) -> str:
    """A tool call that must be refused: its one-line reason."""
    result = await session.call_tool(tool, arguments)
    assert isinstance(result, CallToolResult)
    assert result.is_error, (tool, result.structured_content)
    [text] = result.content
    assert isinstance(text, TextContent)
    reason = text.text
    assert reason and "\n" not in reason, reason
    assert "Traceback" not in reason and "Error(" not in reason, reason
    return reason


def texts(memories: list[dict[str, Any]]) -> list[str]:
    return [m["text"] for m in memories]


def property_names(schema: Any) -> list[str]:
    """Every argument name in a schema, nested ones too."""
    if isinstance(schema, list):
        return [name for item in schema for name in property_names(item)]
    if not isinstance(schema, dict):
        return []
    names = list(schema.get("properties", {}))
    return names + [name for value in schema.values() for name in property_names(value)]


async def test_the_memory_tools_replace_the_graph_tools_with_small_schemas(
    server: DevServer,
) -> None:
    async with connect(server, "mcp-lister") as session:
        listed = (await session.list_tools()).tools
    tools = {tool.name: tool for tool in listed}
    assert set(tools) == TOOLS  # LangGraph's own /mcp (one tool per graph) is taken over
    for name, tool in tools.items():
        assert tool.description and "Tool based on" not in tool.description, name
        inputs = json.dumps(tool.input_schema)
        assert len(inputs) < SCHEMA_LIMIT, (name, len(inputs))
        assert len(json.dumps(tool.output_schema)) < SCHEMA_LIMIT, name
        assert tool.input_schema["additionalProperties"] is False, name
        assert not [p for p in property_names(tool.input_schema) if "user" in p], name
        assert "$ref" not in inputs and '"title"' not in inputs, name
    assert set(tools["search_memories"].input_schema["properties"]) == {"query", "k", "agent_id"}
    assert set(tools["chat"].input_schema["properties"]) == {"message", "thread_id", "agent_id"}
    assert set(tools["forget_memory"].input_schema["properties"]) == {"id", "agent_id"}
    assert all("agent_id" in tool.input_schema["properties"] for tool in listed)
    assert tools["search_memories"].annotations is not None
    assert tools["search_memories"].annotations.read_only_hint is True


async def test_remember_search_list_forget_and_restore(server: DevServer) -> None:
    async with connect(server, "mcp-alice") as alice:
        stored = await call(alice, "remember", text="User keeps bees", category="hobbies")
        [added] = stored["changes"]
        assert added["result"] == "added" and added["op"] == "ADD"
        memory_id = added["id"]
        again = await call(alice, "remember", text="User keeps bees")
        assert [c["result"] for c in again["changes"]] == ["duplicate"]
        await call(alice, "remember", text="User drinks green tea")

        found = (await call(alice, "search_memories", query="bees", k=5))["memories"]
        assert found[0]["id"] == memory_id and found[0]["text"] == "User keeps bees"
        assert found[0]["category"] == "hobbies" and isinstance(found[0]["score"], float)
        assert all(set(m) <= RECORD_FIELDS for m in found)

        page = await call(alice, "list_memories")
        assert texts(page["memories"]) == ["User keeps bees", "User drinks green tea"]
        assert page["total"] == 2 and "next_offset" not in page
        assert all(set(m) == RECORD_FIELDS - {"score"} for m in page["memories"])
        first = await call(alice, "list_memories", limit=1)
        assert texts(first["memories"]) == ["User keeps bees"] and first["next_offset"] == 1

        forgotten = await call(alice, "forget_memory", id=memory_id)
        assert forgotten == {
            "op": "DELETE",
            "id": memory_id,
            "text": "User keeps bees",
            "result": "deleted",
        }
        assert "User keeps bees" not in texts(
            (await call(alice, "search_memories", query="bees"))["memories"]
        )
        assert texts((await call(alice, "list_memories"))["memories"]) == ["User drinks green tea"]
        deleted = await call(alice, "list_memories", status="deleted")
        assert texts(deleted["memories"]) == ["User keeps bees"]
        again_forgotten = await call(alice, "forget_memory", id=memory_id)
        assert again_forgotten["result"] == "already deleted"

        restored = await call(alice, "restore_memory", id=memory_id)
        assert restored["result"] == "restored"
        back = (await call(alice, "search_memories", query="bees"))["memories"]
        assert texts(back)[0] == "User keeps bees"
    # The REST routes see the same memories, with the MCP in their audit trail.
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        history = await http.get(f"/memories/{memory_id}/history", headers=bearer("mcp-alice"))
    actors = {e["source"]["actor"] for v in history.json() for e in v["events"]}
    assert "mcp" in actors


async def test_another_users_memories_are_out_of_reach(server: DevServer) -> None:
    async with connect(server, "mcp-owner") as owner:
        secret = await call(owner, "remember", text="User's locker code is 4711")
        secret_id = secret["changes"][0]["id"]
    async with connect(server, "mcp-intruder") as intruder:
        assert (await call(intruder, "search_memories", query="locker code"))["memories"] == []
        assert (await call(intruder, "list_memories"))["memories"] == []
        assert (await call(intruder, "list_memories", status="deleted"))["memories"] == []
        unknown = str(uuid.uuid4())
        for tool in ("forget_memory", "restore_memory"):
            theirs = await refused(intruder, tool, id=secret_id)
            missing = await refused(intruder, tool, id=unknown)
            assert theirs.replace(secret_id, "ID") == missing.replace(unknown, "ID")
            assert theirs.startswith("no memory"), theirs
            assert "mcp-owner" not in theirs
    async with connect(server, "mcp-owner") as owner:
        kept = await call(owner, "list_memories")
    assert texts(kept["memories"]) == ["User's locker code is 4711"]


async def test_set_validity_dates_a_memory_and_results_show_it(server: DevServer) -> None:
    async with connect(server, "mcp-traveller") as traveller:
        trip = await call(traveller, "remember", text="User is in Tokyo", category="travel")
        trip_id = trip["changes"][0]["id"]
        dated = await call(
            traveller, "set_validity", id=trip_id, valid_from="2025-03-09", valid_until="2025-03-13"
        )
        assert (dated["op"], dated["result"]) == ("UPDATE", "updated")
        [shown] = (await call(traveller, "list_memories"))["memories"]
        assert shown["id"] == dated["id"]
        assert (shown["valid_from"], shown["valid_until"], shown["past"]) == (
            "2025-03-09",
            "2025-03-13",
            True,
        )
        [found] = (await call(traveller, "search_memories", query="Tokyo"))["memories"]
        assert found["past"] is True
        backwards = await refused(
            traveller,
            "set_validity",
            id=dated["id"],
            valid_from="2025-03-13",
            valid_until="2025-03-09",
        )
        assert "valid until 2025-03-09 is before valid from 2025-03-13" in backwards
        assert "valid_until" in await refused(
            traveller, "set_validity", id=dated["id"], valid_until="someday"
        )
    async with connect(server, "mcp-intruder") as intruder:
        unknown = str(uuid.uuid4())
        theirs = await refused(intruder, "set_validity", id=dated["id"], valid_until="2030-01-01")
        missing = await refused(intruder, "set_validity", id=unknown, valid_until="2030-01-01")
        assert theirs.replace(dated["id"], "ID") == missing.replace(unknown, "ID")
    async with connect(server, "mcp-traveller") as traveller:
        cleared = await call(traveller, "set_validity", id=dated["id"])
        [kept] = (await call(traveller, "list_memories"))["memories"]
    assert kept["id"] == cleared["id"] and set(kept) == RECORD_FIELDS - {"score"}


async def test_a_user_argument_is_refused_and_names_nobody(server: DevServer) -> None:
    async with connect(server, "mcp-victim") as victim:
        await call(victim, "remember", text="User banks with Alpha Bank")
    async with connect(server, "mcp-spoofer") as spoofer:
        for spoof in ({"user_id": "mcp-victim"}, {"user": "mcp-victim"}):
            reason = await refused(spoofer, "search_memories", query="bank", **spoof)
            assert reason.startswith("invalid arguments:") and "Extra inputs" in reason
            reason = await refused(spoofer, "remember", text="User owes me money", **spoof)
            assert "Extra inputs are not permitted" in reason
        assert (await call(spoofer, "list_memories"))["memories"] == []
    async with connect(server, "mcp-victim") as victim:
        kept = await call(victim, "list_memories")
    assert texts(kept["memories"]) == ["User banks with Alpha Bank"]


@pytest.mark.parametrize(
    ("tool", "arguments", "reason"),
    [
        ("search_memories", {}, "invalid arguments: query: Field required"),
        ("search_memories", {"query": "x", "k": 0}, "k: Input should be greater than or equal"),
        ("remember", {}, "give either text (one fact) or messages (a conversation)"),
        ("remember", {"text": "x" * 2001}, "text: String should have at most 2000 characters"),
        ("remember", {"text": "   "}, "memory text must not be empty"),
        (
            "remember",
            {"messages": [{"role": "assistant", "content": "Hi"}]},
            "messages need a user message",
        ),
        (
            "remember",
            {"messages": [{"role": "system", "content": "Obey"}]},
            "messages.0.role: Input should be 'user' or 'assistant'",
        ),
        ("forget_memory", {"id": "not-a-memory"}, "no memory 'not-a-memory'"),
        ("list_memories", {"status": "superseded"}, "status: Input should be 'active' or"),
        ("chat", {"message": ""}, "message: String should have at least 1 character"),
        ("chat", {"message": "hi", "thread_id": "nope"}, "thread_id: Input should be a valid UUID"),
        ("chat", {"message": "x" * 8001}, "message is over 8000 characters"),
    ],
)
async def test_refused_calls_say_why_in_one_line(
    server: DevServer, tool: str, arguments: dict[str, Any], reason: str
) -> None:
    async with connect(server, "mcp-refused") as session:
        said = await refused(session, tool, **arguments)
    assert reason in said, said
    assert "x" * 100 not in said  # a reason never repeats what was sent


async def test_an_unknown_tool_is_a_protocol_error(server: DevServer) -> None:
    async with connect(server, "mcp-refused") as session:
        with pytest.raises(MCPError, match="unknown tool 'engram'"):
            await session.call_tool("engram", {"messages": []})


async def test_no_token_is_refused_like_every_route(server: DevServer) -> None:
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "engram-tests", "version": "1"},
        },
    }
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        for headers in ({}, {"Authorization": "Bearer not-a-jwt"}):
            response = await http.post("/mcp", json=initialize, headers={**MCP_HEADERS, **headers})
            assert response.status_code == 401, response.text
            assert "\n" not in response.json()["detail"]
        # Studio's header gives no user here (ENGRAM_STUDIO_USER is unset).
        studio = {**MCP_HEADERS, "x-auth-scheme": "langsmith"}
        response = await http.post("/mcp", json=initialize, headers=studio)
        assert response.status_code == 403 and "ENGRAM_STUDIO_USER" in response.json()["detail"]
    # The MCP client gives up on its first request (its task group's error).
    with pytest.raises(ExceptionGroup) as error:
        async with connect(server, None):
            pass
    assert error.group_contains(MCPError, match="error response")


async def test_only_posts_are_served(server: DevServer) -> None:
    """Stateless: no session to end and no standing stream that would stay open, idle."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        for method in ("GET", "DELETE"):
            response = await http.request(
                method, "/mcp", headers={**MCP_HEADERS, **bearer("mcp-getter")}
            )
            assert response.status_code == 405, (method, response.text)
            assert response.headers["allow"] == "POST"


async def test_chat_runs_the_chat_graph_on_a_thread_the_caller_owns(
    server: DevServer, fake: FakeOpenAI
) -> None:
    async with connect(server, "mcp-chatter") as chatter:
        first = await call(chatter, "chat", message="Hello from MCP")
        assert first["answer"] == "Fake reply to: Hello from MCP"
        thread_id = first["thread_id"]
        second = await call(chatter, "chat", message="Still there?", thread_id=thread_id)
        assert second == {"answer": "Fake reply to: Still there?", "thread_id": thread_id}

    # The thread is the caller's, like one made over the SDK: readable by them, 404 to others.
    owner = client_for(server.url, "mcp-chatter")
    thread = await owner.threads.get(thread_id)
    assert thread["metadata"]["owner"] == "mcp-chatter"
    state = (await owner.threads.get_state(thread_id))["values"]
    said = [m["content"] for m in state["messages"] if m["type"] == "human"]
    assert said[-2:] == ["Hello from MCP", "Still there?"]
    assert state["user_id"] == "mcp-chatter"
    other = client_for(server.url, "mcp-stranger")
    with pytest.raises(httpx.HTTPStatusError) as missing:
        await other.threads.get(thread_id)
    assert missing.value.response.status_code == 404

    # Another user cannot continue it: the same answer as for a thread that does not exist,
    # and no model is asked anything.
    asked = len(fake.requests_for("chat"))
    async with connect(server, "mcp-stranger") as stranger:
        theirs = await refused(stranger, "chat", message="What did they say?", thread_id=thread_id)
        unknown = str(uuid.uuid4())
        nowhere = await refused(stranger, "chat", message="What did they say?", thread_id=unknown)
    assert theirs.replace(thread_id, "ID") == nowhere.replace(unknown, "ID")
    assert theirs.startswith("no thread")
    assert len(fake.requests_for("chat")) == asked
    after = (await owner.threads.get_state(thread_id))["values"]
    assert after["messages"] == state["messages"]


async def test_chat_remembers_for_the_caller_only(server: DevServer) -> None:
    """The chat turn's memory steps (in the background on a server) act for the caller:
    what they said turns up in their memories and nobody else's. (The fake's default
    answers: save, one fact echoing the user, ADD it; nothing queued that a late memory
    run of another test could take.)"""
    async with connect(server, "mcp-learner") as learner:
        await call(learner, "chat", message="I live in Lisbon.")
        for _ in range(120):
            found = (await call(learner, "search_memories", query="Lisbon"))["memories"]
            if "User said: I live in Lisbon." in texts(found):
                break
            await asyncio.sleep(0.5)
        else:
            pytest.fail("the chat turn's fact never reached the caller's memories")
    async with connect(server, "mcp-neighbour") as neighbour:
        assert (await call(neighbour, "search_memories", query="Lisbon"))["memories"] == []


async def test_remember_messages_runs_the_ingest_graph(server: DevServer, fake: FakeOpenAI) -> None:
    conversation = [
        {
            "role": "user",
            "content": "I moved to Porto last week.",
            "id": "porto-1",
            "sent_at": "2026-03-02T09:00:00+00:00",
        },
        {"role": "assistant", "content": "Porto is lovely.", "id": "porto-2"},
    ]
    async with connect(server, "mcp-ingester") as ingester:
        ingested = await call(ingester, "remember", messages=conversation)
        fact = "User said: I moved to Porto last week."  # the fake's extraction
        assert [(c["op"], c["text"], c["result"]) for c in ingested["changes"]] == [
            ("ADD", fact, "added")
        ]
        found = (await call(ingester, "search_memories", query="Porto"))["memories"]
        assert texts(found) == [fact]
        assert found[0]["observed_at"].startswith("2026-03-02")
        # The same messages again: seen already, nothing changes and no model is asked.
        asked = len(fake.requests)
        again = await call(ingester, "remember", messages=conversation)
        assert again["changes"] == []
        about_porto = [
            r for r in fake.requests[asked:] if r.step != "embeddings" and "Porto" in str(r.body)
        ]
        assert about_porto == []
    async with connect(server, "mcp-bystander") as bystander:
        assert (await call(bystander, "search_memories", query="Porto"))["memories"] == []
