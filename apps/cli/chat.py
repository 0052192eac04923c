"""`engram chat`: talk with memory in the terminal; `engram history`: a whole conversation.

The prompt comes first. What a turn needs — the graph (LangGraph, DSPy, the OpenAI
clients), the memory store (Qdrant, and a local embedding model when configured) — loads
in a background thread while the user types; the first turn waits for it if needed, and a
failure there ends the chat with one line.
"""

from __future__ import annotations

import asyncio
import shlex
import sys
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing, suppress
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar, cast

import typer
from langchain_core.messages import AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from rich.text import Text

from engram.apps.cli.common import (
    EXIT_WORDS,
    PROMPT,
    Agent,
    Conversations,
    Thread,
    User,
    app,
    compact,
    compiled_graph,
    conversations,
    err,
    escape_controls,
    log_to_stderr,
    out,
    print_memory_update,
    print_messages,
    prompt_history_path,
    prune_checkpoints,
    require_agent,
    require_user,
    state_messages,
    thread_config,
    thread_id_for,
    transcript,
)
from engram.settings import Settings, get_settings
from engram.state.errors import ConfigurationError, EngramError

if TYPE_CHECKING:
    from langgraph.graph.state import CompiledStateGraph

T = TypeVar("T")
RESUME_MESSAGES = 6  # a resumed thread shows its last three exchanges...
RESUME_CHARS = 400  # ...each message cut to this (`engram history` prints them whole)


