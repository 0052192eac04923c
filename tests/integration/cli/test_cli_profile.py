"""`engram profile ...` on the real embedded store: show, history, restore, pin, unpin, as
tables and JSON, with ids by prefix and one-line errors for bad ones."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engram.apps.cli import common as cli
from engram.memory.store import MemoryStore
from engram.state.contracts import ProfileLine, Source
from engram.state.errors import InvalidInputError, MemoryNotFoundError
from tests.helpers import engram_env, run_engram

runner = CliRunner()


@pytest.fixture
def store(cli_store: MemoryStore) -> MemoryStore:
    return cli_store


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(cli.app, ["profile", *args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def alices_profile(store: MemoryStore) -> tuple[str, str]:
    veg = store.add("alice", "User is vegetarian", "health").memory_id or ""
    city = store.add("alice", "User lives in Lyon", "location").memory_id or ""
    store.save_profile(
        "alice",
        [ProfileLine(text="Vegetarian, cooks often.", memory_ids=[veg])],
        source=Source(actor="profile"),
    )
    return veg, city


def test_show_says_when_there_is_no_profile_yet(store: MemoryStore) -> None:
    assert run("show", "--user", "nobody") == (0, "no profile yet for nobody\n")
    assert run("history", "--user", "nobody") == (0, "no profile yet for nobody\n")
    code, output = run("show", "--user", "nobody", "--json")
    assert code == 0 and json.loads(output)["version_id"] is None


def test_show_pin_unpin_history_and_restore(store: MemoryStore) -> None:
    veg, city = alices_profile(store)
    code, output = run("show", "--user", "alice")
    assert code == 0 and "Vegetarian, cooks often." in output and veg[:8] in output

    code, output = run("pin", city[:8], "--user", "alice")  # a prefix is enough
    assert code == 0 and "User lives in Lyon" in output and f"{city[:8]} (pinned)" in output
    assert store.profile("alice").pinned == [city]
    code, output = run("show", "--user", "alice", "--json")
    shown = json.loads(output)
    assert shown["pinned"] == [city]
    assert [line["memory_ids"] for line in shown["lines"]] == [[city], [veg]]

    code, output = run("unpin", city, "--user", "alice", "--json")
    assert code == 0 and json.loads(output)["pinned"] == []

    code, output = run("history", "--user", "alice")
    assert code == 0
    assert output.count("superseded") == 2 and "active" in output
    assert f"pinned {city[:8]}" in output and f"unpinned {city[:8]}" in output
    assert "by cli" in output and "by profile" in output
    code, output = run("history", "--user", "alice", "--json")
    versions = json.loads(output)
    assert [v["events"][0]["op"] for v in versions] == ["UPDATE"] * 3
    pinned_version = versions[1]["version_id"]

    code, output = run("restore", pinned_version[:8], "--user", "alice")
    assert code == 0 and f"restored version {pinned_version}" in output
    assert "User lives in Lyon" in output
    assert store.profile("alice").pinned == [city]
    assert store.profile_history("alice")[-1].events[0].source.actor == "cli"


def test_lines_awaiting_revision_are_counted(store: MemoryStore) -> None:
    veg, city = alices_profile(store)
    store.pin("alice", city)
    store.delete("alice", veg)
    code, output = run("show", "--user", "alice")
    assert code == 0 and "Vegetarian" not in output and "User lives in Lyon" in output
    assert "1 line(s) wait for the next update" in output


def test_bad_ids_and_another_users_ids_are_refused_alike(store: MemoryStore) -> None:
    veg, city = alices_profile(store)
    store.pin("alice", city)
    alices_version = store.profile("alice").version_id or ""
    bobs = store.add("bob", "User plays the sax", "hobby").memory_id or ""
    with pytest.raises(MemoryNotFoundError, match="no memory"):
        run("pin", veg, "--user", "bob")  # alice's memory, as bob
    with pytest.raises(MemoryNotFoundError, match="no memory"):
        run("pin", veg[:8], "--user", "bob")  # nor by prefix
    with pytest.raises(MemoryNotFoundError, match="is not pinned for 'bob'"):
        run("unpin", city, "--user", "bob")
    with pytest.raises(MemoryNotFoundError, match="no profile version"):
        run("restore", alices_version, "--user", "bob")
    with pytest.raises(MemoryNotFoundError, match="no profile version"):
        run("restore", alices_version[:8], "--user", "bob")
    with pytest.raises(MemoryNotFoundError, match="no profile version"):
        run("restore", str(uuid.uuid4()), "--user", "alice")
    with pytest.raises(InvalidInputError, match="too short"):
        run("restore", "ab", "--user", "alice")
    store.delete("bob", bobs)
    with pytest.raises(InvalidInputError, match="is deleted"):
        run("pin", bobs, "--user", "bob")
    assert store.profile("alice").pinned == [city]
    assert store.profile_history("bob") == []


def test_errors_are_one_line_with_nonzero_exit(tmp_path: Path) -> None:
    env = engram_env(tmp_path, ENGRAM_EMBEDDINGS="local", HF_HUB_OFFLINE="1")
    result = run_engram(env, "profile", "pin", "not-an-id", "--user", "alice")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: no memory 'not-an-id' for user 'alice'"
    result = run_engram(env, "profile", "restore", "0123abcd", "--user", "alice")
    assert result.returncode == 1 and result.stderr.startswith("error: no profile version")


def test_export_and_import_carry_the_profile(store: MemoryStore, tmp_path: Path) -> None:
    _, city = alices_profile(store)
    store.pin("alice", city)
    export = tmp_path / "alice.jsonl"
    assert runner.invoke(cli.app, ["export", "--user", "alice", "-o", str(export)]).exit_code == 0
    store.forget("alice")
    result = runner.invoke(cli.app, ["import", str(export)])
    assert result.exit_code == 0, result.output
    assert "profile: 1 line(s) and 1 pin(s) imported" in result.output
    assert store.profile("alice").pinned == [city]
    result = runner.invoke(cli.app, ["import", str(export)])
    assert "profile: alice's own is kept" in result.output
