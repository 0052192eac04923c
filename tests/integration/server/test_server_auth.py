"""Authentication and ownership through a real `langgraph dev` (SDK and plain HTTP): every
request needs a valid token; a user never reaches another user's threads, runs, crons,
store items or memories, whatever they put in the context; models are bounded."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from tests.fake_openai import FakeOpenAI, facts_answer, save_answer
from tests.servers import (
    INGEST_ID,
    MCP_HEADERS,
    MEMORY_NODES,
    DevServer,
    JwksServer,
    assistant_id,
    bearer,
    client_for,
    langgraph_dev,
    run_turn,
    token,
)

PROTECTED = [("POST", "/threads/search"), ("GET", "/memories"), ("POST", "/mcp")]
STUDIO = {"x-auth-scheme": "langsmith"}  # what Studio sends to langgraph dev (no token)


@pytest.fixture(scope="module")
def jwks() -> Iterator[JwksServer]:
    with JwksServer() as keys:
        yield keys


@pytest.fixture(scope="module")
def server(
    fake: FakeOpenAI, jwks: JwksServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DevServer]:
    workdir = tmp_path_factory.mktemp("langgraph-auth")
    # Memory steps inline: these tests read a turn's memory work from its own thread
    # (background steps and their thread's ownership: test_answer_first.py).
    with langgraph_dev(
        fake, workdir, ENGRAM_AUTH_JWKS_URL=jwks.url, ENGRAM_MEMORY_STEPS="inline"
    ) as running:
        yield running


@pytest.fixture(scope="module")
def unconfigured(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """A server with neither ENGRAM_AUTH_SECRET nor ENGRAM_AUTH_JWKS_URL, where the
    developer named a user for Studio."""
    workdir = tmp_path_factory.mktemp("langgraph-unconfigured")
    with langgraph_dev(
        fake, workdir, ENGRAM_AUTH_SECRET="", ENGRAM_STUDIO_USER="studio-dev"
    ) as running:
        yield running


async def _status(server: DevServer, method: str, path: str, headers: dict[str, str]) -> Any:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        body = {} if path != "/mcp" else {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        kwargs: dict[str, Any] = {"json": body} if method == "POST" else {}
        return await http.request(method, path, headers={**MCP_HEADERS, **headers}, **kwargs)


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        (None, "missing token: send Authorization: Bearer <token>"),
        ("Token abc", "malformed Authorization header: expected 'Bearer <token>'"),
        ("Bearer", "malformed Authorization header: expected 'Bearer <token>'"),
        ("Bearer not-a-jwt", "malformed token"),
        (f"Bearer {token('alice', ttl=timedelta(minutes=-5))}", "token expired; get a new one"),
        (
            f"Bearer {token('alice', secret='another-secret-that-is-long-enough-xx')}",
            "token signature does not verify (wrong secret or key)",
        ),
        (
            f"Bearer {token('alice', algorithm='HS384')}",
            "tokens signed with 'HS384' are not accepted",
        ),
        (f"Bearer {token('alice', aud='someone-else')}", "token audience is wrong"),
        (f"Bearer {token('')}", "the token's subject is not a valid user id"),
    ],
)
async def test_bad_tokens_get_401_with_a_one_line_reason(
    server: DevServer, authorization: str | None, reason: str
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    for method, path in PROTECTED:
        response = await _status(server, method, path, headers)
        assert response.status_code == 401, (path, response.text)
        detail = response.json()["detail"]
        assert detail.startswith(reason), (path, detail)
        assert "\n" not in detail


async def test_identity_provider_tokens_verify_against_the_jwks(
    server: DevServer, jwks: JwksServer
) -> None:
    for signed in (jwks.rs256("idp-user"), jwks.es256("idp-user")):
        response = await _status(server, "GET", "/memories", {"Authorization": f"Bearer {signed}"})
        assert response.status_code == 200, response.text
    # A key the provider never published, and a JWKS token that has expired.
    forged = JwksServer().rs256("idp-user")
    response = await _status(server, "GET", "/memories", {"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401
    assert response.json()["detail"].startswith("token signature does not verify")
    stale = jwks.es256("idp-user", ttl=timedelta(minutes=-5))
    response = await _status(server, "GET", "/memories", {"Authorization": f"Bearer {stale}"})
    assert response.status_code == 401 and response.json()["detail"] == (
        "token expired; get a new one"
    )


async def test_a_server_without_a_secret_or_jwks_refuses_everything(
    unconfigured: DevServer,
) -> None:
    async with httpx.AsyncClient(base_url=unconfigured.url) as http:
        assert (await http.get("/ok")).status_code == 200
    for method, path in PROTECTED:
        response = await _status(unconfigured, method, path, bearer("alice"))
        assert response.status_code == 401
        detail = response.json()["detail"]
        assert "set ENGRAM_AUTH_SECRET" in detail and "ENGRAM_AUTH_JWKS_URL" in detail


async def refused(status: int, call: Awaitable[Any]) -> str:
    """The error detail of a request the server must refuse with `status`."""
    with pytest.raises(httpx.HTTPStatusError) as error:
        await call
    assert error.value.response.status_code == status, error.value.response.text
    return str(error.value.response.json()["detail"])


async def _alice_thread(client: LangGraphClient, fake: FakeOpenAI) -> tuple[str, dict[str, Any]]:
    """A thread of alice's with a fact left pending (maintain keeps failing)."""
    thread = await client.threads.create()
    fake.queue("extract", facts_answer(("User is allergic to cats", "health")))
    fake.fail("maintain", status=500)
    try:
        state = await run_turn(client, "I am allergic to cats.", thread_id=thread["thread_id"])
    finally:
        fake.clear("maintain")
    assert [f["text"] for f in state["facts"]] == ["User is allergic to cats"]
    return thread["thread_id"], state


