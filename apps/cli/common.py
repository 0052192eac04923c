"""What the `engram` commands share: the app, consoles that print user text exactly,
conversation storage and the compiled graph.

Light on purpose: `engram --help`, and `engram chat` up to its prompt, must not wait for
LangGraph's graph machinery, DSPy, the OpenAI clients, Qdrant or torch (together ~2 s, and
~5 s with a local embedding model). Those are imported inside the functions that use them,
and `engram memories ...` is imported when one of its commands runs (`LazyGroup`).
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import shlex
import sqlite3
import unicodedata
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from engram.settings import Settings, get_settings
from engram.state.context import ALL_AGENTS, AgentScope, validate_agent_id, validate_user_id
from engram.state.contracts import CHANGES
from engram.state.errors import InvalidInputError

log = logging.getLogger("engram")

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage
    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
    from langgraph.graph.state import CompiledStateGraph
    from langgraph.store.sqlite.aio import AsyncSqliteStore

    from engram.clients import Clients
    from engram.memory.store import MemoryStore


class LazyGroup(TyperGroup):
    """A command group whose commands a module registers when the group is first used, so
    `engram --help` and `engram chat` never import it (and what it imports)."""

    module = ""  # set by subclasses: the module whose import registers the commands
    app: typer.Typer

    def _load(self) -> None:
        if not self.commands:
            importlib.import_module(self.module)
            self.commands.update(typer.main.get_group(self.app).commands)

    # `Any`: typer vendors click privately (typer._click), so its types have no public name.
    def list_commands(self, ctx: Any) -> list[str]:
        self._load()
        return super().list_commands(ctx)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        self._load()
        return super().get_command(ctx, cmd_name)


class _MemoriesGroup(LazyGroup):
    module = "engram.apps.cli.memories"


app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Engram: long-term, per-user memory for chatbots.",
)
memories_app = typer.Typer(
    cls=_MemoriesGroup, no_args_is_help=True, help="Inspect and manage a user's memories."
)
_MemoriesGroup.app = memories_app
app.add_typer(memories_app, name="memories")


class _ProfileGroup(LazyGroup):
    module = "engram.apps.cli.profile"


profile_app = typer.Typer(
    cls=_ProfileGroup,
    no_args_is_help=True,
    help="Show a user's profile (the core facts always in the chat prompt), its versions, pins.",
)
_ProfileGroup.app = profile_app
app.add_typer(profile_app, name="profile")


def escape_controls(text: str) -> str:
    """Control characters (other than newline and tab) written out as `\\x1b`, `\\u009b`:
    stored text reaches the terminal as text, never as a command (clear the screen, set
    the title, move the cursor). The stored text itself is unchanged."""
    return "".join(
        character
        if character in "\n\t" or unicodedata.category(character) != "Cc"
        else (f"\\x{ord(character):02x}" if ord(character) < 0x80 else f"\\u{ord(character):04x}")
        for character in text
    )


class TerminalConsole(Console):
    """A console that never interprets what it prints: no markup (`[b]`), no emoji
    (`:bee:`), no control characters (`escape_controls`), for every string it is given,
    table cells included. Styling is explicit (`Text`, built with `escape_controls`)."""

    def render_str(self, text: str, **options: Any) -> Text:
        return super().render_str(escape_controls(text), **options)

    def print_json(self, json: str | None = None, **options: Any) -> None:
        """JSON with every non-ASCII character as `\\uXXXX`, C1 controls included."""
        super().print_json(json, **{**options, "ensure_ascii": True})


# Memories, user ids, queries, model answers and errors all carry text from users and
# models. soft_wrap: plain lines (errors, ids) stay one line.
out = TerminalConsole(markup=False, emoji=False, highlight=False, soft_wrap=True)
err = TerminalConsole(stderr=True, markup=False, emoji=False, highlight=False, soft_wrap=True)

User = Annotated[str, typer.Option("--user", "-u", help="Whose memories.")]
Thread = Annotated[str, typer.Option("--thread", "-t", help="Conversation name.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
Agent = Annotated[
    str | None,
    typer.Option(
        "--agent",
        help="Act as this agent: the shared memories and its own (default: shared only).",
    ),
]
AllAgents = Annotated[
    bool,
    typer.Option(
        "--all-agents",
        help="Every agent's memories, and the shared ones (the local store only).",
    ),
]
EXIT_WORDS = {"/quit", "/exit", "quit", "exit"}
PROMPT = "you> "
SPEAKERS = {"human": "you> ", "ai": "bot> "}


def require_user(user_id: str) -> str:
    """The run context's rule for user ids (`engram.memory.store.require_user_id` without
    importing the store)."""
    try:
        return validate_user_id(user_id)
    except ValueError as error:
        raise InvalidInputError(str(error)) from None


def require_agent(agent_id: str | None) -> str | None:
    """`--agent` by the run context's rule for agent ids; None when not given."""
    return None if agent_id is None else agent_option(agent_id)


