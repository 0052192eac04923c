"""Recall's optional reranking (ENGRAM_RERANK=llm): the memory model reorders a wider set
of candidates before the answer, through the real node with a scripted LM, including the
bad answers real models give (invented or repeated ids, an empty list, no JSON at all)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from dspy.utils import DummyLM
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import HumanMessage
from langgraph.runtime import Runtime

from engram.clients import Clients
from engram.memory.store import MemoryStore
from engram.nodes import make_recall
from engram.nodes.recall import RERANK_MIN
from engram.settings import Settings
from engram.state import EngramContext

FOOD = ["User likes sushi", "User likes ramen", "User likes tacos", "User likes pho"]
MESSAGE = "Which food do I like? Sushi, ramen, tacos or pho?"


@pytest.fixture
def eaten(store: MemoryStore) -> MemoryStore:
    for text in FOOD:
        store.add("alice", text, "preferences")
    return store


def recall_with(store: MemoryStore, lm: DummyLM | None, rerank: str = "llm") -> Any:
    clients = Clients(
        Settings(llm_attempts=1, rerank=rerank, recall_floor=-1),
        store=store,
        chat_model=FakeListChatModel(responses=["unused"]),
        memory_lm=lm,
    )
    return make_recall(clients)


async def recalled(recall: Any, top_k: int = 3) -> tuple[list[str], str | None]:
    state: Any = {"messages": [HumanMessage(MESSAGE)]}
    update = await recall(state, Runtime(context=EngramContext(user_id="alice", top_k=top_k)))
    return [m.text for m in update["recalled"]], update["memory_error"]


def shown(lm: DummyLM) -> list[str]:
    """The memories the rerank prompt showed, in order (the search's)."""
    prompt = lm.history[-1]["messages"][-1]["content"]
    block = prompt.split("[[ ## memories ## ]]\n", 1)[1].split("\n\n", 1)[0]
    return [entry["text"] for entry in json.loads(block)]


async def test_the_model_order_comes_first_and_k_is_kept(eaten: MemoryStore) -> None:
    lm = DummyLM([{"ranked": "[4, 2]"}])
    texts, error = await recalled(recall_with(eaten, lm), top_k=3)
    searched = shown(lm)
    assert len(searched) == 4  # a wider set than k: every candidate (at least RERANK_MIN)
    assert RERANK_MIN >= 4
    rest = [t for t in searched if t not in (searched[3], searched[1])]
    assert texts == [searched[3], searched[1], rest[0]] and error is None


@pytest.mark.parametrize(
    "answer", ["[99, 0, -1, 3, 3]", "[]"], ids=["invented-and-repeated-ids", "empty-list"]
)
async def test_bad_orders_never_drop_a_memory(eaten: MemoryStore, answer: str) -> None:
    lm = DummyLM([{"ranked": answer}])
    texts, error = await recalled(recall_with(eaten, lm), top_k=4)
    searched = shown(lm)
    expected = (
        [searched[2], *[t for t in searched if t != searched[2]]] if "3" in answer else searched
    )
    assert texts == expected and error is None
    assert sorted(texts) == sorted(FOOD)


async def test_a_failed_rerank_keeps_the_search_order_and_says_so(eaten: MemoryStore) -> None:
    plain, _ = await recalled(recall_with(eaten, None, rerank="off"), top_k=4)
    lm = DummyLM([{"ranked": "the first one"}] * 5)  # never a list of ids
    texts, error = await recalled(recall_with(eaten, lm), top_k=4)
    assert texts == plain
    assert error is not None and "rerank failed" in error and "search's order" in error


async def test_off_by_default_asks_no_model(eaten: MemoryStore) -> None:
    lm = DummyLM([])
    texts, error = await recalled(recall_with(eaten, lm, rerank="off"), top_k=2)
    assert len(texts) == 2 and error is None and lm.history == []
    assert Settings().rerank == "off"
