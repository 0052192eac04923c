"""`engram forget`, `engram export`, `engram import`. The store and its transfer code load
inside the commands (see apps/cli/common.py: the `engram` command starts light)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import typer

from engram.apps.cli.common import (
    Agent,
    AllAgents,
    User,
    agent_scope,
    app,
    conversations,
    err,
    open_store,
    out,
    prompt_history_path,
    require_agent,
    require_user,
    user_threads,
)
from engram.settings import Settings, get_settings
from engram.state.context import ALL_AGENTS


@app.command()
def forget(
    user: User,
    agent: Annotated[
        str | None,
        typer.Option(
            "--agent",
            help="Erase only this agent's own memories (the shared ones, the profile and "
            "the conversations stay).",
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Erase EVERYTHING about a user: every memory version (every agent's), their profile
    and their conversations; with --agent, only that agent's own memories."""
    user_id = require_user(user)
    agent_id = require_agent(agent)
    settings = get_settings()
    store = open_store()
    if agent_id is not None:
        own = [r for r in store.memories(user_id, status=None, agent_id=agent_id) if r.agent_id]
        if not yes and not typer.confirm(
            f"Erase the {len(own)} memory versions agent {agent_id} keeps for {user_id}? "
            "(Shared memories, the profile and conversations stay.)"
        ):
            raise typer.Abort()
        erased = store.forget(user_id, agent_id=agent_id)
        out.print(
            f"Erased {erased} memory versions agent {agent_id} kept for {user_id}; the shared "
            "memories, the profile and the conversations stay."
        )
        return
    total = store.count(user_id, agent_id=ALL_AGENTS)
    if not yes and not typer.confirm(
        f"Erase all {total} memory versions, the profile and all conversations of {user_id}?"
    ):
        raise typer.Abort()
    erased = store.forget(user_id)
    threads = asyncio.run(_forget_conversations(settings, user_id))
    prompt_history_path(settings, user_id).unlink(missing_ok=True)  # what they typed
    out.print(
        f"Erased {erased} memory versions, the profile and {threads} conversation(s) of {user_id}."
    )


async def _forget_conversations(settings: Settings, user_id: str) -> int:
    """Delete the user's threads (checkpoints) and every message of theirs that moved to
    the conversation store, then fold the write-ahead log into the file: deleted rows are
    zeroed (`secure_delete`), and no old copy of a page stays behind in the log."""
    from engram.memory.conversations import forget_conversations

    if not settings.conversations_path.exists():
        return 0
    async with conversations(settings) as conv:
        threads = await user_threads(conv, user_id)
        for thread_id in threads:
            await conv.saver.adelete_thread(thread_id)
        await forget_conversations(conv.store, user_id)
        await conv.saver.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return len(threads)


@app.command("export")
def export_memories(
    user: User,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")
    ] = None,
    agent: Agent = None,
    all_agents: AllAgents = False,
) -> None:
    """Export every version of a user's memories, and their profile, as JSON Lines: the
    shared memories, and --agent's own or with --all-agents every agent's."""
    from engram.memory.transfer import export_file, export_jsonl

    scope = agent_scope(agent, all_agents)
    store = open_store()
    if output is None:
        count = export_jsonl(store, user, sys.stdout, agent_id=scope)
    else:
        count = export_file(store, user, output, agent_id=scope)
    whose = ""
    if scope is ALL_AGENTS:
        whose = " (every agent's)"
    elif scope is not None:
        whose = f" (the shared ones and agent {scope}'s own)"
    left = 0 if scope is ALL_AGENTS else store.count(user, agent_id=ALL_AGENTS) - count
    if left > 0:  # said, so nobody takes a shared-only export for a whole backup
        whose += f"; {left} of other agents' own left out (--all-agents exports them)"
    err.print(f"exported {count} memory versions of {user}{whose}")


@app.command("import")
def import_memories(
    path: Annotated[
        Path, typer.Argument(help="An `engram export` file.", exists=True, dir_okay=False)
    ],
    as_user: Annotated[str | None, typer.Option("--as-user", help="Import as this user.")] = None,
    agent: Annotated[
        str | None,
        typer.Option(
            "--agent",
            help="Import as this agent: the file may hold only shared memories and its own "
            "(default: every memory keeps its scope).",
        ),
    ] = None,
) -> None:
    """Import an export (all or nothing); re-embeds when the embedding model differs. Each
    memory keeps its scope (shared, or an agent's own). Its profile is imported for a user
    who has none."""
    from rich.progress import Progress, TaskID

    from engram.memory.transfer import import_jsonl

    agent_id = require_agent(agent)
    store = open_store()
    bar = Progress(console=err, transient=True)
    task: TaskID | None = None

    def progress(done: int, total: int) -> None:
        nonlocal task
        if task is None:  # only shown when re-embedding actually happens
            bar.start()
            task = bar.add_task("re-embedding", total=total)
        bar.update(task, completed=done)

    try:
        with path.open(encoding="utf-8") as handle:
            report = import_jsonl(
                store,
                handle,
                as_user=as_user,
                agent_id=ALL_AGENTS if agent_id is None else agent_id,
                on_progress=progress,
            )
    finally:
        if task is not None:
            bar.stop()
    note = f", {report.re_embedded} re-embedded" if report.re_embedded else ""
    note += f", {report.skipped} already present (kept)" if report.skipped else ""
    out.print(f"imported {report.imported} memory versions for {report.user_id}{note}")
    profile = report.profile
    if profile is None:
        return
    if profile.result == "kept":
        out.print(f"profile: {report.user_id}'s own is kept (the file's is not imported)")
    elif profile.result == "imported":
        out.print(f"profile: {profile.lines} line(s) and {profile.pinned} pin(s) imported")
    else:
        out.print("profile: nothing imported (no line rests on an imported memory)")
    for dropped in profile.dropped:
        what = "pin" if dropped.op == "PIN" else "line"
        err.print(f"  left out {what} {dropped.text!r}: {dropped.reason}")
