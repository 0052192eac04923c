"""Agent scopes through `/mcp` against a real `langgraph dev` with
ENGRAM_PRIVATE_AGENTS=health: a memory of health's own never reaches a caller acting as
another agent or as none (forged ids included), a token acts only as the agents it lists,
and `chat` / `remember` with messages run as the agent named. Where `/mcp` verifies the
token itself (on Aegra), the same rule holds: last test, in process."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.embeddings import Embeddings
from mcp import ClientSession

from engram.apps.server import mcp as mcp_endpoint
from engram.apps.server.auth import verifier
from engram.settings import get_settings
from tests.fake_openai import FakeOpenAI
from tests.helpers import make_store
from tests.integration.server.test_server_mcp import TOOLS, call, connect, refused, texts
from tests.servers import MCP_HEADERS, DevServer, bearer, langgraph_dev
from tests.servers import SECRET as TOKEN_SECRET

PRIVATE = "health"  # ENGRAM_PRIVATE_AGENTS of the server
SECRET = "User takes lisinopril for blood pressure"
SHARED = "User lives in Lisbon"
NOT_ALLOWED = "this token does not allow agent 'health'"
# A memory id written the other ways a UUID parses: each must answer like an unknown id.
FORGERIES = (
    str.upper,
    lambda i: "{" + i + "}",
    lambda i: f"urn:uuid:{i}",
    lambda i: i.replace("-", ""),
)
# Every tool that takes a memory id, with what else it needs.
BY_ID: dict[str, dict[str, Any]] = {
    "forget_memory": {},
    "restore_memory": {},
    "set_validity": {"valid_until": "2030-01-01"},
    "pin_memory": {},
    "unpin_memory": {},
}


@pytest.fixture(scope="module")
def server(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    workdir = tmp_path_factory.mktemp("langgraph-mcp-agents")
    with langgraph_dev(fake, workdir, ENGRAM_PRIVATE_AGENTS=PRIVATE) as running:
        yield running


@contextlib.asynccontextmanager
async def as_token(
    server: DevServer, user: str, agents: list[str] | None
) -> AsyncIterator[ClientSession]:
    """An MCP session with a token for `user` whose agents claim lists `agents` (None: no
    claim at all)."""
    claims: dict[str, Any] = {"agents": agents} if agents is not None else {}
    async with connect(server, None, bearer(user, **claims)) as session:
        yield session


def acting(agent: str | None) -> dict[str, str]:
    return {"agent_id": agent} if agent is not None else {}


async def seed(server: DevServer, user: str) -> str:
    """Health's own memory (its id) and a shared one, both written through MCP."""
    async with as_token(server, user, [PRIVATE]) as health:
        added = await call(health, "remember", text=SECRET, category="health", agent_id=PRIVATE)
        [change] = added["changes"]
        assert (change["op"], change["result"]) == ("ADD", "added")
        shared = await call(health, "remember", text=SHARED, category="location")
        assert shared["changes"][0]["result"] == "added"
    return str(change["id"])


async def health_sees(server: DevServer, user: str) -> list[dict[str, Any]]:
    async with as_token(server, user, [PRIVATE]) as health:
        page = await call(health, "list_memories", agent_id=PRIVATE, status="active")
        deleted = await call(health, "list_memories", agent_id=PRIVATE, status="deleted")
    assert deleted["memories"] == []
    memories: list[dict[str, Any]] = page["memories"]
    return memories


async def test_results_name_the_agent_whose_own_a_memory_is_and_it_cannot_be_pinned(
    server: DevServer,
) -> None:
    secret_id = await seed(server, "agents-owner")
    memories = {m["text"]: m for m in await health_sees(server, "agents-owner")}
    assert set(memories) == {SECRET, SHARED}
    assert memories[SECRET]["id"] == secret_id and memories[SECRET]["agent_id"] == PRIVATE
    assert "agent_id" not in memories[SHARED]  # absent: shared
    async with as_token(server, "agents-owner", [PRIVATE]) as health:
        found = await call(health, "search_memories", query="lisinopril", agent_id=PRIVATE)
        assert found["memories"][0]["id"] == secret_id
        assert found["memories"][0]["agent_id"] == PRIVATE
        # The same token without agent_id acts for the shared memories only.
        assert texts((await call(health, "list_memories"))["memories"]) == [SHARED]
        alone = await call(health, "search_memories", query="lisinopril blood pressure", k=50)
        assert texts(alone["memories"]) == [SHARED]
        # Only shared memories are in the profile, which every agent sees.
        own = await refused(health, "pin_memory", id=secret_id, agent_id=PRIVATE)
        assert own.startswith(f"memory {secret_id} is agent 'health''s own"), own


