"""Agent scopes in the store, on both engines: a user's memories are shared (seen by all
their agents) or one agent's own; a caller as agent A sees the shared ones and A's, never
another agent's, and a caller without an agent sees the shared ones only."""

from __future__ import annotations

import io
import json
import uuid
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from langchain_core.embeddings import Embeddings

from engram.memory.engines.base import Where
from engram.memory.payload import stored_from_point
from engram.memory.store import MemoryStore, PlannedOp
from engram.memory.transfer import export_jsonl, import_jsonl
from engram.memory.versions import now_utc
from engram.state.context import ALL_AGENTS
from engram.state.contracts import ProfileLine, Source
from engram.state.errors import ImportFormatError, InvalidInputError, MemoryNotFoundError
from tests.helpers import make_store


@pytest.fixture
def store(kind: str, local_embeddings: Embeddings, tmp_path: Path) -> Any:
    opened = make_store(kind, local_embeddings, tmp_path, private_agents=["health", "coach"])
    yield opened
    opened.engine.close()


def add(store: MemoryStore, text: str, agent_id: str | None = None, user: str = "alice") -> str:
    applied = store.add(user, text, "personal", agent_id=agent_id)
    assert applied.result == "added", applied
    assert applied.memory_id
    return applied.memory_id


def texts(records: list[Any]) -> set[str]:
    return {r.text for r in records}


ASTHMA = "User has asthma"
LISBON = "User lives in Lisbon"


def test_a_private_agents_memory_is_seen_by_that_agent_only(store: MemoryStore) -> None:
    asthma = add(store, ASTHMA, "health")
    add(store, LISBON)
    assert store.get("alice", asthma, agent_id="health").agent_id == "health"
    for agent in ("travel", None):
        assert texts(store.memories("alice", agent_id=agent)) == {LISBON}
        assert ASTHMA not in texts(store.search("alice", "asthma inhaler", 5, agent_id=agent))
        assert store.count("alice", agent_id=agent) == 1
        with pytest.raises(MemoryNotFoundError) as hidden:
            store.get("alice", asthma, agent_id=agent)
        with pytest.raises(MemoryNotFoundError) as unknown:
            store.get("alice", str(uuid.UUID(int=7)), agent_id=agent)
        # another agent's id reads exactly like an unknown one
        assert str(hidden.value).replace(asthma, "?") == str(unknown.value).replace(
            str(uuid.UUID(int=7)), "?"
        )
        with pytest.raises(MemoryNotFoundError):
            store.history("alice", asthma, agent_id=agent)
    assert texts(store.memories("alice", agent_id="health")) == {ASTHMA, LISBON}
    assert ASTHMA in texts(store.search("alice", "asthma inhaler", 5, agent_id="health"))
    assert texts(store.memories("alice", agent_id=ALL_AGENTS)) == {ASTHMA, LISBON}


def test_keyword_search_never_reaches_another_agents_words(store: MemoryStore) -> None:
    add(store, "User takes salbutamol", "health")
    add(store, "User likes hiking")
    assert texts(store.search("alice", "salbutamol", 5, agent_id="coach")) <= {"User likes hiking"}
    assert "User takes salbutamol" in texts(
        store.search("alice", "salbutamol", 5, agent_id="health")
    )


def test_a_shared_agent_writes_shared_memories_and_is_named_as_their_source(
    store: MemoryStore,
) -> None:
    tea = add(store, "User prefers tea", "travel")
    record = store.get("alice", tea)
    assert (record.agent_id, record.source.agent_id) == (None, "travel")
    assert "User prefers tea" in texts(store.memories("alice", agent_id="health"))


def test_changes_by_id_never_reach_another_agents_memory(store: MemoryStore) -> None:
    asthma = add(store, ASTHMA, "health")
    for agent in ("travel", None):
        for change in (
            partial(store.update, "alice", asthma, "User has no asthma", agent_id=agent),
            partial(store.delete, "alice", asthma, agent_id=agent),
            partial(store.restore, "alice", asthma, agent_id=agent),
            partial(store.set_validity, "alice", asthma, None, None, agent_id=agent),
            partial(store.move, "alice", asthma, agent, agent_id=agent),
            partial(store.pin, "alice", asthma, agent_id=agent),
        ):
            with pytest.raises(MemoryNotFoundError):
                change()
        ops = [PlannedOp("DELETE", ref=1, target_id=asthma), PlannedOp("NOOP", target_id=asthma)]
        report = store.apply("alice", ops, agent_id=agent)
        assert [r.op for r in report.rejected] == ["DELETE", "NOOP"]
        assert report.applied == []
    [version] = store.history("alice", asthma, agent_id="health")
    assert (version.status, version.text) == ("active", ASTHMA)


