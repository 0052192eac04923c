"""The server's authorization handlers (`engram.apps.server.auth`), called the way LangGraph calls
them: owners are stamped and filtered on, a run acts for its owner only with allowed
models, Studio acts only as ENGRAM_STUDIO_USER under `langgraph dev`, everything else is
refused."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from langgraph_sdk import Auth
from langgraph_sdk.auth.types import StudioUser

from engram.apps.server import auth
from engram.settings import get_settings
from tests.servers import SECRET, token

HTTPError = Auth.exceptions.HTTPException


@dataclass
class User:
    identity: str
    is_authenticated: bool = True
    display_name: str = ""
    permissions: tuple[str, ...] = ()


def ctx(user: Any, resource: str = "threads", action: str = "read") -> Auth.types.AuthContext:
    return Auth.types.AuthContext(
        user=user,
        permissions=[],
        resource=resource,  # type: ignore[arg-type]
        action=action,  # type: ignore[arg-type]
    )


@pytest.fixture(autouse=True)
def fresh_verifier() -> Iterator[None]:
    auth.verifier.cache_clear()
    yield
    auth.verifier.cache_clear()


async def test_authenticate_turns_a_token_into_the_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGRAM_AUTH_SECRET", SECRET)
    user = await auth.authenticate(f"Bearer {token('alice')}")
    assert user == {"identity": "alice", "is_authenticated": True, "permissions": []}
    with pytest.raises(HTTPError) as refused:
        await auth.authenticate(None)
    assert refused.value.status_code == 401
    assert refused.value.detail == "missing token: send Authorization: Bearer <token>"


async def test_authenticate_takes_aegras_header_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGRAM_AUTH_SECRET", SECRET)
    headers = {"authorization": f"Bearer {token('alice')}", "host": "127.0.0.1"}
    assert await auth.authenticate(headers) == {
        "identity": "alice",
        "is_authenticated": True,
        "permissions": [],
    }
    with pytest.raises(HTTPError) as refused:
        await auth.authenticate({"host": "127.0.0.1"})
    assert refused.value.status_code == 401


async def test_authenticate_fails_closed_without_configuration() -> None:
    for attempt in range(2):  # and stays closed: the error is not cached away
        with pytest.raises(HTTPError) as refused:
            await auth.authenticate(f"Bearer {token('alice')}")
        assert refused.value.status_code == 401, attempt
        assert "set ENGRAM_AUTH_SECRET" in str(refused.value.detail)


async def test_threads_are_stamped_and_filtered_on_their_owner() -> None:
    value: dict[str, Any] = {"thread_id": "t1", "metadata": {"owner": "mallory", "topic": "x"}}
    assert await auth.on_thread_create(ctx=ctx(User("alice"), action="create"), value=value) == {
        "owner": "alice"
    }
    assert value["metadata"] == {"owner": "alice", "owner_user": "alice", "topic": "x"}
    bare: dict[str, Any] = {"thread_id": "t2"}
    await auth.on_thread_create(ctx=ctx(User("alice"), action="create"), value=bare)
    assert bare["metadata"] == {"owner": "alice", "owner_user": "alice"}
    for action in ("read", "delete", "search"):
        assert await auth.on_thread_access(ctx=ctx(User("bob"), action=action), value={}) == {
            "owner": "bob"
        }
    update: dict[str, Any] = {"thread_id": "t1", "metadata": {"owner": "bob"}}
    assert await auth.on_thread_update(ctx=ctx(User("alice"), action="update"), value=update) == {
        "owner": "alice"
    }
    assert update["metadata"]["owner"] == "alice"


async def test_a_run_acts_for_its_owner_with_allowed_models() -> None:
    run: dict[str, Any] = {"metadata": {}, "kwargs": {"context": {}, "config": {}}}
    filters = await auth.on_run_create(ctx=ctx(User("alice"), action="create_run"), value=run)
    assert filters == {"owner": "alice"}
    assert run["metadata"] == {"owner": "alice", "owner_user": "alice"}
    assert run["kwargs"]["context"]["user_id"] == "alice"  # filled in

    same = {"kwargs": {"context": {"user_id": "alice", "chat_model": "gpt-4o-mini"}}}
    await auth.on_run_create(ctx=ctx(User("alice"), action="create_run"), value=same)

    refusals = [
        ({"context": {"user_id": "bob"}}, "context.user_id 'bob' is not the authenticated"),
        (
            {"context": {}, "config": {"configurable": {"user_id": "bob"}}},
            "context.user_id 'bob'",
        ),
        ({"context": {"chat_model": "o3"}}, "chat_model 'o3' is not allowed"),
        ({"context": {"memory_model": "o3"}}, "memory_model 'o3' is not allowed"),
        ({"config": {"configurable": {"chat_model": "o3"}}}, "chat_model 'o3'"),
        ({"context": {"chat_model": ["gpt-4o-mini"]}}, "chat_model ['gpt-4o-mini'] is not"),
        ({"context": {"memory_model": {"name": "o3"}}}, "memory_model {'name': 'o3'} is not"),
    ]
    for kwargs, reason in refusals:
        with pytest.raises(HTTPError) as refused:
            await auth.on_run_create(
                ctx=ctx(User("alice"), action="create_run"), value={"kwargs": kwargs}
            )
        assert refused.value.status_code == 403
        assert reason in str(refused.value.detail)


async def test_on_aegra_a_run_is_checked_in_its_request_body(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Aegra hands the handler the request body (no `kwargs`), and keeps its edits only
    when the handler returns no filter (it keeps thread owners itself)."""
    monkeypatch.setitem(sys.modules, "aegra_api.main", types.ModuleType("aegra_api.main"))
    run: dict[str, Any] = {"assistant_id": "engram", "context": {}, "config": {}}
    assert await auth.on_run_create(ctx=ctx(User("alice"), action="create_run"), value=run) is None
    assert run["context"]["user_id"] == "alice"
    for body, reason in (
        ({"context": {"user_id": "bob"}}, "context.user_id 'bob' is not the authenticated"),
        ({"context": None, "config": {"configurable": {"chat_model": "o3"}}}, "chat_model 'o3'"),
    ):
        with pytest.raises(HTTPError, match=reason):
            await auth.on_run_create(ctx=ctx(User("alice"), action="create_run"), value=body)
    cron = {"assistant_id": "engram", "schedule": "0 0 * * *", "context": {"user_id": "bob"}}
    with pytest.raises(HTTPError) as refused:
        await auth.on_cron_write(ctx=ctx(User("alice"), "crons", "create"), value=cron)
    assert refused.value.status_code == 403


