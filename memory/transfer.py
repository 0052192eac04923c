"""Export and import of a user's memories as JSON Lines, exactly (ids, versions, links,
timestamps, categories, provenance), with vectors so the same model needs no re-embedding.

Line 1 is a header; every other line is one version. An import is validated completely
before anything is written, by the same rules as any write (user id, ids, time zones,
text, category), so a malformed line (reported with its number) imports nothing. Every line
is bounded (`MAX_LINE_BYTES`, `MAX_DEPTH`, `MAX_EVENTS`, `MAX_MESSAGE_IDS`,
`MAX_VECTOR_DIMS`): an import runs on a shared server, and what it stores is read back
whole by every listing of the user's memories.

What a file says is trusted only as far as this store signed it (`vector_key`). Vectors
are reused only when signed for exactly that text; any other vector (edited text, another
installation, an older file) is re-embedded. Ids are kept only when the whole file is
signed for the importing user (their own export); any other file's ids are derived from
the importing user and the file's ids, whether or not someone else holds them, so an
import never tells whose ids exist.

Writing an import (`import_records`) keeps the store's rules with the store's own parts
(its engine, embeddings and per-user write lock): memories the user has win, an already
active text is merged, and a failed write leaves nothing behind.

The user's profile travels in the header (`ExportHeader.profile`): its current version as
stored, the lines with the memory ids they rest on, and the pins. Only the current version,
not the whole history: a profile version is the store's record of what this installation
wrote and when, resting on memory versions; an import writes what it brings as one new
version of the importing user's profile (an IMPORT event), so that history stays the store's
own, and the memories' complete history (which the file carries) keeps every line's grounds
auditable. The profile is written after the memories (`import_profile`), through the same
id mapping, and only onto a user who has none (the user's own profile wins, as their memories
do): a line or pin is kept only when every memory it cites is in the file and, once mapped,
an active memory of the importing user; the others are reported, never written. A file
cannot make a line cite a memory the file does not carry, let alone another user's.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
import tempfile
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TextIO

from pydantic import BaseModel, Field, ValidationError

from engram.memory.engines.base import SHARED, Agents, Where
from engram.memory.payload import Stored, record_from_point, stored_point, text_hash
from engram.memory.profile import MAX_LINE_CHARS, fit, pinned_lines, shown_chars
from engram.memory.store import (
    PAGE,
    MemoryStore,
    clean_category,
    clean_memory_text,
    require_user_id,
    seen_by,
)
from engram.memory.versions import Conflict
from engram.state.context import ALL_AGENTS, AgentScope, validate_agent_id
from engram.state.contracts import (
    MemoryEvent,
    MemoryRecord,
    ProfileLine,
    RejectedOp,
    Source,
)
from engram.state.errors import ImportFormatError, InvalidInputError, StoreConflictError

FORMAT = "engram-export"
# 2 adds `vector_mac`, 3 `ids_mac`, 4 the header's `profile`, 5 the versions' `valid_from`
# and `valid_until`, 6 the versions' `agent_id` and the header's scope (`agent_id`,
# `all_agents`). Older files still import: their vectors are re-embedded, their ids
# derived (see `import_jsonl`), without a profile the importing user's is left as it is,
# without validity dates their memories are true from when they were said, with no end, and
# without agents they are shared.
VERSION = 6
READABLE_VERSIONS = (1, 2, 3, 4, 5, 6)

# Bounds on one line, checked before it is kept. The largest line Engram writes (a
# 3,072-dimension vector is about 70 KB of JSON, a 2,000-character text, a few events) is
# far inside each; a hostile line (200,000 events in 25 MB) is refused with its number
# instead of being parsed, stored, and then read back by every listing of the user's.
MAX_LINE_BYTES = 1024 * 1024  # one version in UTF-8: its vector plus room for events
MAX_DEPTH = 16  # JSON nesting; a line nests 5 deep ({events: [{source: {message_ids: []}}]})
MAX_EVENTS = 1000  # per version; one per change of it (a delete/restore cycle adds two)
# Per source: an exchange names two messages; an operation of an ingest batch that matches
# no fact names the messages of every fact of the batch.
MAX_MESSAGE_IDS = 1000
MAX_VECTOR_DIMS = 8192  # embedding models make at most 4,096 (text-embedding-3: 3,072)
# A profile is bounded by ENGRAM_PROFILE_CHARS (800 by default: a dozen lines); these bound
# what a file may bring whatever the bound of the store that wrote it.
MAX_PROFILE_LINES = 200
MAX_PROFILE_PINS = 200
MAX_LINE_MEMORIES = 50  # memory ids one profile line rests on


class ExportedProfile(BaseModel):
    """The user's current profile version as stored: lines with the memory ids (of the
    file's versions) they rest on, and the pinned memory ids."""

    version_id: str
    updated_at: datetime | None = None
    lines: list[ProfileLine]
    pinned: list[str]


