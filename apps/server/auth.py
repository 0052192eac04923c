"""LangGraph custom auth for Engram (`"auth": {"path": "engram.apps.server.auth:auth"}`).

Authentication: every request carries `Authorization: Bearer <JWT>`; `sub` is the user id
(see `engram.apps.server.tokens`). A server with no way to verify tokens refuses every request.

Authorization, LangGraph's owner pattern: every thread, run and cron is stamped with its
owner (`metadata.owner`) and every read, search, update and delete is filtered on it, so
another user's thread answers 404 like a missing one. Store items live under the user's
own namespace. A run acts for its owner only: a `context.user_id` naming anyone else, or a
model outside ENGRAM_ALLOWED_MODELS, is refused with 403 before the run exists. Assistants
are the graphs in langgraph.json: readable by every user, changed by none. Anything else
is refused (fail closed, including resources LangGraph adds later).

LangGraph Studio under `langgraph dev` arrives without a token as LangGraph's Studio user;
it acts as ENGRAM_STUDIO_USER or is refused (`engram.identity.user_id_of`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from langgraph_sdk import Auth
from langgraph_sdk.auth import is_studio_user
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketClose

from engram.apps.server.tokens import Caller, TokenError, TokenVerifier
from engram.identity import (
    ACTING_PERMISSION,
    AGENT_HEADER,
    acting_agent,
    agent_permissions,
    check_agent,
    on_aegra,
    owner_key,
    user_id_of,
)
from engram.memory.conversations import RESERVED_ROOTS
from engram.settings import get_settings
from engram.state.context import validate_agent_id
from engram.state.errors import AccessDeniedError

auth = Auth()
get_settings()  # read the environment (and .env) at startup, never on the event loop

OWNER = "owner"  # the metadata key that owns a thread, run or cron (`identity.owner_key`)
OWNER_USER = "owner_user"  # its user alone, whatever the agent (what forget searches by)
STORE_WILDCARD = "*"  # a namespace label the store matches against any label


@functools.cache
def verifier() -> TokenVerifier:
    """Built on first use from this process's settings (a configuration error is raised
    again on every request: the server refuses everything until it is fixed)."""
    return TokenVerifier.from_settings(get_settings())


@auth.authenticate
async def authenticate(
    authorization: str | Mapping[str, str] | None,
    headers: Mapping[bytes, bytes] | None = None,
) -> Auth.types.MinimalUserDict:
    """LangGraph's server passes the `Authorization` header and the raw headers by name;
    Aegra passes the whole header mapping (lower-case names) as the one argument.

    A request acts as the agent its `X-Engram-Agent` header names, if the token allows it
    (403 otherwise): its threads, runs and crons are that agent's (`identity.owner_key`)."""
    agent: str | bytes | None = None
    if isinstance(authorization, Mapping):
        agent = authorization.get(AGENT_HEADER)
        authorization = authorization.get("authorization")
    elif headers is not None:
        agent = headers.get(AGENT_HEADER.encode())
    try:
        caller = await verifier().caller(authorization)
    except TokenError as error:
        raise Auth.exceptions.HTTPException(status_code=401, detail=str(error)) from None
    permissions = request_permissions(caller, agent)
    return {"identity": caller.user_id, "is_authenticated": True, "permissions": permissions}


def request_permissions(caller: Caller, agent: str | bytes | None) -> list[str]:
    """A request's permissions: the agents its token allows, and the agent its
    `X-Engram-Agent` header (`agent`) says it acts as, which the token must allow (403)."""
    permissions = agent_permissions(caller.agents)
    if agent is None:
        return permissions
    name = agent.decode("utf-8", "replace") if isinstance(agent, bytes) else agent
    try:
        name = validate_agent_id(name)
    except ValueError as error:
        raise forbidden(f"X-Engram-Agent: {error}") from None
    try:
        check_agent({"permissions": permissions}, name)
    except AccessDeniedError as error:
        raise forbidden(str(error)) from None
    return [*permissions, f"{ACTING_PERMISSION}{name}"]


def user_of(ctx: Auth.types.AuthContext) -> str:
    """The Engram user this request acts for, or 403."""
    try:
        return user_id_of(ctx.user)
    except AccessDeniedError as error:
        raise forbidden(str(error)) from None


