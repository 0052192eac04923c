"""How a user's profile is kept: versions in the memory collection, under a key of its own.

A profile version is one point whose tenant key is `profile_key(user_id)`: the user id and a
control character, which no user id may contain (`validate_user_id`), so every read and
write of memories (filtered on the user id) passes it by and no user can name it. Its text
is the profile as JSON (lines with the memory ids they rest on, and the pinned ids); it is
never searched, so its vector is a constant and nothing is embedded. Versions are written
with the memories' protocol (`engram.memory.versions`: conditional writes, claim, successor,
retire), so concurrent writers cannot fork it and every version is kept until `forget`.

What makes a profile trustworthy is decided here too: a line is shown only while every
memory it rests on is active (`grounded`), pinned memories come first, and the whole fits
the size bound (`fit`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime

from engram.memory.engines.base import Engine, Where
from engram.memory.payload import Stored, record_from_point, stored_from_point
from engram.memory.versions import Conflict, Versions, new_version
from engram.state.contracts import (
    EventName,
    MemoryRecord,
    Profile,
    ProfileLine,
    Source,
)
from engram.state.errors import MemoryNotFoundError

PROFILE_CATEGORY = "profile"
MAX_LINE_CHARS = 300  # one fact, not a paragraph
READ_ATTEMPTS = 3  # reads of the current version while a concurrent update settles
_LINEAGES = uuid.UUID("5f1d1d0e-6a43-4f53-9a55-2c1f3d0b7a11")


def profile_key(user_id: str) -> str:
    """The tenant key of the user's profile versions (never a valid user id)."""
    return f"{user_id}\x1fprofile"


def profile_lineage(user_id: str) -> str:
    """The one lineage (and first point id) of a user's profile: two writers creating it
    at once write the same point, and the second sees it is not its own."""
    return str(uuid.uuid5(_LINEAGES, user_id))


def encode(lines: Sequence[ProfileLine], pinned: Sequence[str]) -> str:
    return json.dumps(
        {"lines": [line.model_dump() for line in lines], "pinned": list(pinned)},
        ensure_ascii=False,
    )


def decode(user_id: str, record: MemoryRecord) -> Profile:
    document = json.loads(record.text)
    return Profile(
        user_id=user_id,
        lines=[ProfileLine.model_validate(line) for line in document.get("lines", [])],
        pinned=list(document.get("pinned", [])),
        version_id=record.id,
        status=record.status,
        updated_at=record.created_at,
        considered_at=record.updated_at if record.status == "active" else None,
        events=record.events,
    )


def pinned_lines(pinned: Sequence[str], active: Mapping[str, MemoryRecord]) -> list[ProfileLine]:
    """A line for each pinned memory, in its own words."""
    return [
        ProfileLine(text=" ".join(active[i].text.split()), memory_ids=[i])
        for i in pinned
        if i in active
    ]


def fit(
    lines: Sequence[ProfileLine], pinned: Sequence[str], max_chars: int
) -> tuple[list[ProfileLine], list[ProfileLine]]:
    """(kept, left out): lines that rest on a pinned memory first, then the others in
    their order, while the lines as the prompt shows them ("- text", one per line,
    `Profile.chars`) stay within `max_chars`; repeated texts once."""
    pins = set(pinned)
    ordered = [line for line in lines if pins & set(line.memory_ids)]
    ordered += [line for line in lines if not pins & set(line.memory_ids)]
    kept: list[ProfileLine] = []
    left: list[ProfileLine] = []
    used = 0
    seen: set[str] = set()
    for line in ordered:
        key = " ".join(line.text.split()).casefold()
        if key in seen:
            continue
        seen.add(key)
        if used + shown_chars(line.text) > max_chars:
            left.append(line)
            continue
        kept.append(line)
        used += shown_chars(line.text)
    return kept, left


def shown_chars(text: str) -> int:
    """A line's characters in the prompt: "- ", its text, a newline."""
    return len(text) + 3


def current_pins(
    pinned: Sequence[str], pins_now: Mapping[str, MemoryRecord]
) -> tuple[list[str], dict[str, MemoryRecord]]:
    """The pins as the memories' current versions (a pin follows its memory's updates; one
    whose memory was deleted or is past is gone): their ids, and the records by id."""
    records = {pins_now[i].id: pins_now[i] for i in pinned if i in pins_now}
    return list(records), records


