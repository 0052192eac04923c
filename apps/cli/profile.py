"""`engram profile ...`: the user's profile (the lasting core facts always in the chat
prompt, each line resting on memories), its versions, and pins; on the embedded store or,
with `--server`, a running server's `/memories/profile` routes, with the same output. The
profile is every agent's (built from shared memories only); `--agent` decides which
memories the ids are told apart among, and on a server what the token must allow."""

from __future__ import annotations

import json
from collections.abc import Sequence

from rich import box
from rich.table import Table

from engram.apps.cli.common import Agent, AsJson, User, out, profile_app, require_agent
from engram.apps.cli.memories import (
    Server,
    Token,
    _common_prefix,
    _source_text,
    cli_source,
    open_memories,
    resolve_id,
    short_ids,
)
from engram.apps.cli.remote import Memories
from engram.state.contracts import Profile
from engram.state.errors import InvalidInputError, MemoryNotFoundError


@profile_app.command("show")
def show_profile(
    user: User,
    agent: Agent = None,
    as_json: AsJson = False,
    server: Server = None,
    token: Token = None,
) -> None:
    """The profile as the chatbot sees it: each line with the memories it rests on, and
    the pinned memories."""
    scope = require_agent(agent)
    store = open_memories(user, server, token, scope)
    profile = store.profile(user)
    if as_json:
        out.print_json(profile.model_dump_json())
        return
    if profile.version_id is None:
        out.print(f"no profile yet for {user}")
        return
    _print_profile(store, user, profile, scope)
    waiting = _awaiting_revision(store.profile(user, as_stored=True), profile)
    if waiting:
        out.print(
            f"{waiting} line(s) wait for the next update: a memory they rest on changed "
            f"(`engram profile history --user {user}`)"
        )