class ExportHeader(BaseModel):
    format: str
    version: int
    user_id: str
    embedding: str
    count: int
    exported_at: datetime
    profile: ExportedProfile | None = None  # since version 4; None: the user had none
    # Since version 6: whose memories the file holds. The shared ones and `agent_id`'s own
    # (None: the shared only), or, with `all_agents`, every agent's (an operator's export).
    agent_id: str | None = None
    all_agents: bool = False


class ExportedMemory(MemoryRecord):
    vector: list[float] | None = None
    vector_mac: str | None = None  # `MemoryStore.vector_mac` of the text and vector
    ids_mac: str | None = None  # `ids_mac` of the user and the version's ids and links


class ProfileImport(BaseModel):
    """What an import did with the file's profile: `imported` as a new version, `kept`
    the user's own (they had one), or `nothing` (no line or pin rests on the user's
    memories). `dropped`: the lines and pins not written, and why."""

    result: Literal["imported", "kept", "nothing"]
    version_id: str | None = None  # the user's current version afterwards
    lines: int = 0
    pinned: int = 0
    dropped: list[RejectedOp] = Field(default_factory=list)


class ImportReport(BaseModel):
    user_id: str
    imported: int
    skipped: int  # versions of memories the store already had (kept as they are)
    re_embedded: int
    profile: ProfileImport | None = None  # None: the file holds no profile


def export_jsonl(
    store: MemoryStore, user_id: str, out: TextIO, *, agent_id: AgentScope = None
) -> int:
    """Write every version of every memory of the user that `agent_id` sees (the shared
    ones and that agent's own; None: the shared only; `ALL_AGENTS`: every agent's);
    returns how many."""
    user_id = require_user_id(user_id)
    rows = list(store.export_records(user_id, agent_id=agent_id))
    profile = store.profile(user_id, as_stored=True)
    header = ExportHeader(
        format=FORMAT,
        version=VERSION,
        user_id=user_id,
        embedding=store.embedding_id,
        count=len(rows),
        exported_at=datetime.now(UTC),
        agent_id=agent_id if isinstance(agent_id, str) else None,
        all_agents=agent_id is ALL_AGENTS,
        profile=None
        if profile.version_id is None
        else ExportedProfile(
            version_id=profile.version_id,
            updated_at=profile.updated_at,
            lines=profile.lines,
            pinned=profile.pinned,
        ),
    )
    out.write(header.model_dump_json() + "\n")
    for record, vector in rows:
        line = ExportedMemory(
            **record.model_dump(exclude={"score"}),
            vector=vector,
            vector_mac=store.vector_mac(record.text, vector),
            ids_mac=ids_mac(store, user_id, record),
        )
        out.write(line.model_dump_json(exclude={"score"}) + "\n")
    return len(rows)


def export_file(
    store: MemoryStore, user_id: str, path: Path, *, agent_id: AgentScope = None
) -> int:
    """`export_jsonl` into the file at `path`, which only a whole export replaces: one that
    fails part way (the store unreachable, the disk full, a bad user id) leaves an earlier
    export there as it was and nothing beside it. The export is written to a temporary file
    in the same folder, flushed to disk, then renamed over the target (through a symlink, to
    the file it points at). The file keeps an earlier export's permissions; a new one is
    readable by its owner only, as it holds the user's memories. A target that is not a
    regular file (`/dev/stdout`, a pipe) is written to as it is: it cannot be replaced."""
    target = path.resolve()
    if target.is_dir():
        raise InvalidInputError(f"cannot export to {path}: it is a folder; name a file in it")
    if target.exists() and not target.is_file():
        with target.open("w", encoding="utf-8") as stream:
            return export_jsonl(store, user_id, stream, agent_id=agent_id)
    mode = stat.S_IMODE(target.stat().st_mode) if target.exists() else 0o600
    try:
        fd, temporary = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".partial"
        )
    except OSError as error:
        raise InvalidInputError(
            f"cannot export to {path}: {error.strerror} (the export is written beside it "
            f"in {target.parent}, then renamed over it)"
        ) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), mode)
            count = export_jsonl(store, user_id, handle, agent_id=agent_id)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return count


