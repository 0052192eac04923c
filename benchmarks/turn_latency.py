"""How long a user waits for the answer, and what the memory steps cost after it.

Runs the real graph (Qdrant local mode, real all-MiniLM-L6-v2 embeddings) with scripted
models that each take a fixed latency, and measures side by side in one run:

- time to answer: from the user's message to the end of `respond` (recall + chat);
- full turn: until `maintain` has applied the operations.

The design's promise is that the answer never waits on the memory steps, so the time to
answer should be close to recall + one chat call, whatever the memory steps cost, and
recall should stay small as one user's memories grow.

    python benchmarks/turn_latency.py [--turns 20] [--latency 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy
from dspy.utils import DummyLM
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from qdrant_client import QdrantClient

from engram.resources import Resources, build_embeddings
from engram.settings import Settings
from graph import build_graph, checkpoint_serde
from memory.store import MemoryStore
from state import EngramContext


class SlowLM(DummyLM):
    """DummyLM that answers after `latency` seconds, like a remote model would."""

    def __init__(self, answers: dict[str, dict[str, str]], latency: float) -> None:
        super().__init__(answers)
        self.latency = latency

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(self.latency)
        return await super().acall(*args, **kwargs)


class SlowChat(FakeListChatModel):
    """A chat model that answers after `latency` seconds."""

    latency: float = 0.0

    async def _agenerate(self, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(self.latency)
        return await super()._agenerate(*args, **kwargs)


def memory_lm(latency: float) -> SlowLM:
    fact = [{"text": "User mentioned a detail", "category": "other"}]
    return SlowLM(
        {
            "[[ ## known_memories ## ]]": {"save": "True"},
            "[[ ## assistant_context ## ]]": {"facts": json.dumps(fact)},
            "[[ ## existing_memories ## ]]": {
                "reasoning": "r",
                "operations": json.dumps(
                    [{"op": "ADD", "text": "User mentioned a detail", "category": "other"}]
                ),
            },
        },
        latency,
    )


async def measure(
    store: MemoryStore, turns: int, latency: float
) -> tuple[list[float], list[float]]:
    chat = SlowChat(responses=["Sure."], latency=latency)
    resources = Resources(Settings(), store=store, chat_model=chat, memory_lm=memory_lm(latency))
    graph = build_graph(resources).compile(checkpointer=InMemorySaver(serde=checkpoint_serde()))
    config: RunnableConfig = {"configurable": {"thread_id": "bench"}}
    to_answer, full = [], []
    for n in range(turns):
        start = time.perf_counter()
        answered = None
        async for update in graph.astream(
            {"messages": [HumanMessage(f"Here is detail number {n} about my life")]},
            config=config,
            context=EngramContext(user_id="bench-user"),
            stream_mode="updates",
        ):
            if "respond" in update:
                answered = time.perf_counter() - start
        full.append(time.perf_counter() - start)
        to_answer.append(answered or 0.0)
    return to_answer, full


def recall_latency(store: MemoryStore, user: str, queries: int = 20) -> float:
    start = time.perf_counter()
    for n in range(queries):
        store.search(user, f"what do I like number {n}", k=5)
    return (time.perf_counter() - start) / queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per model call")
    args = parser.parse_args()
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)

    embeddings = build_embeddings(Settings(embeddings="local"))
    store = MemoryStore(QdrantClient(":memory:"), embeddings, dims=384)
    to_answer, full = asyncio.run(measure(store, args.turns, args.latency))
    answer_ms, full_ms = statistics.median(to_answer) * 1000, statistics.median(full) * 1000
    print(f"model latency per call: {args.latency * 1000:.0f} ms, turns: {args.turns}")
    print(f"median time to answer : {answer_ms:7.1f} ms  (recall + one chat call)")
    print(f"median full turn      : {full_ms:7.1f} ms  (+ decide_save, extract, maintain)")
    print(f"answer / full turn    : {answer_ms / full_ms:7.2f}")

    print("\nrecall (embed + filtered search) as one user's memories grow, 4 other users:")
    for size in (100, 1000, 5000):
        sized = MemoryStore(QdrantClient(":memory:"), embeddings, dims=384)
        texts = [f"User fact number {i} about topic {i % 97}" for i in range(size)]
        for user in ("target", "u1", "u2", "u3", "u4"):
            vectors = embeddings.embed_documents(texts[: size if user == "target" else 200])
            sized.import_records(
                [
                    (_record(user, text), vector)
                    for text, vector in zip(texts, vectors, strict=False)
                ]
            )
        print(f"  {size:5d} memories: {recall_latency(sized, 'target') * 1000:6.1f} ms per recall")


def _record(user: str, text: str) -> Any:
    import uuid

    from memory.store import now_utc
    from state.contracts import MemoryRecord

    at = now_utc()
    point_id = str(uuid.uuid4())
    return MemoryRecord(
        id=point_id,
        user_id=user,
        text=text,
        category="other",
        status="active",
        created_at=at,
        updated_at=at,
        observed_at=at,
        lineage_id=point_id,
    )


if __name__ == "__main__":
    main()
