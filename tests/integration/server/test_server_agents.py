"""Agent scopes through a real `langgraph dev`: `?agent=` on every `/memories` route, and
the `X-Engram-Agent` header a request acts as (its runs, threads and crons are that
agent's). A private agent's (`health`, ENGRAM_PRIVATE_AGENTS) memory is out of reach of
every other agent and of callers without one: never listed, searched, fetched, exported,
changed or moved, its ids answered exactly like unknown ones; a token acts only as the
agents its claim lists (any request naming another in the header is 403); a run names no
agent but its request's; a chat run as `health` keeps its facts (and its memory run) to
itself, a run as another agent never recalls them, and its thread answers everyone else
like an unknown one."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from langgraph_sdk.client import LangGraphClient

from engram.identity import owner_key
from engram.memory.transfer import read_export
from tests.fake_openai import FakeOpenAI, facts_answer, message_text, save_answer
from tests.integration.server.test_server_auth import refused
from tests.servers import (
    MCP_HEADERS,
    DevServer,
    acting,
    agent_client,
    assistant_id,
    bearer,
    client_for,
    langgraph_dev,
    run_turn,
)

PRIVATE = "health"
OTHER = "travel"


@pytest.fixture(scope="module")
def server(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    workdir = tmp_path_factory.mktemp("langgraph-agents")
    with langgraph_dev(fake, workdir, ENGRAM_PRIVATE_AGENTS=PRIVATE) as running:
        yield running


def as_agent(agent: str | None) -> dict[str, str]:
    """The query parameters of a request acting as `agent` (None: no agent)."""
    return {} if agent is None else {"agent": agent}


async def add(
    http: httpx.AsyncClient, user: str, text: str, agent: str | None = None, **claims: Any
) -> str:
    response = await http.post(
        "/memories",
        json={"text": text, "category": "test"},
        params=as_agent(agent),
        headers=bearer(user, **claims),
    )
    assert response.status_code == 201, response.text
    memory_id: str = response.json()["memory_id"]
    return memory_id


async def texts(
    http: httpx.AsyncClient,
    user: str,
    agent: str | None,
    *,
    header: str | None = None,
    **claims: Any,
) -> dict[str, str | None]:
    """Every version the caller lists (any status): text -> its agent (None: shared).
    `agent` goes as `?agent=`, `header` as the X-Engram-Agent header."""
    listed = await http.get(
        "/memories",
        params={"status": "all", **as_agent(agent)},
        headers={**bearer(user, **claims), **acting(header)},
    )
    assert listed.status_code == 200, listed.text
    return {m["text"]: m["agent_id"] for m in listed.json()["items"]}


def one_line(response: httpx.Response) -> str:
    reason = response.json()["detail"]
    assert isinstance(reason, str) and reason and "\n" not in reason, reason
    return reason


# Every route that names a memory, with a body it accepts.
BY_ID: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/memories/{}", None),
    ("GET", "/memories/{}/history", None),
    ("PATCH", "/memories/{}", {"text": "User takes no medication"}),
    ("PUT", "/memories/{}/validity", {"valid_until": "2030-01-01"}),
    ("DELETE", "/memories/{}", None),
    ("POST", "/memories/{}/restore", None),
    ("PUT", "/memories/{}/agent", {"agent_id": None}),
    ("POST", "/memories/profile/pins/{}", None),
]


async def test_a_private_agents_memory_is_out_of_every_other_callers_reach(
    http: httpx.AsyncClient,
) -> None:
    user = "ag-alice"
    health = {"agents": [PRIVATE]}
    first = await add(http, user, "User takes insulin daily", PRIVATE, **health)
    changed = await http.patch(
        f"/memories/{first}",
        json={"text": "User takes insulin twice a day"},
        params=as_agent(PRIVATE),
        headers=bearer(user, **health),
    )
    assert changed.status_code == 200 and changed.json()["result"] == "updated", changed.text
    current = changed.json()["memory_id"]
    await add(http, user, "User lives in Oslo")  # shared: every agent sees it
    # A new memory as an agent that is not private is shared, as the graph's are.
    await add(http, user, "User prefers window seats", OTHER, agents=[OTHER])
    own = {"User takes insulin daily": PRIVATE, "User takes insulin twice a day": PRIVATE}
    shared = {"User lives in Oslo": None, "User prefers window seats": None}
    assert await texts(http, user, PRIVATE, **health) == {**own, **shared}
    history = await http.get(
        f"/memories/{current}/history", params=as_agent(PRIVATE), headers=bearer(user, **health)
    )
    assert [v["agent_id"] for v in history.json()] == [PRIVATE, PRIVATE]

    unknown = str(uuid.uuid4())
    callers: list[tuple[str, str | None, dict[str, Any]]] = [
        ("travel's token as travel", OTHER, {"agents": [OTHER]}),
        ("travel's token, no agent", None, {"agents": [OTHER]}),
        ("a token without agents", None, {}),
        ("health's own token without the agent parameter", None, health),
    ]
    for name, agent, claims in callers:
        headers, params = bearer(user, **claims), as_agent(agent)
        assert await texts(http, user, agent, **claims) == shared, name
        for query in ("insulin", "insulin twice a day"):
            found = await http.get(
                "/memories/search", params={"query": query, "k": 50, **params}, headers=headers
            )
            assert found.status_code == 200 and "insulin" not in found.text, name
        exported = await http.get("/memories/export", params=params, headers=headers)
        assert exported.status_code == 200 and "insulin" not in exported.text, name
        for method, path, body in BY_ID:
            if path.endswith("/agent") and agent is not None:
                body = {"agent_id": agent}  # into its own memories: allowed, if it saw it
            for theirs in (first, current):
                answered = await http.request(
                    method, path.format(theirs), json=body, params=params, headers=headers
                )
                missing = await http.request(
                    method, path.format(unknown), json=body, params=params, headers=headers
                )
                assert answered.status_code == missing.status_code == 404, (
                    name,
                    method,
                    path,
                    answered.text,
                )
                assert answered.json() == json.loads(missing.text.replace(unknown, theirs)), (
                    name,
                    method,
                    path,
                )
        # An import of health's export as anyone else writes nothing.
        health_export = await http.get(
            "/memories/export", params=as_agent(PRIVATE), headers=bearer(user, **health)
        )
        assert "insulin" in health_export.text
        imported = await http.post(
            "/memories/import", content=health_export.content, params=params, headers=headers
        )
        assert imported.status_code == 400, (name, imported.text)
        assert "'health'" in one_line(imported), name

    forgot = await http.post(
        "/memories/forget",
        json={"confirm": True},
        params=as_agent(OTHER),
        headers=bearer(user, agents=[OTHER]),
    )
    assert forgot.status_code == 200, forgot.text
    assert forgot.json()["memories"] == 0 and forgot.json()["threads"] == 0
    # Nothing above changed health's memory: both versions, as they were.
    history = await http.get(
        f"/memories/{current}/history", params=as_agent(PRIVATE), headers=bearer(user, **health)
    )
    assert [(v["text"], v["status"], v["agent_id"]) for v in history.json()] == [
        ("User takes insulin daily", "superseded", PRIVATE),
        ("User takes insulin twice a day", "active", PRIVATE),
    ]
    assert await texts(http, user, PRIVATE, **health) == {**own, **shared}
    exported = await http.get(
        "/memories/export", params=as_agent(PRIVATE), headers=bearer(user, **health)
    )
    header, records = read_export(exported.text.splitlines())
    assert header.agent_id == PRIVATE and not header.all_agents
    assert {m.text: m.agent_id for m in records} == {**own, **shared}

    # Forget as health erases health's own only; the shared memories stay.
    erased = await http.post(
        "/memories/forget",
        json={"confirm": True},
        params=as_agent(PRIVATE),
        headers=bearer(user, **health),
    )
    assert erased.status_code == 200 and erased.json()["memories"] == 2, erased.text
    assert await texts(http, user, PRIVATE, **health) == shared
    assert await texts(http, user, None) == shared


async def test_a_token_acts_only_as_the_agents_its_claim_lists(
    http: httpx.AsyncClient, server: DevServer, fake: FakeOpenAI
) -> None:
    user = "ag-dana"
    secret = await add(http, user, "User sees a cardiologist", PRIVATE, agents=[PRIVATE])
    calls: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", "/memories", None),
        ("GET", "/memories/search?query=heart", None),
        ("GET", "/memories/export", None),
        ("POST", "/memories", {"text": "User likes tea"}),
        ("POST", "/memories/forget", {"confirm": True}),
        ("GET", "/memories/profile", None),
        ("GET", "/memories/profile/history", None),
        ("POST", f"/memories/profile/restore/{uuid.uuid4()}", None),
        ("DELETE", f"/memories/profile/pins/{secret}", None),
        *[(method, path.format(secret), body) for method, path, body in BY_ID],
        ("PUT", f"/memories/{secret}/agent", {"agent_id": PRIVATE}),
    ]
    chat = await assistant_id(client_for(server.url, user))
    ask = {"messages": [{"role": "user", "content": "How is my heart?"}]}
    fake.reset()
    for claims in ({}, {"agents": [OTHER]}, {"agents": ["cardio", "travel-2"]}):
        # `?agent=health`, the header `X-Engram-Agent: health`, or both: 403.
        for params, header in (
            (as_agent(PRIVATE), None),
            ({}, PRIVATE),
            (as_agent(PRIVATE), PRIVATE),
        ):
            headers = {**bearer(user, **claims), **acting(header)}
            for method, path, body in calls:
                answered = await http.request(
                    method, path, json=body, params=params, headers=headers
                )
                assert answered.status_code == 403, (claims, method, path, answered.text)
                assert "does not allow agent 'health'" in one_line(answered), answered.text
            imported = await http.post(
                "/memories/import",
                content=b'{"format": "engram-export"}\n',
                params=params,
                headers=headers,
            )
            assert imported.status_code == 403, imported.text
        # The header on any other request too: LangGraph's API and MCP refuse it.
        as_health = agent_client(server.url, user, PRIVATE, **claims)
        for attempt in (
            as_health.assistants.search(),
            as_health.threads.create(),
            as_health.threads.search(),
            as_health.threads.get(str(uuid.uuid4())),
            as_health.runs.wait(None, chat, input=ask),
            as_health.runs.wait(None, chat, input=ask, context={"agent_id": PRIVATE}),
            as_health.crons.search(),
            as_health.crons.create(chat, schedule="0 0 1 1 *", input=ask),
            as_health.store.search_items(("notes",)),
        ):
            assert "does not allow agent 'health'" in await refused(403, attempt)
        initialize = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "probe", "version": "1"},
            },
        }
        mcp = await http.post(
            "/mcp",
            json=initialize,
            headers={**bearer(user, **claims), **acting(PRIVATE), **MCP_HEADERS},
        )
        assert mcp.status_code == 403, mcp.text
        assert "does not allow agent 'health'" in one_line(mcp)
    assert [r for r in fake.requests if r.step != "embeddings"] == []
    assert await texts(http, user, PRIVATE, agents=[PRIVATE]) == {
        "User sees a cardiologist": PRIVATE
    }

    # `*` in the claim: any agent. Invalid agent ids are 422 (as `?agent=`) or 403 (as the
    # header), whatever the token allows.
    anyone = {"agents": ["*"]}
    assert await texts(http, user, PRIVATE, **anyone) == {"User sees a cardiologist": PRIVATE}
    assert await texts(http, user, "cardio", **anyone) == {}
    for bad in ("*", " ", "a" * 257, "tab\there"):
        answered = await http.get(
            "/memories", params={"agent": bad}, headers=bearer(user, **anyone)
        )
        assert answered.status_code == 422, (bad, answered.text)
    for bad in ("*", "a" * 257, "tab\there"):
        answered = await http.get("/memories", headers={**bearer(user, **anyone), **acting(bad)})
        assert answered.status_code == 403, (bad, answered.text)
        assert one_line(answered).startswith("X-Engram-Agent: "), answered.text
    bad_move = await http.put(
        f"/memories/{secret}/agent",
        json={"agent_id": "*"},
        params=as_agent(PRIVATE),
        headers=bearer(user, **anyone),
    )
    assert bad_move.status_code == 422, bad_move.text
    no_destination = await http.put(
        f"/memories/{secret}/agent",
        json={},
        params=as_agent(PRIVATE),
        headers=bearer(user, **anyone),
    )
    assert no_destination.status_code == 422, no_destination.text

    # SDK runs and crons act as their request's agent: naming another one (or one without
    # the header) is refused at creation, even with a token that allows it.
    for claims, header in [
        ({}, None),
        ({"agents": [OTHER]}, None),
        ({"agents": [OTHER]}, OTHER),
        ({"agents": [PRIVATE]}, None),
        (anyone, None),
        (anyone, OTHER),
    ]:
        client = agent_client(server.url, user, header, **claims)
        thread_id = (await client.threads.create())["thread_id"]
        for context in ({"agent_id": PRIVATE}, {"agent_id": PRIVATE, "user_id": user}):
            for call in (
                client.runs.wait(thread_id, chat, input=ask, context=context),
                client.runs.create(thread_id, chat, input=ask, context=context),
                client.runs.wait(None, chat, input=ask, context=context),
                client.crons.create(chat, schedule="0 0 1 1 *", input=ask, context=context),
            ):
                detail = await refused(403, call)
                expected = (  # a cron made with the header is refused for being an agent's
                    "crons cannot act as an agent"
                    if header is not None and call.__qualname__.startswith("Cron")
                    else "send the header X-Engram-Agent: <agent>"
                )
                assert expected in detail, (claims, detail)
        assert await client.runs.list(thread_id) == []
        assert await client.crons.search() == []
    assert [r for r in fake.requests if r.step != "embeddings"] == []

    # With the header, a run acts as its agent: named in the context, or filled in.
    as_health = agent_client(server.url, user, PRIVATE, **anyone)
    for context in ({"agent_id": PRIVATE}, {}):
        fake.reset()
        output = await run_turn(
            as_health, "How is my heart?", context={"save_policy": "never", **context}
        )
        assert output["agent_id"] == PRIVATE, context
        assert [m["text"] for m in output["recalled"]] == ["User sees a cardiologist"]

    # `/memories` without `?agent=` acts as the header's agent; both given must agree.
    health = {"agents": [PRIVATE]}
    assert await texts(http, user, None, header=PRIVATE, **health) == {
        "User sees a cardiologist": PRIVATE
    }
    assert await texts(http, user, PRIVATE, header=PRIVATE, **health) == {
        "User sees a cardiologist": PRIVATE
    }
    assert await texts(http, user, None, header=OTHER, **anyone) == {}
    for agent in (OTHER, "cardio"):
        mixed = await http.get(
            "/memories",
            params=as_agent(agent),
            headers={**bearer(user, **anyone), **acting(PRIVATE)},
        )
        assert mixed.status_code == 403, mixed.text
        assert "differs from the X-Engram-Agent header's 'health'" in one_line(mixed)
    created = await http.post(
        "/memories",
        json={"text": "User takes beta blockers", "category": "health"},
        headers={**bearer(user, **health), **acting(PRIVATE)},
    )
    assert created.status_code == 201, created.text
    assert await texts(http, user, PRIVATE, **health) == {
        "User sees a cardiologist": PRIVATE,
        "User takes beta blockers": PRIVATE,
    }
    assert await texts(http, user, None) == {}


async def answer_of(call: Awaitable[Any]) -> tuple[int, str]:
    """(HTTP status, body) of an SDK call: 200 and its JSON, or the refusal."""
    try:
        return 200, json.dumps(await call, default=str)
    except httpx.HTTPStatusError as error:
        return error.response.status_code, error.response.text


async def test_runs_as_a_private_agent_keep_its_facts_to_itself(
    http: httpx.AsyncClient, server: DevServer, fake: FakeOpenAI
) -> None:
    user = "ag-bob"
    await add(http, user, "User lives in Bergen")  # shared: every run recalls it
    fake.reset()
    health = agent_client(server.url, user, PRIVATE, agents=[PRIVATE])
    fake.queue("chat", "Noted, I will keep that in mind.")
    fake.queue("decide_save", save_answer(True))
    fake.queue("extract", facts_answer(("User has asthma", "health")))
    thread_id = (await health.threads.create())["thread_id"]
    told = await run_turn(health, "I have asthma.", thread_id=thread_id)  # agent: the header's
    assert told["agent_id"] == PRIVATE
    assert [(a["op"], a["text"]) for a in told["applied"]] == [("ADD", "User has asthma")]
    # The turn's memory run (in the background) is health's too: its thread, its context.
    memory = told["memory_run"]
    assert memory, told
    for thread in (thread_id, memory["thread_id"]):
        metadata = (await health.threads.get(thread))["metadata"]
        assert (metadata["owner"], metadata["owner_user"]) == (owner_key(user, PRIVATE), user)
    memory_run = await health.runs.get(memory["thread_id"], memory["run_id"])
    assert memory_run["status"] == "success"
    assert memory_run["kwargs"]["context"]["agent_id"] == PRIVATE

    assert await texts(http, user, PRIVATE, agents=[PRIVATE]) == {
        "User lives in Bergen": None,
        "User has asthma": PRIVATE,
    }
    assert await texts(http, user, None) == {"User lives in Bergen": None}
    assert await texts(http, user, OTHER, agents=[OTHER]) == {"User lives in Bergen": None}

    # Later runs (nothing saved) recall every memory they see (the test floor is -1):
    # health's own for health, never for travel or a run without an agent.
    anyone = {"agents": ["*"]}
    never = {"save_policy": "never"}
    runs: list[tuple[LangGraphClient, str | None, set[str]]] = [
        (health, PRIVATE, {"User lives in Bergen", "User has asthma"}),
        (agent_client(server.url, user, OTHER, agents=[OTHER]), OTHER, {"User lives in Bergen"}),
        (agent_client(server.url, user, OTHER, **anyone), OTHER, {"User lives in Bergen"}),
        (client_for(server.url, user), None, {"User lives in Bergen"}),
        (client_for(server.url, user, agents=[PRIVATE]), None, {"User lives in Bergen"}),
        (client_for(server.url, user, **anyone), None, {"User lives in Bergen"}),
    ]
    for client, agent, recalled in runs:
        for context in (never, {**never, "agent_id": agent}):
            fake.reset()
            output = await run_turn(client, "What should I pack for a hike?", context=context)
            assert output["agent_id"] == agent
            assert {m["text"] for m in output["recalled"]} == recalled, agent
            [prompt] = fake.requests_for("chat")
            said = " ".join(message_text(m) for m in prompt.messages)
            assert "Bergen" in said
            assert ("asthma" in said) is (agent == PRIVATE), (agent, said)

    # The health thread and its memory thread answer every other caller of the user like
    # unknown ones: travel's token (with its header or without), one for any agent acting
    # as another or as none, health's own token without the header.
    chat = await assistant_id(health)
    unknown = str(uuid.uuid4())
    ask = {"messages": [{"role": "user", "content": "What do you know about me?"}]}
    outsiders: list[tuple[str | None, dict[str, Any]]] = [
        (None, {"agents": [OTHER]}),
        (OTHER, {"agents": [OTHER]}),
        (OTHER, anyone),
        (None, anyone),
        (None, {"agents": [PRIVATE]}),
        (None, {}),
    ]
    for header, claims in outsiders:
        other = agent_client(server.url, user, header, **claims)
        context = {**never, **({} if header is None else {"agent_id": header})}
        reads: list[Callable[[str], Awaitable[Any]]] = [
            other.threads.get,
            other.threads.get_state,
            other.runs.list,
            lambda thread, other=other: other.runs.get(thread, memory["run_id"]),
            lambda thread, other=other, context=context: other.runs.wait(
                thread, chat, input=ask, context=context
            ),
        ]
        fake.reset()
        for read in reads:
            for theirs in (thread_id, memory["thread_id"]):
                answered = await answer_of(read(theirs))
                missing = await answer_of(read(unknown))
                assert answered[0] == missing[0] == 404, (header, claims, answered)
                assert answered[1] == missing[1].replace(unknown, theirs), (header, claims)
        assert fake.requests_for("chat") == [], (header, claims)
        assert thread_id not in {t["thread_id"] for t in await other.threads.search(limit=100)}
    # Health goes on with its thread, as before.
    fake.reset()
    again = await run_turn(
        agent_client(server.url, user, PRIVATE, **anyone),
        "And my lungs?",
        thread_id=thread_id,
        context=never,
    )
    assert "User has asthma" in {m["text"] for m in again["recalled"]}
    state = await health.threads.get_state(thread_id)
    assert state["values"]["agent_id"] == PRIVATE
    said = [message_text(m) for m in state["values"]["messages"] if m["type"] == "human"]
    assert said == ["I have asthma.", "And my lungs?"]


async def test_moving_a_memory_between_shared_and_an_agents_own(http: httpx.AsyncClient) -> None:
    user = "ag-carol"
    health, anyone = {"agents": [PRIVATE]}, {"agents": ["*"]}
    marathon = await add(http, user, "User is training for a marathon")

    async def move(
        memory_id: str, to: str | None, agent: str | None, **claims: Any
    ) -> httpx.Response:
        return await http.put(
            f"/memories/{memory_id}/agent",
            json={"agent_id": to},
            params=as_agent(agent),
            headers=bearer(user, **claims),
        )

    # Into another agent than the one acted as (or without one): 403, whatever the token.
    for to, agent, claims in [
        (OTHER, PRIVATE, health),
        (OTHER, PRIVATE, anyone),
        (PRIVATE, None, anyone),
        (PRIVATE, OTHER, anyone),
    ]:
        refused_move = await move(marathon, to, agent, **claims)
        assert refused_move.status_code == 403, (to, agent, refused_move.text)
        assert f"agent={to!r}" in one_line(refused_move)
    assert await texts(http, user, None) == {"User is training for a marathon": None}

    moved = await move(marathon, PRIVATE, PRIVATE, **health)
    assert moved.status_code == 200, moved.text
    assert (moved.json()["result"], moved.json()["memory_id"]) == ("moved", marathon)
    assert await texts(http, user, None) == {}
    assert await texts(http, user, OTHER, agents=[OTHER]) == {}
    assert await texts(http, user, PRIVATE, **health) == {
        "User is training for a marathon": PRIVATE
    }
    record = await http.get(
        f"/memories/{marathon}", params=as_agent(PRIVATE), headers=bearer(user, **health)
    )
    assert record.json()["events"][-1]["op"] == "MOVE"
    # Now health's own: out of the profile, and out of reach without the agent.
    pinned = await http.post(
        f"/memories/profile/pins/{marathon}",
        params=as_agent(PRIVATE),
        headers=bearer(user, **health),
    )
    assert pinned.status_code == 422 and "'health'" in one_line(pinned)
    assert (await move(marathon, None, None, **anyone)).status_code == 404
    assert (await move(marathon, OTHER, OTHER, **anyone)).status_code == 404

    again = await move(marathon, PRIVATE, PRIVATE, **health)
    assert again.json()["result"] == "unchanged"
    back = await move(marathon, None, PRIVATE, **health)
    assert back.status_code == 200 and back.json()["result"] == "moved", back.text
    assert await texts(http, user, None) == {"User is training for a marathon": None}

    # An identical memory already where it goes absorbs the moved one (health's own copy
    # is made by an update: health's adding the text it already sees shared is a duplicate).
    half = await add(http, user, "User is training for a half marathon", PRIVATE, **health)
    twin = await http.patch(
        f"/memories/{half}",
        json={"text": "User is training for a marathon"},
        params=as_agent(PRIVATE),
        headers=bearer(user, **health),
    )
    assert twin.json()["result"] == "updated", twin.text
    copy = twin.json()["memory_id"]
    active = await http.get("/memories", params=as_agent(PRIVATE), headers=bearer(user, **health))
    assert {(m["id"], m["text"], m["agent_id"]) for m in active.json()["items"]} == {
        (marathon, "User is training for a marathon", None),
        (copy, "User is training for a marathon", PRIVATE),
    }
    merged = await move(copy, None, PRIVATE, **health)
    assert merged.status_code == 200, merged.text
    assert (merged.json()["result"], merged.json()["memory_id"]) == ("merged", marathon)
    listed = await http.get("/memories", params=as_agent(PRIVATE), headers=bearer(user, **health))
    assert [(m["id"], m["agent_id"]) for m in listed.json()["items"]] == [(marathon, None)]

    # Forget as an agent erases only what was moved into its own memories.
    assert (await move(marathon, OTHER, OTHER, agents=[OTHER])).json()["result"] == "moved"
    forgot = await http.post(
        "/memories/forget",
        json={"confirm": True},
        params=as_agent(OTHER),
        headers=bearer(user, agents=[OTHER]),
    )
    assert forgot.status_code == 200 and forgot.json()["memories"] == 1, forgot.text
    for agent, claims in ((OTHER, {"agents": [OTHER]}), (PRIVATE, health), (None, {})):
        gone = await http.get(
            f"/memories/{marathon}", params=as_agent(agent), headers=bearer(user, **claims)
        )
        assert gone.status_code == 404, gone.text
        active = await http.get("/memories", params=as_agent(agent), headers=bearer(user, **claims))
        assert active.json()["items"] == [], agent
    # The merged copy's versions moved with it and stay, shared, in the history.
    assert await texts(http, user, None) == {
        "User is training for a half marathon": None,
        "User is training for a marathon": None,
    }


async def test_every_memories_route_takes_the_agent_in_the_openapi_schema(
    http: httpx.AsyncClient,
) -> None:
    spec = (await http.get("/openapi.json")).json()
    operations = [
        (path, method, operation)
        for path, item in spec["paths"].items()
        if path.startswith("/memories")
        for method, operation in item.items()
    ]
    assert len(operations) >= 18
    for path, method, operation in operations:
        parameters = {p["name"]: p for p in operation.get("parameters", [])}
        assert "agent" in parameters, (method, path)
        assert parameters["agent"]["in"] == "query" and parameters["agent"]["description"]
    moving = spec["paths"]["/memories/{memory_id}/agent"]["put"]
    assert moving["summary"] and moving["description"]
    record = spec["components"]["schemas"]["MemoryRecord"]["properties"]
    assert "agent_id" in record