def ids_mac(store: MemoryStore, user_id: str, record: MemoryRecord) -> str:
    """Binds a version's id, lineage and links to the user this store holds them for: an
    import keeps a file's ids only when they are the importing user's own."""
    key = hmac.new(store.vector_key, b"engram export ids", hashlib.sha256).digest()
    parts = [user_id, record.id, record.lineage_id, record.supersedes, record.superseded_by]
    message = "\0".join(part or "" for part in parts).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def read_export(lines: Iterable[str]) -> tuple[ExportHeader, list[ExportedMemory]]:
    """Parse and check a whole export; the first problem raises with its line number."""
    header: ExportHeader | None = None
    memories: list[ExportedMemory] = []
    active_line: dict[str, int] = {}  # lineage id -> line of its active version
    id_line: dict[str, int] = {}  # version id -> its line
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = _parsed(line)
            if header is None:
                header = _valid_header(ExportHeader.model_validate(data))
                continue
            memory = _valid_memory(ExportedMemory.model_validate(data))
        except (ValueError, ValidationError) as error:
            raise ImportFormatError(f"line {number}: {_short(error)}") from None
        if memory.user_id != header.user_id:
            raise ImportFormatError(
                f"line {number}: memory of user {memory.user_id!r} in an export of "
                f"{header.user_id!r}"
            )
        # One line per version: of two, one would be stored and the other silently lost.
        if memory.id in id_line:
            raise ImportFormatError(
                f"line {number}: version {memory.id} is also on line {id_line[memory.id]}; "
                "an export holds each version once (remove one, or split joined files)"
            )
        id_line[memory.id] = number
        if memory.status == "active" and not memory.superseded_by:
            if memory.lineage_id in active_line:
                raise ImportFormatError(
                    f"line {number}: a second active version of the memory on line "
                    f"{active_line[memory.lineage_id]}"
                )
            active_line[memory.lineage_id] = number
        memories.append(memory)
    if header is None:
        raise ImportFormatError("line 1: the file is empty; expected an export header")
    if len(memories) != header.count:
        raise ImportFormatError(
            f"the header announces {header.count} memories but the file has {len(memories)} "
            "(truncated?)"
        )
    return header, memories


def _parsed(line: str) -> Any:
    """One line's JSON, within `MAX_LINE_BYTES` and `MAX_DEPTH`.

    The size is checked before parsing. Depth is checked on the parsed value by a walk
    without recursion; `json.loads` itself recurses once per level and raises
    RecursionError near Python's recursion limit (about 1,000, less on a deeper stack), which
    is caught as the same refusal, so the answer never depends on the caller's stack."""
    size = len(line.encode("utf-8", "replace"))
    if size > MAX_LINE_BYTES:
        raise ValueError(
            f"the line is {size:,} bytes; one version takes at most {MAX_LINE_BYTES:,} "
            "(MAX_LINE_BYTES)"
        )
    try:
        data = json.loads(line)
        too_deep = _depth(data, stop=MAX_DEPTH + 1) > MAX_DEPTH
    except RecursionError:
        too_deep = True
    if too_deep:
        raise ValueError(
            f"JSON nested deeper than {MAX_DEPTH} levels (MAX_DEPTH); an export line nests 5 "
            "deep: is this an Engram export?"
        )
    return data


def _depth(value: Any, *, stop: int) -> int:
    """How deep lists and objects nest in `value`, counted up to `stop`."""
    deepest = 0
    todo: list[tuple[Any, int]] = [(value, 0)]
    while todo:
        item, level = todo.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level + 1)
            if deepest >= stop:
                return deepest
            todo += [(child, level + 1) for child in item if isinstance(child, dict | list)]
    return deepest


