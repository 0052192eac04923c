"""Answer first from Python: a chat run whose context asks for `memory_steps="background"`
returns from `ainvoke` with the answer; its memory steps run as an ingest run on the chat
thread's memory thread, on the caller's event loop, with the chat run's checkpointer.
Real store (Qdrant Edge, local embeddings), scripted LMs."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from dspy.utils import DummyLM
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph.state import CompiledStateGraph

from engram import drain_memory_runs, join_memory_run
from engram.clients import Clients
from engram.graph import build_graph, checkpoint_serde
from engram.memory.store import MemoryStore
from engram.nodes.schedule_memory import memory_thread_id
from engram.settings import Settings
from engram.state.errors import InvalidInputError
from tests.helpers import facts, lm_answers, save, turn

BACKGROUND = {"memory_steps": "background"}
KEEP = {"reasoning": "scripted", "operations": []}  # maintain: every fact kept as it is


class GatedLM(DummyLM):
    """A scripted LM that answers only once `gate` is open: the memory steps cannot finish
    before the test lets them."""

    def __init__(self, answers: list[dict[str, str]]) -> None:
        super().__init__(answers)
        self.gate = asyncio.Event()

    async def aforward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> Any:
        await self.gate.wait()
        return await super().aforward(prompt=prompt, messages=messages, **kwargs)


def graph_with(
    store: MemoryStore,
    lm: DummyLM,
    replies: list[str],
    *,
    checkpointer: bool = True,
    saver: InMemorySaver | None = None,
) -> CompiledStateGraph[Any, Any, Any, Any]:
    clients = Clients(
        Settings(llm_attempts=1),
        store=store,
        chat_model=FakeListChatModel(responses=replies),
        memory_lm=lm,
    )
    if checkpointer and saver is None:
        saver = InMemorySaver(serde=checkpoint_serde())
    return build_graph(clients).compile(checkpointer=saver if checkpointer else None)


async def test_ainvoke_returns_the_answer_while_the_memory_steps_wait(store: MemoryStore) -> None:
    lm = GatedLM(lm_answers(save(), facts(("User lives in Porto", "location")), KEEP))
    graph = graph_with(store, lm, ["Porto is lovely."])
    result = await turn(graph, "I moved to Porto.", **BACKGROUND)

    assert result["messages"][-1].text == "Porto is lovely."
    assert result["applied"] == [] and lm.history == []  # no memory step has answered
    memory_run = result["memory_run"]
    assert memory_run["thread_id"] == memory_thread_id("alice", "thread-1")
    assert store.count("alice") == 0

    lm.gate.set()
    report = await join_memory_run(memory_run)
    assert report["memory_error"] is None
    assert [(a.op, a.text) for a in report["applied"]] == [("ADD", "User lives in Porto")]
    porto = store.memories("alice")[0]
    assert porto.source.thread_id == "thread-1"  # the chat thread, not the memory thread
    # The memory thread is a thread of the same checkpointer, with the run's report.
    state = await graph.aget_state({"configurable": {"thread_id": memory_run["thread_id"]}})
    assert [a.text for a in state.values["applied"]] == ["User lives in Porto"]


async def test_turns_faster_than_their_memory_steps_are_remembered_in_order(
    store: MemoryStore,
) -> None:
    lm = GatedLM(
        lm_answers(
            save(),
            facts(("User likes coffee", "preferences")),
            KEEP,
            save(),
            facts(("User likes tea more than coffee", "preferences")),
            {
                "reasoning": "scripted",
                "operations": [
                    {"op": "UPDATE", "id": 1, "text": "User likes tea more than coffee"}
                ],
            },
        )
    )
    graph = graph_with(store, lm, ["Coffee!", "Tea!"])
    first = await turn(graph, "I like coffee.", **BACKGROUND)
    second = await turn(graph, "Actually I like tea more than coffee.", **BACKGROUND)
    assert second["messages"][-1].text == "Tea!"  # answered while the first still waits
    lm.gate.set()
    await join_memory_run(first["memory_run"])
    report = await join_memory_run(second["memory_run"])
    assert [(a.op, a.result) for a in report["applied"]] == [("UPDATE", "updated")]
    assert [m.text for m in store.memories("alice")] == ["User likes tea more than coffee"]


async def test_a_failed_memory_step_is_retried_by_the_next_memory_run(store: MemoryStore) -> None:
    # Answers by what the prompt holds (maintain's header first), so the JSON fallbacks of
    # a failed parse cannot take another step's answer.
    lm = DummyLM(
        {
            "[[ ## new_facts ## ]]": {"reasoning": "scripted", "operations": "[]"},
            "I am allergic to nuts": {"save": "True", "facts": "not json at all"},
            "What a day": {"save": "False", "facts": "[]"},
        }
    )
    graph = graph_with(store, lm, ["Noted.", "Sure."])
    first = await turn(graph, "I am allergic to nuts.", **BACKGROUND)
    failed = await join_memory_run(first["memory_run"])
    assert failed["memory_error"] and len(failed["unextracted"]) == 1
    assert store.count("alice") == 0

    fixed = json.dumps([{"text": "User is allergic to nuts", "category": "health"}])
    lm.answers["I am allergic to nuts"] = {"save": "True", "facts": fixed}  # type: ignore[index]
    second = await turn(graph, "What a day.", **BACKGROUND)
    report = await join_memory_run(second["memory_run"])
    assert [a.text for a in report["applied"]] == ["User is allergic to nuts"]
    assert report["unextracted"] == [] and report["memory_error"] is None


async def test_without_a_checkpointer_or_by_default_the_steps_run_inline(
    store: MemoryStore,
) -> None:
    """A background run needs a checkpointer to keep the memory thread's pending work;
    without one, and without the context asking, the memory steps run in the chat run."""
    for checkpointer, context in ((False, BACKGROUND), (True, {})):
        lm = DummyLM(lm_answers(save(), facts(("User plays chess", "hobbies")), KEEP))
        graph = graph_with(store, lm, ["Nice."], checkpointer=checkpointer)
        config = {"configurable": {"thread_id": "t"}} if checkpointer else None
        result = await graph.ainvoke(
            {"messages": [("user", "I play chess.")]},
            config=config,
            context={"user_id": f"carol-{checkpointer}", **context},
        )
        assert result["memory_run"] is None
        assert [a.text for a in result["applied"]] == ["User plays chess"]


async def test_join_of_an_unknown_run_says_so_and_drain_waits_for_all(store: MemoryStore) -> None:
    with pytest.raises(InvalidInputError, match="no memory run"):
        await join_memory_run({"thread_id": "t", "run_id": "not-a-run"})
    lm = DummyLM(lm_answers(save(), facts(("User owns a kayak", "hobbies")), KEEP))
    graph = graph_with(store, lm, ["Fun."])
    await turn(graph, "I own a kayak.", user_id="dave", **BACKGROUND)
    await drain_memory_runs()
    assert [m.text for m in store.memories("dave")] == ["User owns a kayak"]


def test_a_run_cut_off_by_its_event_loop_is_taken_up_by_the_next(store: MemoryStore) -> None:
    """`asyncio.run` per turn ends the loop, and with it a memory run still waiting: joining
    it says so, and the conversation's next memory run remembers its exchange."""
    saver = InMemorySaver(serde=checkpoint_serde())
    waiting = graph_with(store, GatedLM([]), ["Noted."], saver=saver)  # never answers
    first = asyncio.run(turn(waiting, "I keep bees.", user_id="erin", **BACKGROUND))
    with pytest.raises(InvalidInputError, match="cancelled before it finished"):
        asyncio.run(join_memory_run(first["memory_run"]))
    asyncio.run(drain_memory_runs())  # nothing of this loop to wait for

    lm = DummyLM(
        {
            "[[ ## new_facts ## ]]": {"reasoning": "scripted", "operations": "[]"},
            "I keep bees": {
                "save": "True",
                "facts": json.dumps([{"text": "User keeps bees", "category": "hobbies"}]),
            },
            "Lovely weather": {"save": "False", "facts": "[]"},
        }
    )
    answering = graph_with(store, lm, ["Yes."], saver=saver)

    async def next_turn() -> dict[str, Any]:
        second = await turn(answering, "Lovely weather.", user_id="erin", **BACKGROUND)
        return await join_memory_run(second["memory_run"])

    report = asyncio.run(next_turn())
    assert [a.text for a in report["applied"]] == ["User keeps bees"]
    assert [m.text for m in store.memories("erin")] == ["User keeps bees"]
