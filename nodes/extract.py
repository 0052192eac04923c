"""extract: turn the latest exchange into atomic facts about the user, each with a category.

Facts come from the user's words only; a fact that matches only what the assistant said
is rejected and reported. Extraction that fails is remembered (`unextracted`) and tried
again next turn, so what the user said is not lost to a flaky endpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END
from langgraph.runtime import Runtime

from engram.errors import MemoryStepError
from engram.resources import Resources
from memory.store import clean_category, normalize_text
from nodes.common import (
    check_thread_owner,
    content_words,
    exchange_for,
    latest_exchange,
    message_time,
    run_context,
)
from nodes.programs import ExtractFacts, run_program
from state.context import EngramContext
from state.contracts import ObservedFact, RejectedOp, Unextracted
from state.graph_state import EngramState

log = logging.getLogger("engram")


def make_extract(
    resources: Resources, program: ExtractFacts
) -> Callable[..., Awaitable[dict[str, Any]]]:
    async def extract(
        state: EngramState, config: RunnableConfig, runtime: Runtime[EngramContext]
    ) -> dict[str, Any]:
        context = run_context(runtime)
        check_thread_owner(state, context)  # extract is where a retry enters the graph
        settings = resources.settings
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
                prediction = await run_program(
                    "extract",
                    program,
                    resources.memory_lm(context.memory_model),
                    attempts=settings.llm_attempts,
                    seconds=settings.llm_timeout,
                    user_message=user_message.text,
                    assistant_context=assistant_text,
                    message_time=item.observed_at.isoformat(),
                )
            except MemoryStepError as error:
                failed.append(item)
                errors.append(str(error))
                continue
            for fact in prediction.facts or []:
                text = (fact.text or "").strip()
                if not text:
                    rejected.append(RejectedOp(op="FACT", text=fact.text, reason="empty fact"))
                elif not grounded_in_user(text, user_message.text, assistant_text):
                    rejected.append(
                        RejectedOp(
                            op="FACT", text=text, reason="stated by the assistant, not the user"
                        )
                    )
                else:
                    new_facts.append(
                        ObservedFact(
                            text=text,
                            category=clean_category(fact.category),
                            observed_at=item.observed_at,
                            thread_id=thread_id,
                            message_ids=[m.id for m in (user_message, reply) if m and m.id],
                        )
                    )
        for refused in rejected:
            log.warning("rejected fact %r: %s", refused.text, refused.reason)
        facts = {normalize_text(f.text): f for f in [*state.get("facts", []), *new_facts]}
        update: dict[str, Any] = {
            "extracted": new_facts,
            "facts": list(facts.values()),
            "unextracted": failed,
            "rejected": [*state.get("rejected", []), *rejected],
        }
        if errors:
            update["memory_error"] = "; ".join(filter(None, [state.get("memory_error"), *errors]))
        return update

    return extract


def route_after_extract(state: EngramState) -> str:
    return "retrieve_similar" if state.get("facts") else END


def grounded_in_user(fact: str, user_text: str, assistant_text: str) -> bool:
    """False when the fact shares words only with the assistant's reply, not the user's.

    A fact that shares no word with either (a paraphrase) is kept: only a fact traceable
    to the assistant alone is refused, so the bot's own statements never become user facts.
    """
    fact_words = content_words(fact)
    if fact_words & content_words(user_text):
        return True
    return not fact_words & content_words(assistant_text)