def import_jsonl(
    store: MemoryStore,
    lines: Iterable[str],
    *,
    as_user: str | None = None,
    agent_id: AgentScope = ALL_AGENTS,
    on_progress: Callable[[int, int], None] | None = None,
) -> ImportReport:
    """Import an export, optionally as another user (a copy: no provenance pointing into
    the original user's conversations).

    The ids are the file's when the whole file is signed for the importing user (see
    `ids_mac`: their own export from this installation), so a round trip is exact.
    Otherwise every id is derived from the importing user and the file's id (`derived_id`,
    links kept): a function of the file and the importer only, so whether another user
    holds an id changes nothing an importer can see. A memory the user already has under
    the file's ids, or the derived ones, is kept as it is.

    A memory keeps its scope (shared, or an agent's own); `agent_id` is whom the import
    acts as and so which scopes it may write (a server passes the caller's agent: the
    shared memories and its own; the operator's default, any): a file holding another
    agent's memory imports nothing.

    Every imported version records an IMPORT event. `on_progress(done, total)` reports
    re-embedding. Importing twice changes nothing (see `import_records`). The file's
    profile, if any, is written afterwards under the same mapping of ids (`import_profile`).
    """
    header, memories = read_export(lines)
    allowed = seen_by(agent_id)  # also what "the user already has" looks among, below
    for memory in memories:
        if allowed is not None and not allowed.admits(memory.agent_id):
            acting = f"agent {agent_id!r}" if agent_id else "no agent"
            raise ImportFormatError(
                f"memory {memory.id} is agent {memory.agent_id!r}'s own; an import as "
                f"{acting} writes only the shared memories and that agent's own"
            )
    user_id = require_user_id(as_user) if as_user else header.user_id
    copied = user_id != header.user_id
    same_backend = header.embedding == store.embedding_id
    own_ids = all(
        m.ids_mac is not None and hmac.compare_digest(m.ids_mac, ids_mac(store, user_id, m))
        for m in memories
    )
    event = MemoryEvent(
        op="IMPORT",
        at=datetime.now(UTC),
        source=Source(actor="import"),
        detail=f"from an export of {header.exported_at:%Y-%m-%d %H:%M:%S %Z}"
        + (" of another user" if copied else ""),
    )
    records: list[Row] = []
    for memory in memories:
        record = MemoryRecord(**memory.model_dump(exclude={"vector", "vector_mac", "ids_mac"}))
        if copied:
            record = _without_conversations(record)
        trusted = (
            same_backend
            and memory.vector is not None
            and memory.vector_mac is not None
            and hmac.compare_digest(memory.vector_mac, store.vector_mac(memory.text, memory.vector))
        )
        record = record.model_copy(update={"user_id": user_id, "events": [*record.events, event]})
        records.append((record, memory.vector if trusted else None))
    kept = 0
    mapped = {r.id: r.id for r, _ in records}  # the file's version ids -> the user's
    if not own_ids:
        # The user's own memories under the file's ids (an older export of theirs) win,
        # like any memory they have; the rest is written under derived ids.
        have = _lineages_of(store, user_id, list({r.lineage_id for r, _ in records}), allowed)
        kept = sum(1 for r, _ in records if r.lineage_id in have)
        mapped = {
            r.id: r.id if r.lineage_id in have else derived_id(user_id, r.id) for r, _ in records
        }
        records = [(moved_to_user(r, user_id), v) for r, v in records if r.lineage_id not in have]
    written, skipped, embedded = import_records(store, records, on_progress=on_progress)
    profile = None
    if header.profile is not None:
        detail = f"from an export of {header.exported_at:%Y-%m-%d %H:%M:%S %Z}" + (
            " of another user" if copied else ""
        )
        profile = import_profile(store, user_id, header.profile, mapped, detail=detail)
    return ImportReport(
        user_id=user_id,
        imported=written,
        skipped=skipped + kept,
        re_embedded=embedded,
        profile=profile,
    )


def _valid_header(header: ExportHeader) -> ExportHeader:
    if header.format != FORMAT or header.version not in READABLE_VERSIONS:
        raise ValueError(f"not an {FORMAT} header of version {READABLE_VERSIONS}")
    if header.exported_at.tzinfo is None:
        raise ValueError("exported_at has no time zone")
    profile = header.profile
    if profile is not None:
        profile = _valid_profile(profile)
    return header.model_copy(
        update={
            "user_id": _user_id(header.user_id),
            "profile": profile,
            "agent_id": _agent_id(header.agent_id),
        }
    )


