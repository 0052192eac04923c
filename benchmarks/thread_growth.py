"""How big the CLI's conversation file gets as one thread grows.

Runs the real `engram chat` (a separate process, the installed command) against the fake
OpenAI-compatible server of the tests, which answers instantly: every turn is a full
saving turn (decide_save says yes, extract returns one fact echoing the user, maintain
ADDs it), with embeddings from the fake server (64 dims). The assistant's replies are
~600 characters, like a real model's. After 1, 50 and 200 turns (fresh data directories)
it prints the size of `conversations.sqlite` (and of its write-ahead log, which SQLite
folds back into the file at checkpoints), the growth per turn, and how many messages the
thread's latest checkpoint carries against how many the transcript holds.

The target: `conversations.sqlite` <= 5 MB after 200 turns, growing linearly.

    python benchmarks/thread_growth.py [--turns 1,50,200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the tests' fake server lives in tests/, not in a package

from tests.fake_openai import FakeOpenAI, RecordedRequest, Reply  # noqa: E402

MB = 1024 * 1024
FILLER = (
    "Here is some more of what a real assistant says: context, a suggestion or two, and a "
    "question back to keep the conversation going. "
)
TARGET_MB = 5.0


def long_reply(request: RecordedRequest) -> Reply | None:
    """A chat reply of ~600 characters; the memory steps keep the fake's defaults."""
    if request.step != "chat":
        return None
    return (f"Reply to: {request.last_user_text.strip()[:200]}. " + FILLER * 5)[:600]


def user_line(n: int) -> str:
    return f"Turn {n}: today I tried hobby number {n} and I want to remember how it went."


def run_chat(fake: FakeOpenAI, data_dir: Path, turns: int) -> float:
    """`engram chat` with `turns` typed lines; returns its wall time in seconds."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ENGRAM_", "QDRANT_"))
    }
    env |= {
        "ENGRAM_DATA_DIR": str(data_dir),
        "OPENAI_BASE_URL": fake.url,
        "OPENAI_API_KEY": "bench",
        "ENGRAM_EMBEDDINGS": "openai",
        "ENGRAM_LLM_ATTEMPTS": "1",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "DSPY_CACHEDIR": str(data_dir / "dspy-cache"),
    }
    typed = "".join(f"{user_line(n)}\n" for n in range(1, turns + 1)) + "/quit\n"
    began = time.perf_counter()
    result = subprocess.run(
        [str(Path(sys.executable).with_name("engram")), "chat", "--user", "bench"],
        input=typed,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=3600,
        check=False,
    )
    if result.returncode != 0 or "error" in result.stderr:
        raise SystemExit(f"engram chat failed:\n{result.stderr[-2000:]}")
    return time.perf_counter() - began


async def message_counts(data_dir: Path) -> tuple[int, int]:
    """Messages in the thread's latest checkpoint, and in its whole transcript."""
    os.environ["ENGRAM_DATA_DIR"] = str(data_dir)
    from engram.apps.cli.common import conversations, thread_id_for, transcript
    from engram.settings import Settings

    settings = Settings()
    thread_id = thread_id_for("bench", "main")
    async with conversations(settings) as conv:
        latest = await conv.saver.aget_tuple({"configurable": {"thread_id": thread_id}})
        in_state = len(latest.checkpoint["channel_values"].get("messages", [])) if latest else 0
        whole = await transcript(conv, "bench", thread_id)
    return in_state, len(whole)


def size_mb(path: Path) -> float:
    return path.stat().st_size / MB if path.exists() else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", default="1,50,200", help="comma-separated turn counts")
    args = parser.parse_args()
    counts = [int(n) for n in args.turns.split(",")]

    print(
        f"{'turns':>6} {'file MB':>8} {'+wal MB':>8} {'KB/turn':>8} {'state':>6} "
        f"{'transcript':>10} {'s/turn':>7}"
    )
    rows: list[tuple[int, float]] = []
    with FakeOpenAI(dims=64, responder=long_reply) as fake, tempfile.TemporaryDirectory() as tmp:
        for turns in counts:
            data_dir = Path(tmp) / f"data-{turns}"
            seconds = run_chat(fake, data_dir, turns)
            db = data_dir / "conversations.sqlite"
            file_mb = size_mb(db)
            wal_mb = size_mb(db.with_name(db.name + "-wal"))
            in_state, whole = asyncio.run(message_counts(data_dir))
            rows.append((turns, file_mb))
            print(
                f"{turns:>6} {file_mb:>8.2f} {wal_mb:>8.2f} {file_mb * 1024 / turns:>8.1f} "
                f"{in_state:>6} {whole:>10} {seconds / turns:>7.2f}"
            )
    if len(rows) >= 2:
        (t0, s0), (t1, s1) = rows[-2], rows[-1]
        print(f"growth between {t0} and {t1} turns: {(s1 - s0) * 1024 / (t1 - t0):.1f} KB/turn")
    last_turns, last_mb = rows[-1]
    verdict = "met" if last_mb <= TARGET_MB else "NOT met"
    print(f"target: <= {TARGET_MB:.0f} MB after {last_turns} turns: {verdict} ({last_mb:.2f} MB)")


if __name__ == "__main__":
    main()
