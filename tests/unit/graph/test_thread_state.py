"""A thread's state stays bounded: messages older than the window move to LangGraph's store
(in order, none lost), pending work keeps what it needs, and the CLI's conversation file
grows linearly with the number of turns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph.state import CompiledStateGraph
from langgraph.store.memory import InMemoryStore

from engram.apps.cli import common as cli
from engram.clients import Clients
from engram.graph import build_graph, checkpoint_serde
from engram.memory.conversations import conversation, kept_ids, stored_messages
from engram.memory.store import MemoryStore
from engram.settings import Settings
from tests.helpers import facts, ops, save, scripted_lm

USER = "alice"
THREAD = cli.thread_id_for(USER, "main")
FACT = "User wrote message 1 with some more words"  # grounded in said(1)
FILLER = " and some more words so that a message weighs what a real one does" * 4


def said(n: int) -> str:
    return f"message {n}{FILLER}"


def replied(n: int) -> str:
    return f"reply {n}{FILLER}"


def chat_model(turns: int) -> FakeListChatModel:
    return FakeListChatModel(responses=[replied(n) for n in range(1, turns + 1)])


async def run_turn(
    graph: CompiledStateGraph[Any, Any, Any, Any], n: int, **context: Any
) -> dict[str, Any]:
    result: dict[str, Any] = await graph.ainvoke(
        {"messages": [HumanMessage(said(n))]},
        cli.thread_config(USER, THREAD),
        context={"user_id": USER, **context},
    )
    return result


def expected(turns: int) -> list[str]:
    return [text for n in range(1, turns + 1) for text in (said(n), replied(n))]


@pytest.mark.slow
async def test_sixty_turns_keep_the_state_bounded_and_the_file_linear(
    store: MemoryStore, tmp_path: Path
) -> None:
    window, turns = 4, 60
    settings = Settings(data_dir=tmp_path / "data", history_window=window, llm_attempts=1)
    clients = Clients(settings, store=store, chat_model=chat_model(turns))
    sizes: dict[int, int] = {}
    async with cli.conversations(settings) as conv:
        graph = cli.compiled_graph(settings, conv, clients)
        for n in range(1, turns + 1):
            result = await run_turn(graph, n, save_policy="never")
            assert len(result["messages"]) == min(2 * n, window)  # nothing is pending
            if n % 20 == 0:
                await conv.saver.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                sizes[n] = settings.conversations_path.stat().st_size
        older = await stored_messages(conv.store, USER, THREAD)
        whole = await cli.transcript(conv, USER, THREAD, window=window)

    assert [m.text for m in older] == expected(turns)[: 2 * turns - window]
    assert [m.text for m in whole] == expected(turns)
    # Every checkpoint holds a bounded state, so each turn adds about the same: with the
    # whole conversation in every checkpoint, 40->60 would add 5/3 of 20->40.
    first, second = sizes[40] - sizes[20], sizes[60] - sizes[40]
    assert 0 < second <= 1.2 * first, sizes


async def test_a_pending_message_stays_in_the_state_until_it_is_extracted(
    store: MemoryStore,
) -> None:
    lm = scripted_lm(
        save(),
        {"facts": "this is not json"},
        {"facts": "still not json"},  # chat + JSON fallback: extraction of turn 1 fails
        # turns 2-5 never save; turn 6 extracts turn 1's message at last
        save(False),
        facts((FACT, "other")),
        ops({"op": "ADD", "text": FACT, "category": "other"}),
    )
    settings = Settings(history_window=2, llm_attempts=1)
    clients = Clients(settings, store=store, chat_model=chat_model(8), memory_lm=lm)
    transcripts = InMemoryStore()
    graph = build_graph(clients).compile(
        checkpointer=InMemorySaver(serde=checkpoint_serde()), store=transcripts
    )

    first = await run_turn(graph, 1)
    assert "extract failed" in first["memory_error"]
    user_message, reply = first["messages"]
    assert [u.message_id for u in first["unextracted"]] == [user_message.id]

    for n in range(2, 6):
        result = await run_turn(graph, n, save_policy="never")
        ids = [m.id for m in result["messages"]]
        assert ids[:2] == [user_message.id, reply.id]  # kept, with the reply after it
        assert len(ids) == 2 + 2  # the window (the latest exchange) + the pending pair

    sixth = await run_turn(graph, 6)
    assert [a.result for a in sixth["applied"]] == ["added"] and sixth["unextracted"] == []
    memory = store.memories(USER)[0]
    assert memory.source.message_ids == [user_message.id, reply.id]

    seventh = await run_turn(graph, 7, save_policy="never")
    assert user_message.id not in {m.id for m in seventh["messages"]}
    whole = await conversation(transcripts, USER, THREAD, seventh["messages"], window=2)
    assert [m.text for m in whole] == expected(7)  # moved once, at its place in the order


async def test_old_threads_move_their_messages_to_the_store_on_the_next_turn(
    store: MemoryStore, tmp_path: Path
) -> None:
    """A conversation file from before: every message in the state. The next turn keeps
    the window and moves the rest, none lost."""
    window, before = 4, 8
    settings = Settings(data_dir=tmp_path / "data", history_window=window, llm_attempts=1)
    clients = Clients(settings, store=store, chat_model=chat_model(before + 1))
    async with cli.conversations(settings) as conv:
        old = build_graph(clients).compile(checkpointer=conv.saver)  # as earlier versions
        for n in range(1, before + 1):
            result = await run_turn(old, n, save_policy="never")
        assert len(result["messages"]) == 2 * before

        graph = cli.compiled_graph(settings, conv, clients)
        result = await run_turn(graph, before + 1, save_policy="never")
        assert len(result["messages"]) == window
        older = await stored_messages(conv.store, USER, THREAD)
        assert [m.text for m in older] == expected(before + 1)[: 2 * (before + 1) - window]
        last = await cli.transcript(conv, USER, THREAD, window=window, last=window + 3)
        assert [m.text for m in last] == expected(before + 1)[-(window + 3) :]


async def test_without_a_store_every_message_stays_in_the_state(store: MemoryStore) -> None:
    settings = Settings(history_window=2, llm_attempts=1)
    clients = Clients(settings, store=store, chat_model=chat_model(5))
    graph = build_graph(clients).compile(checkpointer=InMemorySaver(serde=checkpoint_serde()))
    for n in range(1, 6):
        result = await run_turn(graph, n, save_policy="never")
    assert [m.text for m in result["messages"]] == expected(5)


async def test_the_cli_keeps_one_checkpoint_per_thread_and_the_thread_goes_on(
    store: MemoryStore, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data", history_window=4, llm_attempts=1)
    clients = Clients(settings, store=store, chat_model=chat_model(4))
    async with cli.conversations(settings) as conv:
        graph = cli.compiled_graph(settings, conv, clients)
        for n in range(1, 4):
            await run_turn(graph, n, save_policy="never")
            await cli.prune_checkpoints(conv, THREAD)
            rows = await conv.saver.conn.execute_fetchall(
                "SELECT COUNT(*) FROM checkpoints WHERE thread_id = ?", (THREAD,)
            )
            assert list(rows) == [(1,)]
        state = await graph.aget_state(cli.thread_config(USER, THREAD))
        assert [m.text for m in state.values["messages"]] == expected(3)[-4:]
        result = await run_turn(graph, 4, save_policy="never")
        assert [m.text for m in await cli.transcript(conv, USER, THREAD)] == expected(4)
        assert result["user_id"] == USER


def test_the_state_keeps_the_window_the_latest_exchange_and_each_pending_pair() -> None:
    def human(name: str) -> HumanMessage:
        return HumanMessage(name, id=name)

    def ai(name: str) -> AIMessage:
        return AIMessage(name, id=name)

    messages = [human("h0"), ai("a0"), human("h1"), ai("a1"), human("h2"), human("h3"), ai("a3")]
    # window 1 keeps a3; the latest exchange adds h3; pending h0 keeps its reply a0, and
    # pending h2 (no reply: a user message follows) keeps only itself.
    assert kept_ids(messages, 1, ["h0", "h2"]) == {"a3", "h3", "h0", "a0", "h2"}


@pytest.mark.slow
async def test_a_file_from_before_pruning_is_compacted_and_its_threads_go_on(
    store: MemoryStore, tmp_path: Path
) -> None:
    """Earlier versions kept every checkpoint with the whole conversation; `engram chat`
    drops the older checkpoints of every thread and gives the space back."""
    turns = 12
    old = Settings(data_dir=tmp_path / "data", history_window=200, llm_attempts=1)
    async with cli.conversations(old) as conv:
        for thread in ("main", "other"):
            graph = cli.compiled_graph(
                old, conv, Clients(old, store=store, chat_model=chat_model(turns))
            )
            for n in range(1, turns + 1):
                await graph.ainvoke(
                    {"messages": [HumanMessage(said(n))]},
                    cli.thread_config(USER, cli.thread_id_for(USER, thread)),
                    context={"user_id": USER, "save_policy": "never"},
                )
        await conv.saver.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = old.conversations_path.stat().st_size

    settings = Settings(data_dir=tmp_path / "data", history_window=4, llm_attempts=1)
    async with cli.conversations(settings) as conv:
        assert await cli.compact(conv, min_free_bytes=0) > 0
        rows = await conv.saver.conn.execute_fetchall(
            "SELECT thread_id, COUNT(*) FROM checkpoints GROUP BY thread_id ORDER BY thread_id"
        )
        assert [count for _, count in rows] == [1, 1]
        await conv.saver.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert settings.conversations_path.stat().st_size < before / 4
        assert await cli.compact(conv, min_free_bytes=0) == 0  # nothing left to give back

        clients = Clients(settings, store=store, chat_model=chat_model(turns + 1))
        graph = cli.compiled_graph(settings, conv, clients)
        await graph.ainvoke(
            {"messages": [HumanMessage(said(turns + 1))]},
            cli.thread_config(USER, THREAD),
            context={"user_id": USER, "save_policy": "never"},
        )
        whole = await cli.transcript(conv, USER, THREAD, window=4)
    # the new model's first reply is replied(1)
    assert [m.text for m in whole] == [*expected(turns), said(turns + 1), replied(1)]
