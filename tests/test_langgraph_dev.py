"""LANGGRAPH DEV SERVER TEST: boots the real `langgraph dev` on `langgraph.json` (in a
subprocess, on a free port) and drives it with `langgraph_sdk` and plain HTTP, the way
Studio, apps and MCP clients do. The LLM and embeddings are the fake OpenAI server in this
process; memories go to an embedded Qdrant in a temp `ENGRAM_DATA_DIR`; tokens are HS256
with a test secret, or RS256/ES256 from a JWKS served by this process.

The launcher (`langgraph_dev`), token helpers and the JWKS server live here and are shared
by the other server test modules (one server per module)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from tests.fake_openai import FakeOpenAI, facts_answer, free_port, save_answer

REPO_ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT = 120.0
GRAPH_ID = "engram"
INGEST_ID = "engram_ingest"
MEMORY_NODES = ["recall", "respond", "decide_save", "extract", "retrieve_similar", "maintain"]
SECRET = "test-secret-for-engram-servers-" + "0123456789abcdef" * 3  # 79 characters
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


# -- tokens ------------------------------------------------------------------------------------


def token(
    user: str,
    *,
    secret: str = SECRET,
    ttl: timedelta = timedelta(hours=1),
    algorithm: str = "HS256",
    key: Any = None,
    kid: str | None = None,
    **claims: Any,
) -> str:
    now = datetime.now(UTC)
    body: dict[str, Any] = {"sub": user, "iat": now, "exp": now + ttl, **claims}
    headers = {"kid": kid} if kid else None
    return jwt.encode(body, key if key is not None else secret, algorithm, headers=headers)


def bearer(user: str, **options: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user, **options)}"}


def client_for(url: str, user: str | None, **options: Any) -> LangGraphClient:
    """An SDK client as `user` (None: no token at all)."""
    headers = bearer(user, **options) if user is not None else {}
    return get_client(url=url, api_key=None, headers=headers)


@dataclass
class JwksServer:
    """An identity provider's published keys (RS256 and ES256), served on loopback."""

    rsa_key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    ec_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    hits: int = 0
    _server: ThreadingHTTPServer | None = None

    def document(self) -> dict[str, Any]:
        rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa_key.public_key()))
        ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.ec_key.public_key()))
        return {
            "keys": [
                {**rsa_jwk, "kid": "rsa-1", "alg": "RS256", "use": "sig"},
                {**ec_jwk, "kid": "ec-1", "alg": "ES256", "use": "sig"},
            ]
        }

    def __enter__(self) -> JwksServer:
        owner = self
        body = json.dumps(self.document()).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.hits += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/.well-known/jwks.json"

    def rs256(self, user: str, **options: Any) -> str:
        return token(user, algorithm="RS256", key=self.rsa_key, kid="rsa-1", **options)

    def es256(self, user: str, **options: Any) -> str:
        return token(user, algorithm="ES256", key=self.ec_key, kid="ec-1", **options)


# -- the server --------------------------------------------------------------------------------


@dataclass
class DevServer:
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def langgraph_dev(fake: FakeOpenAI, workdir: Path, **settings: str) -> Iterator[DevServer]:
    """A running `langgraph dev` on this repository's langgraph.json; its process group is
    killed afterwards. `settings` are extra environment variables (ENGRAM_AUTH_SECRET is
    the test secret unless given, possibly empty)."""
    langgraph = Path(sys.executable).parent / "langgraph"
    if not langgraph.exists():
        pytest.fail(f"{langgraph} not found: install the dev extra (pip install -e '.[dev]')")
    log_path = workdir / "server.log"
    # The dev server keeps its threads under ./.langgraph_api: run it in its own directory
    # (with the repository's langgraph.json and the graph files it names), so servers never
    # share or inherit threads.
    served = workdir / "served"
    served.mkdir()
    (served / "langgraph.json").write_bytes((REPO_ROOT / "langgraph.json").read_bytes())
    (served / "graph").symlink_to(REPO_ROOT / "graph", target_is_directory=True)
    port = free_port()
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("OPENAI_", "ENGRAM_", "QDRANT_", "LANGSMITH_", "LANGCHAIN_"))
    }
    env.update(
        LANGSMITH_TRACING="false",
        LANGGRAPH_CLI_NO_ANALYTICS="1",
        LANGGRAPH_NO_VERSION_CHECK="true",
        OPENAI_BASE_URL=fake.url,
        OPENAI_API_KEY="test",
        ENGRAM_DATA_DIR=str(workdir / "engram-data"),
        ENGRAM_EMBEDDINGS="openai",
        ENGRAM_RECALL_FLOOR="-1",  # the fake's embeddings know words, not meanings
        ENGRAM_AUTH_SECRET=SECRET,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        DSPY_CACHEDIR=str(workdir / "dspy-cache"),
        PYTHONUNBUFFERED="1",
    )
    env.update(settings)
    command = [str(langgraph), "dev", "--no-browser", "--no-reload", "--port", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=served,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killed as a whole below
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_ready(url, process, log_path)
        yield DevServer(url, log_path)
    finally:
        _kill_group(process)


def _wait_until_ready(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"langgraph dev exited with code {process.returncode} before it was ready:\n"
                + _tail(log_path)
            )
        try:
            if httpx.get(f"{url}/ok", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"langgraph dev was not ready after {READY_TIMEOUT:.0f} s:\n" + _tail(log_path))


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)
        except ProcessLookupError:
            pass
    with contextlib.suppress(ProcessLookupError):  # workers may outlive the server
        os.killpg(process.pid, signal.SIGKILL)