@pytest.mark.parametrize(
    ("agents", "agent"),
    [
        (["travel"], "travel"),
        (["travel"], None),
        (None, None),
        ([PRIVATE], None),
        (["*"], "travel"),
        (["*"], None),
    ],
    ids=[
        "as-travel",
        "travel-token-no-agent",
        "no-agents-claim",
        "health-token-no-agent",
        "any-agent-token-as-travel",
        "any-agent-token-no-agent",
    ],
)
async def test_another_agents_memory_answers_like_an_unknown_one(
    server: DevServer, agents: list[str] | None, agent: str | None
) -> None:
    user = f"agents-{uuid.uuid4().hex[:8]}"
    secret_id = await seed(server, user)
    before = await health_sees(server, user)
    unknown = str(uuid.uuid4())
    async with as_token(server, user, agents) as other:
        found = await call(
            other, "search_memories", query="lisinopril blood pressure", k=50, **acting(agent)
        )
        assert texts(found["memories"]) == [SHARED]
        for status in ("active", "deleted"):
            page = await call(other, "list_memories", status=status, **acting(agent))
            assert SECRET not in texts(page["memories"])
            assert secret_id not in [m["id"] for m in page["memories"]]
        for tool, extra in BY_ID.items():
            missing = await refused(other, tool, id=unknown, **extra, **acting(agent))
            for forge in (str, *FORGERIES):
                forged = forge(secret_id)
                theirs = await refused(other, tool, id=forged, **extra, **acting(agent))
                shown = theirs.replace(forged, "ID").replace(secret_id, "ID")
                assert shown == missing.replace(unknown, "ID"), (tool, theirs, missing)
                assert PRIVATE not in theirs and "lisinopril" not in theirs
        profile = await call(other, "get_profile", **acting(agent))
        assert secret_id not in profile["pinned"]
        assert not [line for line in profile["lines"] if secret_id in line["memory_ids"]]
    # Health's memory is exactly as it was: not deleted, dated, replaced or pinned.
    assert await health_sees(server, user) == before
    async with as_token(server, user, [PRIVATE]) as health:
        assert (await call(health, "get_profile"))["pinned"] == []


async def test_a_deleted_private_memory_cannot_be_restored_by_another_agent(
    server: DevServer,
) -> None:
    user = "agents-restorer"
    secret_id = await seed(server, user)
    async with as_token(server, user, [PRIVATE]) as health:
        forgotten = await call(health, "forget_memory", id=secret_id, agent_id=PRIVATE)
        assert forgotten["result"] == "deleted"
    unknown = str(uuid.uuid4())
    async with as_token(server, user, ["travel"]) as travel:
        for agent in ("travel", None):
            deleted = await call(travel, "list_memories", status="deleted", **acting(agent))
            assert deleted["memories"] == []
            theirs = await refused(travel, "restore_memory", id=secret_id, **acting(agent))
            missing = await refused(travel, "restore_memory", id=unknown, **acting(agent))
            assert theirs.replace(secret_id, "ID") == missing.replace(unknown, "ID")
    async with as_token(server, user, [PRIVATE]) as health:
        deleted = await call(health, "list_memories", status="deleted", agent_id=PRIVATE)
        assert texts(deleted["memories"]) == [SECRET]
        restored = await call(health, "restore_memory", id=secret_id, agent_id=PRIVATE)
        assert restored["result"] == "restored"
    assert SECRET in texts(await health_sees(server, user))


