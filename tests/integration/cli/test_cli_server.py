"""`engram memories ... --server URL`: the memory commands through a running server's
/memories routes while `langgraph dev` holds the embedded store — as the token's user
only, never as anyone else."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fake_openai import FakeOpenAI
from tests.helpers import engram_env, run_engram
from tests.servers import SECRET, DevServer, bearer, langgraph_dev, token


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DevServer, Path]]:
    workdir = tmp_path_factory.mktemp("cli-server")
    with FakeOpenAI(dims=64) as fake, langgraph_dev(fake, workdir) as server:
        yield server, workdir / "engram-data"


def add(server: DevServer, user: str, text: str) -> str:
    reply = httpx.post(
        f"{server.url}/memories", json={"text": text, "category": "test"}, headers=bearer(user)
    )
    reply.raise_for_status()
    memory_id: str = reply.json()["memory_id"]
    return memory_id


def cli(tmp_path: Path, *args: str, **env: str) -> tuple[int, str, str]:
    result = run_engram(engram_env(tmp_path, **env), "memories", *args)
    return result.returncode, result.stdout, result.stderr


def test_the_memory_commands_reach_a_running_server(
    served: tuple[DevServer, Path], tmp_path: Path
) -> None:
    server, _ = served
    tea = add(server, "alice", "User likes tea")
    add(server, "bob", "User likes jazz")
    secret = {"ENGRAM_AUTH_SECRET": SECRET}  # a local server's secret: tokens are minted

    code, out, err = cli(tmp_path, "list", "--user", "alice", "--server", server.url, **secret)
    assert code == 0, err
    assert "User likes tea" in out and "jazz" not in out
    code, out, _ = cli(
        tmp_path, "show", tea[:8], "--user", "alice", "--server", server.url, "--json", **secret
    )
    assert code == 0 and json.loads(out)["id"] == tea
    code, out, _ = cli(
        tmp_path, "delete", tea[:8], "--user", "alice", "--server", server.url, **secret
    )
    assert code == 0 and out.startswith("deleted")
    code, out, _ = cli(
        tmp_path, "restore", tea, "--user", "alice", "--server", server.url, **secret
    )
    assert code == 0 and out.startswith("restored")
    # ENGRAM_SERVER and ENGRAM_TOKEN work as the options do
    code, out, _ = cli(
        tmp_path,
        "search",
        "tea",
        "--user",
        "alice",
        ENGRAM_SERVER=server.url,
        ENGRAM_TOKEN=token("alice"),
    )
    assert code == 0 and "User likes tea" in out


def test_a_token_never_reaches_another_users_memories(
    served: tuple[DevServer, Path], tmp_path: Path
) -> None:
    server, _ = served
    jazz = add(server, "bob", "User plays the sax")
    as_alice = {"ENGRAM_SERVER": server.url, "ENGRAM_TOKEN": token("alice")}

    code, _, err = cli(tmp_path, "list", "--user", "bob", **as_alice)
    assert code == 1 and "the token is for 'alice', not 'bob'" in err
    code, _, err = cli(tmp_path, "show", jazz, "--user", "alice", **as_alice)
    assert code == 1 and "no memory" in err  # exactly like a missing id
    code, _, err = cli(tmp_path, "delete", jazz, "--user", "alice", **as_alice)
    assert code == 1 and "no memory" in err
    forged = token("bob", secret="not-the-server-secret-" + "x" * 20)
    code, _, err = cli(
        tmp_path, "list", "--user", "bob", ENGRAM_SERVER=server.url, ENGRAM_TOKEN=forged
    )
    assert code == 1 and "refused" in err
    reply = httpx.get(f"{server.url}/memories/{jazz}", headers=bearer("bob"))
    assert reply.json()["status"] == "active"


def test_the_in_use_error_names_the_server_option(
    served: tuple[DevServer, Path], tmp_path: Path
) -> None:
    server, data_dir = served
    # the server opens its store on first use: make sure it holds it, whatever ran before
    assert httpx.get(f"{server.url}/memories", headers=bearer("alice")).status_code == 200
    code, _, err = cli(
        tmp_path,
        "list",
        "--user",
        "alice",
        ENGRAM_DATA_DIR=str(data_dir),
        ENGRAM_EMBEDDINGS="openai",
        OPENAI_API_KEY="unused",
    )
    assert code == 1 and "in use by another process" in err and "--server" in err
    code, _, err = cli(tmp_path, "list", "--user", "alice", "--server", "http://127.0.0.1:9")
    assert code == 1 and "needs a token" in err
