"""The profile through a real `langgraph dev`, by every way in: `/memories/profile` over
HTTP, the LangGraph SDK's client, `engram profile --server`, and the MCP tools. Each acts
for the token's user only: bob never reads or changes alice's profile, and alice's version
and memory ids in bob's requests answer exactly like missing ones."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from engram.memory.transfer import read_export
from tests.fake_openai import FakeOpenAI
from tests.helpers import engram_env, run_engram
from tests.integration.server.test_server_mcp import call, connect, refused
from tests.servers import SECRET, DevServer, bearer, client_for, langgraph_dev, token


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    workdir = tmp_path_factory.mktemp("langgraph-profile")
    with FakeOpenAI(dims=64) as fake, langgraph_dev(fake, workdir) as running:
        yield running


async def add(http: httpx.AsyncClient, user: str, text: str) -> str:
    response = await http.post(
        "/memories", json={"text": text, "category": "test"}, headers=bearer(user)
    )
    assert response.status_code == 201, response.text
    memory_id: str = response.json()["memory_id"]
    return memory_id


async def pinned_profile(http: httpx.AsyncClient, user: str, *texts: str) -> list[str]:
    """The user's memories with these texts, each pinned (so the user has a profile)."""
    ids = [await add(http, user, text) for text in texts]
    for memory_id in ids:
        response = await http.post(f"/memories/profile/pins/{memory_id}", headers=bearer(user))
        assert response.status_code == 200, response.text
    return ids


def detail(response: httpx.Response) -> str:
    return str(response.json()["detail"])


async def test_show_history_pin_unpin_and_restore_over_http(http: httpx.AsyncClient) -> None:
    me = bearer("p-alice")
    empty = await http.get("/memories/profile", headers=me)
    assert empty.status_code == 200 and empty.json()["version_id"] is None
    tea, lyon = await pinned_profile(http, "p-alice", "User drinks tea", "User lives in Lyon")
    shown = (await http.get("/memories/profile", headers=me)).json()
    assert shown["user_id"] == "p-alice" and shown["pinned"] == [tea, lyon]
    assert [line["memory_ids"] for line in shown["lines"]] == [[tea], [lyon]]

    unpinned = await http.delete(f"/memories/profile/pins/{tea}", headers=me)
    assert unpinned.status_code == 200 and unpinned.json()["pinned"] == [lyon]
    history = (await http.get("/memories/profile/history", headers=me)).json()
    assert [v["events"][0]["detail"] for v in history] == [
        f"pinned {tea}",
        f"pinned {lyon}",
        f"unpinned {tea}",
    ]
    assert {e["source"]["actor"] for v in history for e in v["events"]} == {"api"}
    restored = await http.post(f"/memories/profile/restore/{history[1]['version_id']}", headers=me)
    assert restored.status_code == 200, restored.text
    assert restored.json()["pinned"] == [tea, lyon]
    assert (await http.get("/memories/profile", headers=me)).json()["pinned"] == [tea, lyon]


async def test_bob_never_reads_or_changes_alices_profile(http: httpx.AsyncClient) -> None:
    secret, city = await pinned_profile(
        http, "x-alice", "User's safe code is 8812", "User is in Oslo"
    )
    alice = bearer("x-alice")
    alices_versions = [
        v["version_id"] for v in (await http.get("/memories/profile/history", headers=alice)).json()
    ]
    before = (await http.get("/memories/profile/history", headers=alice)).json()
    bob = bearer("x-bob")
    await add(http, "x-bob", "User likes chess")  # bob is a user with memories of his own
    missing = str(uuid.uuid4())
    for method, path in [
        ("POST", "/memories/profile/pins/{}"),
        ("DELETE", "/memories/profile/pins/{}"),
        ("POST", "/memories/profile/restore/{}"),
    ]:
        for theirs in [secret, city, *alices_versions]:
            answered = await http.request(method, path.format(theirs), headers=bob)
            unknown = await http.request(method, path.format(missing), headers=bob)
            assert answered.status_code == unknown.status_code == 404, answered.text
            assert detail(answered) == detail(unknown).replace(missing, theirs)
            assert "x-alice" not in answered.text
    for path in ("/memories/profile", "/memories/profile/history", "/memories/export"):
        shown = await http.get(path, headers=bob)
        assert shown.status_code == 200 and "8812" not in shown.text and secret not in shown.text
    # a client-chosen user is no user: query parameters and forged tokens change nothing
    sneaky = await http.get("/memories/profile", params={"user_id": "x-alice"}, headers=bob)
    assert sneaky.json()["user_id"] == "x-bob" and sneaky.json()["version_id"] is None
    forged = bearer("x-alice", secret="not-the-server-secret-" + "x" * 20)
    for method, path in [
        ("GET", "/memories/profile"),
        ("GET", "/memories/profile/history"),
        ("POST", f"/memories/profile/pins/{secret}"),
        ("POST", f"/memories/profile/restore/{alices_versions[0]}"),
    ]:
        assert (await http.request(method, path, headers=forged)).status_code == 401
        assert (await http.request(method, path)).status_code == 401
    after = (await http.get("/memories/profile/history", headers=alice)).json()
    assert after == before


