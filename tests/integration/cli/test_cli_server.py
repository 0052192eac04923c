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


def test_validity_and_as_of_reads_through_a_server(
    served: tuple[DevServer, Path], tmp_path: Path
) -> None:
    server, _ = served
    job = add(server, "carol", "User works at Acme")
    before = httpx.get(f"{server.url}/memories/{job}", headers=bearer("carol")).json()
    as_carol = {"ENGRAM_SERVER": server.url, "ENGRAM_TOKEN": token("carol")}

    code, out, err = cli(
        tmp_path, "validity", job[:8], "--user", "carol", "--until", "2025-12-31", **as_carol
    )
    assert code == 0, err
    assert out.startswith("updated") and "true: until 2025-12-31" in out
    code, out, _ = cli(tmp_path, "list", "--user", "carol", "--json", **as_carol)
    [dated] = json.loads(out)
    assert (dated["text"], dated["valid_until"]) == ("User works at Acme", "2025-12-31")
    code, out, _ = cli(tmp_path, "list", "--user", "carol", **as_carol)
    assert "2025-12-31" in out and "(past)" in out
    code, out, _ = cli(
        tmp_path, "validity", dated["id"], "--user", "carol", "--from", "2025-01-01", **as_carol
    )
    assert code == 0 and "true: 2025-01-01 to 2025-12-31" in out  # the end is kept

    as_of = before["created_at"]
    code, out, err = cli(
        tmp_path, "list", "--user", "carol", "--as-of", as_of, "--json", **as_carol
    )
    assert code == 0, err
    assert [(m["id"], m["valid_until"]) for m in json.loads(out)] == [(job, None)]
    code, out, _ = cli(
        tmp_path, "search", "work", "--user", "carol", "--as-of", as_of, "--json", **as_carol
    )
    assert [m["id"] for m in json.loads(out)] == [job]
    code, _, err = cli(
        tmp_path, "list", "--user", "carol", "--as-of", "2026-01-01T09:00", **as_carol
    )
    assert code == 1 and "add its UTC offset" in err


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
    code, _, err = cli(
        tmp_path, "validity", jazz, "--user", "alice", "--until", "2020-01-01", **as_alice
    )
    assert code == 1 and "no memory" in err
    code, _, err = cli(tmp_path, "list", "--user", "bob", "--as-of", "2099-01-01", **as_alice)
    assert code == 1 and "the token is for 'alice', not 'bob'" in err
    code, out, _ = cli(tmp_path, "list", "--user", "alice", "--as-of", "2099-01-01", **as_alice)
    assert "sax" not in out
    forged = token("bob", secret="not-the-server-secret-" + "x" * 20)
    code, _, err = cli(
        tmp_path, "list", "--user", "bob", ENGRAM_SERVER=server.url, ENGRAM_TOKEN=forged
    )
    assert code == 1 and "refused" in err
    reply = httpx.get(f"{server.url}/memories/{jazz}", headers=bearer("bob"))
    assert reply.json()["status"] == "active" and reply.json()["valid_until"] is None


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