def agent_option(value: str, option: str = "--agent") -> str:
    """An option's agent id by the run context's rule, or one line saying what is wrong."""
    if value.strip() == "*":
        hint = "; --all-agents reads every agent's memories" if option == "--agent" else ""
        raise InvalidInputError(
            f"{option} '*' names no agent (in a token it means any agent){hint}"
        )
    try:
        return validate_agent_id(value)
    except ValueError as error:
        raise InvalidInputError(f"{option} {value!r}: {error}") from None


def agent_scope(agent_id: str | None, all_agents: bool, server: str | None = None) -> AgentScope:
    """Whose memories a command sees: `--agent`'s (and the shared ones), every agent's
    with `--all-agents` (the operator's view of the local store, which a server never
    gives), or the shared ones only."""
    agent = require_agent(agent_id)
    if not all_agents:
        return agent
    if agent is not None:
        raise InvalidInputError("give --agent or --all-agents, not both")
    if server is not None:
        raise InvalidInputError(
            "--all-agents reads the local store only: a server shows what its token's agent "
            "sees; leave out --server, or give --agent"
        )
    return ALL_AGENTS


def scope_text(scope: AgentScope) -> str:
    """A scope in words, for titles and messages."""
    if scope is ALL_AGENTS:
        return "every agent's"
    return "shared" if scope is None else f"agent {scope}"


def prompt_history_path(settings: Settings, user_id: str) -> Path:
    """The file of what the user typed at the chat prompt (up-arrow recall). Its name is
    the user id escaped so that no id is a path of its own (`.`, `..`, `a/b`), and cut
    with a hash of the id when it is too long for a file name. A file named by an earlier
    version (unescaped periods) is moved here, so nobody's history is left behind."""
    from engram.memory.conversations import label  # the store's escaping, loaded late

    name = label(user_id)
    if len(name) > MAX_FILE_NAME:
        digest = hashlib.sha256(user_id.encode()).hexdigest()[:16]
        name = f"{name[: MAX_FILE_NAME - 17]}-{digest}"
    path = settings.data_dir / "history" / name
    earlier = settings.data_dir / "history" / quote(user_id, safe="")
    if earlier != path and earlier.is_file() and not path.exists():
        earlier.replace(path)
    return path


MAX_FILE_NAME = 200  # characters of an escaped user id in a file name (limits are ~255 bytes)


def thread_id_for(user_id: str, thread: str, agent_id: str | None = None) -> str:
    """CLI thread ids are namespaced by user, and by agent (escaped, so no two users or
    agents can ever map to the same conversation). A thread keeps the agent of its first
    turn, so each agent has threads of its own under the same names."""
    base = f"cli:{quote(user_id, safe='')}:{quote(thread, safe='')}"
    return base if agent_id is None else f"{base}:{quote(agent_id, safe='')}"


def thread_config(user_id: str, thread_id: str) -> RunnableConfig:
    """A CLI run's config: the user id goes into every checkpoint's metadata, which is how
    `user_threads` (retry, forget) finds a user's conversations."""
    return {"configurable": {"thread_id": thread_id}, "metadata": {"user_id": user_id}}


# -- conversations ----------------------------------------------------------------------------


@dataclass
class Conversations:
    """The CLI's conversation file, `conversations.sqlite`: each thread's checkpoints (its
    state, which keeps a bounded window of messages) and LangGraph's store, where older
    messages move (`engram.memory.conversations`). Two connections to one file: the saver
    commits after each write, the store runs its own transactions."""

    saver: AsyncSqliteSaver
    store: AsyncSqliteStore


