"""What a real small model writes, recorded (tests/data/smollm2-answers.json: SmolLM2-135M
on llama-cpp-python's server, asked for each step's JSON), and what Engram makes of it:
first-person facts said of the user, categories of the model's own mapped to known ones,
extra keys ignored, and what cannot be turned refused with the reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from engram import Memory
from engram.memory.store import MemoryStore
from engram.nodes.common import known_category, third_person
from engram.nodes.maintain import plan_operations
from engram.nodes.structured_output import ENDPOINT_MODES
from engram.settings import Settings
from engram.state.contracts import Candidate, MemoryOp, ObservedFact
from tests.fake_openai import FakeOpenAI
from tests.helpers import REPO_ROOT

RECORDED = json.loads((REPO_ROOT / "tests" / "data" / "smollm2-answers.json").read_text())


def recorded(prompt: str, mode: str, said: str) -> str:
    return next(
        r["content"]
        for r in RECORDED["records"]
        if r["prompt"] == prompt and r["mode"] == mode and r["user_message"] == said
    )


@pytest.mark.parametrize(
    ("written", "said_of_the_user"),
    [
        (
            "I'm vegetarian and I just moved to Lyon.",
            "User is vegetarian and the user just moved to Lyon.",
        ),
        (
            "My sister Ana is visiting next week; I'm a nurse.",
            "User's sister Ana is visiting next week; the user is a nurse.",
        ),
        (
            "I am a nurse. My sister Ana is visiting next week.",
            "User is a nurse. Their sister Ana is visiting next week.",
        ),
        ("I really love my dog", "User really loves their dog"),
        ("I don't eat meat", "User doesn't eat meat"),
        ("I need a break", "User needs a break"),
        ("I\u2019m vegan", "User is vegan"),
        ("i live in Lyon", "User lives in Lyon"),
        ("My sister Ana visits", "User's sister Ana visits"),
        ("User has type I diabetes", "User has type I diabetes"),  # already said of the user
        ("Part I of the book is great", "Part I of the book is great"),  # no pronoun
        ("I study law", "User studies law"),
        ("User likes tea", "User likes tea"),
        ("Where do I live?", "Where does the user live?"),
        ("Am I late?", "Is the user late?"),
    ],
)
def test_first_person_facts_are_said_of_the_user(written: str, said_of_the_user: str) -> None:
    assert third_person(written) == said_of_the_user


def test_a_fact_that_cannot_be_turned_is_refused() -> None:
    assert third_person("I") is None


@pytest.mark.parametrize(
    ("category", "known"),
    [
        ("food preferences", "preferences"),
        ("personalities, work, health, relationships, plans, location, other", "other"),
        ("work,", "work"),
        ("weather", "other"),
        ("sunshine", "other"),
        ("Location", "location"),
        (None, "other"),
    ],
)
def test_a_models_own_category_maps_to_a_known_one(category: str | None, known: str) -> None:
    assert known_category(category) == known


def test_recorded_answers_become_third_person_memories(tmp_path: Path) -> None:
    said = "My sister Ana is visiting next week; I'm a nurse."
    ENDPOINT_MODES.clear()
    with FakeOpenAI(response_formats="json_object") as fake:
        fake.always("decide_save", recorded("decide_save", "json_object", said))  # extra keys
        fake.always("extract", recorded("extract", "json_object_schema", said))
        memory = Memory(settings=local_settings(fake.url, tmp_path))
        added = memory.add(said, user_id="alice")
    ENDPOINT_MODES.clear()
    assert added.error is None
    assert [(f.text, f.category) for f in added.extracted] == [
        ("User's sister Ana is visiting next week; the user is a nurse.", "personal"),
        ("User is a nurse. Their sister Ana is visiting next week.", "work"),
    ]
    stored = {m.text for m in memory.list(user_id="alice")}
    assert not any(text.startswith(("I ", "I'm", "My ")) for text in stored)


def local_settings(url: str, data_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        openai_base_url=url,
        openai_api_key="x",
        embeddings="openai",
        llm_attempts=1,
        recall_floor=-1,
    )


def test_the_recordings_are_what_they_claim() -> None:
    contents: list[Any] = [r["content"] for r in RECORDED["records"]]
    assert len(contents) == 18 and "SmolLM2-135M" in RECORDED["source"]
    assert any("I'm vegetarian" in c for c in contents)  # the habit is real


def test_a_boolean_as_a_word_is_read_and_as_an_object_refused_with_the_reason(
    tmp_path: Path,
) -> None:
    """`"yes"` reads as true; `{'is_updated': False, 'type': 'dict'}` (SmolLM2's save in
    the benchmark's text-format run) is no answer: the error names it, and decide_save
    fails open, so extraction still looks at the message."""
    said = "I keep bees in my garden."
    ENDPOINT_MODES.clear()
    with FakeOpenAI(response_formats="json_object") as fake:
        fake.queue("decide_save", '{"save": "yes"}', '{"save": {"is_updated": false}}')
        memory = Memory(settings=local_settings(fake.url, tmp_path))
        read = memory.add(said, user_id="alice")
        refused = memory.add("I keep bees on the roof too.", user_id="bob")
        extractions = len(fake.requests_for("extract"))
    ENDPOINT_MODES.clear()
    assert read.error is None and [a.result for a in read.applied] == ["added"]
    assert refused.error is not None and "decide_save failed" in refused.error
    assert "valid boolean" in refused.error
    assert extractions >= 2  # the refused decision did not cost the message its facts


def test_maintains_texts_are_said_of_the_user_and_a_hand_given_category_stays(
    store: MemoryStore,
) -> None:
    """maintain answers with texts and categories too: "I'm vegan" is said of the user,
    and an UPDATE naming no known category keeps the memory's own ("hobbies", given by
    hand), instead of filing it under "other"."""
    knitting = store.add("alice", "User knits scarves", "hobbies")
    candidate = Candidate(ref=1, memory=store.get("alice", knitting.memory_id or ""))
    facts = [
        ObservedFact(text="User knits hats", category="other", observed_at=datetime.now(UTC)),
        ObservedFact(text="User is vegan", category="health", observed_at=datetime.now(UTC)),
    ]
    planned, rejected = plan_operations(
        [
            MemoryOp(op="UPDATE", id=1, text="User knits scarves and hats", category="craft"),
            MemoryOp(op="ADD", text="I'm vegan", category="diet"),
            MemoryOp(op="ADD", text="I", category="other"),
        ],
        [candidate],
        facts,
    )
    assert [(p.op, p.text, p.category) for p in planned] == [
        ("UPDATE", "User knits scarves and hats", "hobbies"),
        ("ADD", "User is vegan", "health"),
    ]
    assert [r.reason for r in rejected] == [
        "written in the first person, and not about the user as such"
    ]


def test_the_extract_prompt_names_the_known_categories() -> None:
    """The categories facts map to are the ones the extract program asks for."""
    from engram.nodes.common import CATEGORIES
    from engram.nodes.programs import ExtractFactsSignature

    listed = ExtractFactsSignature.instructions.split("preferably one of:")[1].split(".")[0]
    assert [c.strip() for c in listed.split(",")] == [*CATEGORIES, "other"]
