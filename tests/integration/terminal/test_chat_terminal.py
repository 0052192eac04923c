"""`engram chat` in a real terminal (a pty): a pasted multi-line message arrives whole,
and what the user typed is kept per user in the data directory's history."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from tests.fake_openai import FakeOpenAI
from tests.helpers import REPO_ROOT, chat_env


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(dims=64) as server:
        yield server


def test_paste_and_history_in_a_terminal(fake: FakeOpenAI, tmp_path: Path) -> None:
    env = chat_env(fake.url, tmp_path)
    engram = str(Path(sys.executable).with_name("engram"))
    child = pexpect.spawn(
        engram, ["chat", "--user", "al ice"], env=env, cwd=str(REPO_ROOT), encoding="utf-8"
    )
    try:
        child.expect_exact("you>", timeout=60)
        long_line = "x" * 5000  # beyond a terminal's 4,095-character line limit
        child.send(f"\x1b[200~first line\n{long_line}\x1b[201~\r")
        child.expect_exact("bot> Fake reply to: first line", timeout=60)
        child.expect_exact("x" * 100, timeout=30)
        child.expect_exact("you>", timeout=60)
        child.sendcontrol("d")
        child.expect(pexpect.EOF, timeout=60)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    sent = [r.last_user_text for r in fake.requests_for("chat")]
    assert sent == [f"first line\n{long_line}"]
    history = (tmp_path / "data" / "history" / "al%20ice").read_text()
    assert "+first line\n+" + long_line in history


def spawn_chat(fake: FakeOpenAI, tmp_path: Path, **settings: str) -> pexpect.spawn:
    env = chat_env(fake.url, tmp_path, **settings)
    engram = str(Path(sys.executable).with_name("engram"))
    child = pexpect.spawn(
        engram, ["chat", "--user", "alice"], env=env, cwd=str(REPO_ROOT), encoding="utf-8"
    )
    child.expect_exact("you>", timeout=60)
    return child


def test_cursor_keys_edit_the_line_and_up_recalls_it(fake: FakeOpenAI, tmp_path: Path) -> None:
    child = spawn_chat(fake, tmp_path)
    try:
        child.send("I like tea")
        child.send("\x1b[D\x1b[D\x1b[D")  # three times ←, then type: an edit, not escapes
        child.send("green ")
        child.send("\r")
        child.expect_exact("bot> Fake reply to: I like green tea", timeout=60)
        child.expect_exact("you>", timeout=60)
        child.send("\x1b[A")  # ↑ brings the last message back for editing
        child.send("!\r")
        child.expect_exact("bot> Fake reply to: I like green tea!", timeout=60)
        child.expect_exact("you>", timeout=60)
        child.sendline("/quit")
        child.expect(pexpect.EOF, timeout=60)
        tail = child.before or ""
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    assert "you>" not in tail.rsplit("/quit", 1)[-1]  # no stray prompt after /quit
    sent = [r.last_user_text for r in fake.requests_for("chat")]
    assert sent == ["I like green tea", "I like green tea!"]
    assert not any("\x1b" in text for text in sent)


def test_a_paste_over_the_limit_is_refused_in_one_line(fake: FakeOpenAI, tmp_path: Path) -> None:
    child = spawn_chat(fake, tmp_path, ENGRAM_MAX_MESSAGE_CHARS="100")
    try:
        child.send(f"\x1b[200~{'y' * 150}\x1b[201~\r")
        child.expect_exact(
            "error: the user message is 150 characters; the limit is 100", timeout=60
        )
        child.expect_exact("you>", timeout=60)
        child.sendcontrol("d")
        child.expect(pexpect.EOF, timeout=60)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    assert fake.requests_for("chat") == []