@profile_app.command("history")
def profile_history(
    user: User,
    agent: Agent = None,
    as_json: AsJson = False,
    server: Server = None,
    token: Token = None,
) -> None:
    """Every version of the profile, oldest first: when, what made it, its lines and pins."""
    scope = require_agent(agent)
    store = open_memories(user, server, token, scope)
    versions = store.profile_history(user)
    if as_json:
        out.print_json(json.dumps([v.model_dump(mode="json") for v in versions]))
        return
    if not versions:
        out.print(f"no profile yet for {user}")
        return
    short = short_versions([v.version_id or "" for v in versions])
    memory_short = short_ids(store, user, scope)
    table = Table(title=f"profile history of {user}", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("version", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("events", ratio=1, min_width=16)
    table.add_column("lines", ratio=2, min_width=20)
    table.add_column("pinned", no_wrap=True)
    for v in versions:
        events = "\n".join(
            f"{e.at:%Y-%m-%d %H:%M} {e.op} {_source_text(e.source)}"
            + (f" ({_shortened(e.detail, memory_short, short)})" if e.detail else "")
            for e in v.events
        )
        lines = "\n".join(line.text for line in v.lines)
        pins = "\n".join(memory_short.get(i, i) for i in v.pinned)
        table.add_row(short.get(v.version_id or "", ""), v.status, events, lines, pins)
    out.print(table)


@profile_app.command("restore")
def restore_profile(
    version_id: str,
    user: User,
    agent: Agent = None,
    as_json: AsJson = False,
    server: Server = None,
    token: Token = None,
) -> None:
    """Make an earlier version (an id or a prefix from `history`) the current one."""
    scope = require_agent(agent)
    store = open_memories(user, server, token, scope)
    wanted = resolve_version(store, user, version_id)
    restored = store.restore_profile(user, wanted, source=cli_source(scope))
    if as_json:
        out.print_json(restored.model_dump_json())
        return
    out.print(f"restored version {wanted} as version {restored.version_id}")
    _print_profile(store, user, store.profile(user), scope)


@profile_app.command("pin")
def pin_memory(
    memory_id: str,
    user: User,
    agent: Agent = None,
    as_json: AsJson = False,
    server: Server = None,
    token: Token = None,
) -> None:
    """Pin an active shared memory (an id or a prefix): it always appears in the profile
    (every agent's; an agent's own memory cannot be pinned)."""
    scope = require_agent(agent)
    store = open_memories(user, server, token, scope)
    memory_id = resolve_id(store, user, memory_id, scope)
    pinned = store.pin(user, memory_id, source=cli_source(scope), agent_id=scope)
    _print_changed(store, user, pinned, as_json, scope)


@profile_app.command("unpin")
def unpin_memory(
    memory_id: str,
    user: User,
    agent: Agent = None,
    as_json: AsJson = False,
    server: Server = None,
    token: Token = None,
) -> None:
    """Unpin a memory: it stays in the profile only while a line rests on it."""
    scope = require_agent(agent)
    store = open_memories(user, server, token, scope)
    memory_id = resolve_id(store, user, memory_id, scope)
    unpinned = store.unpin(user, memory_id, source=cli_source(scope))
    _print_changed(store, user, unpinned, as_json, scope)


def resolve_version(store: Memories, user_id: str, given: str) -> str:
    """A full version id from what the user typed: a whole id, or a prefix unique among
    the user's own profile versions (another user's are never matched)."""
    wanted = given.strip().casefold()
    if len(wanted) == 36:
        return wanted
    if len(wanted) < 4:
        raise InvalidInputError(f"version id {given!r} is too short; give at least 4 characters")
    ids = [v.version_id for v in store.profile_history(user_id) if v.version_id]
    matches = [i for i in ids if i.startswith(wanted)]
    if not matches:
        raise MemoryNotFoundError(
            f"no profile version {given!r} for user {user_id!r} "
            f"(`engram profile history --user {user_id}` lists them)"
        )
    if len(matches) > 1:
        raise InvalidInputError(
            f"version id {given!r} matches {len(matches)} versions; give more characters"
        )
    return matches[0]


def short_versions(ids: Sequence[str], minimum: int = 8) -> dict[str, str]:
    """The shortest prefix (at least `minimum` characters) that tells each version apart."""
    ordered = sorted(ids)
    short: dict[str, str] = {}
    for index, version_id in enumerate(ordered):
        neighbours = ordered[max(index - 1, 0) : index] + ordered[index + 1 : index + 2]
        shared = max((_common_prefix(version_id, other) for other in neighbours), default=0)
        short[version_id] = version_id[: max(minimum, shared + 1)]
    return short


def _print_profile(
    store: Memories, user_id: str, profile: Profile, scope: str | None = None
) -> None:
    short = short_ids(store, user_id, scope)
    when = f", updated {profile.updated_at:%Y-%m-%d %H:%M}" if profile.updated_at else ""
    title = f"profile of {user_id} (version {(profile.version_id or '')[:8]}{when})"
    if not profile.lines:
        out.print(f"{title}: no lines")
        return
    pinned = set(profile.pinned)
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("line", ratio=1, min_width=20)
    table.add_column("rests on", no_wrap=True)
    for line in profile.lines:
        ids = [short.get(i, i) + (" (pinned)" if i in pinned else "") for i in line.memory_ids]
        table.add_row(line.text, "\n".join(ids))
    out.print(table)


def _print_changed(
    store: Memories, user_id: str, profile: Profile, as_json: bool, scope: str | None = None
) -> None:
    if as_json:
        out.print_json(profile.model_dump_json())
    else:
        _print_profile(store, user_id, profile, scope)


def _awaiting_revision(stored: Profile, shown: Profile) -> int:
    """Lines of the stored version the chatbot does not see (a memory changed)."""
    texts = {line.text for line in shown.lines}
    return sum(1 for line in stored.lines if line.text not in texts)


def _shortened(detail: str, *shorts: dict[str, str]) -> str:
    """An event's detail ("pinned <id>", "restored from <id>") with its ids shortened."""
    words = detail.split(" ")
    for table in shorts:
        words = [table.get(word, word) for word in words]
    return " ".join(words)
