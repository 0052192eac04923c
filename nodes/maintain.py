"""maintain: ONE DSPy call returns the operations for all new facts; the node validates
them against this turn's candidates and applies them to the store.

Nothing the LLM returns can reach a memory it was not shown this turn: ids are small
integers mapped through the candidates, so a bulk "forget everything" is impossible here
(that is `engram forget`). Rejected operations are reported in the state and the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from langchain_core.messages import AnyMessage
from langgraph.runtime import Runtime

from engram.clients import Clients
from engram.identity import run_context
from engram.memory.keywords import content_words
from engram.memory.store import ApplyReport, PlannedOp, normalize_text
from engram.nodes.common import (
    endpoint_errors,
    known_category,
    message_origin,
    third_person,
    turn_date,
    with_error,
)
from engram.nodes.programs import MaintainMemory, run_memory_step
from engram.state.context import EngramContext
from engram.state.contracts import (
    Candidate,
    Fact,
    MemoryOp,
    MemoryRecord,
    NumberedMemory,
    ObservedFact,
    RejectedOp,
    Source,
)
from engram.state.errors import MemoryStepError
from engram.state.graph_state import EngramState

log = logging.getLogger("engram")


def make_maintain(
    clients: Clients, program: MaintainMemory, *, actor: str = "chat", from_origin: bool = False
) -> Callable[..., Awaitable[dict[str, Any]]]:
    """`actor` is what the memories' provenance names as their origin (`chat` for the
    chat graph, `ingest` for the ingest graph). With `from_origin` (the ingest graph) a
    message's own `origin` is the source (`message_origin`); a chat turn's source is
    always its own thread."""

    async def maintain(state: EngramState, runtime: Runtime[EngramContext]) -> dict[str, Any]:
        context = run_context(runtime)
        facts = state.get("facts", [])
        candidates = state.get("candidates")
        if not facts or candidates is None:
            return {}  # nothing to do, or retrieval failed: facts stay for the next turn
        settings = clients.settings
        try:
            prediction = await run_memory_step(
                "maintain",
                program,
                clients,
                context,
                new_facts=[Fact(text=f.text, category=f.category) for f in facts],
                existing_memories=[NumberedMemory.of(c.ref, c.memory) for c in candidates],
                today=turn_date(state.get("messages", [])),
            )
        except MemoryStepError as error:
            return {"memory_error": with_error(state, str(error))}
        planned, rejected = plan_operations(
            list(prediction.operations or []),
            candidates,
            [_as_sent(f, state.get("messages", [])) for f in facts] if from_origin else facts,
            actor=actor,
        )

        def write() -> ApplyReport:  # one worker thread: opening the store blocks too
            store = clients.store()
            with endpoint_errors("embedding model", settings.openai_base_url):
                return store.apply(context.user_id, planned, agent_id=context.agent_id)

        try:
            report = await asyncio.to_thread(write)
        except Exception as error:  # endpoint or Qdrant down: the answer is already out
            # Re-applying is idempotent (duplicate ADDs, repeated UPDATE/DELETE are no-ops),
            # so keeping the facts for a retry cannot double-write.
            log.exception("maintain could not write")
            return {"memory_error": with_error(state, f"maintain could not write: {error}")}
        rejected += report.rejected
        for item in rejected:
            log.warning("rejected %s (id %s): %s", item.op, item.ref, item.reason)
        return {"facts": [], "applied": report.applied, "rejected": rejected}

    return maintain


def plan_operations(
    operations: list[MemoryOp],
    candidates: list[Candidate],
    facts: list[ObservedFact],
    *,
    actor: str = "chat",
) -> tuple[list[PlannedOp], list[RejectedOp]]:
    """Map the LLM's small ids to real ids; refuse what cannot be trusted, with a reason.

    Facts are never lost to a bad answer. Each fact must be carried by a valid operation:
    an ADD/UPDATE whose text carries it, or a NOOP naming a shown memory whose text
    carries it (see `carries`). A DELETE carries no fact, nor does a NOOP without an id
    (it cannot say which memory holds the fact). Every fact left uncarried is added as it
    is; ADD is idempotent in the store, so this cannot duplicate a memory.
    """
    by_ref = {c.ref: c.memory for c in candidates}
    shown = f"ids 1-{len(candidates)}" if candidates else "no existing memories"
    touched: set[int] = set()
    planned: list[PlannedOp] = []
    rejected: list[RejectedOp] = []
    carried_texts: list[str] = []  # what the valid operations say the user's memory holds

    def reject(op: MemoryOp, reason: str) -> None:
        rejected.append(RejectedOp(op=op.op, ref=op.id, text=op.text, reason=reason))

    for op in operations:
        if op.op != "ADD":  # UPDATE, DELETE and NOOP name a memory shown this turn
            if op.id is None:
                reject(op, f"{op.op} without an id")
                continue
            if op.id not in by_ref:
                reject(op, f"unknown id {op.id}: this turn showed {shown}")
                continue
            if op.op != "NOOP":
                if op.id in touched:
                    reject(op, f"id {op.id} was already changed by an earlier operation")
                    continue
                touched.add(op.id)
        if op.op in ("ADD", "UPDATE") and not (op.text or "").strip():
            reject(op, f"{op.op} with empty text")
            continue
        if op.op in ("ADD", "UPDATE"):
            text = third_person(op.text or "")
            if text is None:
                reject(op, "written in the first person, and not about the user as such")
                continue
            op = op.model_copy(update={"text": text})
        fact = _matching_fact(op.text, facts)
        target = by_ref.get(op.id) if op.op != "ADD" and op.id is not None else None
        # An UPDATE that keeps its target's text only dates it (closes a fact a new one
        # ends): it carries no new fact, which must then come in an ADD of its own.
        closing = target is not None and normalize_text(op.text or "") == normalize_text(
            target.text
        )
        if op.op == "ADD" or (op.op == "UPDATE" and not closing):
            carried_texts.append(op.text or "")
        elif op.op == "NOOP" and target is not None:
            carried_texts.append(target.text)
        # A new text takes the dates of the fact it came from unless the model gave some.
        dated = fact if fact is not None and not closing else None
        planned.append(
            PlannedOp(
                op=op.op,
                ref=op.id if target else None,
                target_id=target.id if target else None,
                text=op.text,
                category=_category(op.category, target, fact),
                observed_at=fact.observed_at if fact else None,
                source=_source(facts, fact, actor),
                valid_from=op.valid_from or (dated.valid_from if dated else None),
                valid_until=op.valid_until or (dated.valid_until if dated else None),
            )
        )
    planned += [
        PlannedOp(
            op="ADD",
            text=f.text,
            category=f.category,
            observed_at=f.observed_at,
            source=_source(facts, f, actor),
            detail="kept: no operation of the model kept this fact",
            valid_from=f.valid_from,
            valid_until=f.valid_until,
        )
        for f in facts
        if not any(carries(text, f.text) for text in carried_texts)
    ]
    return planned, rejected


def _category(
    given: str | None, target: MemoryRecord | None, fact: ObservedFact | None
) -> str | None:
    """An operation's category: the model's, as a known one; when it names none it knows,
    the changed memory's own (a category a user gave by hand stays) or the fact's."""
    known = known_category(given) if given else None
    if known is not None and known != "other":
        return known
    if target is not None:
        return target.category
    return fact.category if fact else known


def carries(text: str, fact: str) -> bool:
    """Whether `text` (an operation's text, or a memory a NOOP names) holds `fact`: the
    same normalized text, or at least half of the fact's content words (stemmed,
    stopwords ignored), so "User lives in Berlin" carries "User moved to Berlin" but
    "User lives in Lyon" does not carry "User is allergic to peanuts"."""
    if normalize_text(text) == normalize_text(fact):
        return True
    wanted = content_words(fact)
    return bool(wanted) and 2 * len(wanted & content_words(text)) >= len(wanted)


def _matching_fact(text: str | None, facts: list[ObservedFact]) -> ObservedFact | None:
    """The fact an operation came from: the same text, else the most words in common
    (merged UPDATE texts rarely repeat a fact exactly), else the latest fact."""
    if not facts:
        return None
    wanted = normalize_text(text or "")
    exact = next((f for f in facts if normalize_text(f.text) == wanted), None)
    if exact is not None:
        return exact
    words = content_words(text or "")
    return max(facts, key=lambda f: (len(words & content_words(f.text)), f.observed_at))


def _as_sent(fact: ObservedFact, messages: Sequence[AnyMessage]) -> ObservedFact:
    """The fact with the provenance of the messages it came from as they were first sent
    (`message_origin`): a chat turn whose memory steps ran on its memory thread names the
    chat thread and the chat's message ids."""
    origins = {m.id: origin for m in messages if m.id and (origin := message_origin(m)) is not None}
    found = [origins[i] for i in fact.message_ids if i in origins]
    if not found:
        return fact
    return fact.model_copy(
        update={
            "thread_id": found[0][0],
            "message_ids": [origins[i][1] if i in origins else i for i in fact.message_ids],
        }
    )


def _source(facts: list[ObservedFact], fact: ObservedFact | None, actor: str) -> Source:
    chosen = [fact] if fact else facts
    thread_id = next((f.thread_id for f in chosen if f.thread_id), None)
    message_ids = list(dict.fromkeys(i for f in chosen for i in f.message_ids))
    return Source(thread_id=thread_id, message_ids=message_ids, actor=actor)