def _tail(log_path: Path, chars: int = 8000) -> str:
    text = log_path.read_text(errors="replace") if log_path.exists() else "(no log)"
    return text[-chars:]


async def assistant_id(client: LangGraphClient, graph_id: str = GRAPH_ID) -> str:
    assistants = await client.assistants.search(graph_id=graph_id)
    assert assistants, f"no assistant for graph {graph_id!r}"
    assert assistants[0]["graph_id"] == graph_id
    return str(assistants[0]["assistant_id"])


async def run_turn(
    client: LangGraphClient,
    text: str,
    *,
    thread_id: str | None = None,
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One chat turn (on a new thread unless given); fails with the run's error."""
    if thread_id is None:
        thread_id = (await client.threads.create())["thread_id"]
    output = await client.runs.wait(
        thread_id,
        await assistant_id(client),
        input={"messages": [{"role": "user", "content": text}]},
        context=context,
        raise_error=False,
    )
    assert isinstance(output, dict), output
    assert "__error__" not in output, output["__error__"]
    return output


# -- this module's server ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(dims=64) as server:
        yield server


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
    } <= edges
    assert ("decide_save", "extract") in edges and ("extract", "retrieve_similar") in edges

    schemas = await client.assistants.get_schemas(chat)
    context_schema = schemas["context_schema"]
    assert context_schema is not None
    assert "user_id" in context_schema["required"]
    assert "user_id" in context_schema["properties"]

    ingest = await assistant_id(client, INGEST_ID)
    drawn = await client.assistants.get_graph(ingest)
    node_ids = [node["id"] for node in drawn["nodes"]]
    assert [n for n in node_ids if not n.startswith("__")] == MEMORY_NODES[2:]
    schemas = await client.assistants.get_schemas(ingest)
    assert list(schemas["input_schema"]["properties"]) == ["messages"]


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


async def test_mcp_lists_the_graphs_with_a_token_and_refuses_without(
    dev_server: DevServer, fake: FakeOpenAI
) -> None:
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
        assert {"engram", "engram_ingest"} <= set(tools)
        assert "messages" in tools["engram_ingest"]["inputSchema"]["properties"]

        # A tool call runs as the token's user.
        fake.reset()
        fake.queue("decide_save", save_answer(False))
        call = {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {
                "name": "engram",
                "arguments": {"messages": [{"role": "user", "content": "Hello from MCP"}]},
            },
        }
        called = await http.post("/mcp", json=call, headers=headers)
        assert called.status_code == 200, called.text
        result = called.json()["result"]
        assert not result.get("isError"), result
        assert "'user_id': 'mcp-user'" in result["content"][0]["text"]


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
    assert [f["text"] for f in state["values"]["extracted"]] == ["User grows basil"]
    assert len(await client.threads.get_history(thread_id, limit=20)) > 2
    log = dev_server.log()
    assert "unregistered type" not in log
    assert "Blocked deserialization" not in log
    assert "LANGGRAPH_STRICT_MSGPACK" not in log