async def test_allowed_models_come_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGRAM_ALLOWED_MODELS", "gpt-4o-mini, o3")
    run = {"kwargs": {"context": {"chat_model": "o3"}}}
    await auth.on_run_create(ctx=ctx(User("alice"), action="create_run"), value=run)
    with pytest.raises(HTTPError, match="allowed: gpt-4o-mini, o3"):
        await auth.on_run_create(
            ctx=ctx(User("alice"), action="create_run"),
            value={"kwargs": {"context": {"chat_model": "o1"}}},
        )


async def test_crons_are_stamped_and_their_runs_checked() -> None:
    cron: dict[str, Any] = {"payload": {"context": {}}, "schedule": "0 0 * * *"}
    filters = await auth.on_cron_write(ctx=ctx(User("alice"), "crons", "create"), value=cron)
    assert filters == {"owner": "alice"}
    assert cron["metadata"] == {"owner": "alice", "owner_user": "alice"}
    assert cron["payload"]["context"]["user_id"] == "alice"
    with pytest.raises(HTTPError) as refused:
        await auth.on_cron_write(
            ctx=ctx(User("alice"), "crons", "create"),
            value={"payload": {"context": {"user_id": "bob"}}},
        )
    assert refused.value.status_code == 403
    assert await auth.on_cron_access(ctx=ctx(User("bob"), "crons", "search"), value={}) == {
        "owner": "bob"
    }


async def test_assistants_are_readable_never_writable() -> None:
    assert (
        await auth.on_assistant_read(ctx=ctx(User("a"), "assistants", "search"), value={}) is None
    )
    for action in ("create", "update", "delete"):
        with pytest.raises(HTTPError) as refused:
            await auth.on_assistant_write(ctx=ctx(User("a"), "assistants", action), value={})
        assert refused.value.status_code == 403
        assert "langgraph.json" in str(refused.value.detail)


async def test_store_items_live_under_the_users_namespace() -> None:
    value: dict[str, Any] = {"namespace": ("notes",), "key": "k"}
    await auth.on_store(ctx=ctx(User("alice"), "store", "get"), value=value)
    assert value["namespace"] == ("alice", "notes")
    listing: dict[str, Any] = {"namespace": None}
    await auth.on_store(ctx=ctx(User("alice"), "store", "list_namespaces"), value=listing)
    assert listing["namespace"] == ("alice",)


async def test_a_user_id_naming_engrams_own_store_data_gets_no_store_api() -> None:
    """Nor does `*`, which the store matches against any label when listing namespaces."""
    for root in ("conversations", "ingested", "*"):
        value: dict[str, Any] = {"namespace": ("alice", "thread", "messages"), "key": "k"}
        with pytest.raises(HTTPError) as refused:
            await auth.on_store(ctx=ctx(User(root), "store", "search"), value=value)
        assert refused.value.status_code == 403
        assert value["namespace"] == ("alice", "thread", "messages")  # untouched


