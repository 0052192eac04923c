"""When memories are true, through every entry point on the real store (Qdrant Edge): the
`/memories` routes in-process, the Python facade, the CLI and the MCP tools show validity
dates, set and clear them by hand, and read "as of" a past moment — for the caller only
(another user's memory answers like a missing one), and an as-of read changes nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

from engram.apps.cli import common as cli
from engram.apps.python_api import Memory
from engram.apps.server import mcp, routes
from engram.clients import Clients
from engram.memory.store import MemoryStore
from engram.settings import Settings
from engram.state.errors import InvalidInputError, MemoryNotFoundError
from tests.unit.apps.test_server_routes import User, me, signed_in

MISSING = "6a2f41a3-c54c-4f2b-8a4e-3f1f0e5e6b7c"
YESTERDAY = datetime.now(UTC).date() - timedelta(days=1)


def everything(store: MemoryStore, user: str = "alice") -> list[dict[str, object]]:
    """Every version of the user's memories as stored, events and times included."""
    return [r.model_dump(mode="json") for r in store.memories(user, status=None)]


def moved(store: MemoryStore) -> tuple[str, datetime, str]:
    """Alice lived in Lyon, then (after `before`) in Nantes: (old id, before, new id)."""
    lyon = store.add("alice", "User lives in Lyon", "location").memory_id or ""
    time.sleep(0.01)
    before = datetime.now(UTC)
    time.sleep(0.01)
    nantes = store.update("alice", lyon, "User lives in Nantes").memory_id or ""
    return lyon, before, nantes


# -- HTTP ------------------------------------------------------------------------------------


