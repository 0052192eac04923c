"""`engram chat` and `engram memories retry` as a user runs them: separate processes, the
real OpenAI clients talking to the fake server, memories in embedded Qdrant on disk and
conversations in SQLite."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from tests.fake_openai import FakeOpenAI, chat_adapter_answer, facts_answer
from tests.helpers import chat_env, run_engram


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(dims=64) as server:
        yield server


@pytest.fixture
def env(fake: FakeOpenAI, tmp_path: Path) -> dict[str, str]:
    return chat_env(fake.url, tmp_path)


def test_memories_persist_across_sessions_and_stay_per_user(
    fake: FakeOpenAI, env: dict[str, str]
) -> None:
    fake.queue("extract", facts_answer(("User lives in Paris", "location")))
    first = run_engram(env, "chat", "--user", "alice", typed="I live in Paris\n/quit\n")
    assert first.returncode == 0, first.stderr
    assert "bot> Fake reply to: I live in Paris" in first.stdout
    assert re.search(r"^\+ added: User lives in Paris \([0-9a-f]{8}\)$", first.stdout, re.M)
    assert len(fake.requests_for("chat")[-1].body["messages"]) == 2  # system + the message

    # A new process: the memory comes back from disk and reaches the chat model.
    second = run_engram(env, "chat", "--user", "alice", typed="Where do I live?\n/quit\n")
    assert second.returncode == 0, second.stderr
    chat = fake.requests_for("chat")[-1]
    assert "User lives in Paris (location; said " in chat.system_prompt
    # ...and so does the conversation itself (SQLite): the first exchange is in the window.
    assert "I live in Paris" in [m["content"] for m in chat.messages]

    third = run_engram(env, "chat", "--user", "bob", typed="Where do I live?\n/quit\n")
    assert third.returncode == 0, third.stderr
    bob_chat = fake.requests_for("chat")[-1]
    assert "Paris" not in bob_chat.system_prompt
    assert [m["role"] for m in bob_chat.messages] == ["system", "user"]

    listed = run_engram(env, "memories", "list", "--user", "alice", "--json")
    assert re.search(r'"text": "User lives in Paris"', listed.stdout)
    bob_memories = run_engram(env, "memories", "list", "--user", "bob", "--json").stdout
    assert "Where do I live?" in bob_memories and "Paris" not in bob_memories

    # forget erases alice's memories and her conversation, and nothing of bob's.
    forgot = run_engram(env, "forget", "--user", "alice", "--yes")
    assert "Erased 2 memory versions, the profile and 1 conversation(s) of alice." in forgot.stdout
    fresh = run_engram(env, "chat", "--user", "alice", typed="Hi again\n/quit\n")
    assert fresh.returncode == 0, fresh.stderr
    assert [m["role"] for m in fake.requests_for("chat")[-1].messages] == ["system", "user"]
    assert (
        "Where do I live?" in run_engram(env, "memories", "list", "--user", "bob", "--json").stdout
    )


def test_failed_memory_steps_are_kept_and_retried(fake: FakeOpenAI, env: dict[str, str]) -> None:
    fake.queue("extract", facts_answer(("User keeps bees", "preferences")))
    fake.fail("maintain", status=503, message="overloaded")
    chat = run_engram(env, "chat", "--user", "alice", typed="I keep bees\n/quit\n")
    assert chat.returncode == 0, chat.stderr
    assert "bot> Fake reply to: I keep bees" in chat.stdout  # the answer still came
    assert "memory steps failed, kept for the next turn" in chat.stdout
    assert "overloaded" in chat.stdout
    assert run_engram(env, "memories", "list", "--user", "alice").stdout.strip() == (
        "memories of alice: none"
    )

    fake.clear("maintain")
    retry = run_engram(env, "memories", "retry", "--user", "alice")
    assert retry.returncode == 0, retry.stderr
    added = r"cli:alice:main:\n\+ added: User keeps bees \([0-9a-f]{8}\)\n"
    assert re.fullmatch(added, retry.stdout)
    listed = run_engram(env, "memories", "list", "--user", "alice", "--json")
    assert "User keeps bees" in listed.stdout
    again = run_engram(env, "memories", "retry", "--user", "alice")
    assert again.stdout.strip() == "nothing to retry for alice"


def test_bad_input_in_chat_is_refused_and_chat_goes_on(
    fake: FakeOpenAI, env: dict[str, str]
) -> None:
    env = env | {"ENGRAM_MAX_MESSAGE_CHARS": "20"}
    chat = run_engram(
        env,
        "chat",
        "--user",
        "alice",
        typed="this message is far too long for the limit\n\nhi\n/quit\n",
    )
    assert chat.returncode == 0
    assert "error: the user message is 42 characters; the limit is 20" in chat.stderr
    assert "error: the user message is empty" in chat.stderr
    assert "bot> Fake reply to: hi" in chat.stdout
    assert [r.last_user_text for r in fake.requests_for("chat")] == ["hi"]


def test_chat_prints_what_users_typed_literally(fake: FakeOpenAI, env: dict[str, str]) -> None:
    """Brackets are never Rich markup and `:name:` never an emoji: user id, thread name,
    the streamed answer and the memory steps' error all print as they came."""
    user, thread = "[red]a[/b]", "[/i]t"
    fake.fail("maintain", status=503, message="[/b] overloaded :fire:")
    chat = run_engram(
        env, "chat", "--user", user, "--thread", thread, typed="I keep [/b] bees :bee:\n/quit\n"
    )
    assert chat.returncode == 0, chat.stderr
    assert f"Chatting as {user} (thread {thread}). /quit to leave." in chat.stdout
    assert "bot> Fake reply to: I keep [/b] bees :bee:" in chat.stdout
    assert "memory steps failed, kept for the next turn" in chat.stdout
    assert "[/b] overloaded :fire:" in chat.stdout


