"""What the CLI prints is never interpreted by the terminal: control characters in memory
texts, model answers and errors are written out, in plain lines, tables and styled text
alike; the stored text is unchanged."""

from __future__ import annotations

import io

import pytest
from rich.table import Table
from rich.text import Text
from typer.testing import CliRunner

from engram.apps import cli
from engram.apps.cli.common import TerminalConsole, escape_controls
from engram.memory.store import MemoryStore

HOSTILE = "User likes tea\x1b[2J\x1b]0;owned\x07\x9b31m\r!"


def test_control_characters_are_written_out() -> None:
    assert escape_controls(HOSTILE) == "User likes tea\\x1b[2J\\x1b]0;owned\\x07\\u009b31m\\x0d!"
    assert escape_controls("two\nlines\tand a tab, é, 名前") == "two\nlines\tand a tab, é, 名前"


@pytest.mark.parametrize("kind", ["line", "table", "streamed"])
def test_a_terminal_console_prints_them_escaped(kind: str) -> None:
    screen = io.StringIO()
    console = TerminalConsole(
        file=screen, force_terminal=True, markup=False, highlight=False, width=200
    )
    if kind == "line":
        console.print(HOSTILE)
    elif kind == "table":
        table = Table()
        table.add_column("text")
        table.add_row(HOSTILE)
        console.print(table)
    else:
        console.print(HOSTILE, end="")
    printed = screen.getvalue()
    for raw in ("\x1b[2J", "\x1b]0;", "\x9b", "\r", "\x07"):
        assert raw not in printed
    assert "\\x1b[2J" in printed


def test_memories_list_escapes_and_the_store_keeps_the_text(cli_store: MemoryStore) -> None:
    cli_store.add("alice", HOSTILE, "preferences")
    result = CliRunner().invoke(cli.app, ["memories", "list", "--user", "alice"])
    assert result.exit_code == 0, result.output
    assert "\x1b[2J" not in result.output and "\\x1b[2J" in result.output
    assert [m.text for m in cli_store.memories("alice")] == [HOSTILE]


def test_styled_text_is_built_escaped() -> None:
    screen = io.StringIO()
    console = TerminalConsole(file=screen, force_terminal=True)
    console.print(Text(escape_controls(HOSTILE), style="dim"))
    assert "\x1b]0;" not in screen.getvalue()
