"""The memories and profile commands against a running Engram server (`--server URL`),
through its `/memories` routes: a developer can inspect memories while `langgraph dev` holds
the embedded store. It offers the store's methods the commands use, with the same results.
An agent (`--agent`) is the routes' `agent` query parameter, which the token must allow."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import quote

import httpx
import jwt
from pydantic import TypeAdapter

from engram.settings import Settings
from engram.state.context import ALL_AGENTS, AgentScope
from engram.state.contracts import AppliedOp, MemoryRecord, MemoryStatus, Profile, Source
from engram.state.errors import (
    AccessDeniedError,
    ConfigurationError,
    EndpointError,
    InvalidInputError,
    MemoryNotFoundError,
)

PAGE = 500  # the routes' largest page
TIMEOUT_SECONDS = 30.0
_RECORDS = TypeAdapter(list[MemoryRecord])
_PROFILES = TypeAdapter(list[Profile])


class Memories(Protocol):
    """What the memories commands need: `MemoryStore`, or a server's `/memories`."""

    def memories(
        self,
        user_id: str,
        *,
        status: MemoryStatus | None = "active",
        category: str | None = None,
        as_of: datetime | None = None,
        agent_id: AgentScope = None,
    ) -> list[MemoryRecord]: ...

    def search(
        self,
        user_id: str,
        query: str,
        k: int = 5,
        category: str | None = None,
        *,
        min_score: float | None = None,
        as_of: datetime | None = None,
        agent_id: str | None = None,
    ) -> list[MemoryRecord]: ...

    def get(self, user_id: str, memory_id: str, *, agent_id: AgentScope = None) -> MemoryRecord: ...

    def history(
        self, user_id: str, memory_id: str, *, agent_id: AgentScope = None
    ) -> list[MemoryRecord]: ...

    def delete(
        self,
        user_id: str,
        memory_id: str,
        *,
        source: Source | None = None,
        agent_id: AgentScope = None,
    ) -> AppliedOp: ...

    def restore(
        self,
        user_id: str,
        memory_id: str,
        *,
        source: Source | None = None,
        agent_id: AgentScope = None,
    ) -> AppliedOp: ...

    def move(
        self,
        user_id: str,
        memory_id: str,
        to_agent: str | None,
        *,
        agent_id: AgentScope = ALL_AGENTS,
        source: Source | None = None,
    ) -> AppliedOp: ...

    def set_validity(
        self,
        user_id: str,
        memory_id: str,
        valid_from: date | None,
        valid_until: date | None,
        *,
        source: Source | None = None,
        agent_id: AgentScope = None,
    ) -> AppliedOp: ...

    def profile(self, user_id: str, *, as_stored: bool = False) -> Profile: ...

    def profile_history(self, user_id: str) -> list[Profile]: ...

    def restore_profile(
        self, user_id: str, version_id: str, *, source: Source | None = None
    ) -> Profile: ...

    def pin(
        self,
        user_id: str,
        memory_id: str,
        *,
        source: Source | None = None,
        agent_id: AgentScope = None,
    ) -> Profile: ...

    def unpin(self, user_id: str, memory_id: str, *, source: Source | None = None) -> Profile: ...