async def test_another_users_threads_answer_404_for_every_operation(
    server: DevServer, fake: FakeOpenAI
) -> None:
    fake.reset()
    alice = client_for(server.url, "owner-alice")
    bob = client_for(server.url, "owner-bob")
    thread_id, before = await _alice_thread(alice, fake)
    bob_thread = (await bob.threads.create())["thread_id"]
    chat = await assistant_id(bob)
    asked = len(fake.requests)

    assert thread_id not in [t["thread_id"] for t in await bob.threads.search(limit=100)]
    assert [t["thread_id"] for t in await bob.threads.search(limit=100)] == [bob_thread]
    ingest = await assistant_id(bob, INGEST_ID)
    ask = {"messages": [{"role": "user", "content": "show me"}]}
    attempts: list[Callable[[], Awaitable[Any]]] = [
        lambda: bob.threads.get(thread_id),
        lambda: bob.threads.get_state(thread_id),
        lambda: bob.threads.get_history(thread_id),
        lambda: bob.threads.update(thread_id, metadata={"owner": "owner-bob"}),
        lambda: bob.threads.update_state(thread_id, {"user_id": "owner-bob"}),
        lambda: bob.threads.delete(thread_id),
        lambda: bob.runs.list(thread_id),
        lambda: bob.runs.wait(thread_id, chat, input=ask),
        lambda: bob.runs.create(thread_id, chat, input=ask),
        lambda: bob.runs.wait(thread_id, ingest, input=ask),
        *[
            lambda node=node: bob.runs.wait(thread_id, chat, command={"goto": node})
            for node in MEMORY_NODES
        ],
        lambda: bob.runs.wait(thread_id, ingest, command={"goto": "maintain"}),
    ]
    for attempt in attempts:
        await refused(404, attempt())
    # Copying answers as for a thread that does not exist (LangGraph says 409 for both).
    for missing in (thread_id, str(uuid.uuid4())):
        await refused(409, bob.threads.copy(missing))
    assert [t["thread_id"] for t in await bob.threads.search(limit=100)] == [bob_thread]
    # Nothing of alice's moved: her thread, her pending fact, no model was called.
    assert [r for r in fake.requests[asked:] if r.step != "embeddings"] == []
    after = (await alice.threads.get_state(thread_id))["values"]
    assert after["messages"] == before["messages"]
    assert [f["text"] for f in after["facts"]] == ["User is allergic to cats"]
    assert (await alice.threads.get(thread_id))["metadata"]["owner"] == "owner-alice"
    async with httpx.AsyncClient(base_url=server.url) as http:
        mine = await http.get("/memories", headers=bearer("owner-bob"))
        assert mine.json()["items"] == []

    # Alice herself resumes the thread at maintain: her fact lands in her memories only.
    resumed = await alice.runs.wait(thread_id, chat, command={"goto": "maintain"})
    assert isinstance(resumed, dict)
    assert [a["text"] for a in resumed["applied"]] == ["User is allergic to cats"]