@asynccontextmanager
async def conversations(settings: Settings) -> AsyncIterator[Conversations]:
    """The SQLite file that keeps the CLI's conversations between runs.

    `secure_delete` on both connections: rows deleted by `engram forget` (or by LangGraph)
    are overwritten, not left readable in the file's free pages.
    """
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
    from langgraph.store.sqlite.aio import AsyncSqliteStore

    from engram.state.checkpoints import checkpoint_serde

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path = str(settings.conversations_path)
    async with AsyncSqliteSaver.from_conn_string(path) as saver:
        saver.serde = checkpoint_serde()
        await saver.setup()  # WAL mode first, before a second connection opens the file
        await saver.conn.execute("PRAGMA secure_delete = ON")
        async with AsyncSqliteStore.from_conn_string(path) as store:
            await store.conn.execute("PRAGMA secure_delete = ON")
            await store.setup()
            yield Conversations(saver, store)


def compiled_graph(
    settings: Settings, conversations: Conversations, clients: Clients | None = None
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The chat graph on the conversation file: checkpoints, and the store that old
    messages move to. Imports the graph (slow: run it off the event loop when it matters)."""
    from engram.clients import Clients
    from engram.graph import build_graph

    return build_graph(clients or Clients(settings)).compile(
        checkpointer=conversations.saver, store=conversations.store
    )


async def prune_checkpoints(conversations: Conversations, thread_id: str) -> None:
    """Keep only the thread's latest checkpoint (with its pending writes).

    LangGraph writes a checkpoint of the whole state after every step: 8 a turn, ~14 KB
    each even with the bounded message window (recalled memories, candidates, ...), so
    ~110 KB a turn that the CLI never reads again: it has no time travel, and a thread
    resumes from its latest checkpoint and that checkpoint's writes. Measured with
    benchmarks/thread_growth.py: 6.9 MB after 50 turns without pruning.
    """
    async with conversations.saver.lock:
        await _drop_older_checkpoints(conversations.saver, thread_id)


async def _drop_older_checkpoints(saver: AsyncSqliteSaver, thread_id: str | None) -> None:
    """Delete every checkpoint (and its writes) but the latest of each thread and
    namespace: of one thread, or of all when `thread_id` is None. The caller holds the
    saver's lock."""
    latest = (
        "SELECT MAX(checkpoint_id) FROM checkpoints AS newest WHERE newest.thread_id = "
        "{table}.thread_id AND newest.checkpoint_ns = {table}.checkpoint_ns"
    )
    scope, params = ("thread_id = ? AND ", (thread_id,)) if thread_id is not None else ("", ())
    for table in ("writes", "checkpoints"):  # writes first: they are found by checkpoints
        await saver.conn.execute(
            f"DELETE FROM {table} WHERE {scope}checkpoint_id < ({latest.format(table=table)})",
            params,
        )
    await saver.conn.commit()


COMPACT_MIN_FREE_BYTES = 4 * 2**20  # below this, free pages are left for reuse


async def compact(
    conversations: Conversations, min_free_bytes: int = COMPACT_MIN_FREE_BYTES
) -> int:
    """Bring a conversation file from an earlier version down to size; returns the bytes
    given back to the disk (0 when there was nothing worth doing).

    Earlier versions kept every checkpoint of every thread, each with the whole
    conversation: 108 MB after 200 turns. The old messages are safe in each thread's
    latest checkpoint (respond moves them to the store on the thread's next turn), so
    the older checkpoints go, for every thread at once; SQLite then holds the space as
    free pages, which only VACUUM returns. Another process reading the file makes VACUUM
    fail with "database is locked": skipped then, and tried again on the next start.
    """
    saver = conversations.saver
    async with saver.lock:
        await _drop_older_checkpoints(saver, None)
        rows = await saver.conn.execute_fetchall(
            "SELECT freelist_count * page_size FROM pragma_freelist_count(), pragma_page_size()"
        )
        free = int(next(iter(rows))[0])
        if free == 0 or free < min_free_bytes:
            return 0
        try:
            await saver.conn.execute("VACUUM")
        except sqlite3.OperationalError as error:
            log.info("conversations.sqlite is not compacted this time: %s", error)
            return 0
    return free


async def user_threads(conversations: Conversations, user_id: str) -> list[str]:
    """Conversations recorded for this user (their checkpoints carry the user id)."""
    threads: dict[str, None] = {}
    async for checkpoint in conversations.saver.alist(None, filter={"user_id": user_id}):
        threads[checkpoint.config["configurable"]["thread_id"]] = None
    return list(threads)


async def state_messages(conversations: Conversations, thread_id: str) -> list[BaseMessage]:
    """The messages in a thread's latest state (its recent window), read from the
    checkpoint without the graph."""
    latest = await conversations.saver.aget_tuple({"configurable": {"thread_id": thread_id}})
    if latest is None:
        return []
    return list(latest.checkpoint["channel_values"].get("messages") or [])


async def transcript(
    conversations: Conversations,
    user_id: str,
    thread_id: str,
    *,
    window: int | None = None,
    last: int | None = None,
) -> list[BaseMessage]:
    """A thread's conversation, oldest first (or its `last` messages): what moved to the
    store, then the state's window."""
    from engram.memory.conversations import conversation

    window = window if window is not None else get_settings().history_window
    in_state = await state_messages(conversations, thread_id)
    return await conversation(
        conversations.store, user_id, thread_id, in_state, window=window, last=last
    )


def print_messages(
    messages: Sequence[BaseMessage], *, max_chars: int | None = None, style: str = ""
) -> None:
    """User and assistant messages as the chat showed them ("you> ", "bot> "); texts
    longer than `max_chars` are cut with an ellipsis."""
    for message in messages:
        speaker = SPEAKERS.get(message.type)
        if speaker is None:
            continue
        text = str(message.text)
        if max_chars is not None and len(text) > max_chars:
            text = text[:max_chars].rstrip() + " …"
        out.print(Text(speaker + escape_controls(text), style=style))


# -- chat ------------------------------------------------------------------------------------


NEWS = {"added": "+", "updated": "~", "deleted": "−", "restored": "+"}


def print_memory_update(update: dict[str, Any]) -> None:
    """One line per change, naming the memory (a deletion says how to undo it), then the
    memory steps' failure if any. Rejections are the nodes' log lines (`log_to_stderr`),
    so they show once. In the chat these lines print above the prompt (`patch_stdout`)."""
    user_id = update.get("user_id")
    agent_id = update.get("agent_id")
    for op in update.get("applied") or []:
        if op.result not in CHANGES:
            continue
        short = (op.memory_id or "?")[:8]
        line = f"{NEWS[op.result]} {op.result}: {op.text or ''} ({short})"
        if op.result == "deleted" and op.memory_id:
            restore = ["engram", "memories", "restore", short]
            restore += ["--user", user_id] if user_id else []
            restore += ["--agent", agent_id] if agent_id else []
            line = (
                f"{NEWS[op.result]} {op.result}: {op.text or ''} (restore: {shlex.join(restore)})"
            )
        out.print(Text(escape_controls(line), style="dim"))
    if error := update.get("memory_error"):
        failed = f"  · memory steps failed, kept for the next turn: {error}"
        out.print(Text(escape_controls(failed), style="yellow"))


class OneLineHandler(logging.Handler):
    """Log records as one line each on stderr, through `err` (so in the chat they print
    above the prompt, and user text in them is never markup)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = " ".join(self.format(record).split())
        except Exception:
            self.handleError(record)
            return
        style = "dim" if record.levelno < logging.WARNING else "yellow"
        err.print(Text(escape_controls(f"  · {text}"), style=style))


def log_to_stderr(verbose: bool = False) -> None:
    """The `engram` logger's records on stderr, one line each: warnings (rejected
    operations, ...), and with `verbose` also the details (each failed attempt, ...)."""
    log.handlers = [OneLineHandler()]
    log.setLevel(logging.DEBUG if verbose else logging.WARNING)
    log.propagate = False


# -- memories ---------------------------------------------------------------------------------


def open_store() -> MemoryStore:
    from engram.clients import default_store

    return default_store(get_settings())