async def test_the_sdk_client_reaches_the_profile_routes_as_its_user(
    http: httpx.AsyncClient, server: DevServer
) -> None:
    [memory_id] = await pinned_profile(http, "s-alice", "User sails on weekends")
    alice = client_for(server.url, "s-alice")
    shown = await alice.http.get("/memories/profile")
    assert shown["pinned"] == [memory_id]
    versions = await alice.http.get("/memories/profile/history")
    assert len(versions) == 1
    bob = client_for(server.url, "s-bob")
    assert (await bob.http.get("/memories/profile"))["version_id"] is None
    for path in (
        f"/memories/profile/pins/{memory_id}",
        f"/memories/profile/restore/{versions[0]['version_id']}",
    ):
        with pytest.raises(httpx.HTTPStatusError) as refused_call:
            await bob.http.post(path, json=None)
        assert refused_call.value.response.status_code == 404
    with pytest.raises(httpx.HTTPStatusError) as refused_call:
        await bob.http.delete(f"/memories/profile/pins/{memory_id}")
    assert refused_call.value.response.status_code == 404
    assert (await alice.http.get("/memories/profile"))["pinned"] == [memory_id]


def engram(tmp_path: Path, *args: str, **env: str) -> tuple[int, str, str]:
    result = run_engram(engram_env(tmp_path, **env), "profile", *args)
    return result.returncode, result.stdout, result.stderr


async def test_the_profile_commands_work_against_the_server(
    http: httpx.AsyncClient, server: DevServer, tmp_path: Path
) -> None:
    knits, owl = await pinned_profile(http, "c-alice", "User knits", "User is a night owl")
    as_alice = {"ENGRAM_SERVER": server.url, "ENGRAM_AUTH_SECRET": SECRET}
    code, out, err = engram(tmp_path, "show", "--user", "c-alice", **as_alice)
    assert code == 0, err
    assert "User knits" in out and f"{knits[:8]} (pinned)" in out
    code, out, err = engram(tmp_path, "unpin", owl[:8], "--user", "c-alice", "--json", **as_alice)
    assert code == 0, err
    assert json.loads(out)["pinned"] == [knits]
    code, out, err = engram(tmp_path, "history", "--user", "c-alice", "--json", **as_alice)
    versions = json.loads(out)
    assert [v["status"] for v in versions] == ["superseded", "superseded", "active"]
    code, out, err = engram(tmp_path, "history", "--user", "c-alice", **as_alice)
    assert code == 0 and f"unpinned {owl[:8]}" in out
    second = versions[1]["version_id"]
    code, out, err = engram(tmp_path, "restore", second[:8], "--user", "c-alice", **as_alice)
    assert code == 0, err
    assert f"restored version {second}" in out and "User is a night owl" in out
    code, out, err = engram(tmp_path, "pin", owl, "--user", "c-alice", **as_alice)
    assert code == 0, err  # already pinned again by the restore: nothing changes
    code, out, err = engram(tmp_path, "show", "--user", "nobody-here", **as_alice)
    assert (code, out) == (0, "no profile yet for nobody-here\n")