def test_duplicates_are_judged_within_what_the_writer_sees(store: MemoryStore) -> None:
    shared = add(store, "User is vegetarian")
    # known to health already (shared): a duplicate, nothing new
    again = store.add("alice", "User is vegetarian", agent_id="health")
    assert (again.result, again.memory_id) == ("duplicate", shared)
    # coach's own copy of a text health keeps privately is coach's, not a duplicate
    health = add(store, "User sleeps badly", "health")
    coach = add(store, "User sleeps badly", "coach")
    assert health != coach
    assert store.get("alice", health, agent_id="health").status == "active"
    assert store.get("alice", coach, agent_id="coach").agent_id == "coach"


def test_an_update_keeps_its_targets_scope(store: MemoryStore) -> None:
    coffee = add(store, "User likes coffee")
    updated = store.update("alice", coffee, "User likes tea", agent_id="health")
    assert updated.result == "updated" and updated.memory_id
    assert store.get("alice", updated.memory_id).agent_id is None  # still shared
    own = add(store, "User runs 5k", "coach")
    faster = store.update("alice", own, "User runs 10k", agent_id="coach")
    assert faster.memory_id
    assert store.get("alice", faster.memory_id, agent_id="coach").agent_id == "coach"
    assert "User runs 10k" not in texts(store.memories("alice"))


def test_forget_one_agent_leaves_the_shared_memories_and_the_others(store: MemoryStore) -> None:
    add(store, ASTHMA, "health")
    add(store, "User runs 5k", "coach")
    add(store, LISBON)
    assert store.forget("alice", agent_id="travel") == 0
    assert store.forget("alice", agent_id="health") == 1
    assert texts(store.memories("alice", agent_id=ALL_AGENTS)) == {"User runs 5k", LISBON}
    assert store.forget("alice") == 2
    assert store.memories("alice", agent_id=ALL_AGENTS) == []


def test_moving_a_memory_moves_its_whole_history(store: MemoryStore) -> None:
    coffee = add(store, "User likes coffee", "health")
    tea = store.update("alice", coffee, "User likes tea", agent_id="health").memory_id
    assert tea
    # the travel agent cannot move what it does not see
    with pytest.raises(MemoryNotFoundError):
        store.move("alice", tea, None, agent_id="travel")
    moved = store.move("alice", tea, None, agent_id="health")
    assert moved.result == "moved"
    assert "User likes tea" in texts(store.memories("alice", agent_id="travel"))
    history = store.history("alice", coffee, agent_id="travel")
    assert [v.agent_id for v in history] == [None, None]
    assert history[-1].events[-1].op == "MOVE"
    assert store.move("alice", tea, None).result == "unchanged"
    # back into an agent's own: gone from the shared view
    assert store.move("alice", tea, "coach").result == "moved"
    assert "User likes tea" not in texts(store.memories("alice"))


def test_a_move_onto_an_identical_memory_leaves_one_active_copy(store: MemoryStore) -> None:
    coach = add(store, "User is allergic to nuts", "coach")
    health = add(store, "User is allergic to nuts", "health")  # health sees no copy
    # the older copy is kept, as with any duplicate written concurrently
    merged = store.move("alice", health, "coach")
    assert (merged.result, merged.memory_id) == ("merged", coach)
    shared = add(store, "User is allergic to nuts")  # no agent sees coach's copy either
    assert store.move("alice", coach, None).result == "moved"
    active = store.memories("alice", agent_id=ALL_AGENTS)
    assert [m.id for m in active if m.text == "User is allergic to nuts"] == [coach]
    assert store.get("alice", shared).superseded_by == coach


def test_the_profile_rests_on_shared_memories_only(store: MemoryStore) -> None:
    asthma = add(store, ASTHMA, "health")
    lisbon = add(store, LISBON)
    report = store.save_profile(
        "alice",
        [
            ProfileLine(text="Has asthma", memory_ids=[asthma]),
            ProfileLine(text="Lives in Lisbon", memory_ids=[lisbon]),
        ],
        source=Source(actor="test"),
    )
    assert [r.text for r in report.refused] == ["Has asthma"]
    with pytest.raises(InvalidInputError, match="only shared memories"):
        store.pin("alice", asthma, agent_id="health")
    # a cited memory moved into an agent's own leaves the profile at once
    store.move("alice", lisbon, "health")
    assert store.profile("alice").lines == []


