"""`/memories` over HTTP through a real `langgraph dev`: every route with good and bad
input, for the token's user only (another user's memory id answers 404 exactly like a
missing one), and the routes in the server's OpenAPI schema."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from engram.memory.transfer import read_export
from tests.fake_openai import FakeOpenAI, save_answer
from tests.servers import (
    INGEST_ID,
    DevServer,
    assistant_id,
    bearer,
    client_for,
    langgraph_dev,
    run_turn,
)

MAX_IMPORT_BYTES = 200_000


@pytest.fixture(scope="module")
def server(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    workdir = tmp_path_factory.mktemp("langgraph-memories")
    with langgraph_dev(
        fake,
        workdir,
        ENGRAM_MAX_IMPORT_BYTES=str(MAX_IMPORT_BYTES),
        ENGRAM_HISTORY_WINDOW="2",  # so that a few turns move messages to the server's store
        ENGRAM_MEMORY_STEPS="inline",  # each turn's memory work in its own run and thread
    ) as running:
        yield running


def as_user(user: str) -> dict[str, str]:
    return bearer(user)


async def add(http: httpx.AsyncClient, user: str, text: str, **fields: Any) -> dict[str, Any]:
    response = await http.post("/memories", json={"text": text, **fields}, headers=as_user(user))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    assert body["result"] == "added"
    return body


def detail(response: httpx.Response) -> Any:
    return response.json()["detail"]


async def test_create_get_list_and_filter(http: httpx.AsyncClient) -> None:
    me = as_user("lister")
    paris = await add(
        http,
        "lister",
        "User lives in Paris",
        category="location",
        observed_at="2025-06-01T12:00:00+02:00",
    )
    await add(http, "lister", "User likes jazz", category="preferences")
    await add(http, "lister", "User plays chess", category="preferences")

    record = (await http.get(f"/memories/{paris['memory_id']}", headers=me)).json()
    assert (record["text"], record["category"], record["status"]) == (
        "User lives in Paris",
        "location",
        "active",
    )
    assert record["observed_at"] == "2025-06-01T12:00:00+02:00"  # the user's own time
    assert record["source"]["actor"] == "api" and record["user_id"] == "lister"

    # The same fact again changes nothing: 200, not 201.
    again = await http.post("/memories", json={"text": "User likes jazz"}, headers=me)
    assert again.status_code == 200 and again.json()["result"] == "duplicate"

    page = (await http.get("/memories", headers=me)).json()
    assert [m["text"] for m in page["items"]] == [
        "User lives in Paris",
        "User likes jazz",
        "User plays chess",
    ]
    assert page["total"] == 3 and page["next_offset"] is None
    first = (await http.get("/memories", params={"limit": 2}, headers=me)).json()
    assert len(first["items"]) == 2 and first["total"] == 3 and first["next_offset"] == 2
    rest = (await http.get("/memories", params={"limit": 2, "offset": 2}, headers=me)).json()
    assert [m["text"] for m in rest["items"]] == ["User plays chess"]
    assert rest["next_offset"] is None

    by_category = await http.get("/memories", params={"category": "preferences"}, headers=me)
    assert {m["text"] for m in by_category.json()["items"]} == {
        "User likes jazz",
        "User plays chess",
    }
    said_before_2026 = await http.get(
        "/memories", params={"observed_before": "2026-01-01T00:00:00Z"}, headers=me
    )
    assert [m["text"] for m in said_before_2026.json()["items"]] == ["User lives in Paris"]
    said_after = await http.get(
        "/memories", params={"observed_after": "2026-01-01T00:00:00Z"}, headers=me
    )
    assert len(said_after.json()["items"]) == 2
    created = record["created_at"]
    since = await http.get("/memories", params={"created_after": created}, headers=me)
    assert len(since.json()["items"]) == 3  # inclusive bound
    none_yet = await http.get(
        "/memories", params={"created_before": "2020-01-01T00:00:00Z"}, headers=me
    )
    assert none_yet.json() == {"items": [], "total": 0, "next_offset": None}


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"status": "gone"}, "status"),
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"offset": -1}, "offset"),
        ({"observed_after": "2026-01-01T00:00:00"}, "observed_after"),  # no time zone
        ({"created_before": "last tuesday"}, "created_before"),
    ],
)
async def test_list_refuses_bad_parameters_with_422(
    http: httpx.AsyncClient, params: dict[str, Any], problem: str
) -> None:
    response = await http.get("/memories", params=params, headers=as_user("lister"))
    assert response.status_code == 422
    assert problem in json.dumps(detail(response))


async def test_search(http: httpx.AsyncClient) -> None:
    me = as_user("searcher")
    await add(http, "searcher", "User's dog is called Rex", category="relationships")
    await add(http, "searcher", "User works as a baker", category="work")
    found = await http.get("/memories/search", params={"query": "dog Rex", "k": 1}, headers=me)
    assert found.status_code == 200
    hits = found.json()
    assert [m["text"] for m in hits] == ["User's dog is called Rex"]
    assert isinstance(hits[0]["score"], float)
    in_work = await http.get(
        "/memories/search", params={"query": "dog Rex", "category": "work"}, headers=me
    )
    assert [m["text"] for m in in_work.json()] == ["User works as a baker"]
    for bad in ({}, {"query": ""}, {"query": "x", "k": 0}, {"query": "x", "k": 51}):
        response = await http.get("/memories/search", params=bad, headers=me)
        assert response.status_code == 422, bad


async def test_update_history_delete_and_restore(http: httpx.AsyncClient) -> None:
    me = as_user("editor")
    memory_id = (await add(http, "editor", "User lives in Lyon", category="location"))["memory_id"]

    changed = await http.patch(
        f"/memories/{memory_id}", json={"text": "User lives in Nantes"}, headers=me
    )
    assert changed.status_code == 200
    assert changed.json()["result"] == "updated"
    new_id = changed.json()["memory_id"]
    history = (await http.get(f"/memories/{new_id}/history", headers=me)).json()
    assert [(v["text"], v["status"]) for v in history] == [
        ("User lives in Lyon", "superseded"),
        ("User lives in Nantes", "active"),
    ]
    assert history[1]["category"] == "location"

    deleted = await http.delete(f"/memories/{new_id}", headers=me)
    assert deleted.status_code == 200 and deleted.json()["result"] == "deleted"
    again = await http.delete(f"/memories/{new_id}", headers=me)
    assert again.json()["result"] == "already deleted"
    listed = await http.get("/memories", params={"status": "deleted"}, headers=me)
    assert [m["id"] for m in listed.json()["items"]] == [new_id]

    restored = await http.post(f"/memories/{new_id}/restore", headers=me)
    assert restored.status_code == 200 and restored.json()["result"] == "restored"
    active = await http.get("/memories", headers=me)
    assert [m["text"] for m in active.json()["items"]] == ["User lives in Nantes"]
    all_versions = await http.get("/memories", params={"status": "all"}, headers=me)
    assert all_versions.json()["total"] == 2


async def test_bad_writes_name_the_problem(http: httpx.AsyncClient) -> None:
    me = as_user("careless")
    cases: list[tuple[str, str, dict[str, Any] | None, int, str]] = [
        ("POST", "/memories", {"text": "   "}, 422, "memory text must not be empty"),
        ("POST", "/memories", {"text": "x" * 5000}, 422, "memory text is over"),
        ("POST", "/memories", {}, 422, "text"),
        ("POST", "/memories", {"text": "ok", "observed_at": "2026-01-01T10:00:00"}, 422, "time"),
        ("POST", "/memories", {"text": 42}, 422, "text"),
        ("GET", "/memories/not-a-uuid", None, 404, "no memory 'not-a-uuid'"),
        ("GET", "/memories/6a2f41a3-c54c-4f2b-8a4e-3f1f0e5e6b7c", None, 404, "no memory"),
        ("GET", "/memories/6a2f41a3-c54c-4f2b-8a4e-3f1f0e5e6b7c/history", None, 404, "no memory"),
        (
            "PATCH",
            "/memories/6a2f41a3-c54c-4f2b-8a4e-3f1f0e5e6b7c",
            {"text": "y"},
            404,
            "no memory",
        ),
        ("DELETE", "/memories/6a2f41a3-c54c-4f2b-8a4e-3f1f0e5e6b7c", None, 404, "no memory"),
        ("POST", "/memories/6a2f41a3-c54c-4f2b-8a4e-3f1f0e5e6b7c/restore", None, 404, "no memory"),
        ("POST", "/memories/forget", {}, 422, "confirm"),
        ("POST", "/memories/forget", {"confirm": False}, 422, "confirm"),
    ]
    own = (await add(http, "careless", "User likes tea"))["memory_id"]
    cases.append(("PATCH", f"/memories/{own}", {"text": ""}, 422, "memory text must not be empty"))
    cases.append(("PATCH", f"/memories/{own}", {"category": "x"}, 422, "text"))
    for method, path, body, status, problem in cases:
        response = await http.request(method, path, json=body, headers=me)
        assert response.status_code == status, (method, path, response.text)
        assert problem in json.dumps(detail(response)), (method, path, response.text)


async def test_validity_by_hand_and_as_of_reads(http: httpx.AsyncClient) -> None:
    me = as_user("dater")
    lyon = (await add(http, "dater", "User lives in Lyon", category="location"))["memory_id"]
    before = (await http.get(f"/memories/{lyon}", headers=me)).json()["updated_at"]
    moved = await http.patch(f"/memories/{lyon}", json={"text": "User lives in Nantes"}, headers=me)
    nantes = moved.json()["memory_id"]
    dated = await http.put(
        f"/memories/{nantes}/validity",
        json={"valid_from": "2026-01-01", "valid_until": "2026-06-30"},
        headers=me,
    )
    assert dated.status_code == 200 and dated.json()["result"] == "updated"
    [current] = (await http.get("/memories", headers=me)).json()["items"]
    assert (current["text"], current["valid_from"], current["valid_until"]) == (
        "User lives in Nantes",
        "2026-01-01",
        "2026-06-30",
    )
    stored = (await http.get("/memories", params={"status": "all"}, headers=me)).json()
    then = await http.get("/memories", params={"as_of": before}, headers=me)
    assert [m["text"] for m in then.json()["items"]] == ["User lives in Lyon"]
    found = await http.get(
        "/memories/search", params={"query": "where", "as_of": before}, headers=me
    )
    assert [m["text"] for m in found.json()] == ["User lives in Lyon"]
    assert (await http.get("/memories", params={"status": "all"}, headers=me)).json() == stored

    for params, problem in [
        ({"as_of": "2026-03-01T12:00:00"}, "add its UTC offset"),
        ({"as_of": "soon"}, "give a day (2026-03-01) or an ISO time"),
        ({"as_of": "2026-03-01", "status": "all"}, "leave status out"),
    ]:
        refused = await http.get("/memories", params=params, headers=me)
        assert refused.status_code == 422 and problem in detail(refused), params
    current_id = current["id"]
    for body, problem in [
        ({"valid_until": "2026-02-30"}, "valid_until"),
        ({"valid_from": "2026-07-01", "valid_until": "2026-06-30"}, "is before valid from"),
    ]:
        refused = await http.put(f"/memories/{current_id}/validity", json=body, headers=me)
        assert refused.status_code == 422 and problem in json.dumps(detail(refused)), body
    cleared = await http.put(f"/memories/{current_id}/validity", json={}, headers=me)
    after = (await http.get(f"/memories/{cleared.json()['memory_id']}", headers=me)).json()
    assert (after["valid_from"], after["valid_until"]) == (None, None)


async def test_another_users_memories_answer_404_like_missing_ones(
    http: httpx.AsyncClient,
) -> None:
    bobs = (await add(http, "m-bob", "User's bank is Acme", category="personal"))["memory_id"]
    alice = as_user("m-alice")
    missing = "6a2f41a3-c54c-4f2b-8a4e-3f1f0e5e6b7c"
    for method, suffix, body in [
        ("GET", "", None),
        ("GET", "/history", None),
        ("PATCH", "", {"text": "User's bank is Evil Corp"}),
        ("DELETE", "", None),
        ("POST", "/restore", None),
        ("PUT", "/validity", {"valid_until": "2020-01-01"}),
    ]:
        theirs = await http.request(method, f"/memories/{bobs}{suffix}", json=body, headers=alice)
        nobody = await http.request(
            method, f"/memories/{missing}{suffix}", json=body, headers=alice
        )
        assert theirs.status_code == nobody.status_code == 404
        assert detail(theirs) == detail(nobody).replace(missing, bobs)
    for path in ("/memories", "/memories/export"):
        shown = await http.get(path, headers=alice)
        assert "Acme" not in shown.text
    searched = await http.get("/memories/search", params={"query": "bank Acme"}, headers=alice)
    assert searched.json() == []
    now = {"as_of": "2099-01-01"}
    assert (await http.get("/memories", params=now, headers=alice)).json()["total"] == 0
    searched = await http.get(
        "/memories/search", params={"query": "bank Acme", **now}, headers=alice
    )
    assert searched.json() == []
    forgot = await http.post("/memories/forget", json={"confirm": True}, headers=alice)
    assert forgot.json()["memories"] == 0
    kept = (await http.get(f"/memories/{bobs}", headers=as_user("m-bob"))).json()
    assert (kept["text"], kept["status"]) == ("User's bank is Acme", "active")
    assert kept["valid_until"] is None


async def test_export_then_import_as_another_user(http: httpx.AsyncClient) -> None:
    await add(http, "exporter", "User speaks Finnish", category="personal")
    await add(http, "exporter", "User climbs", category="preferences")
    exported = await http.get("/memories/export", headers=as_user("exporter"))
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("application/x-ndjson")
    assert "engram-exporter.jsonl" in exported.headers["content-disposition"]
    header, memories = read_export(exported.text.splitlines())  # the CLI's format
    assert header.user_id == "exporter" and header.count == 2
    assert {m.text for m in memories} == {"User speaks Finnish", "User climbs"}

    importer = as_user("importer")
    imported = await http.post(
        "/memories/import",
        content=exported.content,
        headers={**importer, "Content-Type": "application/x-ndjson"},
    )
    assert imported.status_code == 200, imported.text
    assert imported.json() == {
        "user_id": "importer",
        "imported": 2,
        "skipped": 0,
        "re_embedded": 0,
        "profile": None,  # the exporter has no profile
    }
    mine = (await http.get("/memories", headers=importer)).json()["items"]
    assert {m["text"] for m in mine} == {"User speaks Finnish", "User climbs"}
    assert {m["user_id"] for m in mine} == {"importer"}
    assert not {m["id"] for m in mine} & {m.id for m in memories}  # fresh ids, not theirs
    again = await http.post("/memories/import", content=exported.content, headers=importer)
    assert again.json()["imported"] == 0 and again.json()["skipped"] == 2
    theirs = (await http.get("/memories", headers=as_user("exporter"))).json()
    assert theirs["total"] == 2  # the exporter's own memories are untouched


async def test_bad_imports_are_refused_whole(http: httpx.AsyncClient) -> None:
    me = as_user("bad-importer")
    exported = (await http.get("/memories/export", headers=as_user("exporter"))).text
    header, *lines = exported.splitlines()
    broken = "\n".join([header, lines[0], "{not json"]) + "\n"
    truncated = "\n".join([header, lines[0]]) + "\n"
    cases = [
        (b"", 400, "the body is empty"),
        (b"\xff\xfe", 400, "not UTF-8"),
        (broken.encode(), 400, "line 3"),
        (truncated.encode(), 400, "announces 2 memories but the file has 1"),
        (b"x" * (MAX_IMPORT_BYTES + 1), 413, "ENGRAM_MAX_IMPORT_BYTES"),
    ]
    for body, status, problem in cases:
        response = await http.post("/memories/import", content=body, headers=me)
        assert response.status_code == status, response.text
        assert problem in detail(response)
    assert (await http.get("/memories", headers=me)).json()["total"] == 0


async def test_forget_erases_everything_of_the_user_and_nothing_of_others(
    http: httpx.AsyncClient, server: DevServer, fake: FakeOpenAI
) -> None:
    """Memories, threads, crons, the conversation messages respond moved to the server's
    store (the window here is 2 messages) and the ingest markers."""
    fake.reset()
    forgetful = client_for(server.url, "forgetful")
    other = client_for(server.url, "unforgetting")
    fake.queue("decide_save", *[save_answer(False)] * 12)
    for client in (forgetful, other):
        thread = (await client.threads.create())["thread_id"]
        for text in ("hello", "hello again", "still here"):
            await run_turn(client, text, thread_id=thread)  # 4 messages leave the window
    await run_turn(forgetful, "hi")
    ingest = await assistant_id(forgetful, INGEST_ID)
    batch = {"messages": [{"type": "human", "id": "b1", "content": "I like tea"}]}
    await forgetful.runs.wait(None, ingest, input=batch)
    await forgetful.crons.create(
        await assistant_id(forgetful), schedule="0 0 1 1 *", input={"messages": []}
    )
    await add(http, "forgetful", "User is left-handed")
    await add(http, "unforgetting", "User is right-handed")

    forgot = await http.post(
        "/memories/forget", json={"confirm": True}, headers=as_user("forgetful")
    )
    assert forgot.status_code == 200
    assert forgot.json() == {
        "user_id": "forgetful",
        "memories": 1,
        "threads": 2,
        "crons": 1,
        "messages": 4,
    }
    assert await forgetful.threads.search() == []
    assert await forgetful.crons.search() == []
    assert (await http.get("/memories", headers=as_user("forgetful"))).json()["total"] == 0
    again = await http.post(
        "/memories/forget", json={"confirm": True}, headers=as_user("forgetful")
    )
    assert again.json() == {**forgot.json(), "memories": 0, "threads": 0, "crons": 0, "messages": 0}
    # The ingest markers went too: the same batch is considered again.
    asked = fake.steps().count("decide_save")
    fake.queue("decide_save", save_answer(False))
    await forgetful.runs.wait(None, ingest, input=batch)
    assert fake.steps().count("decide_save") == asked + 1

    # The other user keeps everything, their stored messages included.
    assert len(await other.threads.search()) == 1
    kept = (await http.get("/memories", headers=as_user("unforgetting"))).json()["items"]
    assert [m["text"] for m in kept] == ["User is right-handed"]
    theirs = await http.post(
        "/memories/forget", json={"confirm": True}, headers=as_user("unforgetting")
    )
    assert theirs.json()["messages"] == 4


async def test_no_client_reaches_the_graphs_own_store_namespaces(server: DevServer) -> None:
    """A client's store namespace starts with its user id; a user id equal to a root of
    Engram's own data would reach everyone's conversations, so it gets no store API."""
    for root in ("conversations", "ingested"):
        client = client_for(server.url, root)
        with pytest.raises(httpx.HTTPStatusError) as refused:
            await client.store.search_items([], limit=10)
        assert refused.value.response.status_code == 403
        assert "Engram keeps its own data under that name" in refused.value.response.text
    ordinary = client_for(server.url, "store-user")
    await ordinary.store.put_item(["notes"], key="k", value={"v": 1})
    assert (await ordinary.store.get_item(["notes"], key="k"))["value"] == {"v": 1}


async def test_the_routes_are_in_the_servers_openapi_schema(http: httpx.AsyncClient) -> None:
    spec = (await http.get("/openapi.json")).json()
    memories = {path: set(ops) for path, ops in spec["paths"].items() if "/memories" in path}
    assert memories == {
        "/memories": {"get", "post"},
        "/memories/search": {"get"},
        "/memories/export": {"get"},
        "/memories/import": {"post"},
        "/memories/forget": {"post"},
        "/memories/{memory_id}": {"get", "patch", "delete"},
        "/memories/{memory_id}/history": {"get"},
        "/memories/{memory_id}/restore": {"post"},
        "/memories/{memory_id}/validity": {"put"},
        "/memories/{memory_id}/agent": {"put"},
        "/memories/profile": {"get"},
        "/memories/profile/history": {"get"},
        "/memories/profile/restore/{version_id}": {"post"},
        "/memories/profile/pins/{memory_id}": {"post", "delete"},
    }
    assert "/threads/search" in spec["paths"]  # LangGraph's own routes are still there
    listed = spec["paths"]["/memories"]["get"]["parameters"]
    assert "as_of" in {p["name"] for p in listed}
    searched = spec["paths"]["/memories/search"]["get"]["parameters"]
    assert "as_of" in {p["name"] for p in searched}
    record = spec["components"]["schemas"]["MemoryRecord"]["properties"]
    assert {"valid_from", "valid_until"} <= set(record)
