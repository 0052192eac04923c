"""extract: turn the latest exchange into atomic facts about the user, each with a category.

Facts are said of the user in the third person: small local models copy the user's "I'm
vegetarian", which becomes "User is vegetarian" (`nodes.common.third_person`), or is refused
when it cannot be turned; a category of the model's own maps to a known one or "other".
Facts come from the user's words only: a fact that shares no content word with the user's
message (after stemming) is rejected and reported, whether the assistant said it or the
model made it up. Extraction that fails is remembered (`unextracted`) and tried again next
turn, so what the user said is not lost to a flaky endpoint; only the most recent
`MAX_UNEXTRACTED` failed messages are kept, and giving up on older ones is reported.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from langchain_core.messages import AnyMessage
from langchain_core.runnables import RunnableConfig
from langgraph.runtime import Runtime

from engram.clients import Clients
from engram.identity import run_context
from engram.memory.keywords import content_words
from engram.memory.store import normalize_text
from engram.nodes.common import (
    exchange_for,
    known_category,
    latest_exchange,
    message_time,
    third_person,
    with_error,
)
from engram.nodes.programs import ExtractFacts, run_memory_step
from engram.nodes.update_profile import route_after_memory_steps
from engram.state.context import EngramContext
from engram.state.contracts import ObservedFact, RejectedOp, Unextracted
from engram.state.errors import MemoryStepError
from engram.state.graph_state import EngramState

log = logging.getLogger("engram")

# Failed messages are re-extracted one after another on every later turn, each costing up
# to llm_attempts x llm_timeout after the answer. Five covers an outage of a few turns and
# keeps a turn's background work bounded during a long one.
MAX_UNEXTRACTED = 5


def make_extract(
    clients: Clients, program: ExtractFacts
) -> Callable[..., Awaitable[dict[str, Any]]]:
    async def extract(
        state: EngramState, config: RunnableConfig, runtime: Runtime[EngramContext]
    ) -> dict[str, Any]:
        context = run_context(runtime)
        messages = state.get("messages", [])
        thread_id = config.get("configurable", {}).get("thread_id")
        todo = list(state.get("unextracted", []))
        latest, _ = latest_exchange(messages)
        if state.get("save") and latest is not None and latest.id:
            todo.append(Unextracted(message_id=latest.id, observed_at=message_time(latest)))

        new_facts: list[ObservedFact] = []
        rejected: list[RejectedOp] = []
        failed: list[Unextracted] = []
        errors: list[str] = []
        for item in {item.message_id: item for item in todo}.values():
            user_message, reply = exchange_for(messages, item.message_id)
            if user_message is None:
                continue  # the message is no longer in this thread
            assistant_text = reply.text if reply else ""
            try:
                prediction = await run_memory_step(
                    "extract",
                    program,
                    clients,
                    context,
                    user_message=user_message.text,
                    assistant_context=assistant_text,
                    message_time=item.observed_at,
                )
            except MemoryStepError as error:
                failed.append(item)
                errors.append(str(error))
                continue
            for fact in prediction.facts or []:
                said = (fact.text or "").strip()
                text = third_person(said) if said else ""
                if not said:
                    rejected.append(RejectedOp(op="FACT", text=fact.text, reason="empty fact"))
                elif text is None:
                    reason = "written in the first person, and not about the user as such"
                    rejected.append(RejectedOp(op="FACT", text=said, reason=reason))
                elif not grounded_in_user(text, user_message.text):
                    reason = (
                        "stated by the assistant, not the user"
                        if content_words(text) & content_words(assistant_text)
                        else "not found in the user's words"
                    )
                    rejected.append(RejectedOp(op="FACT", text=text, reason=reason))
                else:
                    new_facts.append(
                        ObservedFact(
                            text=text,
                            category=known_category(fact.category),
                            observed_at=item.observed_at,
                            valid_from=fact.valid_from,
                            valid_until=fact.valid_until,
                            thread_id=thread_id,
                            message_ids=[m.id for m in (user_message, reply) if m and m.id],
                        )
                    )
        kept, given_up = failed[-MAX_UNEXTRACTED:], failed[:-MAX_UNEXTRACTED]
        rejected += [_given_up(item, messages) for item in given_up]
        for refused in rejected:
            log.warning("rejected %s %r: %s", refused.op, refused.text, refused.reason)
        facts = {normalize_text(f.text): f for f in [*state.get("facts", []), *new_facts]}
        update: dict[str, Any] = {
            "extracted": new_facts,
            "facts": list(facts.values()),
            "unextracted": kept,
            "rejected": rejected,
        }
        if errors:
            update["memory_error"] = with_error(state, "; ".join(errors))
        return update

    return extract


async def route_after_extract(state: EngramState) -> str:
    """Retrieve similar memories when there are facts to apply (a coroutine: see
    `route_after_decide`)."""
    return "retrieve_similar" if state.get("facts") else await route_after_memory_steps(state)


def grounded_in_user(fact: str, user_text: str) -> bool:
    """True when the fact shares at least one content word (stemmed) with what the user
    wrote. Facts are the user's own statements, so a fact with no word of theirs is
    either the assistant's or made up, and is not kept."""
    return bool(content_words(fact) & content_words(user_text))


def _given_up(item: Unextracted, messages: list[AnyMessage]) -> RejectedOp:
    user_message, _ = exchange_for(messages, item.message_id)
    return RejectedOp(
        op="EXTRACT",
        text=user_message.text if user_message else None,
        reason=(
            f"gave up extracting facts from message {item.message_id}: extraction kept "
            f"failing and only the {MAX_UNEXTRACTED} most recent such messages are retried"
        ),
    )
