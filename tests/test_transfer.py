"""Export/import: exact round trips, another user, re-embedding, malformed files."""

from __future__ import annotations

import io
import json

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding
from qdrant_client import QdrantClient

from engram.errors import ImportFormatError
from memory.store import MemoryStore


def populated(store: MemoryStore) -> None:
    paris = store.add("alice", "User lives in Paris", "location")
    store.update("alice", paris.memory_id or "", "User lives in Berlin")
    cello = store.add("alice", "User plays the cello", "preferences")
    store.delete("alice", cello.memory_id or "")
    store.add("bob", "User likes jazz", "preferences")


def exported(store: MemoryStore, user_id: str = "alice") -> str:
    out = io.StringIO()
    store.export_jsonl(user_id, out)
    return out.getvalue()


def snapshot(store: MemoryStore, user_id: str) -> list[dict[str, object]]:
    return [m.model_dump(mode="json") for m in store.memories(user_id, status=None)]


def test_round_trip_is_exact(store: MemoryStore) -> None:
    populated(store)
    before = snapshot(store, "alice")
    vectors_before = dict((r.id, v) for r, v in store.export_records("alice"))
    text = exported(store)
    assert store.forget("alice") == 3

    report = store.import_jsonl(io.StringIO(text))
    assert (report.user_id, report.imported, report.re_embedded) == ("alice", 3, 0)
    assert snapshot(store, "alice") == before
    assert dict((r.id, v) for r, v in store.export_records("alice")) == vectors_before
    assert [m.text for m in store.search("alice", "Berlin", k=3)] == ["User lives in Berlin"]
    # re-importing the same file changes nothing (idempotent)
    again = store.import_jsonl(io.StringIO(text))
    assert (again.imported, again.skipped) == (0, 3)
    assert snapshot(store, "alice") == before
    assert [m.text for m in store.memories("bob")] == ["User likes jazz"]


def test_an_old_export_never_rolls_back_newer_changes(store: MemoryStore) -> None:
    populated(store)
    text = exported(store)
    berlin = store.memories("alice")[0]
    store.update("alice", berlin.id, "User lives in Rome")
    after = snapshot(store, "alice")
    report = store.import_jsonl(io.StringIO(text))
    assert (report.imported, report.skipped) == (0, 3)
    assert snapshot(store, "alice") == after
    assert [m.text for m in store.memories("alice")] == ["User lives in Rome"]


def test_import_as_another_user_gets_fresh_linked_ids(store: MemoryStore) -> None:
    populated(store)
    alice_before = snapshot(store, "alice")
    report = store.import_jsonl(io.StringIO(exported(store)), as_user="carol")
    assert report.user_id == "carol" and report.imported == 3
    carol = store.memories("carol", status=None)
    assert {m.id for m in carol}.isdisjoint({m["id"] for m in alice_before})
    superseded = next(m for m in carol if m.status == "superseded")
    head = store.get("carol", superseded.superseded_by or "")
    assert head.text == "User lives in Berlin" and head.supersedes == superseded.id
    assert len(store.history("carol", head.id)) == 2
    assert snapshot(store, "alice") == alice_before  # the source user is untouched


def test_other_embedding_model_is_re_embedded_with_progress(store: MemoryStore) -> None:
    small = MemoryStore(QdrantClient(":memory:"), DeterministicFakeEmbedding(size=16), dims=16)
    populated(small)
    progress: list[tuple[int, int]] = []
    report = store.import_jsonl(
        io.StringIO(exported(small)), on_progress=lambda d, t: progress.append((d, t))
    )
    assert report.re_embedded == 3 and progress[-1] == (3, 3)
    assert [m.text for m in store.search("alice", "which city does she live in", k=1)] == [
        "User lives in Berlin"
    ]


@pytest.mark.parametrize(
    ("mangle", "error"),
    [
        (lambda lines: [*lines[:2], "{not json", *lines[3:]], "line 3: "),
        (
            lambda lines: [
                lines[0],
                lines[1].replace('"status":"superseded"', '"status":"gone"'),
                *lines[2:],
            ],
            "line 2: status",
        ),
        (lambda lines: lines[:-1], "announces 3 memories but the file has 2"),
        (lambda lines: ['{"hello": 1}', *lines[1:]], "line 1: "),
        (lambda lines: [], "line 1: the file is empty"),
        (
            lambda lines: [
                lines[0],
                lines[1].replace('"user_id":"alice"', '"user_id":"bob"'),
                *lines[2:],
            ],
            "line 2: memory of user 'bob'",
        ),
    ],
)
def test_malformed_file_names_the_line_and_imports_nothing(
    store: MemoryStore, mangle: object, error: str
) -> None:
    populated(store)
    lines = exported(store).splitlines()
    store.forget("alice")
    with pytest.raises(ImportFormatError) as raised:
        store.import_jsonl(io.StringIO("\n".join(mangle(lines))))  # type: ignore[operator]
    assert error in str(raised.value)
    assert store.count("alice") == 0 and store.count("bob") == 1


def test_an_id_owned_by_another_user_is_refused(store: MemoryStore) -> None:
    populated(store)
    text = exported(store)
    # An edited export claims alice's ids for mallory: refused, nothing written.
    forged = text.replace('"user_id":"alice"', '"user_id":"mallory"')
    with pytest.raises(Exception, match="already belong to another user"):
        store.import_jsonl(io.StringIO(forged))
    assert store.count("mallory") == 0
    assert len(store.memories("alice", status=None)) == 3


def test_failed_write_rolls_back(store: MemoryStore, monkeypatch: pytest.MonkeyPatch) -> None:
    populated(store)
    text = exported(store)
    store.forget("alice")
    calls = {"n": 0}
    upsert = store.client.upsert

    def failing_upsert(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        upsert(*args, **kwargs)  # the batch lands, then the connection "drops"
        raise ConnectionError("lost connection")

    monkeypatch.setattr(store.client, "upsert", failing_upsert)
    with pytest.raises(ConnectionError):
        store.import_jsonl(io.StringIO(text))
    monkeypatch.undo()
    assert calls["n"] == 1 and store.count("alice") == 0


def test_export_header_describes_the_file(store: MemoryStore) -> None:
    populated(store)
    header = json.loads(exported(store).splitlines()[0])
    assert header["format"] == "engram-export" and header["count"] == 3
    assert header["embedding"] == "local:all-MiniLM-L6-v2:384"