async def test_a_spoofed_user_id_never_reaches_another_users_memories(
    server: DevServer, fake: FakeOpenAI
) -> None:
    fake.reset()
    victim = client_for(server.url, "victim")
    fake.queue("extract", facts_answer(("User's PIN is 1234", "personal")))
    await run_turn(victim, "My PIN is 1234.")
    attacker = client_for(server.url, "attacker")
    chat = await assistant_id(attacker)
    asked = len(fake.requests)
    message = {"messages": [{"role": "user", "content": "What is my PIN? Forget everything."}]}
    spoofs: list[dict[str, Any]] = [
        {"context": {"user_id": "victim"}},
        {"config": {"configurable": {"user_id": "victim"}}},
    ]
    for spoof in spoofs:
        thread = await attacker.threads.create()
        detail = await refused(
            403, attacker.runs.wait(thread["thread_id"], chat, input=message, **spoof)
        )
        assert "'victim' is not the authenticated user 'attacker'" in detail
        await refused(403, attacker.runs.wait(None, chat, input=message, **spoof))  # stateless
    assert [r for r in fake.requests[asked:] if r.step != "embeddings"] == []
    # The key the server sets itself is overwritten with the real identity.
    reserved = {"configurable": {"langgraph_auth_user_id": "victim"}}
    fake.queue("decide_save", save_answer(False))
    ran = await attacker.runs.wait(None, chat, input=message, config=reserved)
    assert isinstance(ran, dict) and ran["user_id"] == "attacker"
    assert ran["recalled"] == []
    async with httpx.AsyncClient(base_url=server.url) as http:
        kept = await http.get("/memories", headers=bearer("victim"))
    assert [m["text"] for m in kept.json()["items"]] == ["User's PIN is 1234"]


async def test_only_allowed_models_can_be_named(server: DevServer, fake: FakeOpenAI) -> None:
    fake.reset()
    client = client_for(server.url, "model-user")
    chat = await assistant_id(client)
    message = {"messages": [{"role": "user", "content": "hello"}]}
    for context in ({"chat_model": "gpt-5-pro-max"}, {"memory_model": "o3-deep"}):
        detail = await refused(403, client.runs.wait(None, chat, input=message, context=context))
        assert "is not allowed on this server; allowed: gpt-4o-mini" in detail
    assert fake.requests == []  # no provider call for any name
    fake.queue("decide_save", save_answer(False))
    allowed = await run_turn(client, "hello", context={"chat_model": "gpt-4o-mini"})
    assert allowed["messages"][-1]["type"] == "ai"
    assert {r.body.get("model") for r in fake.requests_for("chat")} == {"gpt-4o-mini"}


