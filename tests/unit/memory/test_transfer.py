"""Export/import: exact round trips, another user, re-embedding, malformed files."""

from __future__ import annotations

import io
import json
import os
import stat
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings

from engram.memory.store import MemoryStore, PlannedOp
from engram.memory.transfer import VERSION, derived_id, export_file, export_jsonl, import_jsonl
from engram.state.contracts import Source
from engram.state.errors import ImportFormatError, InvalidInputError, MemoryNotFoundError
from tests.helpers import make_engine, make_store


@pytest.fixture
def store(store_on_each_engine: MemoryStore) -> MemoryStore:
    return store_on_each_engine


def populated(store: MemoryStore) -> None:
    paris = store.add("alice", "User lives in Paris", "location")
    store.update("alice", paris.memory_id or "", "User lives in Berlin")
    cello = store.add("alice", "User plays the cello", "preferences")
    store.delete("alice", cello.memory_id or "")
    store.add("bob", "User likes jazz", "preferences")


def exported(store: MemoryStore, user_id: str = "alice") -> str:
    out = io.StringIO()
    export_jsonl(store, user_id, out)
    return out.getvalue()


def snapshot(store: MemoryStore, user_id: str) -> list[dict[str, object]]:
    return [m.model_dump(mode="json") for m in store.memories(user_id, status=None)]


def without_import_events(records: list[dict[str, object]]) -> list[dict[str, object]]:
    result = []
    for record in records:
        events = list(record["events"])  # type: ignore[call-overload]
        assert events[-1]["op"] == "IMPORT"
        result.append({**record, "events": events[:-1]})
    return result


def test_round_trip_is_exact(store: MemoryStore) -> None:
    populated(store)
    before = snapshot(store, "alice")
    vectors_before = dict((r.id, v) for r, v in store.export_records("alice"))
    text = exported(store)
    assert store.forget("alice") == 3

    report = import_jsonl(store, io.StringIO(text))
    assert (report.user_id, report.imported, report.re_embedded) == ("alice", 3, 0)
    # Every field of every version comes back; each version also records the import.
    assert without_import_events(snapshot(store, "alice")) == before
    # Vectors come back as Qdrant stores them: it re-normalises cosine vectors on write,
    # so "exact" is float32 precision, not bit equality.
    vectors_after = dict((r.id, v) for r, v in store.export_records("alice"))
    assert vectors_after.keys() == vectors_before.keys()
    for memory_id, vector in vectors_before.items():
        assert vectors_after[memory_id] == pytest.approx(vector, abs=1e-6)