# Every tool, called with arguments that would succeed for a token allowed to act as health.
EVERY_TOOL: list[tuple[str, dict[str, Any]]] = [
    ("remember", {"text": "User is allergic to penicillin"}),
    ("remember", {"messages": [{"role": "user", "content": "I am allergic to penicillin."}]}),
    ("search_memories", {"query": "lisinopril"}),
    ("list_memories", {}),
    ("forget_memory", {"id": "SECRET_ID"}),
    ("restore_memory", {"id": "SECRET_ID"}),
    ("set_validity", {"id": "SECRET_ID", "valid_until": "2030-01-01"}),
    ("get_profile", {}),
    ("pin_memory", {"id": "SECRET_ID"}),
    ("unpin_memory", {"id": "SECRET_ID"}),
    ("chat", {"message": "What do I take for blood pressure?"}),
]


async def test_a_token_acts_only_as_the_agents_it_lists(
    server: DevServer, fake: FakeOpenAI
) -> None:
    assert {tool for tool, _ in EVERY_TOOL} == TOOLS
    user = "agents-gatekeeper"
    secret_id = await seed(server, user)
    before = await health_sees(server, user)
    asked, chats = len(fake.requests), len(fake.requests_for("chat"))
    for agents in (["travel"], None, [], ["healthcare", "Health"]):
        async with as_token(server, user, agents) as other:
            for tool, arguments in EVERY_TOOL:
                given = {k: secret_id if v == "SECRET_ID" else v for k, v in arguments.items()}
                reason = await refused(other, tool, **given, agent_id=PRIVATE)
                assert reason.startswith(NOT_ALLOWED), (agents, tool, reason)
    # Nothing was written, and no model (nor embedding) was asked about any of it.
    assert await health_sees(server, user) == before
    about = [r for r in fake.requests[asked:] if "penicillin" in str(r.body)]
    assert about == [] and len(fake.requests_for("chat")) == chats
    assert not [r for r in fake.requests[asked:] if "lisinopril" in str(r.body)]

    # A token for any agent ("*") acts as health; one for health acts as health only.
    async with as_token(server, user, ["*"]) as anyone:
        found = await call(anyone, "search_memories", query="lisinopril", agent_id=PRIVATE)
        assert found["memories"][0]["id"] == secret_id
        added = await call(
            anyone, "remember", text="User is allergic to penicillin", agent_id=PRIVATE
        )
        assert added["changes"][0]["result"] == "added"
        as_travel = await call(anyone, "list_memories", agent_id="travel")
        assert texts(as_travel["memories"]) == [SHARED]
    assert {m["text"]: m.get("agent_id") for m in await health_sees(server, user)} == {
        SECRET: PRIVATE,
        SHARED: None,
        "User is allergic to penicillin": PRIVATE,
    }
    async with as_token(server, user, [PRIVATE]) as health:
        assert (await refused(health, "list_memories", agent_id="travel")).startswith(
            "this token does not allow agent 'travel'"
        )
    # Another user's token for health sees health's memories of its own user only.
    async with as_token(server, "agents-stranger", [PRIVATE]) as stranger:
        assert (await call(stranger, "list_memories", agent_id=PRIVATE))["memories"] == []
        found = await call(stranger, "search_memories", query="lisinopril", agent_id=PRIVATE)
        assert found["memories"] == []


@pytest.mark.parametrize(
    ("agent", "reason"),
    [
        ("*", "agent_id: agent_id '*' is reserved"),
        ("", "agent_id: "),
        ("   ", "agent_id: "),
        ("x" * 300, "agent_id: "),
        (7, "agent_id: Input should be a valid string"),
    ],
)
async def test_an_invalid_agent_id_is_refused_in_one_line(
    server: DevServer, agent: Any, reason: str
) -> None:
    async with as_token(server, "agents-invalid", ["*"]) as anyone:
        for tool, arguments in (("list_memories", {}), ("chat", {"message": "hi"})):
            said = await refused(anyone, tool, **arguments, agent_id=agent)
            assert said.startswith("invalid arguments: ") and reason in said, said
            assert "x" * 100 not in said


