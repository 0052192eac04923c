"""Scripted models for the evaluation tests: a DSPy LM engine that answers by a function of
the prompt and reports token usage, a chat model that answers from the memories in its
system prompt, and a tiny conversation set in LoCoMo's published format."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dspy
from dspy.lm15 import Message, Request, Response, TextPart, Usage
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

_FIELD = re.compile(r"\[\[ ## (\w+) ## \]\]")

Responder = Callable[[str, dict[str, str]], str]  # (system prompt, input fields) -> answer


def input_fields(text: str) -> dict[str, str]:
    """The `[[ ## name ## ]]` sections of a DSPy ChatAdapter message, name -> raw value."""
    text = text.split("\n\nRespond with the corresponding output fields")[0]
    parts = _FIELD.split(text)
    return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}


def adapter_answer(**outputs: Any) -> str:
    """An answer in DSPy's ChatAdapter format; non-strings are written as JSON."""
    parts = [
        f"[[ ## {name} ## ]]\n{value if isinstance(value, str) else json.dumps(value)}"
        for name, value in outputs.items()
    ]
    return "\n\n".join([*parts, "[[ ## completed ## ]]"])


def words(text: str) -> int:
    return len(text.split())


class ScriptedEngine:
    """A `dspy.LM(engine=...)` backend: `respond(system, fields)` writes each answer; the
    usage it reports is the prompt's and the answer's word counts."""

    def __init__(self, respond: Responder) -> None:
        self.respond = respond
        self.prompts: list[tuple[str, str]] = []  # (system, last user message)
        self.usage: list[tuple[int, int]] = []  # (prompt, completion) tokens reported

    def complete(self, request: Request) -> Response:
        system = request.system if isinstance(request.system, str) else ""
        if request.system is not None and not isinstance(request.system, str):
            system = "".join(part.text for part in request.system)
        user = request.messages[-1].text or "" if request.messages else ""
        self.prompts.append((system, user))
        text = self.respond(system, input_fields(user))
        prompt_words = words(system) + sum(words(m.text or "") for m in request.messages)
        self.usage.append((prompt_words, words(text)))
        return Response(
            id=None,
            model="scripted",
            message=Message.assistant([TextPart(text)]),
            finish_reason="stop",
            usage=Usage(
                input_tokens=prompt_words,
                output_tokens=words(text),
                total_tokens=prompt_words + words(text),
            ),
        )


class _AsyncEngine:
    def __init__(self, engine: ScriptedEngine) -> None:
        self.engine = engine

    async def complete(self, request: Request) -> Response:
        return self.engine.complete(request)


def scripted_lm(respond: Responder) -> dspy.LM:
    engine = ScriptedEngine(respond)
    return dspy.LM(
        "scripted/test",
        engine=engine,
        async_engine=_AsyncEngine(engine),
        cache=False,
        num_retries=0,
    )


def engine_of(lm: dspy.LM) -> ScriptedEngine:
    engine = lm.engine  # type: ignore[attr-defined]
    assert isinstance(engine, ScriptedEngine)
    return engine


def step_of(system: str) -> str:
    """Which program a DSPy prompt belongs to, by its output fields."""
    for step, marker in (
        ("profile", "`lines`"),
        ("maintain", "`operations`"),
        ("extract", "`facts`"),
        ("decide_save", "`save`"),
        ("judge", "`verdict`"),
    ):
        if marker in system:
            return step
    return "other"


class MemoryEchoChat(BaseChatModel):
    """Answers with the first memory listed in its system prompt ("I don't know" when
    there is none), so an answer is right exactly when recall found the right memory.
    Reports usage like a provider: words of the prompt and of the answer."""

    prompts: list[str] = []  # noqa: RUF012  (pydantic field: the system prompts seen)
    fail_on: str | None = None  # a question that makes the model fail, as a provider can

    @property
    def _llm_type(self) -> str:
        return "memory-echo"

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        system = messages[0].text if messages else ""
        self.prompts.append(system)
        if self.fail_on and self.fail_on in messages[-1].text:
            raise RuntimeError("the provider is down")
        lines = [line[2:] for line in system.splitlines() if line.startswith("- ")]
        answer = re.sub(r" \([^()]*; said [0-9-]+\)$", "", lines[0]) if lines else "I don't know"
        prompt = sum(words(m.text) for m in messages)
        message = AIMessage(
            answer,
            usage_metadata={
                "input_tokens": prompt,
                "output_tokens": words(answer),
                "total_tokens": prompt + words(answer),
            },
        )
        return ChatResult(generations=[ChatGeneration(message=message)])