def _valid_profile(profile: ExportedProfile) -> ExportedProfile:
    """The bounds of a profile, canonical ids, clean line texts. What the lines cite is
    checked when they are written (`import_profile`), against the file and the store."""
    if len(profile.lines) > MAX_PROFILE_LINES:
        raise ValueError(
            f"profile.lines: {len(profile.lines):,} lines; a profile brings at most "
            f"{MAX_PROFILE_LINES} (MAX_PROFILE_LINES)"
        )
    if len(profile.pinned) > MAX_PROFILE_PINS:
        raise ValueError(
            f"profile.pinned: {len(profile.pinned):,} pins; at most {MAX_PROFILE_PINS} "
            "(MAX_PROFILE_PINS)"
        )
    lines = []
    for index, line in enumerate(profile.lines):
        where = f"profile.lines.{index}"
        text = " ".join(line.text.split())
        if not text or len(text) > MAX_LINE_CHARS:
            raise ValueError(f"{where}.text: empty or over {MAX_LINE_CHARS} characters")
        if not line.memory_ids or len(line.memory_ids) > MAX_LINE_MEMORIES:
            raise ValueError(
                f"{where}.memory_ids: a line rests on 1 to {MAX_LINE_MEMORIES} memories"
            )
        ids = [_canonical_id(f"{where}.memory_ids", i) for i in line.memory_ids]
        lines.append(ProfileLine(text=text, memory_ids=list(dict.fromkeys(ids))))
    pinned = [_canonical_id("profile.pinned", i) for i in profile.pinned]
    if profile.updated_at is not None and profile.updated_at.tzinfo is None:
        raise ValueError("profile.updated_at has no time zone")
    return profile.model_copy(
        update={
            "version_id": _canonical_id("profile.version_id", profile.version_id),
            "lines": lines,
            "pinned": list(dict.fromkeys(pinned)),
        }
    )


def _valid_memory(memory: ExportedMemory) -> ExportedMemory:
    """The rules every write follows (canonical ids, aware times, clean text and category),
    and the bounds of one version."""
    if len(memory.events) > MAX_EVENTS:
        raise ValueError(
            f"events: {len(memory.events):,} events; a version keeps at most {MAX_EVENTS:,} "
            "(MAX_EVENTS)"
        )
    sources = {"source": memory.source} | {
        f"events.{i}.source": e.source for i, e in enumerate(memory.events)
    }
    for name, source in sources.items():
        if len(source.message_ids) > MAX_MESSAGE_IDS:
            raise ValueError(
                f"{name}.message_ids: {len(source.message_ids):,} message ids; a source names "
                f"at most {MAX_MESSAGE_IDS} (MAX_MESSAGE_IDS)"
            )
    if memory.vector is not None and len(memory.vector) > MAX_VECTOR_DIMS:
        raise ValueError(
            f"vector: {len(memory.vector):,} dimensions; at most {MAX_VECTOR_DIMS:,} are "
            "read (MAX_VECTOR_DIMS; leave the vector out to have the text embedded)"
        )
    times = {
        "created_at": memory.created_at,
        "updated_at": memory.updated_at,
        "observed_at": memory.observed_at,
        **{f"events.{i}.at": e.at for i, e in enumerate(memory.events)},
    }
    for name, value in times.items():
        if value.tzinfo is None:
            raise ValueError(f"{name}: {value.isoformat()} has no time zone (add e.g. +00:00)")
    if memory.valid_from and memory.valid_until and memory.valid_until < memory.valid_from:
        raise ValueError(
            f"valid_until: {memory.valid_until} is before valid_from {memory.valid_from}"
        )
    try:
        text = clean_memory_text(memory.text)
    except InvalidInputError as error:
        raise ValueError(f"text: {error}") from None
    return memory.model_copy(
        update={
            "user_id": _user_id(memory.user_id),
            "agent_id": _agent_id(memory.agent_id),
            "id": _canonical_id("id", memory.id),
            "lineage_id": _canonical_id("lineage_id", memory.lineage_id),
            "supersedes": _canonical_link("supersedes", memory.supersedes),
            "superseded_by": _canonical_link("superseded_by", memory.superseded_by),
            "text": text,
            "category": clean_category(memory.category),
        }
    )


def _canonical_id(name: str, value: str) -> str:
    try:
        return str(uuid.UUID(value))  # lower case, hyphenated: one spelling per id
    except ValueError:
        raise ValueError(f"{name}: {value!r} is not a UUID") from None


def _canonical_link(name: str, value: str | None) -> str | None:
    return None if value is None else _canonical_id(name, value)


def _user_id(value: str) -> str:
    try:
        return require_user_id(value)
    except InvalidInputError as error:
        raise ValueError(f"user_id: {error}") from None