def test_as_of_reads_keep_the_scope(store: MemoryStore) -> None:
    add(store, ASTHMA, "health")
    add(store, LISBON)
    moment = now_utc()
    assert texts(store.memories("alice", as_of=moment, agent_id="travel")) == {LISBON}
    assert ASTHMA in texts(store.memories("alice", as_of=moment, agent_id="health"))
    found = store.search("alice", "asthma", 5, as_of=moment, agent_id="coach")
    assert ASTHMA not in texts(found)


def test_exports_hold_what_their_agent_sees_and_imports_keep_scopes(
    store: MemoryStore,
) -> None:
    add(store, ASTHMA, "health")
    add(store, LISBON)
    travel = io.StringIO()
    assert export_jsonl(store, "alice", travel, agent_id="travel") == 1
    assert ASTHMA not in travel.getvalue()
    everything = io.StringIO()
    assert export_jsonl(store, "alice", everything, agent_id=ALL_AGENTS) == 2
    lines = everything.getvalue().splitlines()
    assert json.loads(lines[0])["all_agents"] is True
    # an import acting as travel may not write health's memory: nothing is imported
    with pytest.raises(ImportFormatError, match="health"):
        import_jsonl(store, lines, as_user="bob", agent_id="travel")
    assert store.memories("bob", agent_id=ALL_AGENTS) == []
    report = import_jsonl(store, lines, as_user="bob")
    assert report.imported == 2
    assert texts(store.memories("bob")) == {LISBON}
    assert texts(store.memories("bob", agent_id="health")) == {ASTHMA, LISBON}


def test_memories_written_before_agents_are_shared(store: MemoryStore) -> None:
    lisbon = add(store, LISBON)
    # an earlier version's point: no agent_id key in its payload at all
    [point] = store.engine.retrieve([lisbon])
    metadata = dict(point.payload["metadata"])
    del metadata["agent_id"]
    store.engine.set_metadata(Where(user_id="alice", ids=[lisbon]), metadata)
    assert "agent_id" not in store.engine.retrieve([lisbon])[0].payload["metadata"]
    assert stored_from_point(store.engine.retrieve([lisbon])[0]).record.agent_id is None
    for agent in (None, "travel", "health"):
        assert texts(store.memories("alice", agent_id=agent)) == {LISBON}
        assert LISBON in texts(store.search("alice", "where does the user live", 3, agent_id=agent))


@pytest.mark.parametrize("bad", ["", "  ", "*", "a\x1fb", "x" * 300])
def test_bad_agent_ids_are_refused(store: MemoryStore, bad: str) -> None:
    with pytest.raises(InvalidInputError, match="agent_id"):
        store.memories("alice", agent_id=bad)
    with pytest.raises(InvalidInputError, match="agent_id"):
        store.add("alice", "User likes tea", agent_id=bad)


def test_a_half_moved_memory_is_neither_moved_back_nor_restored_into_by_others(
    store: MemoryStore,
) -> None:
    first = add(store, "User takes insulin")
    head = store.update("alice", first, "User takes insulin twice a day").memory_id
    assert head
    # a move into health's own, interrupted after the head (which moves first)
    stored = stored_from_point(store.engine.retrieve([head])[0])
    store.versions.write(stored, stored.record.model_copy(update={"agent_id": "health"}))
    for agent in ("travel", None):
        with pytest.raises(MemoryNotFoundError):
            store.move("alice", first, None, agent_id=agent)
        store.restore("alice", first, agent_id=agent)  # at most the old shared text again
        seen = store.memories("alice", status=None, agent_id=agent)
        assert "twice a day" not in " ".join(m.text for m in seen)
    now = store.get("alice", head, agent_id="health")
    assert (now.status, now.agent_id, now.text) == (
        "active",
        "health",
        "User takes insulin twice a day",
    )
    assert store.move("alice", first, "health").result == "moved"  # the operator finishes it


def test_a_private_agents_change_of_a_shared_memory_does_not_name_it(store: MemoryStore) -> None:
    coffee = add(store, "User likes coffee")
    source = Source(actor="chat", thread_id="health-thread", message_ids=["m-1"])
    by_health = store.update("alice", coffee, "User likes tea", source=source, agent_id="health")
    assert by_health.memory_id
    shared = store.get("alice", by_health.memory_id)
    assert (shared.source.agent_id, shared.source.thread_id, shared.source.message_ids) == (
        None,
        None,
        [],
    )
    by_travel = store.update(
        "alice", by_health.memory_id, "User likes green tea", agent_id="travel"
    )
    assert by_travel.memory_id
    assert store.get("alice", by_travel.memory_id).source.agent_id == "travel"