def owner_of(ctx: Auth.types.AuthContext) -> str:
    """Who owns what this request reads or writes: its user and the agent it acts as."""
    return owner_key(user_of(ctx), acting_agent(ctx.user))


def forbidden(detail: str) -> Auth.exceptions.HTTPException:
    return Auth.exceptions.HTTPException(status_code=403, detail=detail)


def stamp(value: dict[str, Any], owner: str, user_id: str) -> None:
    """Set the owner on what is being written (a client cannot give it away or take it)."""
    metadata = value.get("metadata")
    if metadata is None:
        metadata = value["metadata"] = {}
    metadata[OWNER] = owner
    metadata[OWNER_USER] = user_id


def check_run(kwargs: dict[str, Any], owner: str, user: Any) -> None:
    """A run acts for its owner with allowed models, as the agent its request acts as.
    `context.user_id` may be left out (it is filled in) or name the owner; anything else is
    refused, as is a model outside ENGRAM_ALLOWED_MODELS. `context.agent_id` may be left
    out (the request's agent is filled in) or name it: a run's thread belongs to the agent
    of the request (`owner_of`), so a run as another agent is refused. Clients may send the
    context as `configurable` too: both are checked."""
    acting = acting_agent(user)
    context = kwargs.get("context")
    if not isinstance(context, dict):
        context = kwargs["context"] = {}
    configurable = (kwargs.get("config") or {}).get("configurable") or {}
    permitted = get_settings().permitted_models
    for given in (context, configurable):
        claimed = given.get("user_id")
        if claimed is not None and str(claimed).strip() not in ("", owner):
            raise forbidden(
                f"context.user_id {claimed!r} is not the authenticated user {owner!r}; leave "
                "it out (the server fills it in)"
            )
        agent = given.get("agent_id")
        if agent not in (None, "") and agent != acting:
            raise forbidden(
                f"agent_id {agent!r}: a run acts as the agent of its request; send the header "
                f"X-Engram-Agent: <agent> (its threads are that agent's)"
            )
        for name in ("chat_model", "memory_model"):
            model = given.get(name)
            if model in (None, ""):
                continue
            if not isinstance(model, str) or model not in permitted:
                raise forbidden(
                    f"{name} {model!r} is not allowed on this server; allowed: "
                    f"{', '.join(sorted(permitted))} (ENGRAM_ALLOWED_MODELS)"
                )
    context["user_id"] = owner
    context["agent_id"] = acting


