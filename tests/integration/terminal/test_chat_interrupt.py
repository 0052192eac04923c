"""Ctrl-C while a turn's memory steps run in the background never loses what the user
said: the work stays in the thread's state, and `engram memories retry` applies it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_openai import FakeOpenAI, facts_answer
from tests.helpers import REPO_ROOT, chat_env, run_engram


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(dims=64) as server:
        yield server


@pytest.fixture
def env(fake: FakeOpenAI, tmp_path: Path) -> dict[str, str]:
    return chat_env(fake.url, tmp_path)


@pytest.mark.parametrize("step", ["decide_save", "extract", "maintain"])
def test_ctrl_c_during_a_memory_step_keeps_the_fact(
    fake: FakeOpenAI, env: dict[str, str], step: str
) -> None:
    fake.queue("extract", facts_answer(("User keeps bees", "preferences")))
    fake.hang(step, 60)  # the step is still running when the user presses Ctrl-C
    chat = subprocess.Popen(
        [str(Path(sys.executable).with_name("engram")), "chat", "--user", "alice"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )
    assert chat.stdin is not None
    chat.stdin.write("I keep bees\n")  # and the user is still at the prompt: stdin stays open
    chat.stdin.flush()
    deadline = time.monotonic() + 60
    while not fake.requests_for(step):
        assert chat.poll() is None and time.monotonic() < deadline, chat.communicate()
        time.sleep(0.05)
    chat.send_signal(signal.SIGINT)
    stdout, stderr = chat.communicate(timeout=30)
    assert chat.returncode == 0, stderr
    assert "bot> Fake reply to: I keep bees" in stdout
    assert "memory steps interrupted, kept for the next turn or: engram memories retry" in stdout
    assert "User keeps bees" not in run_engram(env, "memories", "list", "--user", "alice").stdout

    fake.clear(step)
    fake.queue("extract", facts_answer(("User keeps bees", "preferences")))
    retry = run_engram(env, "memories", "retry", "--user", "alice")
    assert retry.returncode == 0, retry.stderr
    assert "+ added: User keeps bees (" in retry.stdout
    listed = run_engram(env, "memories", "list", "--user", "alice", "--json")
    assert "User keeps bees" in listed.stdout


def test_ctrl_c_while_the_answer_is_coming_keeps_the_message(
    fake: FakeOpenAI, env: dict[str, str]
) -> None:
    fake.hang("chat", 60)  # the answer has not come when the user presses Ctrl-C
    chat = subprocess.Popen(
        [str(Path(sys.executable).with_name("engram")), "chat", "--user", "alice"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )
    assert chat.stdin is not None
    chat.stdin.write("I keep bees\n")
    chat.stdin.flush()
    deadline = time.monotonic() + 60
    while not fake.requests_for("chat"):
        assert chat.poll() is None and time.monotonic() < deadline, chat.communicate()
        time.sleep(0.05)
    chat.send_signal(signal.SIGINT)
    _, stderr = chat.communicate(timeout=30)
    assert chat.returncode == 0, stderr

    fake.clear("chat")
    fake.queue("extract", facts_answer(("User keeps bees", "preferences")))
    retry = run_engram(env, "memories", "retry", "--user", "alice")
    assert retry.returncode == 0, retry.stderr
    assert "+ added: User keeps bees (" in retry.stdout