def recalled_in_chat(fake: FakeOpenAI, asked: int) -> str:
    """The one chat-model prompt sent since `asked` chat requests, as text."""
    [request] = fake.requests_for("chat")[asked:]
    return "\n".join(str(m.get("content")) for m in request.messages)


async def wait_for(session: ClientSession, text: str, agent: str | None) -> dict[str, Any]:
    """The memory `text` once a run's background memory steps have written it."""
    for _ in range(120):
        page = await call(session, "list_memories", **acting(agent))
        found = [m for m in page["memories"] if m["text"] == text]
        if found:
            return found[0]
        await asyncio.sleep(0.5)
    pytest.fail(f"{text!r} never reached the memories")


async def test_chat_as_travel_never_recalls_healths_memory(
    server: DevServer, fake: FakeOpenAI
) -> None:
    user = "agents-chatter"
    await seed(server, user)
    async with as_token(server, user, ["travel"]) as travel:
        asked = len(fake.requests_for("chat"))
        said = "Where should I go next spring?"
        first = await call(travel, "chat", message=said, agent_id="travel")
        assert first["answer"] == f"Fake reply to: {said}"
        prompt = recalled_in_chat(fake, asked)
        assert SHARED in prompt  # recall ran, and found the shared memory
        assert "lisinopril" not in prompt
        # The turn's fact went to the shared memories (travel is not a private agent).
        learned = await wait_for(travel, f"User said: {said}", None)
        assert "agent_id" not in learned
        # A thread is its first turn's agent's: to anyone else it is unknown.
        asked = len(fake.requests_for("chat"))
        elsewhere = await refused(travel, "chat", message="Hi", thread_id=first["thread_id"])
        assert f"no thread {first['thread_id']!r}" in elsewhere, elsewhere
        assert len(fake.requests_for("chat")) == asked

    async with as_token(server, user, [PRIVATE]) as health:
        asked = len(fake.requests_for("chat"))
        said = "Which pills do I take?"
        await call(health, "chat", message=said, agent_id=PRIVATE)
        assert SECRET in recalled_in_chat(fake, asked)  # the check above can fail
        taken = await refused(
            health, "chat", message=said, thread_id=first["thread_id"], agent_id=PRIVATE
        )
        assert f"no thread {first['thread_id']!r}" in taken, taken
        # Health is private: what it learned stays its own.
        learned = await wait_for(health, f"User said: {said}", PRIVATE)
        assert learned["agent_id"] == PRIVATE
    async with as_token(server, user, ["travel"]) as travel:
        for agent in ("travel", None):
            seen = texts((await call(travel, "list_memories", **acting(agent)))["memories"])
            assert f"User said: {said}" not in seen and SECRET not in seen


async def test_remember_messages_runs_as_the_agent_named(
    server: DevServer, fake: FakeOpenAI
) -> None:
    user = "agents-ingester"
    await seed(server, user)
    conversation = [{"role": "user", "content": "My blood pressure is fine these days."}]
    fact = "User said: My blood pressure is fine these days."  # the fake's extraction
    async with as_token(server, user, ["travel"]) as travel:
        asked = len(fake.requests)
        done = await call(travel, "remember", messages=conversation, agent_id="travel")
        assert [(c["op"], c["text"], c["result"]) for c in done["changes"]] == [
            ("ADD", fact, "added")
        ]
        # The ingest run's merge step was never shown health's memory.
        merged = [r for r in fake.requests[asked:] if r.step == "maintain"]
        assert merged and all(SHARED in str(r.body) for r in merged)
        assert not [r for r in fake.requests[asked:] if "lisinopril" in str(r.body)]
        [shared] = [
            m for m in (await call(travel, "list_memories"))["memories"] if m["text"] == fact
        ]
        assert "agent_id" not in shared

    again = [{"role": "user", "content": "I also take aspirin."}]
    async with as_token(server, user, [PRIVATE]) as health:
        asked = len(fake.requests)
        done = await call(health, "remember", messages=again, agent_id=PRIVATE)
        assert [c["result"] for c in done["changes"]] == ["added"]
        merged = [r for r in fake.requests[asked:] if r.step == "maintain"]
        assert merged and any("lisinopril" in str(r.body) for r in merged)
        [own] = [
            m
            for m in (await call(health, "list_memories", agent_id=PRIVATE))["memories"]
            if m["text"] == "User said: I also take aspirin."
        ]
        assert own["agent_id"] == PRIVATE
    async with as_token(server, user, ["travel"]) as travel:
        seen = texts((await call(travel, "list_memories", agent_id="travel"))["memories"])
        assert "User said: I also take aspirin." not in seen and SECRET not in seen


