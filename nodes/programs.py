"""The DSPy programs inside the memory nodes, and how they are called.

Each program is a `dspy.Module`, so it can be optimized and saved like any DSPy program;
the output field names (`save`, `facts`, `operations`) are part of the contract.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import dspy

from engram.errors import MemoryStepError
from state.contracts import Fact, MemoryOp

log = logging.getLogger("engram")


class DecideSaveSignature(dspy.Signature):
    """Decide whether the latest exchange tells something new and lasting about the USER
    (preferences, personal details, plans, relationships, work, health, corrections of what
    is known) that is worth remembering for future conversations. Small talk, questions
    without personal content, and anything only the assistant said are not worth saving.
    Information already in the known memories is not new unless it changes them."""

    known_memories: str = dspy.InputField(desc="What is already remembered about the user.")
    user_message: str = dspy.InputField()
    assistant_message: str = dspy.InputField()
    save: bool = dspy.OutputField(desc="True if the user message holds new information.")


class ExtractFactsSignature(dspy.Signature):
    """Extract atomic, self-contained facts about the USER from the user's message.

    Only what the user states about themselves counts; the assistant's reply is context for
    resolving references and is never a source of facts. Write each fact in the third person
    ("User ..."), one piece of information per fact, understandable on its own. Resolve
    relative dates ("yesterday", "next Friday") to absolute dates using the message time.
    Pick a short lowercase category, preferably one of: preferences, personal, work, health,
    relationships, plans, location, other. Return an empty list when there is nothing."""

    user_message: str = dspy.InputField()
    assistant_context: str = dspy.InputField(desc="The assistant's reply; not a fact source.")
    message_time: str = dspy.InputField(desc="When the user wrote the message (ISO 8601).")
    facts: list[Fact] = dspy.OutputField()


class MaintainMemorySignature(dspy.Signature):
    """Keep the user's memory consistent with the new facts, in one list of operations.

    Existing memories are numbered [1], [2], ...; refer to them only by those numbers.
    For each new fact choose one operation:
    - ADD: the fact is new; give its text and category (id null).
    - UPDATE: the fact refines or changes an existing memory; give that memory's id and
      the complete new text (merge the old and new information).
    - DELETE: the fact contradicts an existing memory that is no longer true; give its id.
      When the fact replaces the old one ("moved to Berlin" vs "lives in Paris"), prefer
      UPDATE; if you DELETE, also ADD the new fact.
    - NOOP: the fact is already known; nothing to do.
    Never invent ids, never change memories unrelated to the new facts."""

    new_facts: str = dspy.InputField(desc="One fact per line with its category.")
    existing_memories: str = dspy.InputField(desc="Numbered existing memories, or 'none'.")
    today: str = dspy.InputField(desc="Today's date (ISO 8601).")
    operations: list[MemoryOp] = dspy.OutputField()


class DecideSave(dspy.Module):
    def __init__(self) -> None:
        super().__init__()
        self.decide = dspy.Predict(DecideSaveSignature)

    def forward(self, **inputs: Any) -> dspy.Prediction:
        return self.decide(**inputs)

    async def aforward(self, **inputs: Any) -> dspy.Prediction:
        return await self.decide.acall(**inputs)


class ExtractFacts(dspy.Module):
    def __init__(self) -> None:
        super().__init__()
        self.extract = dspy.Predict(ExtractFactsSignature)

    def forward(self, **inputs: Any) -> dspy.Prediction:
        return self.extract(**inputs)

    async def aforward(self, **inputs: Any) -> dspy.Prediction:
        return await self.extract.acall(**inputs)


class MaintainMemory(dspy.Module):
    def __init__(self) -> None:
        super().__init__()
        self.maintain = dspy.ChainOfThought(MaintainMemorySignature)

    def forward(self, **inputs: Any) -> dspy.Prediction:
        return self.maintain(**inputs)

    async def aforward(self, **inputs: Any) -> dspy.Prediction:
        return await self.maintain.acall(**inputs)


async def run_program(
    step: str,
    program: dspy.Module,
    lm: dspy.BaseLM,
    *,
    attempts: int,
    seconds: float,
    **inputs: Any,
) -> dspy.Prediction:
    """Call a memory program with bounded retries and a timeout (`seconds`) per attempt.

    Malformed output, endpoint errors and timeouts are retried `attempts` times in all,
    then raised as one `MemoryStepError` naming the step and the last cause.
    """
    last: BaseException | None = None
    for attempt in range(1, attempts + 1):
        try:
            with dspy.context(lm=lm):
                return await asyncio.wait_for(program.acall(**inputs), seconds)
        except Exception as error:  # any provider or parse failure is retried, then reported
            last = error
            log.warning("%s attempt %d/%d failed: %s", step, attempt, attempts, _one_line(error))
    raise MemoryStepError(f"{step} failed after {attempts} attempt(s): {_one_line(last)}")


def _one_line(error: BaseException | None) -> str:
    if error is None:
        return "unknown error"
    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, TimeoutError):
        text = "timed out"
    return f"{type(error).__name__}: {text[:300]}"