class StudioOriginGuard:
    """Studio's no-token path (`x-auth-scheme: langsmith` under `langgraph dev`) only from
    Studio's own web pages (ENGRAM_STUDIO_ORIGINS).

    The dev server allows cross-origin requests from any origin, so without this any web
    page the developer opens could act as ENGRAM_STUDIO_USER through their browser. A
    browser always names the page's origin on such a request; one without an origin
    header is no browser's (anything that can reach the port can do that anyway).
    Installed on the server's HTTP app, whose middleware LangGraph runs on every route.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = Headers(scope=scope)
            origin = headers.get("origin")
            if (
                headers.get("x-auth-scheme") == "langsmith"
                and origin is not None
                and origin.rstrip("/") not in get_settings().studio_origins
            ):
                detail = (
                    f"Studio requests are accepted from {', '.join(get_settings().studio_origins)} "
                    f"only, not {origin} (ENGRAM_STUDIO_ORIGINS)"
                )
                if scope["type"] == "websocket":
                    await WebSocketClose(code=1008, reason=detail[:120])(scope, receive, send)
                else:
                    await JSONResponse({"detail": detail}, status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


# -- threads and their runs ------------------------------------------------------------------


@auth.on.threads.create
async def on_thread_create(ctx: Auth.types.AuthContext, value: Any) -> Auth.types.FilterType:
    owner = owner_of(ctx)
    stamp(value, owner, user_of(ctx))
    return {OWNER: owner}


@auth.on.threads.create_run
async def on_run_create(ctx: Auth.types.AuthContext, value: Any) -> Auth.types.FilterType | None:
    user_id, owner = user_of(ctx), owner_of(ctx)
    stamp(value, owner, user_id)  # a new thread (a stateless run's too) takes the run's metadata
    if not on_aegra():  # LangGraph's server: the run's settings are under `kwargs`
        kwargs = value.get("kwargs")
        check_run(kwargs if isinstance(kwargs, dict) else {}, user_id, ctx.user)
        return {OWNER: owner}
    # Aegra: `value` is the request body itself (`context` and `config` at its top), and
    # Aegra applies the edits made here only when no filter is returned (it keeps each
    # thread's owner itself and answers 404 to anyone else).
    refuse_agents_on_aegra(ctx)
    check_run(value, user_id, ctx.user)
    return None


@auth.on.threads.update
async def on_thread_update(ctx: Auth.types.AuthContext, value: Any) -> Auth.types.FilterType:
    owner = owner_of(ctx)
    if value.get("metadata") is not None:
        stamp(value, owner, user_of(ctx))
    return {OWNER: owner}


@auth.on.threads(actions=["read", "delete", "search"])
async def on_thread_access(ctx: Auth.types.AuthContext, value: Any) -> Auth.types.FilterType:
    return {OWNER: owner_of(ctx)}


def refuse_agents_on_aegra(ctx: Auth.types.AuthContext) -> None:
    """Aegra keeps each thread's owner itself, by user only: a thread of one agent would be
    open to the user's other agents there, so runs and crons as an agent are refused (fail
    closed). `/memories?agent=` works on Aegra as anywhere."""
    if acting_agent(ctx.user) is not None:
        raise forbidden(
            "runs as an agent need LangGraph's server: Aegra keeps threads per user only"
        )


# -- crons -----------------------------------------------------------------------------------


@auth.on.crons(actions=["create", "update"])
async def on_cron_write(ctx: Auth.types.AuthContext, value: Any) -> Auth.types.FilterType:
    if is_studio_user(ctx.user):  # a cron runs later as a plain user id
        raise forbidden("LangGraph Studio cannot schedule crons; use a token")
    user_id, owner = user_of(ctx), owner_of(ctx)
    if acting_agent(ctx.user) is not None:
        # LangGraph's scheduler starts a cron's runs as the bare user, without the agent of
        # the request that made it: its runs would be refused every time. Say so now.
        raise forbidden(
            "crons cannot act as an agent (their runs start without one); schedule them "
            "without X-Engram-Agent, or run the agent's turns from your own scheduler"
        )
    if value.get("metadata") is not None or "payload" in value:
        stamp(value, owner, user_id)
    payload = value.get("payload")
    if isinstance(payload, dict):
        check_run(payload, user_id, ctx.user)
    elif on_aegra():  # the request body itself; Aegra keeps no edits (identity.run_context)
        check_run(value, user_id, ctx.user)
    return {OWNER: owner}


@auth.on.crons(actions=["read", "delete", "search"])
async def on_cron_access(ctx: Auth.types.AuthContext, value: Any) -> Auth.types.FilterType:
    return {OWNER: owner_of(ctx)}


# -- assistants: the graphs of langgraph.json ------------------------------------------------


@auth.on.assistants(actions=["read", "search"])
async def on_assistant_read(ctx: Auth.types.AuthContext, value: Any) -> None:
    user_of(ctx)  # any authenticated user may see and run the graphs


@auth.on.assistants(actions=["create", "update", "delete"])
async def on_assistant_write(ctx: Auth.types.AuthContext, value: Any) -> None:
    user_of(ctx)
    raise forbidden(
        "assistants are the graphs in the server's langgraph.json and cannot be changed "
        "over the API; per-run settings go in the run's context"
    )


# -- the LangGraph store: each user's items under their own namespace ------------------------


@auth.on.store
async def on_store(ctx: Auth.types.AuthContext, value: Any) -> None:
    """A client's namespace starts with its user id. Engram's own data (conversations and
    ingest markers, `memory.conversations.RESERVED_ROOTS`) starts with a root name, so a user
    id equal to one would reach everyone's, and `*` is the store's wildcard when listing
    namespaces (every user's would match): those user ids get no store API."""
    owner = user_of(ctx)
    if owner in RESERVED_ROOTS or owner == STORE_WILDCARD:
        raise forbidden(
            f"the store API is not available to the user id {owner!r}: Engram keeps its "
            "own data under that name"
        )
    value["namespace"] = (owner, *(value.get("namespace") or ()))


# -- everything else -------------------------------------------------------------------------


@auth.on
async def refuse_everything_else(ctx: Auth.types.AuthContext, value: Any) -> None:
    raise forbidden(f"{ctx.resource}.{ctx.action} is not available on this server")