@app.command()
def chat(
    user: User,
    thread: Thread = "main",
    agent: Annotated[
        str | None,
        typer.Option(
            "--agent",
            help="Chat as this agent: it recalls the shared memories and its own, and keeps "
            "new ones to itself when it is in ENGRAM_PRIVATE_AGENTS. Its threads are its own.",
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show the memory steps' details.")
    ] = False,
) -> None:
    """Chat in the terminal as USER; memories and the conversation persist on disk."""
    settings = get_settings()
    settings.llm_credentials()  # fail fast with a one-line error when nothing is configured
    user_id = require_user(user)
    agent_id = require_agent(agent)
    log_to_stderr(verbose)
    try:
        asyncio.run(_chat(settings, user_id, thread, agent_id))
    except KeyboardInterrupt:  # Ctrl-C: unfinished memory work stays in the thread's state
        out.print()


@app.command()
def history(
    user: User,
    thread: Thread = "main",
    last: Annotated[
        int | None, typer.Option("--last", "-n", min=1, help="Only the last N messages.")
    ] = None,
    agent: Agent = None,
) -> None:
    """Print a conversation, oldest first: every message, including those older than the
    window the chat keeps in its state (they live in the conversation store)."""
    settings = get_settings()
    user_id = require_user(user)
    agent_id = require_agent(agent)
    messages: list[BaseMessage] = []
    if settings.conversations_path.exists():
        messages = asyncio.run(_transcript(settings, user_id, thread, last, agent_id))
    if not messages:
        whose = user_id if agent_id is None else f"{user_id} with agent {agent_id}"
        out.print(f"no messages in thread {thread} of {whose}")
    print_messages(messages)


async def _transcript(
    settings: Settings, user_id: str, thread: str, last: int | None, agent_id: str | None
) -> list[BaseMessage]:
    async with conversations(settings) as conv:
        thread_id = thread_id_for(user_id, thread, agent_id)
        return await transcript(conv, user_id, thread_id, last=last)


async def _chat(settings: Settings, user_id: str, thread: str, agent_id: str | None) -> None:
    async with conversations(settings) as conv:
        if freed := await compact(conv):
            out.print(f"conversations.sqlite compacted: {freed / 2**20:.1f} MB given back")
        config = thread_config(user_id, thread_id_for(user_id, thread, agent_id))
        who = (" with agent ", (agent_id, "bold"), " ") if agent_id else (" ",)
        out.print(
            Text.assemble(
                "Chatting as ", (user_id, "bold"), *who, f"(thread {thread}). /quit to leave."
            )
        )
        await show_recent(conv, settings, user_id, thread, agent_id)
        loading = in_daemon_thread(lambda: _prepare(settings, conv))
        lines = line_reader(settings, user_id)
        graph: CompiledStateGraph[Any, Any, Any, Any] | None = None
        memory_steps: asyncio.Task[None] | None = None
        try:
            while True:
                try:
                    text = await next_line(lines, loading)
                except EOFError:  # Ctrl-D or the end of piped input: finish the turn, leave
                    text = "/quit"
                if memory_steps is not None:  # the previous turn's memory work, done meanwhile
                    await _finish(memory_steps)
                    memory_steps = None
                if not interactive():  # piped input: the output reads as a transcript
                    out.print(PROMPT + text)
                if text.strip().lower() in EXIT_WORDS:
                    await ready(loading)  # never leave the store half open
                    break
                if graph is None:
                    graph = await ready(loading)
                try:
                    from engram.nodes.recall import validate_user_message  # loaded with the graph

                    validate_user_message([HumanMessage(text)], settings.max_message_chars)
                    memory_steps = await _turn(graph, conv, config, user_id, agent_id, text)
                except EngramError as error:  # e.g. the endpoint is down: say so, keep chatting
                    err.print(f"error: {error}")
        except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C, at the prompt or not
            if memory_steps is not None and not memory_steps.done():
                memory_steps.cancel()  # it keeps its pending work in the thread's state
                with suppress(asyncio.CancelledError, Exception):
                    await memory_steps
                retry = ["engram", "memories", "retry", "--user", user_id]
                retry += ["--agent", agent_id] if agent_id else []
                out.print(
                    Text(
                        "  · memory steps interrupted, kept for the next turn or: "
                        + escape_controls(shlex.join(retry)),
                        style="yellow",
                    )
                )
            raise KeyboardInterrupt from None


def _prepare(settings: Settings, conv: Conversations) -> CompiledStateGraph[Any, Any, Any, Any]:
    """What the first turn needs: the memory store (Qdrant, the embedding model) and the
    compiled graph. Runs in a background thread."""
    from engram.clients import default_store

    try:
        default_store(settings)
    except EngramError:
        raise
    except Exception as error:  # e.g. a Qdrant server that does not answer
        where = settings.qdrant_url or settings.edge_path
        raise ConfigurationError(
            f"the memory store at {where} could not open: {type(error).__name__}: {error}"
        ) from error
    return compiled_graph(settings, conv)


async def show_recent(
    conv: Conversations,
    settings: Settings,
    user_id: str,
    thread: str,
    agent_id: str | None = None,
) -> None:
    """A resumed thread starts with its last exchanges, so the user sees where they were:
    from the thread's state (its window), or from the store when the window is smaller."""
    thread_id = thread_id_for(user_id, thread, agent_id)
    in_state = await state_messages(conv, thread_id)
    if not in_state:
        return
    if settings.history_window > RESUME_MESSAGES:  # the state's tail is the conversation's
        recent = in_state[-(RESUME_MESSAGES + 1) :]
    else:
        recent = await transcript(conv, user_id, thread_id, last=RESUME_MESSAGES + 1)
    earlier, recent = recent[:-RESUME_MESSAGES], recent[-RESUME_MESSAGES:]
    start = next((i for i, m in enumerate(recent) if m.type == "human"), len(recent))
    if earlier or start:
        words = ["engram", "history", "--user", user_id, "--thread", thread]
        command = shlex.join(words + (["--agent", agent_id] if agent_id else []))
        out.print(Text(f"  · earlier messages: {escape_controls(command)}", style="dim"))
    print_messages(recent[start:], max_chars=RESUME_CHARS, style="dim")


def in_daemon_thread(work: Callable[[], T]) -> asyncio.Future[T]:
    """`work()` in a daemon thread: Ctrl-C never waits for it (unlike `asyncio.to_thread`,
    whose executor the event loop joins on the way out)."""
    loop = asyncio.get_running_loop()
    result: asyncio.Future[T] = loop.create_future()

    def deliver(value: T | None, error: BaseException | None) -> None:
        if not result.done():
            result.set_exception(error) if error else result.set_result(cast(T, value))

    def run() -> None:
        try:
            value, error = work(), None
        except BaseException as caught:
            value, error = None, caught
        with suppress(RuntimeError):  # the loop is gone after Ctrl-C
            loop.call_soon_threadsafe(deliver, value, error)

    threading.Thread(target=run, daemon=True).start()
    return result


LineReader = Callable[[], Awaitable[str]]


async def read_line(prompt: str) -> str:
    """A line of piped input, read in a daemon thread so Ctrl-C never waits for it."""
    return await in_daemon_thread(lambda: input(prompt))  # EOFError at the end of input


def interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def line_reader(settings: Settings, user_id: str) -> LineReader:
    """How the chat reads the user's messages. In a terminal: a prompt that edits like a
    shell (cursor keys, Ctrl-R, history kept per user across sessions, multi-line paste),
    under which the background memory steps print their news. Otherwise (piped input):
    plain lines from stdin."""
    if not interactive():
        return lambda: read_line("")  # no prompt: the chat echoes each line it read
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory
    from prompt_toolkit.patch_stdout import patch_stdout

    path = prompt_history_path(settings, user_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    session: PromptSession[str] = PromptSession(history=FileHistory(str(path)))

    async def prompt() -> str:
        with patch_stdout(raw=True):  # what prints meanwhile goes above the prompt
            return await session.prompt_async(PROMPT)

    return prompt


async def next_line(lines: LineReader, loading: asyncio.Future[Any]) -> str:
    """The user's next line. A start-up that fails while the user types ends the chat at
    once, instead of after the line."""
    line = asyncio.ensure_future(lines())
    if not loading.done():
        await asyncio.wait({line, loading}, return_when=asyncio.FIRST_COMPLETED)
    if loading.done() and loading.exception() is not None and not line.done():
        line.cancel()
        await ready(loading)
    return await line


async def ready(loading: asyncio.Future[T]) -> T:
    """The started-up graph; a failure is one line on stderr and exit code 1."""
    try:
        return await loading
    except Exception as error:
        _startup_failed(error)


def _startup_failed(error: Exception) -> NoReturn:
    if out.is_terminal:
        out.print()  # leave the prompt's line
    what = str(error) if isinstance(error, EngramError) else f"{type(error).__name__}: {error}"
    err.print("error: " + " ".join(what.split()))
    raise SystemExit(1)


async def _finish(memory_steps: asyncio.Task[None]) -> None:
    """Wait for the previous turn's memory steps; a failure there never ends the chat."""
    try:
        await memory_steps
    except Exception as error:
        err.print(f"error in the memory steps: {error}")


async def _turn(
    graph: CompiledStateGraph[Any, Any, Any, Any],
    conv: Conversations,
    config: RunnableConfig,
    user_id: str,
    agent_id: str | None,
    text: str,
) -> asyncio.Task[None]:
    """Stream the answer; return the task that finishes the memory steps in the background
    (and then drops the turn's superseded checkpoints).

    `durability="sync"`: each step's checkpoint is on disk before the next step starts, so
    a Ctrl-C during the memory steps finds the work done so far (see `keep_pending`)."""
    answered = asyncio.Event()
    stream = cast(
        AsyncGenerator[tuple[str, Any], None],
        graph.astream(
            {"messages": [HumanMessage(text)]},
            config,
            context={"user_id": user_id, "agent_id": agent_id},
            stream_mode=["messages", "updates"],
            durability="sync",
        ),
    )

    async def run() -> None:
        started = False
        try:
            async with aclosing(stream):
                async for mode, chunk in stream:
                    if mode == "messages":
                        message, meta = chunk
                        if meta.get("langgraph_node") == "respond" and isinstance(
                            message, AIMessageChunk
                        ):
                            if not started:  # no "bot>" line when the endpoint fails
                                out.print("bot> ", end="")
                                started = True
                            out.print(message.text, end="")
                    elif "respond" in chunk:
                        out.print("" if started else "bot> ")
                        answered.set()
        except asyncio.CancelledError:  # Ctrl-C: nothing the user said is lost
            await keep_pending(graph, config)
            raise
        finally:
            answered.set()
        await prune_checkpoints(conv, config["configurable"]["thread_id"])
        print_memory_update((await graph.aget_state(config)).values)

    task = asyncio.create_task(run())
    try:
        await answered.wait()
    except (asyncio.CancelledError, KeyboardInterrupt):  # Ctrl-C before the answer
        task.cancel()  # it records the message as pending while the file is still open
        with suppress(asyncio.CancelledError, Exception):
            await task
        raise
    if task.done():
        task.result()  # surface an error from recall/respond right away
    return task


async def keep_pending(
    graph: CompiledStateGraph[Any, Any, Any, Any], config: RunnableConfig
) -> None:
    """After the memory steps were cancelled: make sure the turn's work is in the thread's
    state for the next turn or `engram memories retry`.

    A step that completed left its checkpoint: facts extracted before retrieve_similar or
    maintain stopped are in `facts`. Before that (the answer, decide_save, extract), the
    turn's user message is added to `unextracted`. Recorded as if maintain had run, so the
    thread has no half-run steps left.
    """
    from engram.nodes.common import latest_exchange, message_time
    from engram.state.contracts import Unextracted

    snapshot = await graph.aget_state(config)
    if not snapshot.next:
        return
    values = snapshot.values
    pending = list(values.get("unextracted") or [])
    message, _ = latest_exchange(values.get("messages", []))
    undecided = bool({"recall", "respond", "decide_save"} & set(snapshot.next)) or (
        "extract" in snapshot.next and values.get("save")
    )
    known = {item.message_id for item in pending}
    if undecided and message is not None and message.id and message.id not in known:
        pending.append(Unextracted(message_id=message.id, observed_at=message_time(message)))
    await graph.aupdate_state(config, {"unextracted": pending}, as_node="maintain")
