"""Many users chatting against one Engram server: time to answer, runs per second, errors,
and how long the background memory work takes to drain.

Starts `engram dev` (LangGraph's dev server on Engram's langgraph.json, `--jobs` runs at
once) against the tests' fake OpenAI-compatible server, whose every model call answers
after `--latency` seconds (embeddings at once). Each simulated user has their own thread
and token and sends `--turns` saving messages one after the other with `runs.wait`, the
SDK's most common call; 1, 10 and 50 users at once by default. Side by side, in the same
server and the same round:

- background: the default; a chat run ends with the answer and its memory steps queue as
  an ingest run on the thread's memory thread (`engram.nodes.schedule_memory`);
- inline: `context={"memory_steps": "inline"}`, the chat run also waits for decide_save,
  extract and maintain (what every run did before).

Printed per mode and load: time to answer (the `runs.wait` call) p50/p95, a finished turn
(answer + its memory run joined) p50/p95, chat runs per second over the load, errors, the
drain time (from the last answer to the last memory run done), and whether every fact sent
was stored exactly once (the fake's extraction turns each message into one memory).

    python benchmarks/server_load.py [--users 1,10,50] [--turns 3] [--latency 0.3] [--jobs 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
from langgraph_sdk import get_client

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the tests' fake server lives in tests/, not in a package

from tests.fake_openai import FakeOpenAI, Hang, RecordedRequest, Reply  # noqa: E402

SECRET = "benchmark-secret-" + "0123456789abcdef" * 3
READY_SECONDS = 180.0
MODES = ("background", "inline")
JOIN_ATTEMPTS = 5


@dataclass
class Load:
    mode: str
    users: int
    answers: list[float] = field(default_factory=list)
    turns: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall: float = 0.0
    drain: float = 0.0
    stored_once: bool = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", default="1,10,50")
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--jobs", type=int, default=None, help="engram dev --jobs")
    args = parser.parse_args()
    loads = [int(n) for n in args.users.split(",")]

    def slow(request: RecordedRequest) -> Reply | None:
        return None if request.step == "embeddings" else Hang(args.latency)

    with FakeOpenAI(dims=64, responder=slow) as fake, engram_dev(fake, args.jobs) as url:
        asyncio.run(warm_up(url))
        results = [
            asyncio.run(run_load(url, mode, users, args.turns)) for users in loads for mode in MODES
        ]
    report(results, args)


@contextmanager
def engram_dev(fake: FakeOpenAI, jobs: int | None) -> Iterator[str]:
    """`engram dev` on a free port with its data in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="engram-load-") as data:
        port = free_port()
        env = {
            **os.environ,
            "OPENAI_BASE_URL": fake.url,
            "OPENAI_API_KEY": "benchmark",
            "ENGRAM_DATA_DIR": data,
            "ENGRAM_EMBEDDINGS": "openai",
            "ENGRAM_RECALL_FLOOR": "-1",  # the fake's embeddings know words, not meanings
            "ENGRAM_AUTH_SECRET": SECRET,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "DSPY_CACHEDIR": str(Path(data) / "dspy-cache"),
            "LANGGRAPH_NO_VERSION_CHECK": "true",
        }
        command = [str(Path(sys.executable).parent / "engram"), "dev", "--port", str(port)]
        if jobs is not None:
            command += ["--jobs", str(jobs)]
        log = Path(data) / "server.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, process, log)
            yield url
        finally:
            os.killpg(process.pid, 15)
            process.wait(timeout=30)


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"engram dev exited:\n{log.read_text(errors='replace')[-4000:]}")
        try:
            if httpx.get(f"{url}/ok", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    sys.exit(f"engram dev was not ready after {READY_SECONDS:.0f} s")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def token(user: str) -> str:
    now = datetime.now(UTC)
    return jwt.encode({"sub": user, "iat": now, "exp": now + timedelta(hours=2)}, SECRET, "HS256")


def client_for(url: str, user: str) -> Any:
    return get_client(url=url, api_key=None, headers={"Authorization": f"Bearer {token(user)}"})


async def warm_up(url: str) -> None:
    """One turn in each mode first: the server imports DSPy and builds its programs on
    first use, which no load below should pay."""
    for mode in MODES:
        await run_load(url, mode, 1, 1)


async def run_load(url: str, mode: str, users: int, turns: int) -> Load:
    load = Load(mode, users)
    prefix = uuid.uuid4().hex[:8]
    names = [f"load-{prefix}-{mode}-{n}" for n in range(users)]
    memory_runs: list[tuple[Any, dict[str, str], float]] = []  # client, run, sent (wall)
    started = time.perf_counter()

    async def user(name: str) -> None:
        client = client_for(url, name)
        thread_id = (await client.threads.create())["thread_id"]
        for turn in range(turns):
            sent, sent_wall = time.perf_counter(), time.time()
            try:
                output = await client.runs.wait(
                    thread_id,
                    "engram",
                    input={"messages": [{"role": "user", "content": fact_text(name, turn)}]},
                    context={"memory_steps": mode},
                    raise_error=False,
                )
            except Exception as error:
                load.errors.append(f"{name}: {error}")
                continue
            answered = time.perf_counter()
            if not isinstance(output, dict) or "__error__" in output:
                load.errors.append(f"{name}: {output}")
                continue
            load.answers.append(answered - sent)
            if output.get("memory_run"):
                memory_runs.append((client, output["memory_run"], sent_wall))
            else:
                load.turns.append(answered - sent)

    await asyncio.gather(*(user(name) for name in names))
    answered_all = time.perf_counter()
    load.wall = answered_all - started

    async def finished(client: Any, run: dict[str, str], sent: float) -> float:
        """When the memory run ended, by the server's clock (the same machine's): a join
        only notices some time after the end."""
        for attempt in range(JOIN_ATTEMPTS):  # a join is a long poll: it may be dropped
            try:
                result = await client.runs.join(run["thread_id"], run["run_id"])
                break
            except httpx.TransportError as error:
                if attempt == JOIN_ATTEMPTS - 1:
                    load.errors.append(f"joining a memory run: {error}")
                    return time.time()
        if not isinstance(result, dict) or "__error__" in result or result.get("memory_error"):
            load.errors.append(f"memory run: {result}")
        ended = datetime.fromisoformat((await client.runs.get(**run))["updated_at"]).timestamp()
        load.turns.append(ended - sent)
        return ended

    answered_wall = time.time()
    ends = await asyncio.gather(*(finished(*item) for item in memory_runs))
    load.drain = max(ends) - answered_wall if ends else 0.0
    load.stored_once = await all_stored_once(url, names, turns)
    return load


def fact_text(name: str, turn: int) -> str:
    return f"My code word number {turn} is {name}-{turn}."


async def all_stored_once(url: str, names: list[str], turns: int) -> bool:
    """Each user holds exactly their messages' facts, one memory each."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        for name in names:
            listed = await http.get("/memories", headers={"Authorization": f"Bearer {token(name)}"})
            texts = sorted(item["text"] for item in listed.json()["items"])
            expected = sorted(f"User said: {fact_text(name, turn)}" for turn in range(turns))
            if texts != expected:
                print(f"  {name}: stored {texts}, expected {expected}")
                return False
    return True


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def report(results: list[Load], args: argparse.Namespace) -> None:
    print(
        f"\nengram dev --jobs {args.jobs or 'default'}, models answering after "
        f"{args.latency * 1000:.0f} ms, {args.turns} saving turns per user (runs.wait)\n"
    )
    header = (
        f"{'mode':<11}{'users':>6}{'answer p50':>12}{'p95':>8}{'turn p50':>10}{'p95':>8}"
        f"{'runs/s':>8}{'drain':>8}{'errors':>8}  stored once"
    )
    print(header)
    print("-" * len(header))
    alone = {r.mode: percentile(r.answers, 0.95) for r in results if r.users == 1}
    for r in results:
        print(
            f"{r.mode:<11}{r.users:>6}{percentile(r.answers, 0.5):>11.2f}s"
            f"{percentile(r.answers, 0.95):>7.2f}s{percentile(r.turns, 0.5):>9.2f}s"
            f"{percentile(r.turns, 0.95):>7.2f}s{len(r.answers) / r.wall:>8.2f}"
            f"{r.drain:>7.1f}s{len(r.errors):>8}  {'yes' if r.stored_once else 'NO'}"
        )
    for r in results:
        if r.users > 1 and r.mode in alone:
            ratio = percentile(r.answers, 0.95) / alone[r.mode]
            print(f"p95 answer at {r.users} users / 1 user ({r.mode}): {ratio:.2f}x")
    for r in results:
        for error in r.errors[:3]:
            print(f"  error ({r.mode}, {r.users} users): {error[:300]}")


if __name__ == "__main__":
    main()
