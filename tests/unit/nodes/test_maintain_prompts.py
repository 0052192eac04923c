"""The memory programs' prompts (maintain's and the others'): built by
`engram.nodes.programs.PromptReusingAdapter`, which builds each signature's system message once,
they must be exactly what DSPy's own ChatAdapter builds, never stale, and seen once by
DSPy callbacks."""

from __future__ import annotations

import datetime
from typing import Any

import dspy
from dspy.utils.callback import BaseCallback

from engram.nodes.programs import (
    DecideSaveSignature,
    MemoryPrograms,
    PromptReusingAdapter,
    run_program,
)
from engram.state.contracts import CitedLine, Fact, NumberedMemory
from tests.helpers import save, scripted_lm

MEMORY = NumberedMemory(
    id=1, text="User lives in Lyon", category="location", said=datetime.date(2025, 1, 2)
)
INPUTS: dict[str, Any] = {
    "known_memories": [MEMORY],
    "existing_memories": [MEMORY],
    "user_message": "I moved to Oslo last week.",
    "assistant_message": "Oslo is lovely.",
    "assistant_context": "Oslo is lovely.",
    "message_time": datetime.datetime(2025, 3, 1, 9, 30, tzinfo=datetime.UTC),
    "new_facts": [Fact(text="User moved to Oslo", category="location")],
    "today": datetime.date(2025, 3, 1),
    "current_profile": [CitedLine(text="Lives in Oslo.", memory_ids=[1])],
    "memories": [MEMORY],
    "max_chars": 800,
}


class FormatCalls(BaseCallback):
    def __init__(self) -> None:
        self.adapters: list[Any] = []

    def on_adapter_format_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.adapters.append(instance)


def test_the_memory_programs_prompts_are_dspys_own() -> None:
    adapter = PromptReusingAdapter()
    for program in MemoryPrograms().programs().values():
        for _, predictor in program.named_predictors():
            signature = predictor.signature
            inputs = {name: INPUTS[name] for name in signature.input_fields}
            expected = dspy.ChatAdapter().format(signature, [], inputs)
            assert adapter.format(signature, [], inputs) == expected
            assert adapter.format(signature, [], inputs) == expected  # the reused one


def test_a_signature_changed_in_place_gets_a_fresh_system_message() -> None:
    adapter = PromptReusingAdapter()
    signature = DecideSaveSignature.with_instructions("Save nothing.")
    assert "Save nothing." in adapter.format_system_message(signature)
    signature.instructions = "Save everything."
    message = adapter.format_system_message(signature)
    assert "Save everything." in message and "Save nothing." not in message
    assert message == dspy.ChatAdapter().format_system_message(signature)


async def test_run_program_formats_once_with_the_reusing_adapter_unless_one_is_set() -> None:
    calls = FormatCalls()
    program = MemoryPrograms().decide_save
    inputs = {name: INPUTS[name] for name in program.signature.input_fields}
    with dspy.context(callbacks=[calls]):
        prediction = await run_program(
            "decide_save", program, scripted_lm(save()), attempts=1, seconds=10, **inputs
        )
        assert prediction.save is True
        assert [type(a) for a in calls.adapters] == [PromptReusingAdapter]
        chosen = dspy.ChatAdapter()
        with dspy.context(adapter=chosen):
            await run_program(
                "decide_save", program, scripted_lm(save()), attempts=1, seconds=10, **inputs
            )
        assert calls.adapters[1:] == [chosen]
