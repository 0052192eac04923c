"""`engram forget`, `engram export`, `engram import`. The store and its transfer code load
inside the commands (see apps/cli/common.py: the `engram` command starts light)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import typer

from engram.apps.cli.common import (
    User,
    app,
    conversations,
    err,
    open_store,
    out,
    prompt_history_path,
    require_user,
    user_threads,
)
from engram.settings import Settings, get_settings


@app.command()
def forget(
    user: User,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Erase EVERYTHING about a user: every memory version, their profile and their
    conversations."""
    user_id = require_user(user)
    settings = get_settings()
    store = open_store()
    total = store.count(user_id)
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
) -> None:
    """Export every version of a user's memories, and their profile, as JSON Lines."""
    from engram.memory.transfer import export_jsonl

    store = open_store()
    if output is None:
        count = export_jsonl(store, user, sys.stdout)
    else:
        with output.open("w", encoding="utf-8") as handle:
            count = export_jsonl(store, user, handle)
    err.print(f"exported {count} memory versions of {user}")


@app.command("import")
def import_memories(
    path: Annotated[
        Path, typer.Argument(help="An `engram export` file.", exists=True, dir_okay=False)
    ],
    as_user: Annotated[str | None, typer.Option("--as-user", help="Import as this user.")] = None,
) -> None:
    """Import an export (all or nothing); re-embeds when the embedding model differs. Its
    profile is imported for a user who has none."""
    from rich.progress import Progress, TaskID

    from engram.memory.transfer import import_jsonl

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
            report = import_jsonl(store, handle, as_user=as_user, on_progress=progress)
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
