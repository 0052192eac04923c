"""The `engram` command on the real embedded store (Qdrant on disk, SQLite)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import HumanMessage
from typer.testing import CliRunner

from engram.apps.cli import common as cli
from engram.apps.cli.common import prompt_history_path
from engram.clients import Clients
from engram.memory.conversations import stored_messages
from engram.memory.store import MemoryStore
from engram.settings import get_settings
from engram.state.errors import MemoryNotFoundError
from tests.helpers import engram_env, run_engram, save, scripted_lm

runner = CliRunner()


@pytest.fixture
def store(cli_store: MemoryStore) -> MemoryStore:
    return cli_store


def run(*args: str, input: str | None = None) -> tuple[int, str]:
    result = runner.invoke(cli.app, list(args), input=input)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_list_search_show_as_table_and_json(store: MemoryStore) -> None:
    tea = store.add("alice", "User drinks green tea every morning", "preferences")
    store.add("alice", "User works night shifts as a nurse", "work")
    store.add("bob", "User drinks coffee", "preferences")

    code, output = run("memories", "list", "--user", "alice")
    assert code == 0 and "green tea" in output and "nurse" in output and "coffee" not in output
    code, output = run("memories", "list", "--user", "alice", "--json")
    assert sorted(m["text"] for m in json.loads(output)) == [
        "User drinks green tea every morning",
        "User works night shifts as a nurse",
    ]

    code, output = run("memories", "search", "hot drinks", "--user", "alice", "-k", "1", "--json")
    hits = json.loads(output)
    assert [h["text"] for h in hits] == ["User drinks green tea every morning"]
    assert hits[0]["score"] > 0

    code, output = run("memories", "show", tea.memory_id or "", "--user", "alice")
    assert code == 0 and "preferences" in output and "ADD" in output
    with pytest.raises(MemoryNotFoundError):
        run("memories", "show", tea.memory_id or "", "--user", "bob")


def test_delete_history_restore(store: MemoryStore) -> None:
    added = store.add("alice", "User lives in Paris", "location")
    updated = store.update("alice", added.memory_id or "", "User lives in Berlin")
    code, output = run("memories", "delete", updated.memory_id or "", "--user", "alice")
    assert code == 0 and "deleted" in output
    assert store.memories("alice") == []

    code, output = run("memories", "history", added.memory_id or "", "--user", "alice", "--json")
    versions = json.loads(output)
    assert [(v["text"], v["status"]) for v in versions] == [
        ("User lives in Paris", "superseded"),
        ("User lives in Berlin", "deleted"),
    ]
    assert [e["op"] for e in versions[1]["events"]] == ["UPDATE", "DELETE"]
    assert versions[1]["events"][1]["source"]["actor"] == "cli"
    code, output = run("memories", "history", added.memory_id or "", "--user", "alice")
    assert "DELETE" in output and "superseded" in output

    code, output = run("memories", "restore", added.memory_id or "", "--user", "alice")
    assert code == 0 and "restored" in output
    assert [m.text for m in store.memories("alice")] == ["User lives in Paris"]


async def chat_turn(store: MemoryStore, user_id: str, *texts: str) -> str:
    """Real graph turns in the CLI's conversation file, as `engram chat` runs them
    (scripted models; nothing to save). Returns the thread id."""
    settings = get_settings()
    clients = Clients(
        settings,
        store=store,
        chat_model=FakeListChatModel(responses=["Noted."]),
        memory_lm=scripted_lm(*[save(False)] * len(texts)),
    )
    thread_id = cli.thread_id_for(user_id, "main")
    async with cli.conversations(settings) as conv:
        graph = cli.compiled_graph(settings, conv, clients)
        for text in texts:
            await graph.ainvoke(
                {"messages": [HumanMessage(text)]},
                cli.thread_config(user_id, thread_id),
                context={"user_id": user_id},
            )
    return thread_id


async def has_checkpoint(thread_id: str) -> bool:
    async with cli.conversations(get_settings()) as conv:
        return await conv.saver.aget_tuple({"configurable": {"thread_id": thread_id}}) is not None


async def moved_messages(user_id: str, thread_id: str) -> list[str]:
    async with cli.conversations(get_settings()) as conv:
        return [m.text for m in await stored_messages(conv.store, user_id, thread_id)]


def test_forget_asks_then_erases_memories_and_conversations(
    store: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENGRAM_HISTORY_WINDOW", "2")  # older messages move to the store
    get_settings.cache_clear()
    for n in range(30):
        store.add("alice", f"User fact number {n}", "other")
    store.add("bob", "User likes jazz", "preferences")
    said = [f"Hi, I am Alice, secret-{n}" for n in range(3)]
    alice_thread = asyncio.run(chat_turn(store, "alice", *said))
    bob_thread = asyncio.run(chat_turn(store, "bob", "Hi, I am Bob", "Bye", "Bye again"))
    assert asyncio.run(has_checkpoint(alice_thread)) and asyncio.run(has_checkpoint(bob_thread))
    assert asyncio.run(moved_messages("alice", alice_thread)) == [
        said[0],
        "Noted.",
        said[1],
        "Noted.",
    ]

    code, _ = run("forget", "--user", "alice", input="n\n")
    assert code != 0 and store.count("alice") == 30  # declined: nothing erased...
    assert asyncio.run(has_checkpoint(alice_thread))  # ...not even the conversation

    typed = {u: prompt_history_path(get_settings(), u) for u in ("alice", "bob")}
    for user, path in typed.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"+what {user} typed\n")
    code, output = run("forget", "--user", "alice", "--yes")
    assert code == 0
    assert "Erased 30 memory versions, the profile and 1 conversation(s) of alice." in output
    assert not typed["alice"].exists() and typed["bob"].exists()  # the prompt's history too
    assert store.count("alice") == 0 and store.count("bob") == 1
    assert not asyncio.run(has_checkpoint(alice_thread))
    assert asyncio.run(moved_messages("alice", alice_thread)) == []
    assert asyncio.run(has_checkpoint(bob_thread))  # another user's conversation survives
    assert asyncio.run(moved_messages("bob", bob_thread)) == [
        "Hi, I am Bob",
        "Noted.",
        "Bye",
        "Noted.",
    ]
    # Nothing of alice's words is left in the file, not even in its free pages.
    files = get_settings().conversations_path.parent.glob("conversations.sqlite*")
    assert not any(b"secret-" in path.read_bytes() for path in files)


def test_export_import_round_trip_through_files(store: MemoryStore, tmp_path: Path) -> None:
    first = store.add("alice", "User lives in Paris", "location")
    store.update("alice", first.memory_id or "", "User lives in Berlin")
    before = [m.model_dump(mode="json") for m in store.memories("alice", status=None)]
    export = tmp_path / "alice.jsonl"
    code, _ = run("export", "--user", "alice", "--output", str(export))
    assert code == 0 and len(export.read_text().splitlines()) == 3
    run("forget", "--user", "alice", "--yes")
    code, output = run("import", str(export))
    assert code == 0 and "imported 2 memory versions for alice" in output
    after = [m.model_dump(mode="json") for m in store.memories("alice", status=None)]
    # The same versions, each with one more event saying it came from the file.
    assert [m["events"][-1]["op"] for m in after] == ["IMPORT", "IMPORT"]
    assert [m | {"events": m["events"][:-1]} for m in after] == before
    code, output = run("import", str(export), "--as-user", "dave")
    assert "for dave" in output and len(store.memories("dave", status=None)) == 2


def test_a_failed_export_to_a_file_keeps_the_earlier_one(
    store: MemoryStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.add("alice", "User lives in Paris", "location")
    exports = tmp_path / "exports"
    exports.mkdir()
    export = exports / "alice.jsonl"
    assert run("export", "--user", "alice", "--output", str(export))[0] == 0
    earlier = export.read_text()

    def unreachable(*args: object, **kwargs: object) -> object:
        raise ConnectionError("Qdrant is unreachable")

    monkeypatch.setattr(store, "export_records", unreachable)
    with pytest.raises(ConnectionError):
        run("export", "--user", "alice", "--output", str(export))
    assert export.read_text() == earlier
    assert [p.name for p in exports.iterdir()] == ["alice.jsonl"]


def test_cli_thread_ids_cannot_collide_across_users() -> None:
    assert cli.thread_id_for("a:b", "c") != cli.thread_id_for("a", "b:c")


def test_chat_without_key_or_endpoint_says_what_to_set(tmp_path: Path) -> None:
    result = run_engram(engram_env(tmp_path), "chat", "--user", "alice")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: No LLM endpoint configured: set OPENAI_API_KEY, or OPENAI_BASE_URL for a local "
        "OpenAI-compatible endpoint (e.g. http://localhost:11434/v1 for Ollama)."
    ]
    assert not (tmp_path / "data" / "qdrant").exists()  # nothing opened, nothing written


def test_errors_are_one_line_with_nonzero_exit(tmp_path: Path) -> None:
    env = engram_env(tmp_path, ENGRAM_EMBEDDINGS="local", HF_HUB_OFFLINE="1")
    result = run_engram(env, "memories", "show", "not-an-id", "--user", "alice")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: no memory 'not-an-id' for user 'alice'"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n")
    result = run_engram(env, "import", str(bad))
    assert result.returncode == 1 and result.stderr.startswith("error: line 1: ")