async def test_anything_unhandled_is_refused() -> None:
    with pytest.raises(HTTPError) as refused:
        await auth.refuse_everything_else(ctx=ctx(User("a"), "runs", "read"), value={})
    assert refused.value.status_code == 403
    assert str(refused.value.detail) == "runs.read is not available on this server"


async def test_studio_acts_only_as_the_named_user_under_langgraph_dev(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    studio = StudioUser("langgraph-studio-user")
    monkeypatch.setenv("LANGSMITH_LANGGRAPH_API_VARIANT", "local_dev")
    with pytest.raises(HTTPError) as refused:  # not chosen: refused
        await auth.on_thread_access(ctx=ctx(studio), value={})
    assert refused.value.status_code == 403
    assert "set ENGRAM_STUDIO_USER=<user id>" in str(refused.value.detail)

    monkeypatch.setenv("ENGRAM_STUDIO_USER", "dev-tester")
    get_settings.cache_clear()
    assert await auth.on_thread_access(ctx=ctx(studio), value={}) == {"owner": "dev-tester"}
    run: dict[str, Any] = {"kwargs": {"context": {}}}
    await auth.on_run_create(ctx=ctx(studio, action="create_run"), value=run)
    assert run["kwargs"]["context"]["user_id"] == "dev-tester"
    with pytest.raises(HTTPError, match="cannot schedule crons"):
        await auth.on_cron_write(ctx=ctx(studio, "crons", "create"), value={"payload": {}})

    monkeypatch.setenv("LANGSMITH_LANGGRAPH_API_VARIANT", "cloud")  # a deployment
    with pytest.raises(HTTPError, match="cannot act as a user on a deployment"):
        await auth.on_thread_access(ctx=ctx(studio), value={})


async def test_a_request_acts_as_the_agent_its_header_names_if_the_token_allows_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ENGRAM_AUTH_SECRET", SECRET)
    travel = token("alice", agents=["travel"])
    user = await auth.authenticate(f"Bearer {travel}", {b"x-engram-agent": b"travel"})
    assert user["permissions"] == ["agent:travel", "acting:travel"]
    for refused_agent in (b"health", b"*", b"", b"tra\x01vel"):
        with pytest.raises(HTTPError) as refused:
            await auth.authenticate(f"Bearer {travel}", {b"x-engram-agent": refused_agent})
        assert refused.value.status_code == 403, refused_agent
    # Aegra hands over the headers as one mapping
    mapping = {"authorization": f"Bearer {travel}", "x-engram-agent": "travel"}
    assert (await auth.authenticate(mapping))["permissions"][-1] == "acting:travel"


async def test_threads_runs_and_crons_belong_to_the_agent_of_the_request() -> None:
    acting = User("alice", permissions=("agent:health", "acting:health"))
    owner = "alice\x1fagent:health"
    thread: dict[str, Any] = {"thread_id": "t1"}
    assert await auth.on_thread_create(ctx=ctx(acting, action="create"), value=thread) == {
        "owner": owner
    }
    assert thread["metadata"] == {"owner": owner, "owner_user": "alice"}
    # the same user acting as no agent, or another agent, reads none of them
    for other, key in (
        (User("alice"), "alice"),
        (User("alice", permissions=("acting:travel",)), "alice\x1fagent:travel"),
    ):
        for action in ("read", "delete", "search"):
            assert await auth.on_thread_access(ctx=ctx(other, action=action), value={}) == {
                "owner": key
            }
        assert await auth.on_cron_access(ctx=ctx(other, "crons", "read"), value={}) == {
            "owner": key
        }
    run: dict[str, Any] = {"kwargs": {"context": {}}}
    assert await auth.on_run_create(ctx=ctx(acting, action="create_run"), value=run) == {
        "owner": owner
    }
    assert run["kwargs"]["context"]["agent_id"] == "health"  # filled in from the header
    # a run naming another agent than its request acts as is refused: its thread is theirs
    for context in ({"agent_id": "travel"}, {"agent_id": "health"}):
        with pytest.raises(HTTPError, match="X-Engram-Agent"):
            await auth.on_run_create(
                ctx=ctx(User("alice", permissions=("agent:*",)), action="create_run"),
                value={"kwargs": {"context": context}},
            )
    # LangGraph's scheduler starts a cron's runs without the agent: none is made as one
    cron: dict[str, Any] = {"payload": {"context": {}}}
    with pytest.raises(HTTPError, match="crons cannot act as an agent"):
        await auth.on_cron_write(ctx=ctx(acting, "crons", "create"), value=cron)