async def test_a_token_the_endpoint_verifies_itself_keeps_its_agents(
    local_embeddings: Embeddings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Aegra no auth middleware covers `/mcp`, so it verifies the token itself: the user
    it makes carries the token's agents, and an agent the token does not list is refused."""
    store = make_store("edge", local_embeddings, tmp_path / "store", private_agents=[PRIVATE])
    monkeypatch.setenv("ENGRAM_AUTH_SECRET", TOKEN_SECRET)
    monkeypatch.setattr(mcp_endpoint, "on_aegra", lambda: True)
    monkeypatch.setattr(mcp_endpoint, "default_store", lambda: store)
    get_settings.cache_clear()
    verifier.cache_clear()
    endpoint = mcp_endpoint.McpEndpoint()

    async def post(
        user: str, agents: list[str], name: str, acting: str | None, **arguments: Any
    ) -> httpx.Response:
        request = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": name, "arguments": arguments},
        }
        headers = {**MCP_HEADERS, **bearer(user, agents=agents)}
        if acting is not None:
            headers["X-Engram-Agent"] = acting
        transport = httpx.ASGITransport(app=endpoint)
        async with httpx.AsyncClient(transport=transport, base_url="http://mcp") as http:
            return await http.post("/mcp", json=request, headers=headers)

    async def tool(
        user: str, agents: list[str], name: str, acting: str | None = None, **arguments: Any
    ) -> dict[str, Any]:
        answer = await post(user, agents, name, acting, **arguments)
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()["result"]
        return result

    try:
        async with endpoint.lifespan(None):
            added = await tool("aegra-user", [PRIVATE], "remember", text=SECRET, agent_id=PRIVATE)
            assert not added.get("isError"), added
            assert added["structuredContent"]["changes"][0]["result"] == "added"
            mine = await tool("aegra-user", [PRIVATE], "list_memories", agent_id=PRIVATE)
            [memory] = mine["structuredContent"]["memories"]
            assert (memory["text"], memory["agent_id"]) == (SECRET, PRIVATE)
            for agents in (["travel"], []):
                denied = await tool("aegra-user", agents, "list_memories", agent_id=PRIVATE)
                assert denied["isError"] is True
                assert denied["content"][0]["text"].startswith(NOT_ALLOWED)
            shared = await tool("aegra-user", ["travel"], "list_memories", agent_id="travel")
            assert shared["structuredContent"]["memories"] == []
            # The X-Engram-Agent header counts here too: the agent of a tool that names none,
            # and no other; a header the token does not allow is refused outright.
            acting = await tool("aegra-user", [PRIVATE], "list_memories", acting=PRIVATE)
            assert [m["text"] for m in acting["structuredContent"]["memories"]] == [SECRET]
            other = await tool(
                "aegra-user", [PRIVATE, "travel"], "list_memories", "travel", agent_id=PRIVATE
            )
            assert other["isError"] is True and "X-Engram-Agent" in other["content"][0]["text"]
            for agents in (["travel"], []):
                denied = await post("aegra-user", agents, "list_memories", PRIVATE)
                assert denied.status_code == 403 and NOT_ALLOWED in denied.json()["detail"]
            malformed = await post("aegra-user", ["*"], "list_memories", "*")
            assert malformed.status_code == 403
            assert malformed.json()["detail"].startswith("X-Engram-Agent:")
    finally:
        store.engine.close()
        verifier.cache_clear()
        get_settings.cache_clear()