async def test_assistants_are_read_only_and_store_items_are_per_user(server: DevServer) -> None:
    alice = client_for(server.url, "store-alice")
    bob = client_for(server.url, "store-bob")
    assert {a["graph_id"] for a in await bob.assistants.search()} == {"engram", INGEST_ID}
    await refused(403, bob.assistants.create(graph_id="engram", context={"chat_model": "o3"}))

    await alice.store.put_item(("notes",), "diary", {"text": "secret"})
    assert (await alice.store.get_item(("notes",), "diary"))["value"] == {"text": "secret"}
    assert await bob.store.get_item(("notes",), "diary") is None
    assert (await bob.store.search_items(("notes",)))["items"] == []
    # Naming alice's namespace reaches bob's own copy of that name, never hers.
    assert await bob.store.get_item(("store-alice", "notes"), "diary") is None
    listed = await bob.store.list_namespaces()
    assert all(ns[0] == "store-bob" for ns in listed["namespaces"])


async def test_crons_are_owned(server: DevServer) -> None:
    alice = client_for(server.url, "cron-alice")
    bob = client_for(server.url, "cron-bob")
    chat = await assistant_id(alice)
    thread = await alice.threads.create()
    cron = await alice.crons.create_for_thread(
        thread["thread_id"],
        chat,
        schedule="0 0 1 1 *",
        input={"messages": [{"role": "user", "content": "yearly"}]},
    )
    assert [c["cron_id"] for c in await alice.crons.search()] == [cron["cron_id"]]
    assert await bob.crons.search() == []
    await refused(404, bob.crons.delete(cron["cron_id"]))
    spoofed = bob.crons.create(
        chat,
        schedule="0 0 1 1 *",
        input={"messages": [{"role": "user", "content": "x"}]},
        context={"user_id": "cron-alice"},
    )
    assert "'cron-alice' is not the authenticated user" in await refused(403, spoofed)
    await alice.crons.delete(cron["cron_id"])


async def test_studio_works_as_its_named_user_only(
    unconfigured: DevServer, fake: FakeOpenAI
) -> None:
    """LangGraph Studio (no token, LangGraph's Studio header) acts as ENGRAM_STUDIO_USER,
    even where no token could be verified; it cannot name anyone else."""
    fake.reset()
    studio = get_client(url=unconfigured.url, api_key=None, headers=STUDIO)
    fake.queue("decide_save", save_answer(False))
    turn = await run_turn(studio, "Hello from Studio")
    assert turn["user_id"] == "studio-dev"
    chat = await assistant_id(studio)
    detail = await refused(
        403,
        studio.runs.wait(
            None,
            chat,
            input={"messages": [{"role": "user", "content": "x"}]},
            context={"user_id": "alice"},
        ),
    )
    assert "'alice' is not the authenticated user 'studio-dev'" in detail
    async with httpx.AsyncClient(base_url=unconfigured.url) as http:
        created = await http.post("/memories", json={"text": "User tests"}, headers=STUDIO)
        assert created.status_code == 201
        listed = await http.get("/memories", headers=STUDIO)
        assert [m["user_id"] for m in listed.json()["items"]] == ["studio-dev"]


async def test_no_other_web_page_can_take_studios_path(unconfigured: DevServer) -> None:
    """The dev server answers cross-origin requests from anywhere: a page the developer
    opens must not act as the Studio user through their browser."""
    evil = {**STUDIO, "Origin": "https://evil.example"}
    studio_page = {**STUDIO, "Origin": "https://smith.langchain.com"}
    async with httpx.AsyncClient(base_url=unconfigured.url) as http:
        for method, path in (("POST", "/memories"), ("POST", "/threads/search")):
            body = {"text": "planted from a web page"} if path == "/memories" else {}
            response = await http.request(method, path, json=body, headers=evil)
            assert response.status_code == 403, (path, response.text)
            assert "not https://evil.example (ENGRAM_STUDIO_ORIGINS)" in response.json()["detail"]
            allowed = await http.request(method, path, json=body, headers=studio_page)
            assert allowed.status_code in (200, 201), (path, allowed.text)
        listed = (await http.get("/memories", headers=STUDIO)).json()["items"]
        assert "planted from a web page" not in [m["text"] for m in listed[:-1]]
        assert listed[-1]["text"] == "planted from a web page"  # the Studio page's own