class RemoteMemories:
    """A server's memories of the token's user, as `agent` (None: the shared ones only).
    Every call checks that it is the user and the agent the command names, so `--user`
    can never silently mean someone else; the server checks that the token allows the
    agent."""

    def __init__(self, url: str, token: str, agent: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.user_id = token_user(token)
        self.agent = agent
        self._client = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=TIMEOUT_SECONDS,
        )

    def memories(
        self,
        user_id: str,
        *,
        status: MemoryStatus | None = "active",
        category: str | None = None,
        as_of: datetime | None = None,
        agent_id: AgentScope = None,
    ) -> list[MemoryRecord]:
        params: dict[str, Any] = {"status": status or "all", "limit": PAGE}
        if category:
            params["category"] = category
        if as_of is not None:
            params["as_of"] = as_of.isoformat()
        records: list[MemoryRecord] = []
        offset: int | None = 0
        while offset is not None:
            page = self._call(
                user_id, agent_id, "GET", "/memories", params=params | {"offset": offset}
            )
            records += _RECORDS.validate_python(page["items"])
            offset = page.get("next_offset")
        return records

    def search(
        self,
        user_id: str,
        query: str,
        k: int = 5,
        category: str | None = None,
        *,
        min_score: float | None = None,
        as_of: datetime | None = None,
        agent_id: str | None = None,
    ) -> list[MemoryRecord]:
        params: dict[str, Any] = {"query": query, "k": k}
        if category:
            params["category"] = category
        if as_of is not None:
            params["as_of"] = as_of.isoformat()
        found = _RECORDS.validate_python(
            self._call(user_id, agent_id, "GET", "/memories/search", params=params)
        )
        return [r for r in found if min_score is None or (r.score or 0) >= min_score]

    def get(self, user_id: str, memory_id: str, *, agent_id: AgentScope = None) -> MemoryRecord:
        return MemoryRecord.model_validate(self._call(user_id, agent_id, "GET", _path(memory_id)))

    def history(
        self, user_id: str, memory_id: str, *, agent_id: AgentScope = None
    ) -> list[MemoryRecord]:
        path = f"{_path(memory_id)}/history"
        return _RECORDS.validate_python(self._call(user_id, agent_id, "GET", path))

    def delete(
        self,
        user_id: str,
        memory_id: str,
        *,
        source: Source | None = None,
        agent_id: AgentScope = None,
    ) -> AppliedOp:
        return AppliedOp.model_validate(self._call(user_id, agent_id, "DELETE", _path(memory_id)))

    def restore(
        self,
        user_id: str,
        memory_id: str,
        *,
        source: Source | None = None,
        agent_id: AgentScope = None,
    ) -> AppliedOp:
        path = f"{_path(memory_id)}/restore"
        return AppliedOp.model_validate(self._call(user_id, agent_id, "POST", path))

    def move(
        self,
        user_id: str,
        memory_id: str,
        to_agent: str | None,
        *,
        agent_id: AgentScope = ALL_AGENTS,
        source: Source | None = None,
    ) -> AppliedOp:
        path = f"{_path(memory_id)}/agent"
        body = {"agent_id": to_agent}
        return AppliedOp.model_validate(self._call(user_id, agent_id, "PUT", path, json=body))

    def set_validity(
        self,
        user_id: str,
        memory_id: str,
        valid_from: date | None,
        valid_until: date | None,
        *,
        source: Source | None = None,
        agent_id: AgentScope = None,
    ) -> AppliedOp:
        body = {
            "valid_from": valid_from and valid_from.isoformat(),
            "valid_until": valid_until and valid_until.isoformat(),
        }
        path = f"{_path(memory_id)}/validity"
        return AppliedOp.model_validate(self._call(user_id, agent_id, "PUT", path, json=body))

    # The profile is every agent's (built from shared memories): these calls carry the
    # client's agent only for the server to check that the token allows it.

    def profile(self, user_id: str, *, as_stored: bool = False) -> Profile:
        params = {"as_stored": "true"} if as_stored else {}
        return Profile.model_validate(
            self._call(user_id, self.agent, "GET", "/memories/profile", params=params)
        )

    def profile_history(self, user_id: str) -> list[Profile]:
        path = "/memories/profile/history"
        return _PROFILES.validate_python(self._call(user_id, self.agent, "GET", path))

    def restore_profile(
        self, user_id: str, version_id: str, *, source: Source | None = None
    ) -> Profile:
        path = f"/memories/profile/restore/{quote(version_id, safe='')}"
        return Profile.model_validate(self._call(user_id, self.agent, "POST", path))

    def pin(
        self,
        user_id: str,
        memory_id: str,
        *,
        source: Source | None = None,
        agent_id: AgentScope = None,
    ) -> Profile:
        path = f"/memories/profile/pins/{quote(memory_id, safe='')}"
        return Profile.model_validate(self._call(user_id, agent_id, "POST", path))

    def unpin(self, user_id: str, memory_id: str, *, source: Source | None = None) -> Profile:
        path = f"/memories/profile/pins/{quote(memory_id, safe='')}"
        return Profile.model_validate(self._call(user_id, self.agent, "DELETE", path))

    def _call(
        self, user_id: str, agent_id: AgentScope, method: str, path: str, **options: Any
    ) -> Any:
        if user_id.strip() != self.user_id:
            raise AccessDeniedError(
                f"the token is for {self.user_id!r}, not {user_id.strip()!r}: a server only "
                "shows the token's own memories"
            )
        if agent_id is ALL_AGENTS:
            raise InvalidInputError(
                "every agent's memories are read on the local store only; leave out --server"
            )
        if agent_id != self.agent:
            raise InvalidInputError(
                f"this client acts as {_agent_name(self.agent)}, not {_agent_name(agent_id)}"
            )
        if agent_id is not None:
            options["params"] = {**options.get("params", {}), "agent": agent_id}
        try:
            reply = self._client.request(method, path, **options)
        except httpx.HTTPError as error:
            raise EndpointError(f"the Engram server at {self.url} failed: {error}") from error
        if reply.is_success:
            return reply.json()
        detail = _detail(reply)
        if reply.status_code == 404:
            raise MemoryNotFoundError(detail)
        if reply.status_code in (401, 403):
            raise AccessDeniedError(f"the Engram server at {self.url} refused: {detail}")
        if reply.status_code in (400, 409, 413, 422):
            raise InvalidInputError(detail)
        raise EndpointError(
            f"the Engram server at {self.url} answered {reply.status_code}: {detail}"
        )


def server_token(
    token: str | None, user_id: str, settings: Settings, agent: str | None = None
) -> str:
    """`--token` / ENGRAM_TOKEN, else one minted from ENGRAM_AUTH_SECRET (a local server's
    secret) that may act as `agent`, else a clear error."""
    if token:
        return token.strip()
    if settings.auth_secret is None:
        raise ConfigurationError(
            "--server needs a token: pass --token (or set ENGRAM_TOKEN), or set "
            "ENGRAM_AUTH_SECRET to the server's secret to mint one"
        )
    from engram.apps.server.tokens import mint_token

    return mint_token(settings, user_id, timedelta(minutes=10), agents=[agent] if agent else [])


def token_user(token: str) -> str:
    """The user a token is for (its `sub`); the server verifies the signature."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as error:
        raise InvalidInputError(f"the token is not a JWT: {error}") from None
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject.strip():
        raise InvalidInputError("the token names no user (no `sub` claim)")
    return subject.strip()


def _agent_name(agent_id: AgentScope) -> str:
    return "no agent" if agent_id is None else f"agent {agent_id!r}"


def _path(memory_id: str) -> str:
    return f"/memories/{quote(memory_id, safe='')}"


def _detail(reply: httpx.Response) -> str:
    try:
        detail = reply.json().get("detail")
    except ValueError:
        detail = None
    return str(detail) if detail else reply.text.strip()[:300] or reply.reason_phrase