async def test_bobs_token_never_reaches_alices_profile_from_the_cli(
    http: httpx.AsyncClient, server: DevServer, tmp_path: Path
) -> None:
    [diary] = await pinned_profile(http, "r-alice", "User keeps a diary")
    alices_version = (await http.get("/memories/profile", headers=bearer("r-alice"))).json()[
        "version_id"
    ]
    as_bob = {"ENGRAM_SERVER": server.url, "ENGRAM_TOKEN": token("r-bob")}
    code, _, err = engram(tmp_path, "show", "--user", "r-alice", **as_bob)
    assert code == 1 and "the token is for 'r-bob', not 'r-alice'" in err
    code, _, err = engram(tmp_path, "pin", diary, "--user", "r-bob", **as_bob)
    assert code == 1 and err.startswith("error: no memory"), err
    code, _, err = engram(tmp_path, "unpin", diary, "--user", "r-bob", **as_bob)
    assert code == 1 and "is not pinned for 'r-bob'" in err and "r-alice" not in err
    code, _, err = engram(tmp_path, "unpin", diary[:8], "--user", "r-bob", **as_bob)
    assert code == 1 and err.startswith("error: no memory"), err  # no prefix of hers matches
    code, _, err = engram(tmp_path, "restore", alices_version, "--user", "r-bob", **as_bob)
    assert code == 1 and "no profile version" in err and "r-alice" not in err
    code, out, _ = engram(tmp_path, "show", "--user", "r-bob", **as_bob)
    assert (code, out) == (0, "no profile yet for r-bob\n")
    forged = token("r-alice", secret="not-the-server-secret-" + "x" * 20)
    code, _, err = engram(
        tmp_path, "show", "--user", "r-alice", ENGRAM_SERVER=server.url, ENGRAM_TOKEN=forged
    )
    assert code == 1 and "refused" in err
    shown = (await http.get("/memories/profile", headers=bearer("r-alice"))).json()
    assert shown["pinned"] == [diary] and shown["version_id"] == alices_version


async def test_the_mcp_tools_read_and_pin_for_the_caller_only(server: DevServer) -> None:
    async with connect(server, "m-alice") as alice:
        assert await call(alice, "get_profile") == {"lines": [], "pinned": []}
        remembered = await call(alice, "remember", text="User's favourite colour is teal")
        teal = remembered["changes"][0]["id"]
        pinned = await call(alice, "pin_memory", id=teal)
        assert pinned["pinned"] == [teal]
        assert pinned["lines"] == [
            {"text": "User's favourite colour is teal", "memory_ids": [teal]}
        ]
        shown = await call(alice, "get_profile")
        assert shown["version_id"] == pinned["version_id"]
    async with connect(server, "m-bob") as bob:
        assert await call(bob, "get_profile") == {"lines": [], "pinned": []}
        missing = str(uuid.uuid4())
        for tool in ("pin_memory", "unpin_memory"):
            theirs = await refused(bob, tool, id=teal)
            unknown = await refused(bob, tool, id=missing)
            assert theirs.replace(teal, "ID") == unknown.replace(missing, "ID")
            assert "m-alice" not in theirs
        reason = await refused(bob, "get_profile", user_id="m-alice")
        assert "Extra inputs are not permitted" in reason
    async with connect(server, "m-alice") as alice:
        assert (await call(alice, "get_profile"))["pinned"] == [teal]
        unpinned = await call(alice, "unpin_memory", id=teal)
        assert unpinned["pinned"] == [] and unpinned["lines"] == []
        assert "not pinned" in await refused(alice, "unpin_memory", id=teal)


async def test_export_and_import_carry_the_profile_between_users(
    http: httpx.AsyncClient,
) -> None:
    ids = await pinned_profile(http, "e-alice", "User speaks Basque", "User runs marathons")
    exported = await http.get("/memories/export", headers=bearer("e-alice"))
    header, _ = read_export(exported.text.splitlines())
    assert header.profile is not None and header.profile.pinned == ids
    importer = bearer("e-carol")
    imported = await http.post("/memories/import", content=exported.content, headers=importer)
    assert imported.status_code == 200, imported.text
    report: dict[str, Any] = imported.json()["profile"]
    assert (report["result"], report["pinned"], report["dropped"]) == ("imported", 2, [])
    carol = (await http.get("/memories/profile", headers=importer)).json()
    carols = {m["id"] for m in (await http.get("/memories", headers=importer)).json()["items"]}
    assert set(carol["pinned"]) <= carols and not set(carol["pinned"]) & set(ids)
    assert [line["text"] for line in carol["lines"]] == [
        "User speaks Basque",
        "User runs marathons",
    ]
    again = await http.post("/memories/import", content=exported.content, headers=importer)
    assert again.json()["profile"]["result"] == "kept"
