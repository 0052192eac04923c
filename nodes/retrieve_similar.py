"""retrieve_similar: for each fact, the nearest active memories of the same user, merged.

They are shown to the maintain step as small integers (the candidates' `ref`), never as
point ids, and they are the only memories this turn may change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from langgraph.runtime import Runtime

from engram.clients import Clients
from engram.identity import run_context
from engram.memory.store import MemoryStore
from engram.nodes.common import endpoint_errors, with_error
from engram.state.context import EngramContext
from engram.state.contracts import Candidate, MemoryRecord
from engram.state.graph_state import EngramState

log = logging.getLogger("engram")

PER_FACT = 3
MAX_CANDIDATES = 15


def make_retrieve_similar(clients: Clients) -> Callable[..., Awaitable[dict[str, Any]]]:
    async def retrieve_similar(
        state: EngramState, runtime: Runtime[EngramContext]
    ) -> dict[str, Any]:
        context = run_context(runtime)
        texts = [fact.text for fact in state.get("facts", [])]

        def search() -> list[MemoryRecord]:  # one worker thread: opening the store blocks too
            store = clients.store()
            with endpoint_errors("embedding model", clients.settings.openai_base_url):
                return similar_memories(store, context.user_id, texts, context.agent_id)

        try:
            nearest = await asyncio.to_thread(search)
        except Exception as error:  # endpoint or Qdrant down: the answer is already out
            log.exception("retrieve_similar failed")
            # candidates stay None ("not retrieved"): maintain keeps the facts for later.
            return {"memory_error": with_error(state, f"retrieve_similar failed: {error}")}
        return {"candidates": [Candidate(ref=i, memory=m) for i, m in enumerate(nearest, 1)]}

    return retrieve_similar


def similar_memories(
    store: MemoryStore, user_id: str, texts: list[str], agent_id: str | None = None
) -> list[MemoryRecord]:
    """Nearest memories per text (one batched search) among those `agent_id` sees,
    merged by id keeping the best score, best first."""
    best: dict[str, MemoryRecord] = {}
    for hits in store.search_many(user_id, texts, k=PER_FACT, agent_id=agent_id):
        for record in hits:
            kept = best.get(record.id)
            if kept is None or (record.score or 0) > (kept.score or 0):
                best[record.id] = record
    ranked = sorted(best.values(), key=lambda r: r.score or 0, reverse=True)
    return ranked[:MAX_CANDIDATES]
