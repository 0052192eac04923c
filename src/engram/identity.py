"""Who a run acts for, and what it may touch: the one place where Engram resolves the user
of a run (the authenticated one on a LangGraph server, `context.user_id` from Python) and
checks the agent it acts as, the thread's owner and the models a run names. The graph's
guard, the server's auth handlers, its routes and MCP all ask here."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from langgraph.config import get_config
from langgraph.runtime import Runtime
from langgraph_sdk.auth import is_studio_user

from engram.settings import get_settings
from engram.state.context import EngramContext, validate_user_id
from engram.state.errors import AccessDeniedError, InvalidInputError


def run_context(runtime: Runtime[EngramContext]) -> EngramContext:
    """The validated context; a run without one is refused (the LLM never picks the user).

    Served by a LangGraph server, the run's user is the authenticated one (see
    `authenticated_user`), never the client's word: a context naming someone else is
    refused, one naming nobody acts for it. Called from Python without a server,
    `context.user_id` names the user."""
    context = runtime.context
    if context is None:
        context = EngramContext()
    elif isinstance(context, dict):
        context = EngramContext.model_validate(context)
    identity = authenticated_user(runtime)
    if runtime.server_info is not None:
        user = runtime.server_info.user
        check_agent(user, context.agent_id)
        acting = acting_agent(user)
        if acting is not None and acting != context.agent_id:  # the run's thread is acting's
            raise AccessDeniedError(
                f"this request acts as agent {acting!r} (X-Engram-Agent); its runs do too"
            )
    if not context.user_id:
        # A server that did not pass the auth handler's context on (Aegra, for crons and
        # runs) still names the user it authenticated.
        if identity is None:
            raise InvalidInputError("every run needs context={'user_id': ...}")
        return context.model_copy(update={"user_id": identity})
    if identity is not None and identity != context.user_id:
        raise AccessDeniedError(
            f"context.user_id {context.user_id!r} is not the authenticated user "
            f"{identity!r}; leave it out (the server fills it in)"
        )
    return context


def authenticated_user(runtime: Runtime[Any]) -> str | None:
    """The user a LangGraph server authenticated for this run, or None outside a server.

    The server puts its user into `runtime.server_info` (and the id into
    `configurable.langgraph_auth_user_id`, a key clients cannot set). A run that came
    through a server without authentication is refused: fail closed."""
    server = runtime.server_info
    if server is None:
        return None
    if server.user is not None:
        return user_id_of(server.user)
    try:
        configurable = get_config().get("configurable") or {}
    except RuntimeError:  # not inside a run
        configurable = {}
    identity = configurable.get("langgraph_auth_user_id")
    if isinstance(identity, str) and identity:
        return validate_user_id(identity)
    raise AccessDeniedError(
        "this run came through a LangGraph server without an authenticated user; "
        "serve Engram with its langgraph.json (custom auth on)"
    )


AGENT_PERMISSION = "agent:"  # + an agent id, or `*`: what a token's agents claim grants
# + the agent a request acts as (its `X-Engram-Agent` header, checked against the token when
# it is authenticated).
ACTING_PERMISSION = "acting:"
AGENT_HEADER = "x-engram-agent"


def agent_permissions(agents: Iterable[str]) -> list[str]:
    """The permissions a server's authenticated user carries for the agents its token
    allows (LangGraph keeps them on the user, in every handler, route and run)."""
    return [f"{AGENT_PERMISSION}{agent}" for agent in sorted(agents)]


def permissions_of(user: Any) -> set[str]:
    permissions = getattr(user, "permissions", None)
    if permissions is None and isinstance(user, Mapping):
        permissions = user.get("permissions")
    return set(permissions or ())


def acting_agent(user: Any) -> str | None:
    """The agent a server request acts as (its `X-Engram-Agent` header), or None."""
    for permission in permissions_of(user):
        if permission.startswith(ACTING_PERMISSION):
            return permission.removeprefix(ACTING_PERMISSION)
    return None


def owner_key(user_id: str, agent_id: str | None) -> str:
    """Who owns a thread, run or cron on a server: the user, and the agent it acts as. A
    thread holds what its agent recalled, so another agent of the user (or a caller acting
    as none) must not read or continue it. Without an agent, the user id itself, as threads
    from before agents are stamped. `\x1f` cannot be in a user id, so no user poses as
    another's agent."""
    return user_id if agent_id is None else f"{user_id}\x1fagent:{agent_id}"


