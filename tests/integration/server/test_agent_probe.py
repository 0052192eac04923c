"""Adversarial probes of agent scopes through a real `langgraph dev` (ENGRAM_PRIVATE_AGENTS=
health): a token of the same user acting as `travel`, or as no agent, tries to reach what
health keeps to itself through LangGraph's own API (threads, runs, crons), crafted run
contexts and `?agent=` values. Each test asserts the safe behaviour; those marked xfail are
known gaps (the reason names it)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from langgraph_sdk.client import LangGraphClient

from engram.nodes.schedule_memory import memory_thread_id
from tests.fake_openai import FakeOpenAI, facts_answer, save_answer
from tests.integration.server.test_server_mcp import connect
from tests.integration.server.test_server_mcp import refused as tool_refused
from tests.servers import DevServer, assistant_id, bearer, client_for, langgraph_dev, run_turn

PRIVATE = "health"
OTHER = "travel"
SECRET = "HIV"  # in every private fact and message of health's below
# Tokens of the same user that must not reach health's: acting as travel, as no agent.
OUTSIDERS: list[tuple[str, dict[str, Any]]] = [
    ("travel's token", {"agents": [OTHER]}),
    ("a token without agents", {}),
]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(dims=64) as server:
        yield server


@pytest.fixture(scope="module")
def server(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    workdir = tmp_path_factory.mktemp("langgraph-agent-probe")
    with langgraph_dev(fake, workdir, ENGRAM_PRIVATE_AGENTS=PRIVATE) as running:
        yield running


@pytest.fixture
async def http(server: DevServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        yield client


@dataclass
class HealthWork:
    """What health did for its user: a chat thread (a run that saved and one that recalled
    a private fact), a stateless turn (its memory run's thread) and a scheduled run."""

    client: LangGraphClient
    thread_id: str
    run_id: str
    memory_thread: str
    cron_id: str


async def health_work(server: DevServer, fake: FakeOpenAI, user: str) -> HealthWork:
    health = client_for(server.url, user, agents=[PRIVATE])
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
        context={"agent_id": PRIVATE, "save_policy": "never"},
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
    await health.runs.join(stateless["memory_run"]["thread_id"], stateless["memory_run"]["run_id"])
    memory_thread = stateless["memory_run"]["thread_id"]
    # computable by anyone who knows the user id
    assert memory_thread == memory_thread_id(user, None, PRIVATE)
    cron = await health.crons.create(
        await assistant_id(health),
        schedule="0 0 1 1 *",
        input={"messages": [{"role": "user", "content": f"Remind me of my {SECRET} meds"}]},
        context={"agent_id": PRIVATE},
    )
    return HealthWork(health, thread_id, run["run_id"], memory_thread, cron["cron_id"])


async def answer_of(call: Awaitable[Any]) -> tuple[int, str]:
    """(HTTP status, body) of an SDK call: 200 and its JSON, or the refusal."""
    try:
        return 200, json.dumps(await call, default=str)
    except httpx.HTTPStatusError as error:
        return error.response.status_code, error.response.text


@pytest.mark.xfail(
    strict=True,
    reason="apps/server/auth.py filters threads, runs and crons on their owner (the user) "
    "only, never on the agent: any token of the user, acting as another agent or as none, "
    "searches and reads a private agent's threads (messages, recalled private memories), "
    "its runs (kwargs, joined outputs), the memory thread of its stateless turns (id "
    "computable from the user id: extracted and applied private facts) and its crons' "
    "payloads; MCP's chat tells its threads from unknown ones",
)
async def test_another_agents_threads_runs_and_crons_answer_like_unknown_ones(
    server: DevServer, fake: FakeOpenAI
) -> None:
    user = "probe-reader"
    work = await health_work(server, fake, user)
    unknown = str(uuid.uuid4())
    for name, claims in OUTSIDERS:
        other = client_for(server.url, user, **claims)
        listed = await other.threads.search(limit=100)
        assert SECRET not in json.dumps(listed, default=str), name
        scheduled = await other.crons.search()
        assert work.cron_id not in {c["cron_id"] for c in scheduled}, name
        reads: list[Callable[[str], Awaitable[Any]]] = [
            other.threads.get,
            other.threads.get_state,
            other.threads.get_history,
            other.runs.list,
            lambda thread, other=other: other.runs.join(thread, work.run_id),
            lambda thread, other=other: other.runs.get(thread, work.run_id),
        ]
        for read in reads:
            for thread in (work.thread_id, work.memory_thread):
                answered = await answer_of(read(thread))
                missing = await answer_of(read(unknown))
                assert answered[0] == missing[0] == 404, (name, answered)
    async with connect(server, None, bearer(user, agents=[OTHER])) as session:
        on_theirs = await tool_refused(
            session, "chat", message="hi", thread_id=work.thread_id, agent_id=OTHER
        )
        on_unknown = await tool_refused(
            session, "chat", message="hi", thread_id=unknown, agent_id=OTHER
        )
        assert on_theirs == on_unknown.replace(unknown, work.thread_id)


@pytest.mark.xfail(
    strict=True,
    reason="a run's `command.update` writes the thread's state before the guard checks it, "
    "and check_run never looks at it: another agent of the user sets a private agent's "
    "thread's agent_id to its own, then continues the conversation (its model and its "
    "output get the private messages) and locks the private agent out; crons.update by "
    "another agent rewrites a private agent's cron (its agent dropped from the payload)",
)
async def test_another_agent_cannot_take_over_a_private_agents_thread_or_cron(
    server: DevServer, fake: FakeOpenAI
) -> None:
    user = "probe-taker"
    work = await health_work(server, fake, user)
    travel = client_for(server.url, user, agents=[OTHER])
    chat = await assistant_id(travel)
    fake.reset()
    for update in ({"agent_id": OTHER}, {"agent_id": None, "user_id": None}):
        status, body = await answer_of(
            travel.runs.wait(
                work.thread_id,
                chat,
                command={"update": update},
                context={"agent_id": OTHER, "save_policy": "never"},
                raise_error=False,
            )
        )
        assert status in (403, 404) or '"__error__"' in body, (update, body[:300])
        assert SECRET not in body, (update, body[:300])
    asked = await answer_of(
        travel.runs.wait(
            work.thread_id,
            chat,
            input={"messages": [{"role": "user", "content": "What did I tell you?"}]},
            context={"agent_id": OTHER, "save_policy": "never"},
            raise_error=False,
        )
    )
    assert SECRET not in asked[1], asked[1][:300]
    assert all(SECRET not in json.dumps(r.body) for r in fake.requests_for("chat"))
    state = await work.client.threads.get_state(work.thread_id)
    assert state["values"]["agent_id"] == PRIVATE
    status, _ = await answer_of(travel.crons.update(work.cron_id, schedule="*/1 * * * *"))
    [cron] = [c for c in await work.client.crons.search() if c["cron_id"] == work.cron_id]
    assert status in (403, 404), status
    assert cron["payload"]["context"].get("agent_id") == PRIVATE, cron["payload"]


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
    `configurable` (or nested deeper): each run, stateless or on a thread, and each cron is
    refused, or runs as an agent that is not health and recalls nothing of health's."""
    user = "probe-crafter"
    created = await http.post(
        "/memories",
        json={"text": f"User takes antiretrovirals for {SECRET}", "category": "health"},
        params={"agent": PRIVATE},
        headers=bearer(user, agents=[PRIVATE]),
    )
    assert created.status_code == 201, created.text
    ask = {"messages": [{"role": "user", "content": f"Which {SECRET} medicine do I take?"}]}
    for claims in ({"agents": [OTHER]}, {}):
        client = client_for(server.url, user, **claims)
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
                    path, params={"agent": agent}, headers=bearer(user, **claims)
                )
                assert answered.status_code in (200, 403, 422), (agent, path, answered.text)
                assert "antiretrovirals" not in answered.text, (agent, path)
