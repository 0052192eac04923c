"""What the server tests share: the real `langgraph dev` on `langgraph.json` (in a
subprocess, on a free port; `langgraph_dev`), tokens (HS256 with a test secret, or
RS256/ES256 from a JWKS this process serves), and SDK helpers. The LLM and embeddings are
the fake OpenAI server in the test process; memories go to an embedded Qdrant in a temp
`ENGRAM_DATA_DIR`."""

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

from tests.fake_openai import FakeOpenAI, free_port
from tests.helpers import REPO_ROOT

READY_TIMEOUT = 120.0
GRAPH_ID = "engram"
INGEST_ID = "engram_ingest"
MEMORY_NODES = [
    "recall",
    "respond",
    "schedule_memory",
    "decide_save",
    "extract",
    "retrieve_similar",
    "maintain",
    "update_profile",
]
INGEST_NODES = MEMORY_NODES[3:]
# What a chat run reports of its memory steps: with the steps in the background, the
# memory run's output (`run_turn` joins it).
MEMORY_REPORT = ("save", "extracted", "facts", "unextracted", "applied", "rejected", "memory_error")
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


AGENT_HEADER = "X-Engram-Agent"  # the agent a request acts as (if its token allows it)


def acting(agent: str | None) -> dict[str, str]:
    """The header of a request acting as `agent` (None: as no agent, no header)."""
    return {} if agent is None else {AGENT_HEADER: agent}


def agent_client(url: str, user: str, agent: str | None, **options: Any) -> LangGraphClient:
    """An SDK client as `user` acting as `agent` (None: as no agent), as an application
    serving one agent makes it: the token, and the agent's header on every request."""
    headers = {**bearer(user, **options), **acting(agent)}
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
    port = free_port()
    # Ten runs at once, as `engram dev` serves (without it `langgraph dev` runs one at a
    # time, and a chat run would wait behind the previous turn's memory steps).
    command = [
        *[str(langgraph), "dev", "--no-browser", "--no-reload", "--port", str(port)],
        *["--n-jobs-per-worker", "10"],
    ]
    env = server_env(fake, workdir, LANGGRAPH_CLI_NO_ANALYTICS="1", **settings)
    with _serving(command, served_directory(workdir), env, workdir / "server.log") as process:
        url = f"http://127.0.0.1:{port}"
        _wait_until_ready(url, process, workdir / "server.log")
        yield DevServer(url, workdir / "server.log")


def aegra_command() -> Path:
    """Aegra's `aegra` command (Python >= 3.12, its own venv: .ci/run makes .venv-aegra);
    the tests skip without it unless ENGRAM_REQUIRE_AEGRA=1 (CI), where they fail."""
    aegra = Path(os.environ.get("ENGRAM_AEGRA", REPO_ROOT / ".venv-aegra" / "bin" / "aegra"))
    if not aegra.exists():
        reason = (
            f"{aegra} not found: python3.12 -m venv .venv-aegra && "
            ".venv-aegra/bin/pip install -e '.[aegra]' (see docs/deploying.md, Aegra)"
        )
        if os.environ.get("ENGRAM_REQUIRE_AEGRA") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return aegra


@contextlib.contextmanager
def aegra_serve(
    fake: FakeOpenAI, workdir: Path, database_url: str, **settings: str
) -> Iterator[DevServer]:
    """A running Aegra (`aegra serve`) on this repository's langgraph.json with its state in
    Postgres at `database_url`; stopped afterwards. Started again on the same `workdir` and
    database, it finds the same threads and memories."""
    aegra = aegra_command()
    port = free_port()
    served = workdir / "served"
    if not served.exists():
        served_directory(workdir)
    # Aegra ignores langgraph.json's "env": the strict msgpack mode comes from the process.
    env = server_env(
        fake, workdir, DATABASE_URL=database_url, LANGGRAPH_STRICT_MSGPACK="true", **settings
    )
    command = [str(aegra), "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--config", str(served / "langgraph.json")]
    log_path = workdir / f"aegra-{port}.log"
    with _serving(command, served, env, log_path) as process:
        url = f"http://127.0.0.1:{port}"
        _wait_until_ready(url, process, log_path, path="/health")
        yield DevServer(url, log_path)


def served_directory(workdir: Path) -> Path:
    """A directory with the repository's langgraph.json and the graph files it names. A
    server keeps its own files where it runs (`langgraph dev`: ./.langgraph_api), so servers
    never share or inherit threads; and the repository's top-level folders (`graph`,
    `state`, ...) are not importable from there as modules of their own."""
    served = workdir / "served"
    served.mkdir()
    (served / "langgraph.json").write_bytes((REPO_ROOT / "langgraph.json").read_bytes())
    (served / "graph").symlink_to(REPO_ROOT / "graph", target_is_directory=True)
    return served


def server_env(fake: FakeOpenAI, workdir: Path, **settings: str) -> dict[str, str]:
    """The environment of a test server: the fake for every model, an embedded store in
    `workdir`, the test secret, nothing of this process's own model or Engram settings."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("OPENAI_", "ENGRAM_", "QDRANT_", "LANGSMITH_", "LANGCHAIN_"))
    }
    env.update(
        LANGSMITH_TRACING="false",
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
        ENGRAM_PROFILE="off",  # on where a test turns it on (see tests/conftest.py)
    )
    env.update(settings)
    return env


@contextlib.contextmanager
def _serving(
    command: list[str], cwd: Path, env: dict[str, str], log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killed as a whole below
        )
    try:
        yield process
    finally:
        _kill_group(process)


def _wait_until_ready(
    url: str, process: subprocess.Popen[bytes], log_path: Path, *, path: str = "/ok"
) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"the server exited with code {process.returncode} before it was ready:\n"
                + _tail(log_path)
            )
        try:
            if httpx.get(f"{url}{path}", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"the server was not ready after {READY_TIMEOUT:.0f} s:\n" + _tail(log_path))


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
    join_memory: bool = True,
) -> dict[str, Any]:
    """One chat turn (on a new thread unless given); fails with the run's error. The
    memory steps run in the background: with `join_memory`, their report (joined) replaces
    the chat run's empty one, so a test reads the whole turn from one dict."""
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
    memory_run = output.get("memory_run")
    if join_memory and memory_run:
        report = await client.runs.join(memory_run["thread_id"], memory_run["run_id"])
        assert isinstance(report, dict) and "__error__" not in report, report
        output = {**output, **{name: report[name] for name in MEMORY_REPORT if name in report}}
    return output
