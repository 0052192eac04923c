"""What the user's profile costs over long conversations: profile program calls per saving
turn, and the characters it adds to each answer's prompt.

Every observation of `benchmarks/data/longmem.jsonl` (ten users, 15-30 dated sessions each,
one observation per user message) is one saving turn through the real chat graph (recall,
respond, decide_save, extract, retrieve_similar, maintain, update_profile) on Qdrant Edge
with the local all-MiniLM-L6-v2 embeddings. The memory programs are replaced by scripted
ones (no LM here): decide_save says yes, extract returns the observation with the category
a model would give from extract's list (`CATEGORY`: every category of the data maps to a
profile category, so no change is skipped for being "other": the dearest case for the
update rule), maintain adds it, and the profile program returns the newest memories in
profile categories that fit the bound, each citing its memory, as a model keeping a
profile would. The data holds no corrections; each correction of a memory the profile
rests on adds one call (nodes/update_profile.py).

    python benchmarks/profile_cost.py [--users 3]

Prints figures only; about a minute per user on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import dspy
from dspy.utils import DummyLM
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver

from engram.clients import Clients, build_embeddings
from engram.graph import build_graph, checkpoint_serde
from engram.memory.engines.edge import EdgeEngine
from engram.memory.store import MemoryStore
from engram.nodes.programs import (
    DecideSave,
    ExtractFacts,
    MaintainMemory,
    MemoryPrograms,
    UpdateProfile,
)
from engram.nodes.respond import PROFILE_SECTION, render_profile
from engram.nodes.update_profile import PROFILE_CATEGORIES
from engram.settings import Settings
from engram.state.context import EngramContext
from engram.state.contracts import CitedLine, Fact, MemoryOp

DATA = Path(__file__).with_name("data") / "longmem.jsonl"
CATEGORY = {
    "family": "relationships",
    "friends": "relationships",
    "work": "work",
    "health": "health",
    "wellbeing": "health",
    "pets": "personal",
    "home": "location",
    "travel": "plans",
    **{
        name: "preferences"
        for name in ("preferences", "food", "books", "media", "hobbies", "sport", "leisure")
    },
    "shopping": "preferences",
}


class Said(DecideSave):
    async def acall(self, **inputs: Any) -> dspy.Prediction:
        return dspy.Prediction(save=True)


class Observation(ExtractFacts):
    """The turn's observation (set before each turn) as its one fact."""

    fact = Fact(text="", category="other")

    async def acall(self, **inputs: Any) -> dspy.Prediction:
        return dspy.Prediction(facts=[self.fact])


class AddIt(MaintainMemory):
    async def acall(self, **inputs: Any) -> dspy.Prediction:
        new: list[Fact] = inputs["new_facts"]
        return dspy.Prediction(
            operations=[MemoryOp(op="ADD", text=f.text, category=f.category) for f in new]
        )


class NewestCoreFacts(UpdateProfile):
    """The newest memories in profile categories that fit `max_chars`, one line each."""

    calls = 0

    async def acall(self, **inputs: Any) -> dspy.Prediction:
        NewestCoreFacts.calls += 1
        memories = sorted(inputs["memories"], key=lambda m: m.said, reverse=True)
        lines: list[CitedLine] = []
        used = 0
        for memory in memories:
            if memory.category in PROFILE_CATEGORIES and used + len(memory.text) + 1 <= int(
                inputs["max_chars"]
            ):
                lines.append(CitedLine(text=memory.text, memory_ids=[memory.id]))
                used += len(memory.text) + 1
        return dspy.Prediction(lines=lines)


def observations(users: int) -> dict[str, list[dict[str, Any]]]:
    by_user: dict[str, list[dict[str, Any]]] = {}
    for line in DATA.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row["kind"] == "memory":
            by_user.setdefault(row["user"], []).append(row)
    chosen = sorted(by_user)[:users]
    return {u: sorted(by_user[u], key=lambda r: (r["session"], r["id"])) for u in chosen}


async def replay(users: int) -> None:
    settings = Settings(embeddings="local", profile="on", llm_attempts=1)
    embeddings = build_embeddings(settings)
    extract = Observation()
    programs = MemoryPrograms(
        decide_save=Said(), extract=extract, maintain=AddIt(), profile=NewestCoreFacts()
    )
    turns = 0
    profile_chars: list[int] = []
    seconds: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        store = MemoryStore(EdgeEngine(Path(folder) / "edge"), embeddings, dims=384)
        clients = Clients(
            settings,
            store=store,
            chat_model=FakeListChatModel(responses=["Noted."]),
            memory_lm=DummyLM([]),
        )
        graph = build_graph(clients, programs).compile(
            checkpointer=InMemorySaver(serde=checkpoint_serde())
        )
        for user, rows in observations(users).items():
            for row in rows:
                extract.fact = Fact(text=row["text"], category=CATEGORY[row["category"]])
                message = HumanMessage(
                    row["text"], additional_kwargs={"sent_at": f"{row['date']}T12:00:00+00:00"}
                )
                started = time.perf_counter()
                result = await graph.ainvoke(
                    {"messages": [message]},
                    config={"configurable": {"thread_id": f"{user}-{row['session']}"}},
                    context=EngramContext(user_id=user),
                )
                seconds.append(time.perf_counter() - started)
                profile_chars.append(len(render_profile(result.get("profile"))))
                turns += 1
        store.engine.close()
    calls = NewestCoreFacts.calls
    print(f"users {users}, saving turns {turns} (every observation is one)")
    print(f"profile program calls: {calls}, {calls / turns:.2f} per saving turn")
    print(
        f"profile section of each answer's prompt: mean {statistics.mean(profile_chars):.0f}"
        f" characters, max {max(profile_chars)} (its lines are bounded by"
        f" ENGRAM_PROFILE_CHARS={settings.profile_chars}; the heading adds"
        f" {len(render_profile(None) or PROFILE_SECTION.format(lines=''))})"
    )
    print(f"whole turn, scripted models: median {statistics.median(seconds) * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--users", type=int, default=3, help="how many of the ten users")
    asyncio.run(replay(parser.parse_args().users))


if __name__ == "__main__":
    main()
