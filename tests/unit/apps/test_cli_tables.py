"""Tables fit an 80-column terminal, with ids shortened to a prefix that every command
accepts; `--json` keeps whole ids."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner, Result

from engram.apps.cli import common as cli
from engram.memory.engines.base import Point
from engram.memory.keywords import document_keywords
from engram.memory.payload import Stored, payload
from engram.memory.store import MemoryStore, now_utc
from engram.state.contracts import MemoryRecord

runner = CliRunner()
LONG = (
    "User works as a senior tax accountant at a mid-sized firm in Lyon and commutes by "
    "bike every day, even in winter"
)


def run(*args: str) -> Result:
    return runner.invoke(cli.app, list(args))


@pytest.fixture
def narrow(cli_store: MemoryStore, monkeypatch: pytest.MonkeyPatch) -> MemoryStore:
    monkeypatch.setattr(cli.out, "width", 80)
    return cli_store


def test_tables_fit_80_columns_and_wrap_text_by_words(narrow: MemoryStore) -> None:
    narrow.add("alice", LONG, "work")
    paris = narrow.add("alice", "User lives in Paris", "location").memory_id or ""
    narrow.update("alice", paris, "User lives in Berlin")

    for args in (
        ("memories", "list", "--user", "alice", "--all"),
        ("memories", "search", "where does she work", "--user", "alice"),
        ("memories", "history", paris[:8], "--user", "alice"),
    ):
        result = run(*args)
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert max(len(line) for line in lines) <= 80, result.stdout
        words = " ".join(line for line in lines)
        # the long text is all there, wrapped at word boundaries, not cut into letters
        if "list" in args or "search" in args:
            for word in ("accountant", "mid-sized", "commutes", "winter"):
                assert word in words
    listed = run("memories", "list", "--user", "alice", "--all").stdout
    assert paris[:8] in listed and paris not in listed  # short ids in tables


def test_every_command_takes_a_unique_prefix(narrow: MemoryStore) -> None:
    tea = narrow.add("alice", "User likes tea", "preferences").memory_id or ""
    prefix = tea[:8]

    shown = json.loads(run("memories", "show", prefix, "--user", "alice", "--json").stdout)
    assert shown["id"] == tea  # --json keeps the whole id
    assert run("memories", "delete", prefix, "--user", "alice").exit_code == 0
    assert narrow.get("alice", tea).status == "deleted"
    assert run("memories", "restore", prefix, "--user", "alice").exit_code == 0
    assert narrow.get("alice", tea).status == "active"
    history = json.loads(run("memories", "history", prefix, "--user", "alice", "--json").stdout)
    assert [v["id"] for v in history] == [tea]


def test_a_prefix_never_reaches_another_users_memory(narrow: MemoryStore) -> None:
    bob = narrow.add("bob", "User likes jazz", "preferences").memory_id or ""
    for command in ("show", "delete", "history", "restore"):
        result = run("memories", command, bob[:8], "--user", "alice")
        assert result.exit_code != 0
        assert "no memory" in str(result.exception)
    assert narrow.get("bob", bob).status == "active"


def test_a_prefix_shared_by_several_memories_is_refused(narrow: MemoryStore) -> None:
    at = now_utc()
    twins = [f"abcdef01-0000-4000-8000-00000000000{n}" for n in (1, 2)]
    narrow.engine.upsert(
        [
            Point(
                id=point_id,
                payload=payload(
                    Stored(
                        MemoryRecord(
                            id=point_id,
                            user_id="alice",
                            text=f"User owns {n} bikes",
                            category="personal",
                            status="active",
                            created_at=at,
                            updated_at=at,
                            observed_at=at,
                            lineage_id=point_id,
                        )
                    )
                ),
                dense=narrow.embeddings.embed_query(f"User owns {n} bikes"),
                keywords=document_keywords(f"User owns {n} bikes"),
            )
            for n, point_id in enumerate(twins, start=1)
        ]
    )
    ambiguous = run("memories", "show", "abcdef01", "--user", "alice")
    assert ambiguous.exit_code != 0 and "matches 2 memories" in str(ambiguous.exception)
    listed = run("memories", "list", "--user", "alice").stdout
    assert twins[0] in listed and twins[1] in listed  # shown as long as it takes to tell
    exact = run("memories", "show", twins[1], "--user", "alice", "--json")
    assert json.loads(exact.stdout)["text"] == "User owns 2 bikes"
    short = run("memories", "show", "abc", "--user", "alice")
    assert short.exit_code != 0 and "too short" in str(short.exception)