def write_locomo(path: Path, samples: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(samples, indent=1), "utf-8")
    return path


# A tiny set in LoCoMo's format, written for these tests. Two conversations between two
# people; the first has a move (an UPDATE), an image turn and an adversarial question.
TINY_LOCOMO: list[dict[str, Any]] = [
    {
        "sample_id": "conv-a",
        "conversation": {
            "speaker_a": "Ana",
            "speaker_b": "Ben",
            "session_1_date_time": "1:56 pm on 8 May, 2023",
            "session_1": [
                {"speaker": "Ana", "dia_id": "D1:1", "text": "Hi Ben! How are you?"},
                {
                    "speaker": "Ben",
                    "dia_id": "D1:2",
                    "text": "Great! I started learning the cello.",
                },
                {"speaker": "Ana", "dia_id": "D1:3", "text": "I live in Lisbon now, by the river."},
                {
                    "speaker": "Ben",
                    "dia_id": "D1:4",
                    "text": "Look at my new bike.",
                    "img_url": ["http://example.invalid/bike.jpg"],
                    "blip_caption": "a red bicycle leaning on a wall",
                },
            ],
            "session_2_date_time": "10:37 am on 27 June, 2023",
            "session_2": [
                {
                    "speaker": "Ana",
                    "dia_id": "D2:1",
                    "text": "Big news: I moved to Porto last week.",
                },
                {
                    "speaker": "Ben",
                    "dia_id": "D2:2",
                    "text": "Wow! I adopted a greyhound called Pip.",
                },
            ],
        },
        "qa": [
            {
                "question": "Where does Ana live?",
                "answer": "Porto",
                "evidence": ["D2:1"],
                "category": 4,
            },
            {
                "question": "What instrument is Ben learning?",
                "answer": "cello",
                "evidence": ["D1:2"],
                "category": 4,
            },
            {
                "question": "What is Ben's dog called?",
                "answer": "Pip",
                "evidence": ["D2:2"],
                "category": 1,
            },
            {
                "question": "What colour is Ben's new bike?",
                "answer": "red",
                "evidence": ["D1:4"],
                "category": 2,
            },
            {
                "question": "What instrument is Ana learning?",
                "adversarial_answer": "cello",
                "evidence": ["D1:2"],
                "category": 5,
            },
        ],
        "observation": {
            "session_1_observation": {
                "Ana": [["Ana lives in Lisbon by the river.", "D1:3"]],
                "Ben": [["Ben started learning the cello.", "D1:2"]],
            },
            "session_2_observation": {
                "Ana": [["Ana moved to Porto.", "D2:1"]],
                "Ben": [["Ben adopted a greyhound called Pip.", "D2:2"]],
            },
        },
    },
    {
        "sample_id": "conv-b",
        "conversation": {
            "speaker_a": "Cleo",
            "speaker_b": "Dev",
            "session_1_date_time": "7:00 pm on 2 March, 2024",
            "session_1": [
                {"speaker": "Cleo", "dia_id": "D1:1", "text": "I work as a marine biologist."},
                {"speaker": "Dev", "dia_id": "D1:2", "text": "Cool. I am allergic to peanuts."},
            ],
        },
        "qa": [
            {
                "question": "What is Cleo's job?",
                "answer": "marine biologist",
                "evidence": ["D1:1"],
                "category": 4,
            },
            {
                "question": "What is Dev allergic to?",
                "answer": "peanuts",
                "evidence": ["D1:2"],
                "category": 2,
            },
        ],
    },
]
