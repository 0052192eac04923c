"""The `/memories` app in-process (FastAPI's TestClient, the real store): who a request is
for, how each Engram error becomes a status, body limits, and forget's thread count."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from langgraph_sdk.auth.types import StudioUser
from starlette.types import ASGIApp, Receive, Scope, Send

from engram.apps.server import routes
from engram.memory.store import MemoryStore
from engram.settings import get_settings
from engram.state.errors import StoreConflictError


@dataclass
class User:
    identity: str
    is_authenticated: bool = True


def signed_in(app: ASGIApp) -> ASGIApp:
    """Stands in for LangGraph's auth middleware: `x-test-user` becomes `scope["user"]`."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            name = dict(scope["headers"]).get(b"x-test-user")
            if name == b"studio":
                scope["user"] = StudioUser("langgraph-studio-user")
            elif name:
                scope["user"] = User(name.decode())
        await app(scope, receive, send)

    return wrapped


@pytest.fixture
def client(store: MemoryStore, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setattr(routes, "default_store", lambda: store)
    with TestClient(signed_in(routes.app)) as test_client:
        yield test_client


def me(user: str = "alice") -> dict[str, str]:
    return {"x-test-user": user}


def test_a_request_without_an_authenticated_user_is_refused(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    response = client.get("/memories")
    assert response.status_code == 403
    assert "enable_custom_route_auth" in response.json()["detail"]
    deployed = client.get("/memories", headers=me("studio"))
    assert deployed.status_code == 403
    assert "cannot act as a user on a deployment" in deployed.json()["detail"]
    monkeypatch.setenv("LANGSMITH_LANGGRAPH_API_VARIANT", "local_dev")
    studio = client.get("/memories", headers=me("studio"))
    assert studio.status_code == 403
    assert "ENGRAM_STUDIO_USER" in studio.json()["detail"]
    monkeypatch.setenv("ENGRAM_STUDIO_USER", "dev-tester")
    get_settings.cache_clear()
    client.post("/memories", json={"text": "User tests"}, headers=me("studio"))
    assert client.get("/memories", headers=me("dev-tester")).json()["total"] == 1


def test_routes_act_for_the_signed_in_user(client: TestClient, store: MemoryStore) -> None:
    created = client.post("/memories", json={"text": "User knits"}, headers=me())
    assert created.status_code == 201
    assert [m.text for m in store.memories("alice")] == ["User knits"]
    assert store.memories("bob") == []
    memory_id = created.json()["memory_id"]
    assert client.get(f"/memories/{memory_id}", headers=me("bob")).status_code == 404
    assert client.get(f"/memories/{memory_id}", headers=me()).json()["user_id"] == "alice"


def test_a_store_conflict_is_409(
    client: TestClient, store: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory_id = client.post("/memories", json={"text": "User knits"}, headers=me()).json()[
        "memory_id"
    ]

    def busy(*args: Any, **kwargs: Any) -> None:
        raise StoreConflictError("the memory kept changing; try again")

    monkeypatch.setattr(store, "update", busy)
    response = client.patch(f"/memories/{memory_id}", json={"text": "User sews"}, headers=me())
    assert response.status_code == 409
    assert response.json() == {"detail": "the memory kept changing; try again"}


def test_import_bodies_are_bounded_even_without_a_length(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENGRAM_MAX_IMPORT_BYTES", "1000")
    declared = client.post("/memories/import", content=b"x" * 1001, headers=me())
    assert declared.status_code == 413

    def chunks() -> Iterator[bytes]:  # chunked: no Content-Length to trust
        for _ in range(20):
            yield b"x" * 100

    streamed = client.post("/memories/import", content=chunks(), headers=me())
    assert streamed.status_code == 413
    assert "over 1000 bytes (ENGRAM_MAX_IMPORT_BYTES)" in streamed.json()["detail"]


def test_export_import_round_trip_and_forget(
    client: TestClient, store: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    client.post("/memories", json={"text": "User knits", "category": "hobby"}, headers=me())
    exported = client.get("/memories/export", headers=me())
    assert exported.status_code == 200 and exported.text.count("\n") == 2
    imported = client.post("/memories/import", content=exported.content, headers=me("bob"))
    assert imported.json()["imported"] == 1
    assert [(m.text, m.category) for m in store.memories("bob")] == [("User knits", "hobby")]

    deleted_for: list[str] = []

    async def on_server(user: str) -> routes.ServerForget:
        deleted_for.append(user)
        return routes.ServerForget(threads=3, crons=1, messages=7)

    monkeypatch.setattr(routes, "_forget_on_server", on_server)
    forgot = client.post("/memories/forget", json={"confirm": True}, headers=me("bob"))
    assert forgot.json() == {
        "user_id": "bob",
        "memories": 1,
        "threads": 3,
        "crons": 1,
        "messages": 7,
    }
    assert deleted_for == ["bob"] and store.count("bob") == 0 and store.count("alice") == 1


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_a_memory_body_over_the_bound_is_refused_before_it_is_read(
    client: TestClient, store: MemoryStore, method: str
) -> None:
    limit = get_settings().max_body_bytes
    huge = {"text": "x" * (limit + 1)}
    path = "/memories" if method == "POST" else "/memories/0b9c9a6e-0000-4000-8000-000000000000"
    declared = client.request(method, path, json=huge, headers=me())
    assert declared.status_code == 413
    assert "ENGRAM_MAX_BODY_BYTES" in declared.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no content-length: counted as it arrives
        yield b'{"text": "'
        for _ in range(limit // 1000 + 2):
            yield b"y" * 1000
        yield b'"}'

    streamed = client.request(
        method, path, content=chunks(), headers={**me(), "content-type": "application/json"}
    )
    assert streamed.status_code == 413
    assert store.memories("alice") == []


def test_a_memory_body_within_the_bound_still_works(client: TestClient) -> None:
    created = client.post("/memories", json={"text": "User knits"}, headers=me())
    assert created.status_code == 201
    listed = client.get("/memories", headers=me())
    assert [m["text"] for m in listed.json()["items"]] == ["User knits"]
