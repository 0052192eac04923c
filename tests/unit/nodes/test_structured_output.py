"""Structured outputs (`engram.nodes.structured_output`) against a local fake endpoint of
each kind: one that takes json_schema (OpenAI, Ollama, vLLM, llama-server), one that
answers it with HTTP 500 and takes json_object (llama-cpp-python's server), one that
ignores response_format. Real `dspy.LM` over HTTP; the fake records what was asked."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dspy
import pytest

from engram import Memory
from engram.clients import Clients
from engram.nodes.programs import ExtractFacts, ExtractFactsSignature, run_program
from engram.nodes.structured_output import ENDPOINT_MODES, Policy, output_schema
from engram.settings import Settings
from tests.fake_openai import Fail, FakeOpenAI, ResponseFormats, facts_answer
from tests.helpers import scripted_lm


@pytest.fixture(autouse=True)
def fresh_findings() -> Iterator[None]:
    ENDPOINT_MODES.clear()
    yield
    ENDPOINT_MODES.clear()


def lm_for(fake: FakeOpenAI) -> dspy.LM:
    return dspy.LM("openai/smollm2", api_base=fake.url, api_key="x", cache=False, num_retries=0)


def extract(fake: FakeOpenAI, structured: Policy = "auto", attempts: int = 1) -> list[str]:
    prediction = asyncio.run(
        run_program(
            "extract",
            ExtractFacts(),
            lm_for(fake),
            attempts=attempts,
            seconds=30,
            backoff=0,
            structured=structured,
            user_message="I live in Lyon",
            assistant_context="Nice!",
            message_time=datetime(2026, 12, 2, 10, tzinfo=UTC),
        )
    )
    return [fact.text for fact in prediction.facts]


def asked(fake: FakeOpenAI) -> list[tuple[str | None, int]]:
    """Each request's response_format type and the status the fake answered."""
    return [((r.body.get("response_format") or {}).get("type"), r.status) for r in fake.requests]


@pytest.mark.parametrize(
    ("kind", "first_call", "later_call"),
    [
        ("json_schema", [("json_schema", 200)], [("json_schema", 200)]),
        ("json_object", [("json_schema", 500), ("json_object", 200)], [("json_object", 200)]),
        ("ignore", [("json_schema", 200), ("json_object", 200), (None, 200)], [(None, 200)]),
    ],
)
def test_auto_finds_what_each_kind_of_endpoint_takes_once(
    kind: ResponseFormats,
    first_call: list[tuple[str | None, int]],
    later_call: list[tuple[str | None, int]],
) -> None:
    with FakeOpenAI(response_formats=kind) as fake:
        fake.always("extract", facts_answer(("User lives in Lyon", "location")))
        assert extract(fake) == ["User lives in Lyon"]  # the turn is not lost
        assert asked(fake) == first_call
        fake.requests.clear()
        assert extract(fake) == ["User lives in Lyon"]
        assert asked(fake) == later_call  # found out once per endpoint and model


def test_the_schema_is_the_signatures_in_each_form() -> None:
    schema = output_schema(ExtractFactsSignature)
    assert "$ref" not in str(schema) and "$defs" not in schema
    fact = schema["properties"]["facts"]["items"]
    assert (
        fact["required"] == ["text", "category", "valid_from", "valid_until"]
        and fact["additionalProperties"] is False
    )
    with FakeOpenAI() as fake:
        extract(fake, "json_schema")
        extract(fake, "json_object")
        extract(fake, "off")
        formats = [r.body.get("response_format") for r in fake.requests]
    assert formats[0] == {
        "type": "json_schema",
        "json_schema": {"name": "ExtractFacts", "schema": schema, "strict": True},
    }
    assert formats[1] == {"type": "json_object", "schema": schema}
    assert formats[2] is None


def test_a_forced_mode_is_not_stepped_down() -> None:
    with FakeOpenAI(response_formats="json_object") as fake:
        with pytest.raises(Exception, match="extract failed after 1 attempt"):
            extract(fake, "json_schema")
        assert asked(fake) == [("json_schema", 500)]


def test_an_overloaded_endpoint_is_retried_not_stepped_down() -> None:
    """503 is the endpoint's state, not a verdict on the format: the next attempt asks
    in the same form."""
    with FakeOpenAI() as fake:
        fake.queue("extract", Fail(status=503), facts_answer(("User lives in Lyon", "location")))
        assert extract(fake, attempts=2) == ["User lives in Lyon"]
        assert asked(fake) == [("json_schema", 503), ("json_schema", 200)]


def test_a_memory_lm_passed_in_keeps_the_text_format() -> None:
    scripted = Clients(Settings(), memory_lm=scripted_lm())
    assert scripted.structured_output() == "off"
    assert Clients(Settings()).structured_output() == "auto"
    forced = Clients(Settings(structured_output="json_object"), memory_lm=scripted_lm())
    assert forced.structured_output() == "json_object"


def test_a_llama_cpp_python_like_endpoint_stores_memories(tmp_path: Path) -> None:
    """The whole ingest path (decide_save, extract, maintain) through an endpoint that
    refuses json_schema: every step answers in json_object form and the fact is stored."""
    with FakeOpenAI(response_formats="json_object") as fake:
        settings = Settings(
            data_dir=tmp_path,
            openai_base_url=fake.url,
            openai_api_key="x",
            embeddings="openai",
            llm_attempts=1,
        )
        memory = Memory(settings=settings)
        added = memory.add("I play the cello.", user_id="alice")
        steps = [(r.step, asked_type(r.body)) for r in fake.requests if r.step != "embeddings"]
    assert added.error is None
    assert [a.text for a in added.applied] == ["User said: I play the cello."]
    assert steps[:2] == [("decide_save", "json_schema"), ("decide_save", "json_object")]
    assert all(kind == "json_object" for _, kind in steps[2:])
    assert [step for step, _ in steps[2:]] == ["extract", "maintain"]


def asked_type(body: dict[str, Any]) -> str | None:
    return (body.get("response_format") or {}).get("type")


def test_a_failure_that_names_no_format_is_retried_in_the_same_form() -> None:
    """A 500 about something else (the endpoint is broken) is no verdict on the format."""
    with FakeOpenAI() as fake:
        fake.queue("extract", Fail(status=500), facts_answer(("User lives in Lyon", "location")))
        assert extract(fake, attempts=2) == ["User lives in Lyon"]
        assert asked(fake) == [("json_schema", 500), ("json_schema", 200)]


def test_one_answer_without_the_fields_serves_that_call_only() -> None:
    """A bad answer once is no proof that the endpoint ignores schemas: the lower form
    answers that call, and the next one asks in the found form again."""
    with FakeOpenAI() as fake:
        fake.queue(
            "extract",
            "not what was asked",
            facts_answer(("User lives in Lyon", "location")),
            facts_answer(("User lives in Lyon", "location")),
        )
        assert extract(fake) == ["User lives in Lyon"]
        assert extract(fake) == ["User lives in Lyon"]
        assert asked(fake) == [("json_schema", 200), ("json_object", 200), ("json_schema", 200)]