def test_an_export_that_fails_part_way_leaves_the_earlier_file_whole(
    store: MemoryStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    populated(store)
    exports = tmp_path / "exports"
    exports.mkdir()
    target = exports / "alice.jsonl"
    assert export_file(store, "alice", target) == 3
    earlier = target.read_text()
    store.add("alice", "User keeps bees", "hobbies")
    signed = store.vector_mac
    calls = 0

    def fails_on_the_third_line(text: str, vector: list[float]) -> str:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise OSError("No space left on device")
        return signed(text, vector)

    monkeypatch.setattr(store, "vector_mac", fails_on_the_third_line)
    with pytest.raises(OSError, match="No space left"):
        export_file(store, "alice", target)
    assert calls == 3  # two versions were written before it failed
    assert target.read_text() == earlier
    assert [p.name for p in exports.iterdir()] == ["alice.jsonl"]  # no partial file left
    monkeypatch.setattr(store, "vector_mac", signed)
    assert export_file(store, "alice", target) == 4
    assert "User keeps bees" in target.read_text()


def test_an_export_file_is_private_keeps_its_permissions_and_follows_a_link(
    store: MemoryStore, tmp_path: Path
) -> None:
    populated(store)
    new = tmp_path / "new.jsonl"
    export_file(store, "alice", new)
    assert stat.S_IMODE(new.stat().st_mode) == 0o600  # it holds the user's memories
    shared = tmp_path / "shared.jsonl"
    shared.write_text("an earlier export\n")
    shared.chmod(0o640)
    export_file(store, "alice", shared)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o640
    link = tmp_path / "latest.jsonl"
    link.symlink_to(shared)
    store.add("alice", "User keeps bees", "hobbies")
    export_file(store, "alice", link)
    assert link.is_symlink() and "User keeps bees" in shared.read_text()


def test_an_export_to_what_is_not_a_regular_file_writes_through_or_says_why(
    store: MemoryStore, tmp_path: Path
) -> None:
    populated(store)
    devnull = Path(os.devnull)
    assert export_file(store, "alice", devnull) == 3  # written to, never replaced
    assert stat.S_ISCHR(devnull.stat().st_mode)
    folder = tmp_path / "exports"
    folder.mkdir()
    with pytest.raises(InvalidInputError, match="it is a folder; name a file in it"):
        export_file(store, "alice", folder)
    assert list(folder.iterdir()) == []
    with pytest.raises(InvalidInputError, match=r"cannot export to .*missing.*No such file"):
        export_file(store, "alice", tmp_path / "missing" / "alice.jsonl")


def test_an_old_export_never_rolls_back_newer_changes(store: MemoryStore) -> None:
    populated(store)
    text = exported(store)
    berlin = store.memories("alice")[0]
    store.update("alice", berlin.id, "User lives in Rome")
    after = snapshot(store, "alice")
    report = import_jsonl(store, io.StringIO(text))
    assert (report.imported, report.skipped) == (0, 3)
    assert snapshot(store, "alice") == after
    assert [m.text for m in store.memories("alice")] == ["User lives in Rome"]


def test_import_as_another_user_gets_fresh_linked_ids(store: MemoryStore) -> None:
    populated(store)
    alice_before = snapshot(store, "alice")
    report = import_jsonl(store, io.StringIO(exported(store)), as_user="carol")
    assert report.user_id == "carol" and report.imported == 3
    carol = store.memories("carol", status=None)
    assert {m.id for m in carol}.isdisjoint({m["id"] for m in alice_before})
    superseded = next(m for m in carol if m.status == "superseded")
    head = store.get("carol", superseded.superseded_by or "")
    assert head.text == "User lives in Berlin" and head.supersedes == superseded.id
    assert len(store.history("carol", head.id)) == 2
    assert snapshot(store, "alice") == alice_before  # the source user is untouched


def test_other_embedding_model_is_re_embedded_with_progress(
    store: MemoryStore, tmp_path: Path
) -> None:
    fake = DeterministicFakeEmbedding(size=16)
    small = MemoryStore(make_engine("server", fake, tmp_path / "small"), fake, dims=16)
    populated(small)
    progress: list[tuple[int, int]] = []
    report = import_jsonl(
        store, io.StringIO(exported(small)), on_progress=lambda d, t: progress.append((d, t))
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
        import_jsonl(store, io.StringIO("\n".join(mangle(lines))))  # type: ignore[operator]
    assert error in str(raised.value)
    assert store.count("alice") == 0 and store.count("bob") == 1


def test_ids_held_by_another_user_are_treated_like_missing_ones(store: MemoryStore) -> None:
    populated(store)
    text = exported(store)
    forged = text.replace('"user_id":"alice"', '"user_id":"mallory"')
    store.forget("bob")
    fresh = exported(store, "bob")  # an empty export of a user nobody holds ids for

    report = import_jsonl(store, io.StringIO(forged))
    # Imported like any new memories: nothing says (or depends on) who holds the ids.
    assert (report.user_id, report.imported, report.skipped) == ("mallory", 3, 0)
    assert import_jsonl(store, io.StringIO(fresh)).imported == 0
    mallory = store.memories("mallory", status=None)
    alice = store.memories("alice", status=None)
    assert not {m.id for m in mallory} & {m.id for m in alice}
    assert sorted(m.text for m in mallory) == sorted(m.text for m in alice)
    berlin = next(m for m in mallory if m.status == "active")
    assert store.get("mallory", berlin.supersedes or "").superseded_by == berlin.id
    # alice's memories are exactly as they were, and a second import changes nothing
    assert [e.op for e in store.get("alice", alice[0].id).events] == ["ADD", "SUPERSEDED"]
    assert import_jsonl(store, io.StringIO(forged)).imported == 0
    assert len(store.memories("mallory", status=None)) == 3


def bobs_view(store: MemoryStore, file_ids: list[str]) -> dict[str, object]:
    """All bob can learn after an import: his memories, and which of the file's ids he can
    read (the server answers 404 or 200)."""

    def readable(memory_id: str) -> bool:
        try:
            store.get("bob", memory_id)
        except MemoryNotFoundError:
            return False
        return True

    return {
        "ids": sorted(m.id for m in store.memories("bob", status=None)),
        "texts": sorted(m.text for m in store.memories("bob", status=None)),
        "readable": [memory_id for memory_id in file_ids if readable(memory_id)],
    }


def test_importing_another_users_ids_tells_nothing_about_them(store: MemoryStore) -> None:
    """bob sends alice's lines as his own (what `POST /memories/import` receives): stored
    ids, the report and later reads are those of ids nobody holds."""
    populated(store)
    store.forget("bob")
    alice_before = snapshot(store, "alice")
    as_bob = exported(store).replace('"user_id":"alice"', '"user_id":"bob"')
    file_ids = [line["id"] for line in lines_of(as_bob)[1:]]

    held = import_jsonl(store, io.StringIO(as_bob), as_user="bob")
    held_view = bobs_view(store, file_ids)
    assert snapshot(store, "alice") == alice_before  # alice's memories are untouched
    assert held_view["readable"] == []  # alice's ids are not bob's, and say nothing
    assert held_view["ids"] == sorted(derived_id("bob", i) for i in file_ids)

    # The same file once nobody holds its ids: the same report, ids and reads.
    store.forget("bob")
    store.forget("alice")
    free = import_jsonl(store, io.StringIO(as_bob), as_user="bob")
    assert free == held and bobs_view(store, file_ids) == held_view

    # And ids never seen anywhere behave the same way.
    store.forget("bob")
    never_seen = as_bob
    for memory_id in file_ids:
        never_seen = never_seen.replace(memory_id, str(uuid.uuid4()))
    new_ids = [line["id"] for line in lines_of(never_seen)[1:]]
    assert import_jsonl(store, io.StringIO(never_seen), as_user="bob") == held
    view = bobs_view(store, new_ids)
    assert view["readable"] == [] and view["texts"] == held_view["texts"]
    assert view["ids"] == sorted(derived_id("bob", i) for i in new_ids)


def test_an_unsigned_file_gets_derived_ids_and_never_duplicates_the_users_own(
    store: MemoryStore,
) -> None:
    """An older export (no `ids_mac`) or a file from another installation: the user's own
    memories in it are kept as they are, the rest is written under derived ids."""
    populated(store)
    lines = lines_of(exported(store))
    lines[0]["version"] = 2
    for line in lines[1:]:
        del line["ids_mac"]
    before = snapshot(store, "alice")
    report = import_jsonl(store, file_of(lines))
    assert (report.imported, report.skipped) == (0, 3)  # alice has them: nothing changes
    assert snapshot(store, "alice") == before

    store.forget("alice")
    report = import_jsonl(store, file_of(lines))
    assert (report.imported, report.skipped, report.re_embedded) == (3, 0, 0)
    ids = {m.id for m in store.memories("alice", status=None)}
    assert ids == {derived_id("alice", line["id"]) for line in lines[1:]}
    berlin = store.memories("alice")[0]
    assert [m.text for m in store.history("alice", berlin.id)] == [
        "User lives in Paris",
        "User lives in Berlin",
    ]
    assert import_jsonl(store, file_of(lines)).imported == 0  # derived the same way again


def test_an_edited_id_or_link_loses_the_files_own_ids(store: MemoryStore) -> None:
    """Ids are kept only as signed: an edited link (or id) makes the whole file derived,
    so links never point between kept and derived ids."""
    populated(store)
    lines = lines_of(exported(store))
    store.forget("alice")
    paris = next(line for line in lines[1:] if line["text"] == "User lives in Paris")
    paris["superseded_by"] = str(uuid.uuid4())
    import_jsonl(store, file_of(lines))
    ids = {m.id for m in store.memories("alice", status=None)}
    assert ids == {derived_id("alice", line["id"]) for line in lines[1:]}


def lines_of(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def file_of(lines: list[dict[str, Any]]) -> io.StringIO:
    return io.StringIO("\n".join(json.dumps(line) for line in lines))


def test_a_time_without_zone_is_refused_with_its_line(store: MemoryStore) -> None:
    populated(store)
    lines = lines_of(exported(store))
    store.forget("alice")
    lines[2]["created_at"] = "2026-01-05T10:00:00"
    with pytest.raises(ImportFormatError, match=r"line 3: created_at: .* has no time zone"):
        import_jsonl(store, file_of(lines))
    assert store.count("alice") == 0
    lines[2]["created_at"] = "2026-01-05T10:00:00+02:00"
    lines[2]["events"][0]["at"] = "2026-01-05T10:00:00"
    with pytest.raises(ImportFormatError, match=r"line 3: events\.0\.at"):
        import_jsonl(store, file_of(lines))


def test_user_ids_are_normalised_so_forget_erases_everything(store: MemoryStore) -> None:
    populated(store)
    lines = lines_of(exported(store))
    store.forget("alice")
    for line in lines:
        line["user_id"] = "alice "
    assert import_jsonl(store, file_of(lines)).user_id == "alice"
    assert store.count("alice") == 3
    assert store.forget("alice") == 3
    assert store.engine.count(None) == 1  # only bob's memory is left


def test_an_old_file_with_upper_case_ids_never_revives_a_deleted_version(
    store: MemoryStore,
) -> None:
    populated(store)
    old_file = exported(store)
    berlin = store.memories("alice")[0]
    store.delete("alice", berlin.id)  # newer than the file
    before = snapshot(store, "alice")

    shouted = old_file
    for record, _ in store.export_records("alice"):
        shouted = shouted.replace(record.id, record.id.upper())
    report = import_jsonl(store, io.StringIO(shouted))
    assert (report.imported, report.skipped) == (0, 3)
    assert snapshot(store, "alice") == before
    assert store.get("alice", berlin.id).status == "deleted"


def test_a_newer_version_in_a_file_never_forks_a_memory_the_store_has(
    store: MemoryStore,
) -> None:
    tea = store.add("alice", "User likes tea", "preferences")
    old_file = exported(store)
    store.update("alice", tea.memory_id or "", "User likes green tea")
    newer_file = exported(store)
    store.forget("alice")
    import_jsonl(store, io.StringIO(old_file))
    report = import_jsonl(store, io.StringIO(newer_file))
    # The store's own state of the memory wins: one active version, no fork.
    assert report.imported == 0
    assert [m.text for m in store.memories("alice")] == ["User likes tea"]


def test_an_edited_text_never_keeps_the_old_vector(store: MemoryStore) -> None:
    populated(store)
    text = exported(store)
    store.forget("alice")
    edited = text.replace("User lives in Berlin", "User keeps bees in Oslo")
    report = import_jsonl(store, io.StringIO(edited))
    assert (report.imported, report.re_embedded) == (3, 1)
    hits = store.search("alice", "beekeeping", k=1)
    assert [m.text for m in hits] == ["User keeps bees in Oslo"]
    vector = dict((r.id, v) for r, v in store.export_records("alice"))[hits[0].id]
    expected = store.embeddings.embed_query("User keeps bees in Oslo")
    assert vector == pytest.approx(expected, abs=1e-5)


def test_a_file_signed_by_another_store_is_re_embedded(
    store: MemoryStore, local_embeddings: Embeddings, tmp_path: Path
) -> None:
    populated(store)
    text = exported(store)
    other = make_store("server", local_embeddings, tmp_path / "other")
    assert import_jsonl(other, io.StringIO(text)).re_embedded == 3


def test_a_version_1_file_still_imports(store: MemoryStore) -> None:
    populated(store)
    lines = lines_of(exported(store))
    store.forget("alice")
    lines[0]["version"] = 1
    for line in lines[1:]:
        del line["vector_mac"]
    report = import_jsonl(store, file_of(lines))
    assert (report.imported, report.re_embedded) == (3, 3)
    assert [m.text for m in store.search("alice", "which city", k=1)] == ["User lives in Berlin"]


def test_text_and_category_follow_the_rules_of_any_write(store: MemoryStore) -> None:
    populated(store)
    lines = lines_of(exported(store))
    store.forget("alice")
    lines[3]["text"] = "x" * 5000
    with pytest.raises(ImportFormatError, match="line 4: text: memory text is over 2000"):
        import_jsonl(store, file_of(lines))
    lines[3]["text"] = "User plays the cello"
    lines[3]["category"] = "  Music  Stuff "
    import_jsonl(store, file_of(lines))
    assert store.get("alice", lines[3]["id"]).category == "music_stuff"


def test_two_active_versions_of_one_memory_are_refused(store: MemoryStore) -> None:
    populated(store)
    lines = lines_of(exported(store))
    store.forget("alice")
    paris = next(line for line in lines[1:] if line["text"] == "User lives in Paris")
    paris.update(status="active", superseded_by=None)
    with pytest.raises(ImportFormatError, match="a second active version"):
        import_jsonl(store, file_of(lines))


def test_a_copy_never_points_into_the_original_users_conversations(store: MemoryStore) -> None:
    store.add("alice", "User likes tea", "preferences", source=Source(thread_id="cli:alice:main"))
    report = import_jsonl(store, io.StringIO(exported(store)), as_user="bob")
    assert report.imported == 1
    [copy] = store.memories("bob")
    assert copy.source.thread_id is None and copy.source.message_ids == []
    assert all(e.source.thread_id is None for e in copy.events)
    assert store.memories("alice")[0].source.thread_id == "cli:alice:main"


def test_an_imported_fact_that_is_already_active_is_merged(store: MemoryStore) -> None:
    store.add("alice", "User likes jazz", "preferences")
    report = import_jsonl(store, io.StringIO(exported(store)), as_user="bob")
    assert report.imported == 1
    import_jsonl(store, io.StringIO(exported(store, "bob")), as_user="alice")
    active = store.memories("alice")
    assert [m.text for m in active] == ["User likes jazz"]
    copies = [m for m in store.memories("alice", status=None) if m.id != active[0].id]
    assert [(m.status, m.superseded_by) for m in copies] == [("superseded", active[0].id)]


def test_failed_write_rolls_back(store: MemoryStore, monkeypatch: pytest.MonkeyPatch) -> None:
    populated(store)
    text = exported(store)
    store.forget("alice")
    calls = {"n": 0}
    upsert = store.engine.upsert

    def failing_upsert(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        upsert(*args, **kwargs)  # the batch lands, then the connection "drops"
        raise ConnectionError("lost connection")

    monkeypatch.setattr(store.engine, "upsert", failing_upsert)
    with pytest.raises(ConnectionError):
        import_jsonl(store, io.StringIO(text))
    monkeypatch.undo()
    assert calls["n"] == 1 and store.count("alice") == 0


def test_export_header_describes_the_file(store: MemoryStore) -> None:
    populated(store)
    header = json.loads(exported(store).splitlines()[0])
    assert header["format"] == "engram-export" and header["count"] == 3
    assert header["embedding"] == "local:all-MiniLM-L6-v2:384"


def with_validity(store: MemoryStore) -> tuple[str, str]:
    """Alice's memories with dates: a trip added with its end, a job given dates by hand
    (the version before it has none)."""
    report = store.apply(
        "alice",
        [
            PlannedOp(
                "ADD",
                text="User is in Tokyo",
                category="travel",
                valid_from=date(2026, 3, 9),
                valid_until=date(2026, 3, 13),
            )
        ],
    )
    tokyo = report.applied[0].memory_id or ""
    job = store.add("alice", "User works at Acme", "work").memory_id or ""
    dated = store.set_validity("alice", job, date(2025, 1, 1), date(2026, 6, 30))
    return tokyo, dated.memory_id or ""


def test_validity_dates_survive_a_round_trip(store: MemoryStore) -> None:
    tokyo, job = with_validity(store)
    before = snapshot(store, "alice")
    moment = datetime.now(UTC)
    held_before = [m.id for m in store.memories("alice", as_of=moment)]
    text = exported(store)
    assert json.loads(text.splitlines()[0])["version"] == VERSION
    store.forget("alice")

    import_jsonl(store, io.StringIO(text))
    assert without_import_events(snapshot(store, "alice")) == before
    dates = {(m.valid_from, m.valid_until) for m in store.memories("alice", status=None)}
    assert dates == {
        (date(2026, 3, 9), date(2026, 3, 13)),
        (date(2025, 1, 1), date(2026, 6, 30)),
        (None, None),  # the job's first version
    }
    # as-of reads replay the imported versions' events as they were
    assert [m.id for m in store.memories("alice", as_of=moment)] == held_before
    assert store.get("alice", tokyo).valid_until == date(2026, 3, 13)
    assert store.get("alice", job).valid_from == date(2025, 1, 1)


def test_a_file_from_before_validity_imports_with_the_dates_unset(store: MemoryStore) -> None:
    populated(store)
    lines = lines_of(exported(store))
    store.forget("alice")
    lines[0]["version"] = 4
    for line in lines[1:]:
        del line["valid_from"], line["valid_until"]
    report = import_jsonl(store, file_of(lines))
    assert report.imported == 3
    records = store.memories("alice", status=None)
    assert {(m.valid_from, m.valid_until) for m in records} == {(None, None)}
    assert [m.text for m in store.memories("alice")] == ["User lives in Berlin"]


def test_an_end_before_the_start_is_refused_with_its_line(store: MemoryStore) -> None:
    with_validity(store)
    lines = lines_of(exported(store))
    store.forget("alice")
    lines[1]["valid_until"] = "2020-01-01"
    lines[1]["valid_from"] = "2021-01-01"
    with pytest.raises(ImportFormatError, match=r"line 2: valid_until: 2020-01-01 is before"):
        import_jsonl(store, file_of(lines))
    assert store.count("alice") == 0