def _agent_id(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return validate_agent_id(value)
    except ValueError as error:
        raise ValueError(f"agent_id: {error}") from None


def _without_conversations(record: MemoryRecord) -> MemoryRecord:
    """A copy for another user must not point into the original user's conversations."""

    def anonymous(source: Source) -> Source:
        return Source(actor=source.actor)

    return record.model_copy(
        update={
            "source": anonymous(record.source),
            "events": [e.model_copy(update={"source": anonymous(e.source)}) for e in record.events],
        }
    )


def _short(error: Exception) -> str:
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "line"
        return f"{where}: {first['msg']} ({error.error_count()} problem(s))"
    return str(error)


# -- writing an import ---------------------------------------------------------------------

Row = tuple[MemoryRecord, list[float] | None]
_COPY_NAMESPACE = uuid.UUID("6f1f4c4e-8a53-4a3b-9a55-0c7f1d2e9b10")
WRITE_BATCH = 256


def import_records(
    store: MemoryStore,
    records: list[Row],
    *,
    embed_batch: int = 64,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[int, int, int]:
    """Write one user's validated versions as given (ids, links, timestamps), all or
    nothing. Returns (written, skipped, embedded).

    The unit is a memory (a lineage): one the user already has is kept exactly as the
    store has it, so re-importing changes nothing and a stale file never rolls back or
    forks newer state. An id that exists under another memory, anyone's, is refused
    (`import_jsonl` gives ids that cannot: the user's own, or derived from the user), so
    nothing is overwritten. An active version whose text is already active for the user
    is written merged into that memory (one active copy of a fact). Vectors that are None
    or of another size are embedded, reporting `on_progress(done, total)`.
    """
    if not records:
        return 0, 0, 0
    user_ids = {record.user_id for record, _ in records}
    if len(user_ids) != 1:
        raise InvalidInputError("an import holds the memories of exactly one user")
    user_id = require_user_id(user_ids.pop())
    todo = _new_lineages(store, user_id, records)
    vectors, embedded = _vectors_for(store, todo, embed_batch, on_progress)
    with store.write_lock(user_id):
        fresh = {id(r) for r, _ in _new_lineages(store, user_id, todo)}  # meanwhile?
        rows = [
            (record, vector)
            for (record, _), vector in zip(todo, vectors, strict=True)
            if id(record) in fresh
        ]
        _refuse_taken_ids(store, [record.id for record, _ in rows])
        points = [stored_point(Stored(r), v) for r, v in _merge_duplicates(store, user_id, rows)]
        written: list[str] = []
        try:
            for start in range(0, len(points), WRITE_BATCH):
                batch = points[start : start + WRITE_BATCH]
                written += [p.id for p in batch]
                store.engine.upsert(batch, insert_only=True)
        except Exception:  # roll back what this import created: nothing half-imported
            store.engine.delete_ids(written)
            raise
    return len(points), len(records) - len(points), embedded


def _new_lineages(store: MemoryStore, user_id: str, records: list[Row]) -> list[Row]:
    """The records of memories the user does not have yet."""
    known = _lineages_of(store, user_id, list({record.lineage_id for record, _ in records}))
    return [row for row in records if row[0].lineage_id not in known]


def _refuse_taken_ids(store: MemoryStore, ids: list[str]) -> None:
    """Refuse ids that exist, whoever holds them: only an edited file can bring one (an id
    of the user's under another memory), and the answer must not depend on who holds it."""
    for start in range(0, len(ids), PAGE):
        taken = store.engine.retrieve(ids[start : start + PAGE])
        if taken:
            raise ImportFormatError(
                f"version {taken[0].id} already exists in this store in another memory: the "
                "file's ids and memories disagree with it (an edited file?)"
            )


def _lineages_of(
    store: MemoryStore, user_id: str, lineage_ids: list[str], agents: Agents | None = None
) -> set[str]:
    """Which of these memories (lineage ids) the user has, within `agents`' scopes (an
    importer is not told of memories it cannot see), by an indexed lookup."""
    found: set[str] = set()
    for start in range(0, len(lineage_ids), PAGE):
        batch = lineage_ids[start : start + PAGE]
        where = Where(user_id=user_id, lineage_ids=batch, agents=agents)
        found |= {record_from_point(p).lineage_id for p in store.engine.scroll(where)}
    return found


def _merge_duplicates(
    store: MemoryStore, user_id: str, rows: list[tuple[MemoryRecord, list[float]]]
) -> list[tuple[MemoryRecord, list[float]]]:
    """Imported active versions whose text is already active in the same scope (in the
    store, or earlier in this import) are written as merged into that memory instead."""
    hashes = list({text_hash(r.text) for r, _ in rows if r.status == "active"})
    active: dict[tuple[str | None, str], str] = {}
    for start in range(0, len(hashes), PAGE):
        where = Where(user_id=user_id, status="active", text_hashes=hashes[start : start + PAGE])
        for point in store.engine.scroll(where):
            record = record_from_point(point)
            active.setdefault((record.agent_id, text_hash(record.text)), record.id)
    result: list[tuple[MemoryRecord, list[float]]] = []
    for record, vector in rows:
        if record.status == "active":
            same = active.setdefault((record.agent_id, text_hash(record.text)), record.id)
            if same != record.id:
                at = datetime.now(UTC)
                event = MemoryEvent(
                    op="SUPERSEDED",
                    at=at,
                    source=Source(actor="import"),
                    detail=f"merged into {same}: the same text is already active",
                )
                record = record.model_copy(
                    update={
                        "status": "superseded",
                        "superseded_by": same,
                        "updated_at": at,
                        "events": [*record.events, event],
                    }
                )
        result.append((record, vector))
    return result


def _vectors_for(
    store: MemoryStore,
    rows: list[Row],
    batch_size: int,
    on_progress: Callable[[int, int], None] | None,
) -> tuple[list[list[float]], int]:
    """The given vectors where usable, the rest embedded in batches."""
    missing = [i for i, (_, v) in enumerate(rows) if v is None or len(v) != store.dims]
    vectors = [v or [] for _, v in rows]
    for start in range(0, len(missing), batch_size):
        batch = missing[start : start + batch_size]
        texts = [rows[i][0].text for i in batch]
        for index, vector in zip(batch, store.embeddings.embed_documents(texts), strict=True):
            vectors[index] = vector
        if on_progress:
            on_progress(start + len(batch), len(missing))
    return vectors, len(missing)


def derived_id(user_id: str, point_id: str) -> str:
    """The id `point_id` of a file is imported under for `user_id` when the file is not
    the user's own: the same input gives the same id, so importing twice changes nothing,
    and nothing else (who holds `point_id`) plays a part."""
    return str(uuid.uuid5(_COPY_NAMESPACE, f"{user_id}:{point_id}"))


def moved_to_user(record: MemoryRecord, user_id: str) -> MemoryRecord:
    """The same version under another user: derived ids with the links kept."""

    def remap(point_id: str | None) -> str | None:
        return derived_id(user_id, point_id) if point_id else None

    return record.model_copy(
        update={
            "user_id": user_id,
            "id": remap(record.id),
            "lineage_id": remap(record.lineage_id),
            "supersedes": remap(record.supersedes),
            "superseded_by": remap(record.superseded_by),
        }
    )


# -- the profile ---------------------------------------------------------------------------

PROFILE_ATTEMPTS = 5


def import_profile(
    store: MemoryStore,
    user_id: str,
    profile: ExportedProfile,
    mapped: dict[str, str],
    *,
    detail: str | None = None,
) -> ProfileImport:
    """Write a file's profile as the user's, under `mapped` (the file's version ids -> the
    ids the import gave them), when the user has none; see the module doc.

    A line (or pin) is written only when every memory it cites is in the file (`mapped`)
    and its mapped id is an active memory of `user_id`, the store's own rule for any
    profile line; a version the import merged into one the user already had (the same
    text) counts as that one. Pins come first and must fit the size bound together, then
    the lines that fit (`memory.profile.fit`, as `MemoryStore.save_profile`). One version
    is written, with an IMPORT event, under the user's write lock; a profile a concurrent
    writer created meanwhile wins."""
    user_id = require_user_id(user_id)
    with store.write_lock(user_id):
        for _ in range(PROFILE_ATTEMPTS):
            current = store.profiles.current(user_id)
            if current.version_id is not None:
                return ProfileImport(result="kept", version_id=current.version_id)
            planned = _planned_profile(store, user_id, profile, mapped)
            lines, pins, dropped = planned
            if not lines and not pins:
                return ProfileImport(result="nothing", dropped=dropped)
            try:
                written = store.profiles.write(
                    user_id,
                    lines,
                    pins,
                    at=datetime.now(UTC),
                    operation="IMPORT",
                    source=Source(actor="import"),
                    based_on=None,  # only a user without a profile gets the file's
                    detail=detail,
                )
            except Conflict:
                continue  # another writer created the user's profile: read it again
            return ProfileImport(
                result="imported",
                version_id=written.version_id if written else None,
                lines=len(lines),
                pinned=len(pins),
                dropped=dropped,
            )
    raise StoreConflictError("the profile kept changing during the import; import again")


def _planned_profile(
    store: MemoryStore, user_id: str, profile: ExportedProfile, mapped: dict[str, str]
) -> tuple[list[ProfileLine], list[str], list[RejectedOp]]:
    """(lines, pins, dropped): what of `profile` rests on the user's active memories."""
    cited = {i for line in profile.lines for i in line.memory_ids} | set(profile.pinned)
    active = _active_for(store, user_id, [mapped[i] for i in cited if i in mapped])

    def to_user(file_id: str) -> str | None:
        return active.get(mapped[file_id]) if file_id in mapped else None

    dropped: list[RejectedOp] = []
    pins: list[str] = []
    pinned_chars = 0
    records = {r.id: r for r in _records(store, user_id, list(active.values()))}
    for file_id in profile.pinned:
        target = to_user(file_id)
        if target is None:
            dropped.append(RejectedOp(op="PIN", text=file_id, reason=_why_not(file_id, mapped)))
            continue
        if target in pins:
            continue
        size = shown_chars(records[target].text)  # as `MemoryStore.pin` counts it
        if pinned_chars + size > store.profile_chars:
            dropped.append(
                RejectedOp(
                    op="PIN",
                    text=file_id,
                    reason=f"the pins would not fit the profile's {store.profile_chars} "
                    "characters (ENGRAM_PROFILE_CHARS)",
                )
            )
            continue
        pins.append(target)
        pinned_chars += size
    accepted: list[ProfileLine] = []
    for line in profile.lines:
        targets = [to_user(i) for i in line.memory_ids]
        missing = [i for i, t in zip(line.memory_ids, targets, strict=True) if t is None]
        if missing:
            reason = _why_not(missing[0], mapped)
            dropped.append(RejectedOp(op="PROFILE", text=line.text, reason=reason))
            continue
        ids = [t for t in targets if t is not None]
        accepted.append(ProfileLine(text=line.text, memory_ids=list(dict.fromkeys(ids))))
    pinned_records = {i: records[i] for i in pins}
    stated = {i for line in accepted for i in line.memory_ids}
    shown = pinned_lines([i for i in pins if i not in stated], pinned_records)
    kept, left_out = fit(shown + accepted, pins, store.profile_chars)
    dropped += [
        RejectedOp(
            op="PROFILE",
            text=line.text,
            reason=f"over the profile's {store.profile_chars} characters (ENGRAM_PROFILE_CHARS)",
        )
        for line in left_out
        if line not in shown
    ]
    return [line for line in kept if line not in shown], pins, dropped


def _why_not(file_id: str, mapped: dict[str, str]) -> str:
    if file_id not in mapped:
        return f"rests on {file_id}: not a memory in this file"
    return f"rests on {file_id}: not an active memory once imported"


def _active_for(store: MemoryStore, user_id: str, ids: list[str]) -> dict[str, str]:
    """For each of `ids`: itself when it is an active memory of the user, or the active
    version it was merged into on import (a superseded version whose successor is active
    with the same text); ids with neither are left out."""
    found = {r.id: r for r in _records(store, user_id, ids)}
    successors = {
        r.superseded_by: r
        for r in found.values()
        if r.status == "superseded" and r.superseded_by is not None
    }
    merged = {r.id: r for r in _records(store, user_id, list(successors))}
    result: dict[str, str] = {}
    for memory_id in ids:
        record = found.get(memory_id)
        if record is None:
            continue
        if record.status == "active":
            result[memory_id] = memory_id
        elif record.superseded_by in merged:
            successor = merged[record.superseded_by]
            if successor.status == "active" and text_hash(successor.text) == text_hash(record.text):
                result[memory_id] = successor.id
    return result


def _records(store: MemoryStore, user_id: str, ids: list[str]) -> list[MemoryRecord]:
    """The user's shared versions among `ids` (what a profile may rest on; another user's,
    or an agent's own, read like missing ones)."""
    found: list[MemoryRecord] = []
    for start in range(0, len(ids), PAGE):
        batch = ids[start : start + PAGE]
        found += [s.record for s in store.versions.get_many(user_id, batch, SHARED)]
    return found
