"""Writers that share one engine but not their locks, as two server processes share a Qdrant
server: no forked memory, no lost update, no revived deletion, no duplicate active fact.

Each race is forced deterministically (one writer has read what it will change and is
paused just before its first write while the other writes), then run freely many times.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.embeddings import Embeddings

from engram.memory.store import MemoryStore
from engram.state.contracts import MemoryRecord
from tests.helpers import ENGINES, make_engine


@pytest.fixture(params=ENGINES)
def pair(
    request: pytest.FixtureRequest, local_embeddings: Embeddings, tmp_path: Path
) -> Iterator[tuple[MemoryStore, MemoryStore]]:
    """Two stores on one engine, each with its own locks (two "processes")."""
    engine = make_engine(str(request.param), local_embeddings, tmp_path)
    first = MemoryStore(engine, local_embeddings, dims=384)
    second = MemoryStore(engine, local_embeddings, dims=384)
    yield first, second
    engine.close()


def active_by_lineage(store: MemoryStore, user_id: str = "alice") -> dict[str, list[str]]:
    lineages: dict[str, list[str]] = {}
    for record in store.memories(user_id):
        lineages.setdefault(record.lineage_id, []).append(record.text)
    return lineages


def all_texts(store: MemoryStore, user_id: str = "alice") -> set[str]:
    return {r.text for r in store.memories(user_id, status=None)}


def assert_consistent(store: MemoryStore, user_id: str = "alice") -> list[MemoryRecord]:
    """At most one active version per memory, and one active copy of each text."""
    active = store.memories(user_id)
    assert all(len(texts) == 1 for texts in active_by_lineage(store, user_id).values())
    texts = [r.text.casefold() for r in active]
    assert len(texts) == len(set(texts)), texts
    return active


def paused(
    store: MemoryStore, method: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[threading.Event, threading.Event]:
    """Pause `store` the first time its version protocol (`engram.memory.versions`) calls
    `method`, until released."""
    reached, release = threading.Event(), threading.Event()
    original = getattr(store.versions, method)
    calls = {"n": 0}

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            reached.set()
            assert release.wait(20)
        return original(*args, **kwargs)

    monkeypatch.setattr(store.versions, method, wrapper)
    return reached, release


def race(
    first: Callable[[], Any],
    second: Callable[[], Any],
    reached: threading.Event,
    release: threading.Event,
) -> list[Any]:
    """Run `first` until it pauses, run `second` to the end, then let `first` finish."""
    results: list[Any] = [None, None]
    errors: list[BaseException] = []

    def run_first() -> None:
        try:
            results[0] = first()
        except BaseException as error:  # reported below
            errors.append(error)

    thread = threading.Thread(target=run_first)
    thread.start()
    assert reached.wait(20)
    results[1] = second()
    release.set()
    thread.join(30)
    assert not thread.is_alive() and not errors, errors
    return results


def test_update_against_update_keeps_both_and_forks_nothing(
    pair: tuple[MemoryStore, MemoryStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = pair
    memory_id = a.add("alice", "User has one cat", "personal").memory_id or ""
    reached, release = paused(a, "write", monkeypatch)
    first, second = race(
        lambda: a.update("alice", memory_id, "User has two cats"),
        lambda: b.update("alice", memory_id, "User has three cats"),
        reached,
        release,
    )
    assert {first.result, second.result} == {"updated"}
    [active] = assert_consistent(a)
    history = [v.text for v in a.history("alice", active.id)]
    assert history[0] == "User has one cat" and len(history) == 3  # neither change lost
    assert set(history) == {"User has one cat", "User has two cats", "User has three cats"}


def test_delete_against_update_never_revives_or_loses(
    pair: tuple[MemoryStore, MemoryStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = pair
    memory_id = a.add("alice", "User lives in Paris", "location").memory_id or ""
    reached, release = paused(a, "write", monkeypatch)
    race(
        lambda: a.update("alice", memory_id, "User lives in Berlin"),
        lambda: b.delete("alice", memory_id),
        reached,
        release,
    )
    active = assert_consistent(a)
    # The deletion stands; what the user said in the update is kept as a new memory.
    assert a.get("alice", memory_id).status == "deleted"
    assert [r.text for r in active] == ["User lives in Berlin"]
    assert active[0].lineage_id != memory_id


def test_update_waits_for_an_update_in_flight(
    pair: tuple[MemoryStore, MemoryStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """b meets a's claimed version (a is between claiming it and writing its successor):
    b waits for a, then applies its change on top of a's."""
    a, b = pair
    memory_id = a.add("alice", "User has one cat", "personal").memory_id or ""
    reached, release = paused(a, "insert", monkeypatch)
    first = threading.Thread(target=a.update, args=("alice", memory_id, "User has two cats"))
    first.start()
    assert reached.wait(20)
    second = threading.Thread(target=b.update, args=("alice", memory_id, "User has three cats"))
    second.start()
    second.join(0.2)
    assert second.is_alive()  # waiting for a
    release.set()
    first.join(20)
    second.join(20)
    [active] = assert_consistent(a)
    assert [v.text for v in a.history("alice", active.id)] == [
        "User has one cat",
        "User has two cats",
        "User has three cats",
    ]


def test_add_against_add_leaves_one_active_copy(
    pair: tuple[MemoryStore, MemoryStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = pair
    reached, release = paused(a, "insert", monkeypatch)  # a checked: no duplicate yet
    first, second = race(
        lambda: a.add("alice", "User likes jazz", "preferences"),
        lambda: b.add("alice", "User likes jazz", "preferences"),
        reached,
        release,
    )
    [active] = assert_consistent(a)
    # Both answers lead to the one memory (the later copy is merged into the kept one).
    for result in (first, second):
        version = a.get("alice", result.memory_id or "")
        assert active.id in (version.id, version.superseded_by)


def test_restore_against_update_forks_nothing(
    pair: tuple[MemoryStore, MemoryStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = pair
    old = a.add("alice", "User drinks tea", "preferences").memory_id or ""
    newer = a.update("alice", old, "User drinks coffee").memory_id or ""
    reached, release = paused(a, "write", monkeypatch)
    race(
        lambda: a.restore("alice", old),
        lambda: b.update("alice", newer, "User drinks mate"),
        reached,
        release,
    )
    [active] = assert_consistent(a)
    texts = [v.text for v in a.history("alice", active.id)]
    assert {"User drinks tea", "User drinks coffee", "User drinks mate"} <= set(texts)


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(3))
def test_free_races_keep_every_invariant(pair: tuple[MemoryStore, MemoryStore], trial: int) -> None:
    """50 writes split over the two stores: updates, deletes, restores and duplicate adds
    of the same few memories, all at once."""
    a, b = pair
    seeds = [a.add("alice", f"User owns {n} bikes", "personal").memory_id or "" for n in (1, 2)]
    barrier = threading.Barrier(10)
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        store = (a, b)[index % 2]
        barrier.wait()
        try:
            for step in range(5):
                target = seeds[(index + step) % 2]
                match (index + step) % 4:
                    case 0:
                        store.update("alice", target, f"User owns {index} bikes, step {step}")
                    case 1:
                        store.add("alice", "User likes jazz", "preferences")
                    case 2:
                        store.delete("alice", target)
                    case _:
                        store.restore("alice", target)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert_consistent(a)
    assert len([r for r in a.memories("alice") if r.text == "User likes jazz"]) == 1