def test_a_resumed_thread_shows_its_last_exchanges_and_history_shows_all(
    fake: FakeOpenAI, env: dict[str, str], tmp_path: Path
) -> None:
    env = env | {"ENGRAM_HISTORY_WINDOW": "4"}  # most of the first session moves to the store
    typed = "".join(f"Turn {n} of the first session\n" for n in range(1, 6)) + "/quit\n"
    first = run_engram(env, "chat", "--user", "alice", typed=typed)
    assert first.returncode == 0, first.stderr

    second = run_engram(env, "chat", "--user", "alice", typed="And now?\n/quit\n")
    assert second.returncode == 0, second.stderr
    said = [f"Turn {n} of the first session" for n in range(1, 6)]
    exchanges = [line for n in (2, 3, 4) for line in (f"you> {said[n]}", f"bot> {reply(said[n])}")]
    assert second.stdout.splitlines()[:8] == [
        "Chatting as alice (thread main). /quit to leave.",
        "  · earlier messages: engram history --user alice --thread main",
        *exchanges,
    ]
    assert "you> And now?\nbot> Fake reply to: And now?\n" in second.stdout

    whole = [*said, "And now?"]
    history = run_engram(env, "history", "--user", "alice")
    assert history.returncode == 0, history.stderr
    assert history.stdout.splitlines() == [
        line for text in whole for line in (f"you> {text}", f"bot> {reply(text)}")
    ]
    last = run_engram(env, "history", "--user", "alice", "--last", "3")
    assert last.stdout.splitlines() == [
        f"bot> {reply(said[4])}",
        "you> And now?",
        f"bot> {reply('And now?')}",
    ]
    assert (
        run_engram(env, "history", "--user", "bob").stdout == "no messages in thread main of bob\n"
    )

    # The file keeps one checkpoint per thread: the latest state, not every step of every turn.
    with closing(sqlite3.connect(tmp_path / "data" / "conversations.sqlite")) as db:
        counts = db.execute("SELECT thread_id, COUNT(*) FROM checkpoints GROUP BY thread_id")
        assert counts.fetchall() == [("cli:alice:main", 1)]


def reply(text: str) -> str:
    return f"Fake reply to: {text}"


def test_a_malformed_answer_is_reported_once_and_v_shows_the_attempts(
    fake: FakeOpenAI, env: dict[str, str]
) -> None:
    env = env | {"ENGRAM_LLM_ATTEMPTS": "2", "ENGRAM_LLM_BACKOFF": "0"}
    # The field asked for, holding something that is no list of facts: a bad answer in
    # either format (an answer with no field at all would say the endpoint ignored the
    # schema, and be asked for again in text format).
    malformed = chat_adapter_answer(facts="this is not a list of facts")
    for _ in range(2):
        fake.queue("extract", malformed)
    chat = run_engram(env, "chat", "--user", "alice", typed="I keep bees\n/quit\n")
    assert chat.returncode == 0, chat.stderr
    output = chat.stdout + chat.stderr
    assert output.count("extract failed after 2 attempt(s)") == 1
    assert "attempt 1/2" not in output  # per-attempt details only with -v

    for _ in range(2):
        fake.queue("extract", malformed)
    verbose = run_engram(env, "chat", "-v", "--user", "bob", typed="I keep bees\n/quit\n")
    assert verbose.returncode == 0, verbose.stderr
    details = verbose.stdout + verbose.stderr
    assert details.count("extract attempt 1/2 failed") == 1
    assert details.count("extract attempt 2/2 failed") == 1


def test_with_the_profile_on_a_diet_reaches_an_unrelated_question(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    env = chat_env(fake.url, tmp_path, ENGRAM_PROFILE="on")
    fake.queue("extract", facts_answer(("User is vegetarian", "health")))
    first = run_engram(env, "chat", "--user", "alice", typed="I'm vegetarian\n/quit\n")
    assert first.returncode == 0, first.stderr
    assert len(fake.requests_for("profile")) == 1  # the first core fact builds the profile
    shown = run_engram(env, "profile", "show", "--user", "alice", "--json")
    assert '"text": "User is vegetarian"' in shown.stdout

    fake.queue("decide_save", chat_adapter_answer(save="False"))
    second = run_engram(
        env, "chat", "--user", "alice", typed="Can you suggest a dinner for tonight?\n/quit\n"
    )
    assert second.returncode == 0, second.stderr
    system = fake.requests_for("chat")[-1].system_prompt
    assert "The user's profile" in system and "- User is vegetarian" in system
    assert len(fake.requests_for("profile")) == 1  # a turn that changed nothing: no call