@pytest.fixture
def client(store: MemoryStore, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setattr(routes, "default_store", lambda: store)
    with TestClient(signed_in(routes.app)) as test_client:
        yield test_client


def test_http_sets_shows_and_clears_validity(client: TestClient, store: MemoryStore) -> None:
    memory_id = client.post("/memories", json={"text": "User works at Acme"}, headers=me()).json()[
        "memory_id"
    ]
    dates = {"valid_from": "2025-01-01", "valid_until": "2026-06-30"}
    put = client.put(f"/memories/{memory_id}/validity", json=dates, headers=me())
    assert put.status_code == 200 and put.json()["result"] == "updated"
    dated = put.json()["memory_id"]
    shown = client.get(f"/memories/{dated}", headers=me()).json()
    assert (shown["valid_from"], shown["valid_until"]) == ("2025-01-01", "2026-06-30")
    listed = client.get("/memories", headers=me()).json()["items"]
    assert [(m["text"], m["valid_until"]) for m in listed] == [("User works at Acme", "2026-06-30")]
    history = client.get(f"/memories/{dated}/history", headers=me()).json()
    assert [(v["status"], v["valid_until"]) for v in history] == [
        ("superseded", None),
        ("active", "2026-06-30"),
    ]
    again = client.put(f"/memories/{dated}/validity", json=dates, headers=me())
    assert again.json()["result"] == "unchanged"

    cleared = client.put(f"/memories/{dated}/validity", json={}, headers=me())
    assert cleared.status_code == 200
    now = store.get("alice", cleared.json()["memory_id"])
    assert (now.valid_from, now.valid_until) == (None, None)


def test_http_refuses_bad_validity_clearly(client: TestClient, store: MemoryStore) -> None:
    memory_id = client.post("/memories", json={"text": "User knits"}, headers=me()).json()[
        "memory_id"
    ]
    path = f"/memories/{memory_id}/validity"
    bad_day = client.put(path, json={"valid_until": "2026-02-30"}, headers=me())
    assert bad_day.status_code == 422 and "valid_until" in json.dumps(bad_day.json())
    backwards = client.put(
        path, json={"valid_from": "2026-06-30", "valid_until": "2026-01-01"}, headers=me()
    )
    assert backwards.status_code == 422
    assert backwards.json()["detail"] == "valid until 2026-01-01 is before valid from 2026-06-30"
    client.delete(f"/memories/{memory_id}", headers=me())
    deleted = client.put(path, json={"valid_until": "2026-01-01"}, headers=me())
    assert deleted.status_code == 422 and "restore it first" in deleted.json()["detail"]
    assert len(store.history("alice", memory_id)) == 1  # nothing was written


def test_http_as_of_reads_the_past_and_changes_nothing(
    client: TestClient, store: MemoryStore
) -> None:
    _, before, _ = moved(store)
    stored = everything(store)
    as_of = {"as_of": before.isoformat()}
    then = client.get("/memories", params=as_of, headers=me()).json()
    assert [m["text"] for m in then["items"]] == ["User lives in Lyon"] and then["total"] == 1
    now = client.get("/memories", headers=me()).json()["items"]
    assert [m["text"] for m in now] == ["User lives in Nantes"]
    found = client.get(
        "/memories/search", params={"query": "where does she live", **as_of}, headers=me()
    ).json()
    assert [m["text"] for m in found] == ["User lives in Lyon"]
    by_day = client.get("/memories", params={"as_of": str(YESTERDAY)}, headers=me()).json()
    assert by_day["items"] == []  # the end of yesterday: nothing was said yet
    assert everything(store) == stored  # reads only: no version, event or time changed

    for bad, problem in [
        ("2026-03-01T12:00:00", "add its UTC offset"),
        ("2026-13-01", "give a day (2026-03-01) or an ISO time"),
        ("yesterday", "give a day"),
    ]:
        for path, extra in (("/memories", {}), ("/memories/search", {"query": "x"})):
            refused = client.get(path, params={"as_of": bad, **extra}, headers=me())
            assert refused.status_code == 422 and problem in refused.json()["detail"], bad
    with_status = client.get("/memories", params={**as_of, "status": "all"}, headers=me())
    assert with_status.status_code == 422 and "leave status out" in with_status.json()["detail"]


def test_another_user_can_neither_set_nor_read_as_of(
    client: TestClient, store: MemoryStore
) -> None:
    lyon, before, nantes = moved(store)
    stored = everything(store)
    bob = me("bob")
    for memory_id in (lyon, nantes):
        theirs = client.put(
            f"/memories/{memory_id}/validity", json={"valid_until": "2026-01-01"}, headers=bob
        )
        nobody = client.put(
            f"/memories/{MISSING}/validity", json={"valid_until": "2026-01-01"}, headers=bob
        )
        assert theirs.status_code == nobody.status_code == 404
        assert theirs.json()["detail"] == nobody.json()["detail"].replace(MISSING, memory_id)
    as_of = {"as_of": before.isoformat()}
    assert client.get("/memories", params=as_of, headers=bob).json()["total"] == 0
    found = client.get("/memories/search", params={"query": "Lyon", **as_of}, headers=bob)
    assert found.json() == []
    assert everything(store) == stored


# -- Python ----------------------------------------------------------------------------------


def test_the_facade_sets_validity_and_reads_as_of(store: MemoryStore) -> None:
    memory = Memory(clients=Clients(Settings(llm_attempts=1), store=store))
    lyon, before, nantes = moved(store)
    stored = everything(store)
    assert [m.text for m in memory.list(user_id="alice", as_of=before)] == ["User lives in Lyon"]
    assert [m.id for m in memory.list(user_id="alice", as_of=before.isoformat())] == [lyon]
    assert memory.list(user_id="alice", as_of=YESTERDAY) == []
    found = memory.search("where does she live", user_id="alice", as_of=before)
    assert [m.text for m in found] == ["User lives in Lyon"]
    assert everything(store) == stored
    with pytest.raises(InvalidInputError, match="add its UTC offset"):
        memory.list(user_id="alice", as_of=before.replace(tzinfo=None))
    with pytest.raises(InvalidInputError, match="leave status out"):
        memory.list(user_id="alice", status="all", as_of=before)
    assert memory.list(user_id="bob", as_of=datetime.now(UTC)) == []

    applied = memory.set_validity(nantes, user_id="alice", valid_until=YESTERDAY)
    assert applied.result == "updated"
    [current] = memory.list(user_id="alice")
    assert current.valid_until == YESTERDAY and current.is_past(datetime.now(UTC).date())
    assert memory.history(current.id, user_id="alice")[-1].events[0].source.actor == "python"
    with pytest.raises(InvalidInputError, match="is before"):
        memory.set_validity(
            current.id, user_id="alice", valid_from=date(2026, 2, 1), valid_until=date(2026, 1, 1)
        )
    with pytest.raises(MemoryNotFoundError):
        memory.set_validity(current.id, user_id="bob", valid_until=YESTERDAY)
    cleared = memory.set_validity(current.id, user_id="alice")
    assert store.get("alice", cleared.memory_id or "").valid_until is None
    memory.close()


# -- CLI -------------------------------------------------------------------------------------

runner = CliRunner()


def run(*args: str) -> Result:
    return runner.invoke(cli.app, ["memories", *args])


def test_the_cli_sets_validity_and_marks_past_memories(cli_store: MemoryStore) -> None:
    job = cli_store.add("alice", "User works at Acme", "work").memory_id or ""
    cli_store.add("alice", "User likes tea", "preferences")
    result = run(
        "validity", job[:8], "--user", "alice", "--from", "2025-01-01", "--until", "2025-12-31"
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("updated") and "true: 2025-01-01 to 2025-12-31" in result.stdout

    listed = run("list", "--user", "alice").stdout
    acme = next(line for line in listed.splitlines() if "Acme" in line)
    tea = next(line for line in listed.splitlines() if "tea" in line)
    assert "past" in acme and "2025-01-01 to 2025-12-31" in acme
    assert "past" not in tea
    assert "past" in run("search", "where does she work", "--user", "alice").stdout
    [dated] = [m for m in cli_store.memories("alice") if "Acme" in m.text]
    shown = run("show", dated.id[:8], "--user", "alice").stdout
    assert "true: 2025-01-01 to 2025-12-31 (past: no longer true)" in shown
    as_json = json.loads(run("list", "--user", "alice", "--json").stdout)
    assert {m["text"]: m["valid_until"] for m in as_json}["User works at Acme"] == "2025-12-31"

    # an end not given is kept; `none` opens one end; --clear opens both
    result = run("validity", dated.id[:8], "--user", "alice", "--until", "none")
    assert "true: from 2025-01-01" in result.stdout
    [dated] = [m for m in cli_store.memories("alice") if "Acme" in m.text]
    assert (dated.valid_from, dated.valid_until) == (date(2025, 1, 1), None)
    assert "true: always" in run("validity", dated.id[:8], "--user", "alice", "--clear").stdout
    [dated] = [m for m in cli_store.memories("alice") if "Acme" in m.text]
    assert (dated.valid_from, dated.valid_until) == (None, None)


def test_tables_with_dates_still_fit_80_columns(
    cli_store: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli.out, "width", 80)
    job = cli_store.add("alice", "User works as a tax accountant in Lyon", "work").memory_id
    cli_store.set_validity("alice", job or "", date(2025, 1, 1), date(2025, 12, 31))
    tea = cli_store.add("alice", "User likes tea", "preferences").memory_id
    cli_store.set_validity("alice", tea or "", None, date(2099, 1, 1))
    for args in (("list", "--user", "alice", "--all"), ("search", "work", "--user", "alice")):
        shown = run(*args).stdout
        assert max(len(line) for line in shown.splitlines()) <= 80, shown
        assert "(past)" in shown and "2099-01-01" in shown


def test_the_cli_refuses_bad_validity(cli_store: MemoryStore) -> None:
    job = cli_store.add("alice", "User works at Acme", "work").memory_id or ""
    bob = cli_store.add("bob", "User plays the sax", "hobby").memory_id or ""
    for args, problem in [
        ((), "give --from, --until"),
        (("--until", "30/06/2026"), "--until '30/06/2026': give a day as YYYY-MM-DD"),
        (("--from", "2026-06-30", "--until", "2026-01-01"), "is before valid from"),
        (("--clear", "--until", "2026-01-01"), "--clear clears both dates"),
    ]:
        result = run("validity", job, "--user", "alice", *args)
        assert result.exit_code != 0 and problem in str(result.exception), args
    for given in (bob, bob[:8]):
        result = run("validity", given, "--user", "alice", "--until", "2026-01-01")
        assert isinstance(result.exception, MemoryNotFoundError)
    assert len(cli_store.history("alice", job)) == 1 and len(cli_store.history("bob", bob)) == 1


def test_the_cli_reads_as_of(cli_store: MemoryStore) -> None:
    _, before, _ = moved(cli_store)
    stored = everything(cli_store)
    listed = run("list", "--user", "alice", "--as-of", before.isoformat())
    assert listed.exit_code == 0, listed.output
    assert "User lives in Lyon" in listed.stdout and "Nantes" not in listed.stdout
    assert "as of" in listed.stdout
    searched = run("search", "where", "--user", "alice", "--as-of", before.isoformat(), "--json")
    assert [m["text"] for m in json.loads(searched.stdout)] == ["User lives in Lyon"]
    assert "none" in run("list", "--user", "alice", "--as-of", str(YESTERDAY)).stdout
    assert everything(cli_store) == stored
    naive = run("list", "--user", "alice", "--as-of", "2026-03-01T12:00:00")
    assert naive.exit_code != 0 and "add its UTC offset" in str(naive.exception)
    both = run("list", "--user", "alice", "--all", "--as-of", "2026-03-01")
    assert both.exit_code != 0 and "leave out --all" in str(both.exception)
    others = run("list", "--user", "bob", "--as-of", before.isoformat())
    assert "none" in others.stdout


# -- MCP -------------------------------------------------------------------------------------


async def test_mcp_tools_show_and_set_validity(
    store: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mcp, "default_store", lambda: store)
    alice = mcp.Caller("alice", User("alice"), None)
    tea = store.add("alice", "User likes tea", "preferences").memory_id or ""
    changed = await mcp.set_validity(
        alice, mcp.ValidityArgs(id=tea, valid_from=date(2025, 1, 1), valid_until=YESTERDAY)
    )
    assert changed.result == "updated"
    page = await mcp.list_memories(alice, mcp.ListArgs())
    [shown] = page.model_dump(mode="json", exclude_none=True)["memories"]
    assert (shown["valid_from"], shown["valid_until"], shown["past"]) == (
        "2025-01-01",
        str(YESTERDAY),
        True,
    )
    await mcp.set_validity(alice, mcp.ValidityArgs(id=changed.id or ""))
    found = await mcp.search_memories(alice, mcp.SearchArgs(query="tea"))
    # no dates, not past: the fields are left out of what the agent reads
    assert set(found.model_dump(exclude_none=True)["memories"][0]) == {
        "id",
        "text",
        "category",
        "observed_at",
        "updated_at",
        "score",
    }
    bob = mcp.Caller("bob", User("bob"), None)
    with pytest.raises(MemoryNotFoundError):
        await mcp.set_validity(bob, mcp.ValidityArgs(id=tea, valid_until=YESTERDAY))
    assert "set_validity" in mcp.TOOLS
    arguments = mcp.TOOLS["set_validity"].listing("set_validity").input_schema["properties"]
    assert set(arguments) == {"id", "valid_from", "valid_until", "agent_id"}


def test_http_stores_a_new_memory_with_its_dates(client: TestClient, store: MemoryStore) -> None:
    dates = {"valid_from": "2026-04-06", "valid_until": "2026-04-10"}
    created = client.post("/memories", json={"text": "User is in Rome", **dates}, headers=me())
    assert created.status_code == 201, created.text
    memory = store.get("alice", created.json()["memory_id"])
    assert (str(memory.valid_from), str(memory.valid_until)) == ("2026-04-06", "2026-04-10")
    backwards = client.post(
        "/memories",
        json={"text": "User is in Oslo", "valid_from": "2026-05-02", "valid_until": "2026-05-01"},
        headers=me(),
    )
    assert backwards.status_code == 422 and "before valid from" in backwards.text
    assert [m.text for m in store.memories("alice")] == ["User is in Rome"]
