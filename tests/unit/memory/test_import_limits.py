"""Every imported line is bounded, and a file that holds one version twice is refused: a
hostile or mangled file is reported with its line and writes nothing."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from engram.memory.store import MemoryStore
from engram.memory.transfer import (
    MAX_DEPTH,
    MAX_EVENTS,
    MAX_LINE_BYTES,
    MAX_MESSAGE_IDS,
    MAX_VECTOR_DIMS,
    export_jsonl,
    import_jsonl,
    read_export,
)
from engram.state.errors import ImportFormatError


def alice_file(store: MemoryStore) -> list[dict[str, Any]]:
    """An export of two memories of alice (one updated: three versions), as objects."""
    paris = store.add("alice", "User lives in Paris", "location")
    store.update("alice", paris.memory_id or "", "User lives in Berlin")
    store.add("alice", "User plays the cello", "preferences")
    out = io.StringIO()
    export_jsonl(store, "alice", out)
    store.forget("alice")
    return [json.loads(line) for line in out.getvalue().splitlines()]


def text_of(lines: list[dict[str, Any]]) -> str:
    return "\n".join(json.dumps(line) for line in lines) + "\n"


def refused(store: MemoryStore, text: str) -> str:
    """The import's refusal; nothing of it may be written."""
    with pytest.raises(ImportFormatError) as raised:
        import_jsonl(store, io.StringIO(text))
    assert store.count("alice", status=None) == 0
    return str(raised.value)


def nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [MAX_DEPTH, 1_000, 100_000])
def test_a_line_nested_too_deep_is_a_format_error_naming_it(store: MemoryStore, depth: int) -> None:
    """Past the limit, and far past Python's recursion limit (where `json.loads` itself
    gives up): the same one-line refusal, for a version's line or the header."""
    text = text_of(alice_file(store)).splitlines()

    def with_extra(line: str, depth: int) -> str:
        # Built by hand: json.dumps recurses too, and 100,000 levels is past any stack.
        return line[:-1] + ', "extra": ' + "[" * depth + "1" + "]" * depth + "}"

    # `depth` lists inside the line's object: one level more than `depth`.
    message = refused(store, "\n".join([*text[:2], with_extra(text[2], depth), *text[3:]]))
    assert message.startswith(f"line 3: JSON nested deeper than {MAX_DEPTH} levels")
    assert "\n" not in message  # one line: an HTTP client shows it as it is
    header = with_extra(text[0], depth)
    assert refused(store, "\n".join([header, *text[1:]])).startswith("line 1: JSON nested")

    # At the limit a line is read (an unknown field is ignored, as always).
    within = with_extra(text[2], MAX_DEPTH - 1)
    report = import_jsonl(store, io.StringIO("\n".join([*text[:2], within, *text[3:]])))
    assert report.imported == 3


