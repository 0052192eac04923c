"""Export and import of a user's memories as JSON Lines, exactly (ids, versions, links,
timestamps, categories, provenance), with vectors so the same model needs no re-embedding.

Line 1 is a header; every other line is one version. An import is validated completely
before anything is written, so a malformed line (reported with its number) imports nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TextIO

from pydantic import BaseModel, ValidationError

from engram.errors import ImportFormatError
from memory.store import MemoryStore, require_user_id
from state.contracts import MemoryRecord

FORMAT = "engram-export"
VERSION = 1
_REMAP_NAMESPACE = uuid.UUID("6f1f4c4e-8a53-4a3b-9a55-0c7f1d2e9b10")


class ExportHeader(BaseModel):
    format: str
    version: int
    user_id: str
    embedding: str
    count: int
    exported_at: datetime


class ExportedMemory(MemoryRecord):
    vector: list[float] | None = None


class ImportReport(BaseModel):
    user_id: str
    imported: int
    skipped: int  # versions the store already had (kept as they are)
    re_embedded: int


def export_jsonl(store: MemoryStore, user_id: str, out: TextIO) -> int:
    """Write every version of every memory of the user; returns how many."""
    user_id = require_user_id(user_id)
    rows = list(store.export_records(user_id))
    header = ExportHeader(
        format=FORMAT,
        version=VERSION,
        user_id=user_id,
        embedding=store.embedding_id,
        count=len(rows),
        exported_at=datetime.now(UTC),
    )
    out.write(header.model_dump_json() + "\n")
    for record, vector in rows:
        line = ExportedMemory(**record.model_dump(exclude={"score"}), vector=vector)
        out.write(line.model_dump_json(exclude={"score"}) + "\n")
    return len(rows)


def read_export(lines: Iterable[str]) -> tuple[ExportHeader, list[ExportedMemory]]:
    """Parse and check a whole export; the first problem raises with its line number."""
    header: ExportHeader | None = None
    memories: list[ExportedMemory] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            if header is None:
                header = ExportHeader.model_validate(data)
                if header.format != FORMAT or header.version != VERSION:
                    raise ValueError(f"not an {FORMAT} v{VERSION} header")
                continue
            memory = ExportedMemory.model_validate(data)
        except (ValueError, ValidationError) as error:
            raise ImportFormatError(f"line {number}: {_short(error)}") from None
        if memory.user_id != header.user_id:
            raise ImportFormatError(
                f"line {number}: memory of user {memory.user_id!r} in an export of "
                f"{header.user_id!r}"
            )
        memories.append(memory)
    if header is None:
        raise ImportFormatError("line 1: the file is empty; expected an export header")
    if len(memories) != header.count:
        raise ImportFormatError(
            f"the header announces {header.count} memories but the file has {len(memories)} "
            "(truncated?)"
        )
    return header, memories


def import_jsonl(
    store: MemoryStore,
    lines: Iterable[str],
    *,
    as_user: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> ImportReport:
    """Import an export, optionally as another user (which gets fresh, linked ids).

    Vectors are reused only when the export's embedding backend and size match the
    store's; otherwise every text is re-embedded. `on_progress(done, total)` reports it.
    Versions the store already has are skipped, so importing twice changes nothing.
    """
    header, memories = read_export(lines)
    user_id = require_user_id(as_user) if as_user else header.user_id
    if user_id != header.user_id:
        memories = [_moved(memory, user_id) for memory in memories]
    reuse = header.embedding == store.embedding_id
    records = [
        (MemoryRecord(**m.model_dump(exclude={"vector"})), m.vector if reuse else None)
        for m in memories
    ]
    written, skipped, embedded = store.import_records(records, on_progress=on_progress)
    return ImportReport(user_id=user_id, imported=written, skipped=skipped, re_embedded=embedded)


def _moved(memory: ExportedMemory, user_id: str) -> ExportedMemory:
    """The same memory under another user: new ids derived from the old, links kept."""

    def remap(point_id: str | None) -> str | None:
        return str(uuid.uuid5(_REMAP_NAMESPACE, f"{user_id}:{point_id}")) if point_id else None

    return memory.model_copy(
        update={
            "user_id": user_id,
            "id": remap(memory.id),
            "lineage_id": remap(memory.lineage_id),
            "supersedes": remap(memory.supersedes),
            "superseded_by": remap(memory.superseded_by),
        }
    )


def _short(error: Exception) -> str:
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "line"
        return f"{where}: {first['msg']} ({error.error_count()} problem(s))"
    return str(error)
