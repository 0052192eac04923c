"""The CLI prints what users stored exactly as stored: brackets are never Rich markup,
`:name:` is never an emoji, in tables, titles and plain lines alike."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.embeddings import Embeddings
from typer.testing import CliRunner, Result

from engram import clients
from engram.apps.cli import common as cli
from engram.clients import close_clients, default_store
from engram.memory.store import MemoryStore
from engram.settings import Settings, get_settings
from tests.helpers import engram_env, run_engram

USER = "[red]a[/b]"  # markup that would restyle the title, then crash it
JAZZ = "User likes [bold]jazz[/bold]"
WEIRD = "Weird [/b] text"
PIZZA = "User loves :pizza: on Fridays"

runner = CliRunner()


def add_memories(store: MemoryStore) -> dict[str, str]:
    """The three tricky texts for USER; returns their point ids by text."""
    return {
        text: store.add(USER, text, "preferences").memory_id or "" for text in (JAZZ, WEIRD, PIZZA)
    }


@pytest.fixture
def store(cli_store: MemoryStore) -> MemoryStore:
    return cli_store


def run(*args: str, input: str | None = None) -> Result:
    result = runner.invoke(cli.app, list(args), input=input)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result


def test_tables_and_lines_show_stored_text_literally(store: MemoryStore, tmp_path: Path) -> None:
    ids = add_memories(store)

    listed = run("memories", "list", "--user", USER).stdout
    assert f"memories of {USER}" in listed
    for text in (JAZZ, WEIRD, PIZZA):
        assert text in listed

    found = run("memories", "search", "[i]jazz[/i]", "--user", USER, "-k", "3").stdout
    assert f"memories of {USER} for '[i]jazz[/i]'" in found and JAZZ in found

    shown = run("memories", "show", ids[WEIRD], "--user", USER).stdout
    assert f"text: {WEIRD}" in shown

    deleted = run("memories", "delete", ids[JAZZ], "--user", USER).stdout
    assert deleted.startswith("deleted") and JAZZ in deleted
    restored = run("memories", "restore", ids[JAZZ], "--user", USER).stdout
    assert restored.startswith("restored") and JAZZ in restored
    history = run("memories", "history", ids[JAZZ], "--user", USER).stdout
    assert JAZZ in history and "DELETE" in history and "RESTORE" in history

    versions = store.count(USER)
    export = tmp_path / "export.jsonl"
    exported = run("export", "--user", USER, "--output", str(export))
    assert exported.stderr.strip() == f"exported {versions} memory versions of {USER}"
    forgot = run("forget", "--user", USER, "--yes").stdout
    assert (
        forgot.strip()
        == f"Erased {versions} memory versions, the profile and 0 conversation(s) of {USER}."
    )
    imported = run("import", str(export)).stdout
    assert f"imported {versions} memory versions for {USER}" in imported

    other = "[green]b[/b]"
    run("import", str(export), "--as-user", other)
    assert other in run("memories", "list", "--user", other).stdout


def test_retry_names_the_user_literally(
    store: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "test")  # retry checks credentials; no call is made
    get_settings.cache_clear()
    assert run("memories", "retry", "--user", USER).stdout.strip() == (
        f"nothing to retry for {USER}"
    )


def test_the_real_command_prints_markup_literally(
    local_embeddings: Embeddings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """In a fresh process, with the data written beforehand through the store."""
    env = engram_env(tmp_path, ENGRAM_EMBEDDINGS="local", HF_HUB_OFFLINE="1", COLUMNS="200")
    monkeypatch.setattr(clients, "build_embeddings", lambda settings: local_embeddings)
    ids = add_memories(
        default_store(Settings(data_dir=Path(env["ENGRAM_DATA_DIR"]), embeddings="local"))
    )
    close_clients()  # release the embedded Qdrant for the child process

    listed = run_engram(env, "memories", "list", "--user", USER)
    assert listed.returncode == 0, listed.stderr
    assert f"memories of {USER}" in listed.stdout
    for text in (JAZZ, WEIRD, PIZZA):
        assert text in listed.stdout
    history = run_engram(env, "memories", "history", ids[WEIRD], "--user", USER)
    assert history.returncode == 0, history.stderr
    assert WEIRD in history.stdout