def check_agent(user: Any, agent_id: str | None) -> None:
    """A server's caller may act as an agent only if its token allows it (the agents claim,
    kept as the user's permissions); the client's word is never enough. No agent is always
    allowed: the user's shared memories are theirs. LangGraph Studio under `langgraph dev`
    acts as the developer's chosen test user, for any of its agents."""
    if agent_id is None:
        return
    if user is not None and is_studio_user(user):
        user_id_of(user)  # refused on a deployment, or without ENGRAM_STUDIO_USER
        return
    granted = permissions_of(user)
    if f"{AGENT_PERMISSION}{agent_id}" in granted or f"{AGENT_PERMISSION}*" in granted:
        return
    raise AccessDeniedError(
        f"this token does not allow agent {agent_id!r}; its issuer lists the agents a "
        "token may act as in its agents claim (ENGRAM_AUTH_AGENTS_CLAIM)"
    )


def on_aegra() -> bool:
    """Served by Aegra (`aegra serve`), an open reimplementation of LangGraph's server, rather
    than LangGraph's own: Aegra's app module is the one that loads Engram's auth and routes.
    Its auth handlers get other arguments, and it has no in-process API."""
    return "aegra_api.main" in sys.modules


def user_id_of(user: Any) -> str:
    """The Engram user an authenticated LangGraph user acts as (the server's auth
    handlers, routes and nodes all ask here).

    A JWT user is its `sub`. LangGraph Studio under `langgraph dev` arrives as LangGraph's
    Studio user without any token, so it acts only as the user the developer named in
    ENGRAM_STUDIO_USER; it is refused when that is unset and always on a deployment."""
    if is_studio_user(user):
        if os.environ.get("LANGSMITH_LANGGRAPH_API_VARIANT") != "local_dev":
            raise AccessDeniedError(
                "LangGraph Studio cannot act as a user on a deployment; "
                "clients send Authorization: Bearer <token>"
            )
        studio_user = get_settings().studio_user
        if studio_user is None:
            raise AccessDeniedError(
                "LangGraph Studio is refused until you choose its user: set "
                "ENGRAM_STUDIO_USER=<user id> for langgraph dev (anyone who reaches the dev "
                "server acts as that user; pick a test user)"
            )
        return validate_user_id(studio_user)
    authenticated = getattr(user, "is_authenticated", None)
    if authenticated is None and isinstance(user, Mapping):
        authenticated = user.get("is_authenticated")
    if authenticated is False:  # Aegra's stand-in when its auth module did not load
        raise AccessDeniedError(
            "the server did not authenticate this user (is its custom auth loaded? see the "
            "server's log)"
        )
    identity = getattr(user, "identity", None)
    if identity is None and isinstance(user, Mapping):
        identity = user.get("identity")
    if not isinstance(identity, str):
        raise AccessDeniedError("the authenticated user has no identity")
    try:
        return validate_user_id(identity)
    except ValueError as error:
        raise AccessDeniedError(f"the authenticated user id is not valid: {error}") from None


def check_thread_owner(state: Mapping[str, Any], context: EngramContext) -> None:
    """A thread belongs to the user of its first turn; nobody else may continue it
    (they would see the conversation and could apply its pending facts). It also keeps
    the agent of its first turn (none, for threads from before agents): its messages hold
    what that agent recalled, which another agent, or a run without one, must not see."""
    owner = state.get("user_id")
    if owner is None:
        return
    if owner != context.user_id:
        raise AccessDeniedError(
            f"this thread belongs to another user; start a new thread for {context.user_id!r}"
        )
    agent = state.get("agent_id")
    if agent != context.agent_id:
        started = f"agent {agent!r}" if agent else "no agent"
        raise AccessDeniedError(
            f"this thread was started with {started}; start a new thread for agent "
            f"{context.agent_id!r}"
            if context.agent_id
            else f"this thread was started with {started}; continue it with that agent"
        )


def check_models(context: EngramContext, permitted: frozenset[str]) -> None:
    """A run may only name models the operator allows (ENGRAM_ALLOWED_MODELS): anyone who
    can start a run would otherwise bill any model to the operator's key."""
    for name, value in (("chat_model", context.chat_model), ("memory_model", context.memory_model)):
        if value and value not in permitted:  # empty: the configured default
            raise AccessDeniedError(
                f"{name} {value!r} is not allowed on this server; allowed: "
                f"{', '.join(sorted(permitted))} (ENGRAM_ALLOWED_MODELS)"
            )
