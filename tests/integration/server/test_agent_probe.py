"""Adversarial probes of agent scopes through a real `langgraph dev` (ENGRAM_PRIVATE_AGENTS=
health): a token of the same user acting as `travel` (its `X-Engram-Agent` header), as no
agent, or as health without the header, tries to reach what health keeps to itself through
LangGraph's own API (threads, runs, crons), MCP's chat, crafted run contexts, crafted
headers and `?agent=` values. Each test asserts the safe behaviour."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from langgraph_sdk.client import LangGraphClient

from engram.identity import owner_key
from engram.nodes.schedule_memory import memory_thread_id
from tests.fake_openai import FakeOpenAI, facts_answer, save_answer
from tests.integration.server.test_server_mcp import call as tool_call
from tests.integration.server.test_server_mcp import connect
from tests.integration.server.test_server_mcp import refused as tool_refused
from tests.servers import (
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
SECRET = "HIV"  # in every private fact and message of health's below
# Requests of the same user that must not reach health's: (who, the agent the request acts
# as, the token's claims).
OUTSIDERS: list[tuple[str, str | None, dict[str, Any]]] = [
    ("travel's token", None, {"agents": [OTHER]}),
    ("travel's token acting as travel", OTHER, {"agents": [OTHER]}),
    ("a token without agents", None, {}),
    ("a token for any agent acting as travel", OTHER, {"agents": ["*"]}),
    ("a token for any agent acting as none", None, {"agents": ["*"]}),
    ("health's token without the header", None, {"agents": [PRIVATE]}),
]


@pytest.fixture(scope="module")
def server(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    workdir = tmp_path_factory.mktemp("langgraph-agent-probe")
    with langgraph_dev(fake, workdir, ENGRAM_PRIVATE_AGENTS=PRIVATE) as running:
        yield running


@dataclass
class HealthWork:
    """What health did for its user: a chat thread (a run that saved and one that recalled
    a private fact), a stateless turn (its memory run's thread) and a scheduled run."""

    client: LangGraphClient
    thread_id: str
    run_id: str
    memory_thread: str
    memory_run: str

    def runs(self) -> list[tuple[str, str]]:
        """Each of health's threads with one of its runs."""
        return [(self.thread_id, self.run_id), (self.memory_thread, self.memory_run)]


async def health_work(server: DevServer, fake: FakeOpenAI, user: str) -> HealthWork:
    health = agent_client(server.url, user, PRIVATE, agents=[PRIVATE])
    fake.reset()
    fake.queue("decide_save", save_answer(True))
    fake.queue("extract", facts_answer((f"User has {SECRET}", "health")))
    thread_id = (await health.threads.create())["thread_id"]
    told = await run_turn(
        health,
        f"I was diagnosed with {SECRET}.",
        thread_id=thread_id,
        context={"agent_id": PRIVATE},
    )
    assert [a["text"] for a in told["applied"]] == [f"User has {SECRET}"]
    asked = await run_turn(
        health,
        f"What about my {SECRET} meds?",
        thread_id=thread_id,
        context={"save_policy": "never"},  # the header's agent
    )
    assert f"User has {SECRET}" in {m["text"] for m in asked["recalled"]}
    run = next(r for r in await health.runs.list(thread_id) if r["status"] == "success")
    fake.queue("extract", facts_answer((f"User sees Dr. Smith for {SECRET}", "health")))
    stateless = await health.runs.wait(
        None,
        await assistant_id(health),
        input={"messages": [{"role": "user", "content": f"I see Dr. Smith for {SECRET}."}]},
        context={"agent_id": PRIVATE},
    )
    assert isinstance(stateless, dict) and stateless["memory_run"], stateless
    memory_thread, memory_run = (stateless["memory_run"][k] for k in ("thread_id", "run_id"))
    joined = await health.runs.join(memory_thread, memory_run)
    assert isinstance(joined, dict) and SECRET in json.dumps(joined["applied"]), joined
    # computable by anyone who knows the user id
    assert memory_thread == memory_thread_id(user, None, PRIVATE)
    # No cron acts as an agent (LangGraph's scheduler starts its runs without one), so
    # health has none for anyone to find.
    with pytest.raises(httpx.HTTPStatusError, match="crons cannot act as an agent") as refused:
        await health.crons.create(
            await assistant_id(health),
            schedule="0 0 1 1 *",
            input={"messages": [{"role": "user", "content": f"Remind me of my {SECRET} meds"}]},
        )
    assert refused.value.response.status_code == 403
    return HealthWork(health, thread_id, run["run_id"], memory_thread, memory_run)


async def answer_of(call: Awaitable[Any]) -> tuple[int, str]:
    """(HTTP status, body) of an SDK call: 200 and its JSON, or the refusal."""
    try:
        return 200, json.dumps(await call, default=str)
    except httpx.HTTPStatusError as error:
        return error.response.status_code, error.response.text


async def test_another_agents_threads_runs_and_crons_answer_like_unknown_ones(
    server: DevServer, fake: FakeOpenAI
) -> None:
    """Searched (even by health's owner stamp), read, listed or joined: every thread, run
    and cron of health's (its MCP chat's thread too) answers any other request of the user
    like an unknown one, and MCP's chat refuses to continue them as it refuses an unknown
    thread."""
    user = "probe-reader"
    work = await health_work(server, fake, user)
    async with connect(server, None, bearer(user, agents=[PRIVATE])) as session:
        mcp_thread = (
            await tool_call(session, "chat", message=f"My {SECRET} test?", agent_id=PRIVATE)
        )["thread_id"]
    assert (await work.client.threads.get(mcp_thread))["metadata"]["owner"] == owner_key(
        user, PRIVATE
    )
    [mcp_run] = await work.client.runs.list(mcp_thread)
    unknown = str(uuid.uuid4())
    for name, agent, claims in OUTSIDERS:
        other = agent_client(server.url, user, agent, **claims)
        for stamp in ({}, {"owner": owner_key(user, PRIVATE)}, {"owner_user": user}):
            listed = await other.threads.search(metadata=stamp, limit=100)
            assert SECRET not in json.dumps(listed, default=str), (name, stamp)
            found = {t["thread_id"] for t in listed}
            assert not found & {work.thread_id, work.memory_thread, mcp_thread}, (name, stamp)
        threads = [*work.runs(), (mcp_thread, mcp_run["run_id"])]
        for thread, run_id in threads:
            reads: list[Callable[[str], Awaitable[Any]]] = [
                other.threads.get,
                other.threads.get_state,
                other.threads.get_history,
                other.runs.list,
                lambda thread, other=other, run_id=run_id: other.runs.join(thread, run_id),
                lambda thread, other=other, run_id=run_id: other.runs.get(thread, run_id),
            ]
            for read in reads:
                answered = await answer_of(read(thread))
                missing = await answer_of(read(unknown))
                assert answered[0] == missing[0] == 404, (name, answered)
                assert answered[1] == missing[1].replace(unknown, thread), (name, answered)
        async with connect(server, None, {**bearer(user, **claims), **acting(agent)}) as session:
            for thread in (work.thread_id, mcp_thread):
                on_theirs = await tool_refused(
                    session, "chat", message="hi", thread_id=thread, agent_id=agent
                )
                on_unknown = await tool_refused(
                    session, "chat", message="hi", thread_id=unknown, agent_id=agent
                )
                assert on_theirs == on_unknown.replace(unknown, thread), name


def takeovers(
    client: LangGraphClient, chat: str, context: dict[str, Any]
) -> list[Callable[[str], Awaitable[Any]]]:
    """What a client might do to take a thread over: a run whose `command.update` rewrites
    its agent or user, a new turn, its state, its owner, its deletion."""
    ask = {"messages": [{"role": "user", "content": "What did I tell you?"}]}
    updates: list[dict[str, Any]] = [{"agent_id": OTHER}, {"agent_id": None, "user_id": None}]
    return [
        *[
            lambda thread, update=update: client.runs.wait(
                thread, chat, command={"update": update}, context=context, raise_error=False
            )
            for update in updates
        ],
        lambda thread: client.runs.wait(
            thread, chat, input=ask, context=context, raise_error=False
        ),
        lambda thread: client.runs.create(thread, chat, input=ask, context=context),
        lambda thread: client.threads.update_state(thread, {"agent_id": OTHER}),
        lambda thread: client.threads.update(thread, metadata={"agent": OTHER}),
        lambda thread: client.threads.delete(thread),
    ]


async def test_another_agent_cannot_take_over_a_private_agents_thread_or_cron(
    server: DevServer, fake: FakeOpenAI
) -> None:
    """A run's `command.update` (rewriting the thread's agent or user), a new turn, a state,
    metadata or cron update, a delete: every request of the user acting as another agent
    (or as none) is refused like on an unknown thread or cron, no model hears anything of
    health's, and health's thread and cron stay as they were."""
    user = "probe-taker"
    work = await health_work(server, fake, user)
    before = await work.client.threads.get_state(work.thread_id)
    unknown = str(uuid.uuid4())
    for name, agent, claims in OUTSIDERS:
        other = agent_client(server.url, user, agent, **claims)
        chat = await assistant_id(other)
        context = {"save_policy": "never", **({} if agent is None else {"agent_id": agent})}
        fake.reset()
        for attempt in takeovers(other, chat, context):
            for thread in (work.thread_id, work.memory_thread):
                answered = await answer_of(attempt(thread))
                missing = await answer_of(attempt(unknown))
                assert answered[0] == missing[0] == 404, (name, answered[1][:300])
                assert SECRET not in answered[1], (name, answered[1][:300])
        assert all(SECRET not in json.dumps(r.body) for r in fake.requests), name
        assert fake.requests_for("chat") == [], name
    after = await work.client.threads.get_state(work.thread_id)
    assert after["values"]["agent_id"] == PRIVATE
    assert after["values"]["messages"] == before["values"]["messages"]
    assert (await work.client.threads.get(work.thread_id))["metadata"]["owner"] == owner_key(
        user, PRIVATE
    )


async def test_a_squatted_memory_thread_learns_nothing_of_a_private_agents_turns(
    server: DevServer, fake: FakeOpenAI, http: httpx.AsyncClient
) -> None:
    """The memory thread of health's stateless turns has an id computable from the user id:
    another agent that creates it first gets none of health's turns on it (they run their
    memory steps inline), and health's facts still land in health's own memories."""
    user = "probe-squatter"
    squatted = memory_thread_id(user, None, PRIVATE)
    travel = agent_client(server.url, user, OTHER, agents=[OTHER])
    await travel.threads.create(thread_id=squatted)
    health = agent_client(server.url, user, PRIVATE, agents=[PRIVATE])
    fake.reset()
    fake.queue("decide_save", save_answer(True))
    fake.queue("extract", facts_answer((f"User has {SECRET}", "health")))
    told = await health.runs.wait(
        None,
        await assistant_id(health),
        input={"messages": [{"role": "user", "content": f"I have {SECRET}."}]},
    )
    assert isinstance(told, dict) and "__error__" not in told, told
    assert told["memory_run"] is None, told
    assert [a["text"] for a in told["applied"]] == [f"User has {SECRET}"]
    state = await travel.threads.get_state(squatted)
    runs = await travel.runs.list(squatted)
    assert SECRET not in json.dumps([state, runs], default=str)
    assert runs == []
    listed = await http.get(
        "/memories", headers={**bearer(user, agents=[PRIVATE]), **acting(PRIVATE)}
    )
    assert [(m["text"], m["agent_id"]) for m in listed.json()["items"]] == [
        (f"User has {SECRET}", PRIVATE)
    ]
    shared = await http.get("/memories", headers=bearer(user, agents=[OTHER]))
    assert shared.json()["items"] == []


# Run settings a client can craft; none may act as health with a token that does not allow it.
CRAFTED: list[dict[str, Any]] = [
    {"context": {"agent_id": [PRIVATE]}},
    {"context": {"agent_id": {"id": PRIVATE}}},
    {"context": {"agent_id": 7}},
    {"context": {"agent_id": True}},
    {"context": {"agent_id": "*"}},
    {"context": {"agent_id": f"{PRIVATE} "}},
    {"context": {"agent_id": f" {PRIVATE}"}},
    {"context": {"agent_id": PRIVATE.upper()}},
    {"context": {"agent_id": "he\u0430lth"}},  # a Cyrillic a
    {"context": {"agent_id": f"{PRIVATE}\u200b"}},  # a zero-width space
    {"context": {"agent_id": ""}, "config": {"configurable": {"agent_id": PRIVATE}}},
    {"context": {"agent_id": OTHER}, "config": {"configurable": {"agent_id": PRIVATE}}},
    {"config": {"configurable": {"agent_id": PRIVATE}}},
    {"config": {"configurable": {"agent_id": "*"}}},
    {"config": {"configurable": {"context": {"agent_id": PRIVATE}}}},
    {"context": {"agent_id": OTHER, "agentId": PRIVATE, "agent": PRIVATE}},
]


async def test_crafted_run_settings_never_act_as_an_agent_the_token_does_not_allow(
    server: DevServer, fake: FakeOpenAI, http: httpx.AsyncClient
) -> None:
    """Non-string agents, `*`, padded, differently cased or look-alike names, the agent in
    `configurable` (or nested deeper), from requests acting as travel or as none: each run,
    stateless or on a thread, and each cron is refused, or runs as an agent that is not
    health and recalls nothing of health's."""
    user = "probe-crafter"
    created = await http.post(
        "/memories",
        json={"text": f"User takes antiretrovirals for {SECRET}", "category": "health"},
        params={"agent": PRIVATE},
        headers=bearer(user, agents=[PRIVATE]),
    )
    assert created.status_code == 201, created.text
    ask = {"messages": [{"role": "user", "content": f"Which {SECRET} medicine do I take?"}]}
    for acts_as, claims in ((None, {"agents": [OTHER]}), (OTHER, {"agents": [OTHER]}), (None, {})):
        client = agent_client(server.url, user, acts_as, **claims)
        chat = await assistant_id(client)
        for crafted in CRAFTED:
            thread_id = (await client.threads.create())["thread_id"]
            for thread in (None, thread_id):
                fake.reset()
                fake.queue("decide_save", save_answer(False))
                status, body = await answer_of(
                    client.runs.wait(thread, chat, input=ask, raise_error=False, **crafted)
                )
                assert status in (200, 400, 403), (crafted, status, body)
                if status == 200:
                    output = json.loads(body)
                    assert output.get("agent_id") != PRIVATE, (crafted, output.get("agent_id"))
                    assert "antiretrovirals" not in json.dumps(output.get("recalled")), crafted
                assert all("antiretrovirals" not in json.dumps(r.body) for r in fake.requests)
            scheduled = await answer_of(
                client.crons.create(chat, schedule="0 0 1 1 *", input=ask, **crafted)
            )
            if scheduled[0] == 200:
                payload = json.loads(scheduled[1])["payload"]
                named = {
                    **(payload.get("config") or {}).get("configurable", {}),
                    **payload.get("context", {}),
                }
                assert named.get("agent_id") in (None, OTHER), (crafted, payload)
            else:
                assert scheduled[0] in (400, 403, 422), (crafted, scheduled)
        # `?agent=` on /memories: the same names, refused or never health's memories.
        for agent in (
            f"{PRIVATE} ",
            f" {PRIVATE}",
            PRIVATE.upper(),
            "he\u0430lth",
            f"{PRIVATE}\u200b",
        ):
            for path in ("/memories", "/memories/search?query=antiretrovirals", "/memories/export"):
                answered = await http.get(
                    path,
                    params={"agent": agent},
                    headers={**bearer(user, **claims), **acting(acts_as)},
                )
                assert answered.status_code in (200, 403, 422), (agent, path, answered.text)
                assert "antiretrovirals" not in answered.text, (agent, path)


# `X-Engram-Agent` values a client can craft (raw bytes: the header is not always ASCII).
CRAFTED_HEADERS: list[bytes] = [
    PRIVATE.upper().encode(),
    "he\u0430lth".encode(),  # a Cyrillic a
    f"{PRIVATE}\u200b".encode(),  # a zero-width space
    f"{OTHER},{PRIVATE}".encode(),
    f"{OTHER}, {PRIVATE}".encode(),
    b"*",
    b"",
    b"health\xff",  # not UTF-8
]


async def test_crafted_agent_headers_never_act_as_health(
    server: DevServer, fake: FakeOpenAI, http: httpx.AsyncClient
) -> None:
    """Differently cased, look-alike, listed, wildcard, empty or undecodable
    `X-Engram-Agent` values, and the header twice: with travel's token every request is
    refused (or, when travel is one of the two headers, may act as travel); with a token
    for any agent it is refused or acts as an agent that sees nothing of health's (unless
    health is one of the two headers: that token may act as health)."""
    user = "probe-headers"
    created = await http.post(
        "/memories",
        json={"text": f"User takes antiretrovirals for {SECRET}", "category": "health"},
        headers={**bearer(user, agents=[PRIVATE]), **acting(PRIVATE)},
    )
    assert created.status_code == 201, created.text
    chat = await assistant_id(client_for(server.url, user))
    ask = {"messages": [{"role": "user", "content": f"Which {SECRET} medicine do I take?"}]}
    sent: list[list[tuple[bytes, bytes]]] = [[(b"X-Engram-Agent", v)] for v in CRAFTED_HEADERS]
    sent += [
        [(b"X-Engram-Agent", OTHER.encode()), (b"X-Engram-Agent", PRIVATE.encode())],
        [(b"X-Engram-Agent", PRIVATE.encode()), (b"X-Engram-Agent", OTHER.encode())],
    ]
    requests: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", "/memories", None),
        ("GET", "/memories/search?query=antiretrovirals", None),
        ("GET", "/memories/export", None),
        ("POST", "/threads/search", {}),
        ("POST", "/runs/wait", {"assistant_id": chat, "input": ask}),
    ]
    for claims in ({"agents": [OTHER]}, {"agents": ["*"]}):
        authorization = [(b"Authorization", bearer(user, **claims)["Authorization"].encode())]
        for headers in sent:
            named = {value for _, value in headers}
            may_be_health = PRIVATE.encode() in named and "*" in claims["agents"]
            for method, path, body in requests:
                fake.reset()
                fake.queue("decide_save", save_answer(False))
                answered = await http.request(
                    method, path, json=body, headers=authorization + headers
                )
                where = (claims, headers, path, answered.text[:300])
                assert answered.status_code in (200, 403), where
                if claims["agents"] == [OTHER] and OTHER.encode() not in named:
                    assert answered.status_code == 403, where
                if may_be_health:
                    continue
                assert "antiretrovirals" not in answered.text, where
                prompts = [r for r in fake.requests if r.step != "embeddings"]  # the query's
                assert all("antiretrovirals" not in json.dumps(r.body) for r in prompts), where
                if path == "/runs/wait" and answered.status_code == 200:
                    assert answered.json()["agent_id"] != PRIVATE, where
