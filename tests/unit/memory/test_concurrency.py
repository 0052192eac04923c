"""Many turns at once: no duplicate active memories, no lost update, no cross-user effect."""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest
from dspy.utils import DummyLM
from langchain_core.embeddings import DeterministicFakeEmbedding
from qdrant_client import QdrantClient

from engram.memory.store import MemoryStore, PlannedOp
from tests.helpers import make_graph, turn

# DummyLM's dict mode answers by a key contained in the prompt, so concurrent turns get
# the right answer whatever order they run in. The first matching key wins.
DECIDE = "[[ ## known_memories ## ]]"


def by_prompt(extract: dict[str, str], maintain: dict[str, list[dict[str, object]]]) -> DummyLM:
    answers: dict[str, dict[str, str]] = {DECIDE: {"save": "True"}}
    for said, fact in extract.items():
        answers[f"[[ ## user_message ## ]]\n{said}"] = {
            "facts": json.dumps([{"text": fact, "category": "preferences"}])
        }
    for fact, operations in maintain.items():
        shown = json.dumps([{"text": fact, "category": "preferences"}], ensure_ascii=False)
        answers[f"[[ ## new_facts ## ]]\n{shown}"] = {
            "reasoning": "r",
            "operations": json.dumps(operations),
        }
    return DummyLM(answers)


@pytest.mark.slow
async def test_fifty_concurrent_turns_for_one_user_add_one_memory(store: MemoryStore) -> None:
    fact = "User loves green tea"
    lm = by_prompt(
        {"I love green tea": fact}, {fact: [{"op": "ADD", "text": fact, "category": "preferences"}]}
    )
    graph = make_graph(store, lm)
    results = await asyncio.gather(
        *[turn(graph, "I love green tea", thread_id=f"t{i}") for i in range(50)]
    )
    assert all(r["memory_error"] is None for r in results)
    outcomes = sorted(a.result for r in results for a in r["applied"])
    assert outcomes.count("added") == 1
    assert outcomes.count("duplicate") == 49
    assert [m.text for m in store.memories("alice", status=None)] == [fact]


@pytest.mark.slow
async def test_concurrent_updates_of_one_memory_lose_nothing(store: MemoryStore) -> None:
    original = store.add("alice", "User has 0 plants", "personal")
    updates = [f"User has {n} plants" for n in range(1, 51)]
    report_lists = await asyncio.gather(
        *[
            asyncio.to_thread(
                store.apply,
                "alice",
                [PlannedOp("UPDATE", ref=1, target_id=original.memory_id, text=text)],
            )
            for text in updates
        ]
    )
    assert all(not r.rejected for r in report_lists)
    history = store.history("alice", original.memory_id or "")
    assert [v.status for v in history].count("active") == 1
    assert {v.text for v in history} == {"User has 0 plants", *updates}  # every update kept
    # One linear chain: each version points at the next, the last one is the head.
    for older, newer in itertools.pairwise(history):
        assert older.superseded_by == newer.id and newer.supersedes == older.id
    assert history[-1].status == "active"


@pytest.mark.slow
async def test_ten_users_at_once_stay_separate() -> None:
    store = MemoryStore(QdrantClient(":memory:"), DeterministicFakeEmbedding(size=16), dims=16)
    users = [f"user-{n}" for n in range(10)]
    extract = {f"My lucky number is {n}": f"User's lucky number is {n}" for n in range(10)}
    maintain = {
        fact: [{"op": "ADD", "text": fact, "category": "personal"}] for fact in extract.values()
    }
    graph = make_graph(store, by_prompt(extract, maintain))
    await asyncio.gather(
        *[
            turn(graph, f"My lucky number is {n}", user_id=user, thread_id=f"{user}-{k}")
            for n, user in enumerate(users)
            for k in range(5)
        ]
    )
    for n, user in enumerate(users):
        assert [m.text for m in store.memories(user, status=None)] == [
            f"User's lucky number is {n}"
        ]