def test_the_largest_line_engram_writes_is_within_every_limit(store: MemoryStore) -> None:
    lines = alice_file(store)
    big = lines[1]
    big["vector"] = [-0.012345678901234567] * 3072  # text-embedding-3-large
    big["text"] = "\u00e9" * 2000  # written as \\u00e9: 6 bytes a character
    message_id = "b5e1b3c6-6a7e-4f0e-9f53-3c6f0b6e2d11"
    event = {
        "op": "RESTORE",
        "at": "2026-01-05T10:00:00.123456+00:00",
        "source": {
            "thread_id": "cli:alice:" + "t" * 100,
            "message_ids": [message_id] * 2,
            "actor": "chat",
        },
        "detail": f"restored from {message_id}",
    }
    big["events"] = [event] * MAX_EVENTS
    big["source"] = {"message_ids": [message_id] * MAX_MESSAGE_IDS, "actor": "ingest"}
    assert MAX_LINE_BYTES / 4 < len(json.dumps(big).encode()) < MAX_LINE_BYTES / 2
    header, memories = read_export(text_of(lines).splitlines())
    assert len(memories[0].events) == MAX_EVENTS and header.count == 3


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (
            lambda line: line.update(events=[line["events"][0]] * (MAX_EVENTS + 1)),
            f"line 2: events: 1,001 events; a version keeps at most {MAX_EVENTS:,}",
        ),
        (
            lambda line: line["source"].update(message_ids=["m"] * (MAX_MESSAGE_IDS + 1)),
            f"line 2: source.message_ids: 1,001 message ids; a source names at most "
            f"{MAX_MESSAGE_IDS}",
        ),
        (
            lambda line: line["events"][0]["source"].update(
                message_ids=["m"] * (MAX_MESSAGE_IDS + 1)
            ),
            "line 2: events.0.source.message_ids: 1,001 message ids",
        ),
        (
            lambda line: line.update(vector=[0.5] * (MAX_VECTOR_DIMS + 1)),
            f"line 2: vector: 8,193 dimensions; at most {MAX_VECTOR_DIMS:,} are read",
        ),
        (
            lambda line: line["events"][0].update(detail="x" * MAX_LINE_BYTES),
            "line 2: the line is 1,0",  # 1,0xx,xxx bytes: the detail and the rest
        ),
    ],
)
def test_each_bound_of_a_line_is_refused_with_its_line(
    store: MemoryStore, mangle: Any, reason: str
) -> None:
    lines = alice_file(store)
    mangle(lines[1])
    assert reason in refused(store, text_of(lines))


def test_the_200000_events_line_is_refused_by_its_size(store: MemoryStore) -> None:
    lines = alice_file(store)
    lines[1]["events"] = lines[1]["events"] * 200_000
    message = refused(store, text_of(lines))
    assert message.startswith("line 2: the line is ")
    assert f"one version takes at most {MAX_LINE_BYTES:,} (MAX_LINE_BYTES)" in message


def test_two_lines_with_one_id_are_refused_with_both_line_numbers(store: MemoryStore) -> None:
    lines = alice_file(store)
    twin = dict(lines[1], text="User lives in Rome")  # same version id, another text
    message = refused(store, text_of([{**lines[0], "count": 4}, *lines[1:], twin]))
    assert message.startswith(f"line 5: version {lines[1]['id']} is also on line 2")

    # The same id spelled in capitals is the same version.
    shouted = dict(lines[3], id=lines[3]["id"].upper(), status="deleted")
    message = refused(store, text_of([{**lines[0], "count": 4}, *lines[1:], shouted]))
    assert message.startswith(f"line 5: version {lines[3]['id']} is also on line 4")

    # Without the twin the file imports, and the count it reports is what was stored.
    report = import_jsonl(store, io.StringIO(text_of(lines)))
    assert report.imported == 3 == store.count("alice", status=None)


def test_limits_hold_for_every_line_not_only_the_first(store: MemoryStore) -> None:
    lines = alice_file(store)
    lines[3]["events"] = [lines[3]["events"][0]] * (MAX_EVENTS + 1)
    assert refused(store, text_of(lines)).startswith("line 4: events:")


def test_a_file_signed_today_imports_whole_at_the_limits(store: MemoryStore) -> None:
    """At exactly each limit a line imports (the bounds are inclusive)."""
    lines = alice_file(store)
    at = datetime(2026, 1, 5, tzinfo=UTC).isoformat()
    lines[1]["events"] = [{"op": "IMPORT", "at": at}] * (MAX_EVENTS - 1)
    lines[1]["source"]["message_ids"] = [f"m{i}" for i in range(MAX_MESSAGE_IDS)]
    report = import_jsonl(store, io.StringIO(text_of(lines)))
    assert report.imported == 3
    stored = store.get("alice", lines[1]["id"])
    assert len(stored.events) == MAX_EVENTS  # the file's events and this import's
    assert len(stored.source.message_ids) == MAX_MESSAGE_IDS
