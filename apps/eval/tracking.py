"""What a graph run costs: seconds per node, LLM calls and the provider's token counts.

Chat-model calls are counted by a LangChain callback on the invocation (exact under
concurrency: callbacks travel with the run's config). DSPy calls are counted from an LM's
own history, so every concurrent unit of work gets its own LM copy (`dspy.BaseLM.copy`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any
from uuid import UUID

import dspy
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import LLMResult


@dataclass
class Usage:
    """LLM calls and tokens as the provider reported them; `missing`: calls whose
    response carried no usage (some local servers), so the token counts are a floor."""

    calls: int = 0
    prompt: int = 0
    completion: int = 0
    missing: int = 0

    def add(self, other: Usage) -> None:
        self.calls += other.calls
        self.prompt += other.prompt
        self.completion += other.completion
        self.missing += other.missing

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def of(cls, data: Mapping[str, Any] | None) -> Usage:
        data = data or {}
        return cls(
            *(int(data.get(name) or 0) for name in ("calls", "prompt", "completion", "missing"))
        )


def lm_usage(entries: Iterable[Mapping[str, Any]]) -> Usage:
    """Usage of DSPy LM history entries (OpenAI's `prompt_tokens` / `completion_tokens`)."""
    usage = Usage()
    for entry in entries:
        reported = entry.get("usage") or {}
        usage.calls += 1
        if not reported.get("prompt_tokens") and not reported.get("completion_tokens"):
            usage.missing += 1
        usage.prompt += int(reported.get("prompt_tokens") or 0)
        usage.completion += int(reported.get("completion_tokens") or 0)
    return usage


class LMMeter:
    """Usage of one DSPy LM since the last `take()`."""

    def __init__(self, lm: dspy.BaseLM) -> None:
        self.lm = lm
        self._seen = len(lm.history)

    def take(self) -> Usage:
        entries = self.lm.history[self._seen :]
        self._seen = len(self.lm.history)
        return lm_usage(entries)


class RunTracker(BaseCallbackHandler):
    """One graph invocation: (node, seconds) for every node that ran, the chat model's
    calls, tokens (`usage_metadata`) and prompt characters, and, given the DSPy LM the
    memory steps call (`lm`), that LM's usage per node. The last is exact because one
    invocation runs its nodes one after another and its LM is its own."""

    run_inline = True  # called on the event loop, not in a thread pool

    def __init__(self, lm: dspy.BaseLM | None = None) -> None:
        super().__init__()
        self.nodes: list[tuple[str, float]] = []
        self.chat = Usage()
        self.chat_prompt_chars = 0
        self.lm = lm
        self.lm_by_node: dict[str, Usage] = {}
        self._started: dict[UUID, tuple[str, float]] = {}
        self._history: dict[UUID, int] = {}

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        node = (metadata or {}).get("langgraph_node")
        if node is not None and kwargs.get("name") == node:  # the node itself, not its parts
            self._started[run_id] = (str(node), time.perf_counter())
            if self.lm is not None:
                self._history[run_id] = len(self.lm.history)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._finish(run_id)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._finish(run_id)

    def _finish(self, run_id: UUID) -> None:
        started = self._started.pop(run_id, None)
        if started is not None:
            self.nodes.append((started[0], time.perf_counter() - started[1]))
        seen = self._history.pop(run_id, None)
        if started is not None and seen is not None and self.lm is not None:
            used = lm_usage(self.lm.history[seen:])
            if used.calls:
                self.lm_by_node.setdefault(started[0], Usage()).add(used)

    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        self.chat.calls += 1
        for batch in messages or []:
            self.chat_prompt_chars += sum(len(getattr(m, "text", "") or "") for m in batch)

    def on_llm_end(self, response: LLMResult, **kwargs: Any) -> None:
        usage = None
        for generations in response.generations:
            for generation in generations:
                message = getattr(generation, "message", None)
                usage = getattr(message, "usage_metadata", None) or usage
        if not usage:
            self.chat.missing += 1
            return
        self.chat.prompt += int(usage.get("input_tokens") or 0)
        self.chat.completion += int(usage.get("output_tokens") or 0)
