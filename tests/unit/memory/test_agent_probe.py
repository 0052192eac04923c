"""Adversarial probes of agent scopes in the store and the graph: a caller acting as
`travel` (or as no agent) tries to read, infer, change or import its way into what the
private agent `health` keeps as its own. Each test asserts the safe behaviour; those marked
xfail are known gaps (the reason names it), kept so that fixing one turns its test green."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.embeddings import Embeddings

from engram.memory.payload import stored_from_point
from engram.memory.store import MemoryStore, PlannedOp
from engram.memory.transfer import export_jsonl, import_jsonl
from engram.memory.versions import now_utc
from engram.state.context import ALL_AGENTS
from engram.state.errors import AccessDeniedError, MemoryNotFoundError
from tests.helpers import make_graph, make_store, save, scripted_lm, thread_values, turn

PRIVATE = "health"
OTHER = "travel"
OUTSIDERS = (OTHER, None)  # another agent, and a caller acting as no agent
# The ways a UUID is spelled that still parse as the same id.
SPELLINGS: dict[str, Callable[[str], str]] = {
    "canonical": str,
    "upper": str.upper,
    "braces": lambda i: "{" + i + "}",
    "urn": lambda i: f"urn:uuid:{i}",
    "hex": lambda i: i.replace("-", ""),
}


@pytest.fixture
def store(kind: str, local_embeddings: Embeddings, tmp_path: Path) -> Iterator[MemoryStore]:
    opened = make_store(kind, local_embeddings, tmp_path, private_agents=[PRIVATE])
    yield opened
    opened.engine.close()


def own(store: MemoryStore, text: str, agent: str | None = PRIVATE) -> str:
    """A new memory written as `agent` (health's own; shared for anyone else)."""
    applied = store.add("alice", text, "health", agent_id=agent)
    assert applied.result == "added" and applied.memory_id, applied
    return applied.memory_id


def ranking(found: list[Any]) -> list[tuple[str, float]]:
    return [(r.id, r.score) for r in found]


def test_another_agents_private_words_never_shift_a_search(store: MemoryStore) -> None:
    """Keyword statistics (IDF) and fusion run over what the caller sees: health's own
    memories full of the query's words change neither the order nor the scores another
    caller gets, as-of searches and batched ones included."""
    own(store, "User flies to the mountains every winter", None)
    own(store, "User prefers aisle seats on long flights", None)
    own(store, "User keeps a mountain bike in the garage", None)
    before_health = now_utc()
    query = "mountains flights winter"

    def searches(agent: str | None) -> list[list[tuple[str, float]]]:
        return [
            ranking(store.search("alice", query, 3, agent_id=agent)),
            ranking(store.search("alice", query, 3, as_of=before_health, agent_id=agent)),
            *[ranking(hits) for hits in store.search_many("alice", [query], 3, agent_id=agent)],
        ]

    seen = {agent: searches(agent) for agent in OUTSIDERS}
    for n in range(12):
        own(store, f"User's mountains of medical bills for winter flights, number {n}")
    own(store, "User flies to the mountains every winter for altitude therapy")
    for agent in OUTSIDERS:
        again = searches(agent)
        for after, before in zip(again, seen[agent], strict=True):
            assert [i for i, _ in after] == [i for i, _ in before], agent
            assert [s for _, s in after] == pytest.approx([s for _, s in before]), agent
    assert len(store.search("alice", query, 20, agent_id=PRIVATE)) == 16  # health sees them


def test_a_forged_id_in_any_spelling_answers_like_an_unknown_one(store: MemoryStore) -> None:
    """Every read and write by id, and every operation a run applies, reports health's own
    memory exactly as it reports an id nobody holds, however the id is spelled."""
    theirs = own(store, "User takes lisinopril")
    unknown = str(uuid.UUID(int=0xFEED))
    for name, spell in SPELLINGS.items():
        for agent in OUTSIDERS:
            calls: dict[str, Callable[[str], object]] = {
                "get": lambda i, a=agent: store.get("alice", i, agent_id=a),
                "history": lambda i, a=agent: store.history("alice", i, agent_id=a),
                "update": lambda i, a=agent: store.update(
                    "alice", i, "User takes no pills", agent_id=a
                ),
                "delete": lambda i, a=agent: store.delete("alice", i, agent_id=a),
                "restore": lambda i, a=agent: store.restore("alice", i, agent_id=a),
                "validity": lambda i, a=agent: store.set_validity(
                    "alice", i, None, now_utc().date(), agent_id=a
                ),
                "move here": lambda i, a=agent: store.move("alice", i, a, agent_id=a),
                "move shared": lambda i, a=agent: store.move("alice", i, None, agent_id=a),
                "pin": lambda i, a=agent: store.pin("alice", i, agent_id=a),
            }
            for call, change in calls.items():
                answers = []
                for memory_id in (spell(theirs), spell(unknown)):
                    with pytest.raises(MemoryNotFoundError) as refused:
                        change(memory_id)
                    answers.append(str(refused.value).replace(memory_id, "<id>"))
                assert answers[0] == answers[1], (name, agent, call, answers)
            for op in ("UPDATE", "DELETE", "NOOP"):
                reasons = []
                for memory_id in (spell(theirs), spell(unknown)):
                    planned = PlannedOp(op, ref=1, target_id=memory_id, text="User takes no pills")  # type: ignore[arg-type]
                    report = store.apply("alice", [planned], agent_id=agent)
                    assert report.applied == [], (name, agent, op)
                    reasons += [r.reason.replace(memory_id, "<id>") for r in report.rejected]
                assert len(reasons) == 2 and reasons[0] == reasons[1], (name, agent, op, reasons)
    [version] = store.history("alice", theirs, agent_id=PRIVATE)
    assert (version.text, version.status, version.agent_id) == (
        "User takes lisinopril",
        "active",
        PRIVATE,
    )


def test_another_agents_writes_never_meet_a_private_twin(store: MemoryStore) -> None:
    """A text health keeps as its own is unknown to everyone else: adding it, updating a
    shared memory to it, restoring a shared version of it or moving a copy of it into the
    shared memories or travel's own never answers `duplicate`, `merged` or `already active`
    with health's memory, and never changes it."""
    text = "User is HIV positive"
    theirs = own(store, text)
    mine: list[str] = []
    for agent in OUTSIDERS:
        added = store.add("alice", text, "health", agent_id=agent)
        assert added.result in ("added", "duplicate") and added.memory_id != theirs, added
        mine.append(str(added.memory_id))
        other = own(store, f"User likes tea, as {agent}", agent)
        updated = store.update("alice", other, text, agent_id=agent)
        assert updated.memory_id != theirs and theirs not in str(updated), updated
    shared = own(store, "User is waiting for test results", None)
    store.update("alice", shared, text, agent_id=OTHER)
    store.delete("alice", shared, agent_id=OTHER)
    for agent in OUTSIDERS:
        restored = store.restore("alice", shared, agent_id=agent)
        assert theirs not in str(restored), restored
    copy = store.add("alice", "User is HIV positive.", agent_id=OTHER).memory_id
    assert copy
    moved = store.move("alice", copy, OTHER, agent_id=OTHER)
    assert moved.result in ("moved", "merged") and moved.memory_id != theirs, moved
    assert store.move("alice", copy, None, agent_id=OTHER).memory_id != theirs
    [version] = store.history("alice", theirs, agent_id=PRIVATE)
    assert (version.status, version.agent_id) == ("active", PRIVATE)
    for agent in OUTSIDERS:
        assert theirs not in {r.id for r in store.memories("alice", status=None, agent_id=agent)}


def test_an_unfinished_move_never_opens_the_private_head_to_another_agent(
    store: MemoryStore,
) -> None:
    first = own(store, "User takes insulin")
    head = store.update("alice", first, "User takes insulin twice a day", agent_id=PRIVATE)
    assert head.memory_id
    # health -> shared, interrupted: the old version is moved, the head (moved last) not yet
    old = stored_from_point(store.engine.retrieve([first])[0])
    store.versions.write(old, old.record.model_copy(update={"agent_id": None}))
    assert store.get("alice", first, agent_id=OTHER).agent_id is None  # moved: shared
    for change in (
        lambda: store.delete("alice", first, agent_id=OTHER),
        lambda: store.update("alice", first, "User takes no insulin", agent_id=OTHER),
    ):
        try:
            answered = change()
        except MemoryNotFoundError:
            continue
        assert answered.memory_id != head.memory_id, answered
        assert "twice a day" not in str(answered.text), answered
    seen = store.history("alice", first, agent_id=OTHER)
    assert [v.agent_id for v in seen] == [None], [(v.text, v.agent_id) for v in seen]
    current = store.get("alice", head.memory_id, agent_id=PRIVATE)
    assert (current.status, current.agent_id) == ("active", PRIVATE)


def test_an_import_answers_a_private_memory_like_an_unknown_one(store: MemoryStore) -> None:
    known = own(store, "User sees a cardiologist", None)  # once shared: travel saw its id
    assert store.move("alice", known, PRIVATE, agent_id=PRIVATE).result == "moved"
    own(store, "User likes tea", OTHER)
    exported = io.StringIO()
    export_jsonl(store, "alice", exported, agent_id=OTHER)
    header, line = (json.loads(text) for text in exported.getvalue().splitlines())

    def crafted(lineage_id: str) -> list[str]:
        """A hand-written file (no signatures) naming `lineage_id` as its memory."""
        record = {
            **{k: v for k, v in line.items() if k not in ("ids_mac", "vector_mac")},
            "id": str(uuid.uuid4()),
            "lineage_id": lineage_id,
            "text": "User likes coffee",
        }
        return [json.dumps({**header, "count": 1, "profile": None}), json.dumps(record)]

    reports = [
        import_jsonl(store, crafted(lineage), agent_id=OTHER)
        for lineage in (known, str(uuid.uuid4()))
    ]
    private, unknown = ((r.imported, r.skipped) for r in reports)
    assert private == unknown, (private, unknown)


@pytest.mark.xfail(
    strict=True,
    reason="graph/guard.py stamps a thread's user and agent with the update of the first node "
    "that finishes: when a private agent's first run fails in that node (the store or the "
    "embedding endpoint down, say), its input messages stay in the thread unstamped, and "
    "check_thread_owner lets any other agent of the user continue the thread with them",
)
async def test_a_thread_whose_first_run_failed_still_keeps_its_agent(
    store: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    graph = make_graph(store, scripted_lm(save(False), save(False)))
    search = store.search

    def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("Qdrant is unreachable")

    monkeypatch.setattr(store, "search", unreachable)
    with pytest.raises(ConnectionError):
        await turn(graph, "I was diagnosed with HIV last week", thread_id="h-1", agent_id=PRIVATE)
    monkeypatch.setattr(store, "search", search)
    assert "HIV" in str((await thread_values(graph, "h-1"))["messages"])  # kept for a retry
    for agent in OUTSIDERS:
        extra = {} if agent is None else {"agent_id": agent}
        try:
            answered = await turn(
                graph, "What did I tell you?", thread_id="h-1", save_policy="never", **extra
            )
        except AccessDeniedError:
            continue
        assert "HIV" not in str(answered["messages"]), agent


def test_as_of_and_counts_before_a_private_memory_existed_are_unchanged(
    store: MemoryStore,
) -> None:
    """What another caller reads of the past, and how many memories it counts, does not
    move when health writes, updates, deletes or moves its own (into the shared memories
    and back): no read by another caller tells when health wrote anything."""
    own(store, "User lives in Lisbon", None)
    moment = now_utc()

    def views(agent: str | None) -> tuple[object, ...]:
        return (
            [r.id for r in store.memories("alice", as_of=moment, agent_id=agent)],
            [r.id for r in store.memories("alice", status=None, agent_id=agent)],
            store.count("alice", agent_id=agent),
            store.count("alice", status="deleted", agent_id=agent),
        )

    before = {agent: views(agent) for agent in OUTSIDERS}
    theirs = own(store, "User has asthma")
    newer = store.update("alice", theirs, "User has severe asthma", agent_id=PRIVATE).memory_id
    assert newer
    store.delete("alice", newer, agent_id=PRIVATE)
    store.restore("alice", newer, agent_id=PRIVATE)
    store.move("alice", newer, None, agent_id=PRIVATE)
    store.move("alice", newer, PRIVATE, agent_id=PRIVATE)
    for agent in OUTSIDERS:
        assert views(agent) == before[agent], agent
    assert len(store.memories("alice", status=None, agent_id=ALL_AGENTS)) == 3