def grounded(
    profile: Profile,
    active: Mapping[str, MemoryRecord],
    pins_now: Mapping[str, MemoryRecord],
    max_chars: int,
) -> Profile:
    """The profile as the chatbot may state it: only lines whose memories are all `active`
    (one resting on a memory since changed or deleted waits for the next update), then the
    pinned memories as they are now (`pins_now`: pin id -> current version; in their own
    words when no line states them), within the bound. `pinned` keeps only the pins shown,
    so what the profile does not show is left to recall."""
    lines = [
        line
        for line in profile.lines
        if line.memory_ids and all(i in active for i in line.memory_ids)
    ]
    pinned, records = current_pins(profile.pinned, pins_now)
    stated = {i for line in lines for i in line.memory_ids}
    lines += pinned_lines([i for i in pinned if i not in stated], records)
    kept, _ = fit(lines, pinned, max_chars)
    shown = {i for line in kept for i in line.memory_ids}
    return profile.model_copy(update={"lines": kept, "pinned": [i for i in pinned if i in shown]})


class ProfileVersions:
    """Reads and writes of users' profile versions in `engine` (see the module doc)."""

    def __init__(self, engine: Engine, versions: Versions, dims: int) -> None:
        self.engine = engine
        self.versions = versions
        self.vector = [1.0] + [0.0] * (dims - 1)  # never searched: a constant, no embedding

    def head(self, user_id: str) -> Stored | None:
        """The current version, finishing an update a crash interrupted. Only a version
        still active when read again and linked from the one it replaced counts: one that
        another writer's update is still writing, or is withdrawing after losing a race, is
        not the profile (several processes may write it at once). Raises `Conflict` while
        no version settles, for the caller to read again."""
        key = profile_key(user_id)
        records = [
            record_from_point(p) for p in self.engine.scroll(Where(user_id=key, status="active"))
        ]
        shown = self.versions.without_replaced(key, records)
        candidates = sorted(
            (r for r in records if r.id in shown), key=lambda r: (r.created_at, r.id), reverse=True
        )
        if not candidates:
            return None
        for record in candidates:
            found = self.versions.get_many(key, [record.id])
            if found and found[0].record.status == "active" and self._linked(key, found[0]):
                return found[0]
        raise Conflict()

    def _linked(self, key: str, stored: Stored) -> bool:
        previous = stored.record.supersedes
        if previous is None:
            return True
        before = self.versions.get_many(key, [previous])
        return bool(before) and before[0].record.superseded_by == stored.record.id

    def current(self, user_id: str) -> Profile:
        """The current version (a reader waits out a concurrent update's few writes)."""
        for _ in range(READ_ATTEMPTS - 1):
            try:
                head = self.head(user_id)
                break
            except Conflict:
                time.sleep(0.005)
        else:
            head = self.head(user_id)
        return decode(user_id, head.record) if head else Profile(user_id=user_id)

    def history(self, user_id: str) -> list[Profile]:
        """Every version, oldest first."""
        points = self.engine.scroll(Where(user_id=profile_key(user_id)))
        records = sorted((record_from_point(p) for p in points), key=lambda r: (r.created_at, r.id))
        return [decode(user_id, r) for r in records]

    def version(self, user_id: str, version_id: str) -> Profile:
        try:
            return decode(user_id, self.versions.get(profile_key(user_id), version_id).record)
        except MemoryNotFoundError:
            raise MemoryNotFoundError(
                f"no profile version {version_id!r} for user {user_id!r}"
            ) from None

    def write(
        self,
        user_id: str,
        lines: Sequence[ProfileLine],
        pinned: Sequence[str],
        *,
        at: datetime,
        operation: EventName,
        source: Source,
        based_on: str | None,
        detail: str | None = None,
    ) -> Profile | None:
        """Write a new version of the profile the caller read, `based_on` (its version id;
        None: there was none). None: the same as that one, nothing written. Raises
        `Conflict` when a concurrent writer changed the profile since: read and retry (so
        no writer's change is lost under another's)."""
        text = encode(lines, pinned)
        head = self.head(user_id)
        if (head.record.id if head else None) != based_on:
            raise Conflict()
        if head is not None and json.loads(head.record.text) == json.loads(text):
            # the same profile: only when it was last considered moves
            self.versions.write(head, head.record.model_copy(update={"updated_at": at}))
            return None
        if head is not None:
            new_id = self.versions.replace(
                head,
                text,
                PROFILE_CATEGORY,
                self.vector,
                at=at,
                operation=operation,
                source=source,
                observed_at=at,
                detail=detail,
            )
            return decode(user_id, self.versions.get(profile_key(user_id), new_id).record)
        lineage = profile_lineage(user_id)
        first = new_version(
            profile_key(user_id),
            text,
            PROFILE_CATEGORY,
            at=at,
            operation=operation,
            source=source,
            observed_at=at,
            lineage_id=lineage,
            detail=detail,
            point_id=lineage,
        )
        self.versions.insert(first, self.vector)
        written = self.engine.retrieve([lineage])
        if not written or stored_from_point(written[0]).record.created_at != at:
            raise Conflict()  # another writer created it first (or it was retired since)
        return decode(user_id, first)
