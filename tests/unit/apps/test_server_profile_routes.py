"""`/memories/profile` in-process (FastAPI's TestClient, the real store): every route for the
signed-in user only; another user's version or memory ids answer exactly like missing ones,
and nothing of theirs changes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from engram.apps.server import routes
from engram.memory.store import MemoryStore
from engram.state.contracts import ProfileLine, Source
from tests.unit.apps.test_server_routes import me, signed_in


@pytest.fixture
def client(store: MemoryStore, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setattr(routes, "default_store", lambda: store)
    with TestClient(signed_in(routes.app)) as test_client:
        yield test_client


def alices_profile(store: MemoryStore) -> tuple[str, str]:
    """Alice's memory ids (vegetarian, Lyon), a profile line on the first, the second pinned."""
    veg = store.add("alice", "User is vegetarian", "health").memory_id or ""
    city = store.add("alice", "User lives in Lyon", "location").memory_id or ""
    store.save_profile(
        "alice", [ProfileLine(text="Vegetarian.", memory_ids=[veg])], source=Source(actor="t")
    )
    store.pin("alice", city)
    return veg, city


def test_no_profile_yet_is_an_empty_profile_without_a_version(client: TestClient) -> None:
    shown = client.get("/memories/profile", headers=me("newcomer"))
    assert shown.status_code == 200
    assert shown.json()["version_id"] is None and shown.json()["lines"] == []
    assert client.get("/memories/profile/history", headers=me("newcomer")).json() == []


def test_show_history_pin_unpin_and_restore(client: TestClient, store: MemoryStore) -> None:
    veg, city = alices_profile(store)
    shown = client.get("/memories/profile", headers=me()).json()
    assert shown["pinned"] == [city]
    assert [(entry["text"], entry["memory_ids"]) for entry in shown["lines"]] == [
        ("User lives in Lyon", [city]),
        ("Vegetarian.", [veg]),
    ]
    unpinned = client.delete(f"/memories/profile/pins/{city}", headers=me())
    assert unpinned.status_code == 200 and unpinned.json()["pinned"] == []
    pinned = client.post(f"/memories/profile/pins/{veg}", headers=me())
    assert pinned.status_code == 200 and pinned.json()["pinned"] == [veg]

    history = client.get("/memories/profile/history", headers=me()).json()
    assert [v["status"] for v in history] == ["superseded"] * 3 + ["active"]
    details = [v["events"][0]["detail"] for v in history]
    assert details[2:] == [f"unpinned {city}", f"pinned {veg}"]
    assert history[-1]["events"][0]["source"]["actor"] == "api"

    first = history[0]["version_id"]
    restored = client.post(f"/memories/profile/restore/{first}", headers=me())
    assert restored.status_code == 200, restored.text
    assert restored.json()["pinned"] == [] and restored.json()["version_id"] != first
    assert restored.json()["events"][0]["op"] == "RESTORE"
    stored = client.get("/memories/profile", params={"as_stored": True}, headers=me()).json()
    assert stored["version_id"] == restored.json()["version_id"]


def test_bad_ids_name_the_problem(client: TestClient, store: MemoryStore) -> None:
    veg, city = alices_profile(store)
    store.delete("alice", veg)
    missing = str(uuid.uuid4())
    cases = [
        ("POST", f"/memories/profile/pins/{missing}", 404, "no memory"),
        ("POST", "/memories/profile/pins/not-an-id", 404, "no memory"),
        ("POST", f"/memories/profile/pins/{veg}", 422, "is deleted"),
        ("DELETE", f"/memories/profile/pins/{veg}", 404, "is not pinned"),
        ("POST", f"/memories/profile/restore/{missing}", 404, "no profile version"),
        ("POST", "/memories/profile/restore/x", 404, "no profile version"),
        ("POST", f"/memories/profile/restore/{city}", 404, "no profile version"),  # a memory
    ]
    for method, path, status, problem in cases:
        response = client.request(method, path, headers=me())
        assert response.status_code == status, (path, response.text)
        assert problem in response.json()["detail"], (path, response.text)


def test_another_users_ids_answer_like_missing_ones(client: TestClient, store: MemoryStore) -> None:
    veg, city = alices_profile(store)
    alices_version = store.profile_history("alice")[0].version_id or ""
    before = store.profile_history("alice")
    missing = str(uuid.uuid4())
    bob = me("bob")
    for method, path in [
        ("POST", "/memories/profile/pins/{}"),
        ("DELETE", "/memories/profile/pins/{}"),
        ("POST", "/memories/profile/restore/{}"),
    ]:
        for theirs in (veg, city, alices_version):
            answered = client.request(method, path.format(theirs), headers=bob)
            unknown = client.request(method, path.format(missing), headers=bob)
            assert answered.status_code == unknown.status_code == 404, answered.text
            assert answered.json()["detail"] == unknown.json()["detail"].replace(missing, theirs)
            assert "alice" not in answered.json()["detail"]
    assert client.get("/memories/profile", headers=bob).json()["version_id"] is None
    assert client.get("/memories/profile/history", headers=bob).json() == []
    assert store.profile_history("alice") == before  # nothing of alice's changed
    assert store.profile_history("bob") == []


def test_the_profile_travels_through_export_and_import(
    client: TestClient, store: MemoryStore
) -> None:
    alices_profile(store)
    exported = client.get("/memories/export", headers=me())
    imported = client.post("/memories/import", content=exported.content, headers=me("carol"))
    assert imported.status_code == 200, imported.text
    report = imported.json()["profile"]
    assert (report["result"], report["lines"], report["pinned"]) == ("imported", 1, 1)
    carol = client.get("/memories/profile", headers=me("carol")).json()
    assert [entry["text"] for entry in carol["lines"]] == ["User lives in Lyon", "Vegetarian."]
    carols = {m.id for m in store.memories("carol")}
    assert {i for entry in carol["lines"] for i in entry["memory_ids"]} <= carols
