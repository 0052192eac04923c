"""How a memory version is laid out in a point's payload, and the text rules every write
follows (what makes two texts the same, what text and category are accepted)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from engram.memory.engines.base import CONTENT_KEY, METADATA_KEY, Point
from engram.memory.keywords import document_keywords
from engram.state.contracts import MemoryRecord
from engram.state.errors import InvalidInputError

MAX_MEMORY_CHARS = 2000


def normalize_text(text: str) -> str:
    """What makes two memories the same text: case, spacing and end punctuation ignored."""
    return re.sub(r"\s+", " ", text).strip().rstrip(".!").strip().casefold()


def text_hash(text: str) -> str:
    return hashlib.sha256(normalize_text(text).encode()).hexdigest()[:32]


def clean_memory_text(text: str | None) -> str:
    """Validate a memory's text; empty or oversized text is refused, not stored."""
    cleaned = (text or "").strip()
    if not cleaned:
        raise InvalidInputError("memory text must not be empty")
    if len(cleaned) > MAX_MEMORY_CHARS:
        raise InvalidInputError(f"memory text is over {MAX_MEMORY_CHARS} characters")
    return cleaned


def clean_category(category: str | None) -> str:
    cleaned = re.sub(r"\s+", "_", (category or "").strip().casefold())
    return cleaned[:64] or "other"


@dataclass(frozen=True)
class Stored:
    """A version as stored: the record, plus what concurrent writers coordinate on.

    `revision` grows by one with every change of the version and `writer` names the last
    change, so a conditional write can tell whether it won. `pending_since` is when an
    update claimed this version (linked it to a successor it is about to write).
    """

    record: MemoryRecord
    revision: int = 0
    writer: str | None = None
    pending_since: str | None = None


def metadata(stored: Stored) -> dict[str, Any]:
    data = stored.record.model_dump(mode="json", exclude={"id", "text", "score"})
    data["text_hash"] = text_hash(stored.record.text)
    data["revision"] = stored.revision
    data["writer"] = stored.writer
    data["pending_since"] = stored.pending_since
    return data


def payload(stored: Stored) -> dict[str, Any]:
    return {CONTENT_KEY: stored.record.text, METADATA_KEY: metadata(stored)}


def stored_from_point(point: Point) -> Stored:
    data = point.payload.get(METADATA_KEY, {})
    fields = {k: v for k, v in data.items() if k in MemoryRecord.model_fields}
    record = MemoryRecord.model_validate(
        {**fields, "id": point.id, "text": point.payload.get(CONTENT_KEY, ""), "score": None}
    )
    return Stored(
        record=record,
        revision=int(data.get("revision") or 0),
        writer=data.get("writer"),
        pending_since=data.get("pending_since"),
    )


def record_from_point(point: Point) -> MemoryRecord:
    return stored_from_point(point).record


def stored_point(stored: Stored, vector: list[float]) -> Point:
    """The point that stores a version: its payload, dense vector and keyword vector."""
    return Point(
        id=stored.record.id,
        payload=payload(stored),
        dense=vector,
        keywords=document_keywords(stored.record.text),
    )
