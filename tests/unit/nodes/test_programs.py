"""Memory programs are data: saved as one JSON file, loaded by `ENGRAM_PROGRAMS` or
`build_graph(programs=...)`, and a file written for another program shape is refused."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import dspy
import pytest

from engram.clients import Clients
from engram.graph import build_graph
from engram.memory.store import MemoryStore
from engram.nodes.programs import DecideSave, MemoryPrograms, program_shape, run_program
from engram.settings import Settings, get_settings
from engram.state.errors import ConfigurationError, MemoryStepError
from tests.eval_fakes import adapter_answer, engine_of, scripted_lm, step_of
from tests.helpers import turn

NEW_RULE = "Only remember what the user says about their own life."


def changed_programs() -> MemoryPrograms:
    """The built-in programs with a new decide_save instruction, a demo for extract and a
    new field description for maintain: every kind of state a program file carries."""
    programs = MemoryPrograms()
    predictor = programs.decide_save
    predictor.signature = predictor.signature.with_instructions(NEW_RULE)
    programs.extract.demos = [
        dspy.Example(
            user_message="I moved to Oslo.",
            assistant_context="",
            message_time="2024-01-01T10:00:00+01:00",
            facts=[{"text": "User lives in Oslo", "category": "location"}],
        )
    ]
    maintain = programs.maintain.predict
    maintain.signature = maintain.signature.with_updated_fields(
        "operations", desc="One operation per new fact."
    )
    return programs


def test_programs_survive_a_save_and_load(tmp_path: Path) -> None:
    path = tmp_path / "programs.json"
    changed_programs().save(path, info={"optimizer": "test"})
    document = json.loads(path.read_text())
    assert document["format"] == "engram-programs" and document["info"] == {"optimizer": "test"}
    assert set(document["programs"]) == {"decide_save", "extract", "maintain", "profile"}

    loaded = MemoryPrograms.load(path)
    assert loaded.decide_save.signature.instructions == NEW_RULE
    assert loaded.extract.demos[0]["user_message"] == "I moved to Oslo."
    operations = loaded.maintain.predict.signature.output_fields["operations"]
    assert operations.json_schema_extra["desc"] == "One operation per new fact."
    # Untouched parts keep the built-in text.
    assert loaded.extract.signature.instructions == MemoryPrograms().extract.signature.instructions


def test_a_programs_file_from_before_the_profile_program_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "programs.json"
    changed_programs().save(path)
    document = json.loads(path.read_text())
    del document["programs"]["profile"]  # as files written before it existed
    path.write_text(json.dumps(document))
    loaded = MemoryPrograms.load(path)
    assert loaded.decide_save.signature.instructions == NEW_RULE
    assert loaded.profile.signature.instructions == MemoryPrograms().profile.signature.instructions
    del document["programs"]["maintain"]  # but one of the original three is required
    path.write_text(json.dumps(document))
    with pytest.raises(ConfigurationError, match="no saved maintain program"):
        MemoryPrograms.load(path)


def answer_all(system: str, fields: dict[str, str]) -> str:
    step = step_of(system)
    if step == "decide_save":
        return adapter_answer(save="False")
    raise AssertionError(f"unexpected {step} call")


async def test_engram_programs_changes_the_prompts_the_graph_sends(
    store: MemoryStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "programs.json"
    changed_programs().save(path)
    monkeypatch.setenv("ENGRAM_PROGRAMS", str(path))
    get_settings.cache_clear()
    assert get_settings().programs == path

    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langgraph.checkpoint.memory import InMemorySaver

    def graph_with(settings: Settings) -> tuple[Any, dspy.LM]:
        lm = scripted_lm(answer_all)
        clients = Clients(
            settings, store=store, chat_model=FakeListChatModel(responses=["ok"]), memory_lm=lm
        )
        return build_graph(clients).compile(checkpointer=InMemorySaver()), lm

    optimized, lm = graph_with(Settings(llm_attempts=1))  # reads ENGRAM_PROGRAMS
    await turn(optimized, "hello there")
    [(system, _)] = engine_of(lm).prompts
    assert NEW_RULE in system

    monkeypatch.delenv("ENGRAM_PROGRAMS")
    builtin, lm = graph_with(Settings(llm_attempts=1))
    await turn(builtin, "hello there")
    [(system, _)] = engine_of(lm).prompts
    assert NEW_RULE not in system
    assert "Decide whether the latest exchange" in system

    # Passed explicitly, programs win over the environment.
    monkeypatch.setenv("ENGRAM_PROGRAMS", str(tmp_path / "missing.json"))
    lm = scripted_lm(answer_all)
    clients = Clients(Settings(llm_attempts=1), store=store, memory_lm=lm)
    explicit = build_graph(clients, programs=MemoryPrograms.load(path))
    assert explicit is not None


def test_a_file_for_another_program_shape_is_refused(tmp_path: Path) -> None:
    foreign = MemoryPrograms(
        decide_save=dspy.Predict("user_message: str -> save: bool")  # type: ignore[arg-type]
    )
    path = tmp_path / "foreign.json"
    foreign.save(path)
    with pytest.raises(ConfigurationError) as refused:
        MemoryPrograms.load(path)
    message = str(refused.value)
    assert "decide_save program of another shape" in message
    assert "new inputs known_memories, assistant_message" in message
    assert "engram optimize" in message


def test_a_changed_field_type_is_named(tmp_path: Path) -> None:
    path = tmp_path / "programs.json"
    MemoryPrograms().save(path)
    document = json.loads(path.read_text())
    shape = document["programs"]["extract"]["shape"]["self"]
    shape["outputs"]["facts"] = "list[str]"
    path.write_text(json.dumps(document))
    with pytest.raises(ConfigurationError, match=r"facts is now list\[Fact\{text, category, valid"):
        MemoryPrograms.load(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no programs file at"),
        ("not json", "is not a programs file"),
        (json.dumps({"format": "something-else"}), "is not an Engram programs file"),
        (json.dumps({"format": "engram-programs", "version": 99}), "format version 99"),
        (json.dumps({"format": "engram-programs", "version": 1, "programs": {}}), "no saved"),
    ],
)
def test_unusable_files_are_refused_clearly(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "programs.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigurationError, match=message):
        MemoryPrograms.load(path)


def test_a_file_cannot_choose_the_model(tmp_path: Path) -> None:
    path = tmp_path / "programs.json"
    MemoryPrograms().save(path)
    document = json.loads(path.read_text())
    document["programs"]["maintain"]["state"]["predict"]["lm"] = {
        "model": "openai/gpt-4o",
        "api_base": "http://attacker.invalid/v1",
    }
    path.write_text(json.dumps(document))
    with pytest.raises(ConfigurationError, match="names its own LM"):
        MemoryPrograms.load(path)


def test_shapes_name_fields_and_types() -> None:
    shape = program_shape(MemoryPrograms().maintain)
    assert shape == {
        "predict": {
            "inputs": {
                "new_facts": "list[Fact{text, category, valid_from, valid_until}]",
                "existing_memories": (
                    "list[NumberedMemory{id, text, category, said, valid_from, valid_until}]"
                ),
                "today": "date",
            },
            "outputs": {
                "reasoning": "str",
                "operations": "list[MemoryOp{op, id, text, category, valid_from, valid_until}]",
            },
        }
    }


class HangingLM(dspy.utils.DummyLM):
    """A memory model that never answers in time, noting the task it was called in."""

    def __init__(self, answers: list[dict[str, str]]) -> None:
        super().__init__(answers)
        self.tasks: list[asyncio.Task[Any] | None] = []

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        self.tasks.append(asyncio.current_task())
        await asyncio.sleep(30)
        return await super().acall(*args, **kwargs)


async def test_a_memory_model_that_hangs_times_out_on_each_attempt() -> None:
    lm = HangingLM([{"save": "True"}])
    began = time.perf_counter()
    with pytest.raises(MemoryStepError) as failed:
        await run_program(
            "decide_save",
            DecideSave(),
            lm,
            attempts=2,
            seconds=0.2,
            backoff=0.0,
            known_memories=[],
            user_message="I moved to Lyon",
            assistant_message="Nice!",
        )
    assert "decide_save failed after 2 attempt(s): TimeoutError: timed out" in str(failed.value)
    assert time.perf_counter() - began < 5  # 2 x 0.2 s, not the model's 30 s
    # each attempt ran in the caller's own task: a timeout costs no task per call
    assert lm.tasks == [asyncio.current_task()] * 2


def test_a_programs_file_from_before_the_validity_dates_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "programs.json"
    changed_programs().save(path)
    document = json.loads(path.read_text())
    old = json.dumps(document["programs"]).replace(", valid_from", "").replace(", valid_until", "")
    document["programs"] = json.loads(old)  # the shapes files had before those fields
    path.write_text(json.dumps(document))
    assert MemoryPrograms.load(path).decide_save.signature.instructions == NEW_RULE
