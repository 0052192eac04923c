"""`engram optimize` in-process with scripted LMs: GEPA compiles a program against the
shipped labelled set, the saved file loads, and the loaded program sends the new prompt."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import dspy
import pytest

from engram.apps.eval.datasets import load_dataset
from engram.apps.eval.labelled import LABELLED, PROFILE_CHARS, examples, labelled_turns
from engram.apps.eval.optimize import OptimizeOptions, info, optimize_programs, split
from engram.nodes.programs import MemoryPrograms
from tests.eval_fakes import adapter_answer, engine_of, scripted_lm, step_of

RULE = "Save only lasting facts the user states about themselves"


def test_gepa_writes_a_program_that_loads_and_changes_the_prompt(tmp_path: Path) -> None:
    dataset = load_dataset(LABELLED)
    truth = {t.turn.text: t.turn.save for t in labelled_turns(dataset)}

    def task(system: str, fields: dict[str, str]) -> str:
        assert step_of(system) == "decide_save"
        # Right only when the instruction says what to keep; otherwise it saves everything.
        save = truth[fields["user_message"]] if RULE in system else True
        return adapter_answer(save=str(save))

    reflections: list[str] = []

    def reflect(system: str, fields: dict[str, str]) -> str:
        reflections.append(system)
        return json.dumps({"new_instruction": f"{RULE}; never small talk or questions."})

    options = OptimizeOptions(steps=("decide_save",), max_metric_calls=80, threads=1)
    programs, scores = optimize_programs(dataset, scripted_lm(task), scripted_lm(reflect), options)
    [result] = scores
    assert result.step == "decide_save"
    assert result.before < 1.0 and result.after == 1.0  # measured on held-out conversations
    assert reflections  # the reflection model was asked for a new instruction
    # Only the chosen step changed.
    assert (
        programs.extract.signature.instructions == MemoryPrograms().extract.signature.instructions
    )

    path = tmp_path / "programs.json"
    programs.save(path, info(scores, dataset, options, {"task": "scripted"}))
    saved = json.loads(path.read_text())
    assert saved["info"]["optimizer"] == "GEPA"
    assert saved["info"]["scores"]["decide_save"]["after"] == 1.0

    loaded = MemoryPrograms.load(path)
    lm = scripted_lm(task)
    with dspy.context(lm=lm):
        prediction = loaded.decide_save(
            known_memories=[], user_message="Hi! Long day at work.", assistant_message=""
        )
    assert prediction.save is False  # the optimized instruction reached the model
    [(system, _)] = engine_of(lm).prompts
    assert RULE in system
    assert RULE not in MemoryPrograms().decide_save.signature.instructions


def test_examples_follow_the_labels() -> None:
    dataset = load_dataset(LABELLED)
    decide = examples(dataset, "decide_save")
    extract = examples(dataset, "extract")
    maintain = examples(dataset, "maintain")
    assert len(decide) == 60 and sum(e.save for e in decide) == 43
    assert len(extract) == 60  # every labelled user turn says which facts it states
    assert len(maintain) == 43
    # The correction in Maya's second session: coffee is known, the tea facts are new.
    tea = next(e for e in maintain if "tea" in e.new_facts[0].text)
    assert [m.text for m in tea.existing_memories] == [
        "User is a nurse at Santa Maria hospital",
        "User loves coffee",
        "User lives in Alfama, Lisbon",
    ]
    assert "User likes tea more than coffee" in tea.gold_memories
    assert "User loves coffee" not in tea.gold_memories
    # The profile: core facts in, superseded and passing ones named to stay out.
    profile = examples(dataset, "profile")
    assert len(profile) == 19 and {e.max_chars for e in profile} == {PROFILE_CHARS}
    porto = next(
        e for e in profile if "User lives in Porto, near the Bolhão market" in e.gold_profile
    )
    assert porto.outdated == [
        "User is a nurse at Santa Maria hospital",
        "User loves coffee",
        "User lives in Alfama, Lisbon",
    ]
    assert porto.leave_out == ["User moved to Porto in June 2024"]
    # The current profile cites each line's memory as it is now: the old workplace and
    # home as their updates, as the update_profile node shows them.
    shown = {m.id: m.text for m in porto.memories}
    assert [(line.text, [shown[i] for i in line.memory_ids]) for line in porto.current_profile][
        :2
    ] == [
        (
            "User is a nurse at Santa Maria hospital",
            ["User is a nurse at São João hospital, in the pediatric ward"],
        ),
        ("User lives in Alfama, Lisbon", ["User lives in Porto, near the Bolhão market"]),
    ]
    # Validation holds out whole conversations.
    train, validation = split(decide, 3)
    assert {e.conversation for e in train}.isdisjoint({e.conversation for e in validation})
    assert len(train) + len(validation) == len(decide)


def test_unknown_steps_are_refused() -> None:
    from engram.apps.eval.datasets import DatasetError

    dataset = load_dataset(LABELLED)
    lm = scripted_lm(lambda system, fields: "")
    with pytest.raises(DatasetError, match="unknown step"):
        optimize_programs(dataset, lm, lm, OptimizeOptions(steps=("respond",)))


PROFILE_RULE = "Drop every line whose memory changed"


def test_gepa_optimizes_the_profile_program() -> None:
    dataset = load_dataset(LABELLED)
    gold = {
        frozenset(m.text for m in e.memories): [
            {"text": text, "memory_ids": [m.id for m in e.memories if m.text == text]}
            for text in e.gold_profile
        ]
        for e in examples(dataset, "profile")
    }

    def task(system: str, fields: dict[str, str]) -> str:
        assert step_of(system) == "profile"
        memories = frozenset(m["text"] for m in json.loads(fields["memories"]))
        if PROFILE_RULE in system:
            return adapter_answer(lines=gold[memories])
        # Without the rule, it keeps the current profile as it is.
        return adapter_answer(lines=json.loads(fields["current_profile"]))

    def reflect(system: str, fields: dict[str, str]) -> str:
        return json.dumps({"new_instruction": f"{PROFILE_RULE}; cite only ids shown."})

    options = OptimizeOptions(steps=("profile",), max_metric_calls=60, threads=1)
    programs, [result] = optimize_programs(
        dataset, scripted_lm(task), scripted_lm(reflect), options
    )
    assert result.step == "profile" and (result.train, result.validation) == (14, 5)
    assert result.before < 0.5 and result.after == 1.0
    assert PROFILE_RULE in programs.profile.signature.instructions
    assert PROFILE_RULE not in MemoryPrograms().profile.signature.instructions


def test_the_profile_metric_scores_what_the_program_parsed() -> None:
    """Through the program (DummyLM answers, parsed into CitedLine), the shipped examples
    score the right lines 1.0 and the failures GEPA must learn away below it."""
    from engram.apps.eval.labelled import profile_metric
    from tests.helpers import scripted_lm as dummy_lm

    example = next(
        e
        for e in examples(load_dataset(LABELLED), "profile")
        if "User's daughter Anika is six years old" in e.gold_profile
    )
    ids = {m.text: m.id for m in example.memories}

    def cite(*texts: str) -> list[dict[str, object]]:
        return [{"text": t, "memory_ids": [ids[t]]} for t in texts]

    anika, cashews, arjun = example.gold_profile
    answers = {
        "right": cite(anika, cashews, arjun),
        "empty": [],
        "invented": [*cite(anika, cashews), {"text": arjun, "memory_ids": [42]}],
        "stale": [
            {"text": "User's daughter Anika is five years old", "memory_ids": [ids[anika]]},
            *cite(cashews, arjun),
        ],
        "passing": cite(anika, cashews, arjun, *example.leave_out),
        "long": [{"text": f"{anika}, {cashews.lower()} " * 20, "memory_ids": [ids[anika]]}],
    }
    scores = {}
    for name, lines in answers.items():
        with dspy.context(lm=dummy_lm({"lines": lines})):
            prediction = MemoryPrograms().profile(**example.inputs())
        scores[name] = profile_metric(example, prediction).score
    assert scores["right"] == 1.0
    assert scores["empty"] == 0.0
    assert all(scores[n] < 1.0 for n in ("invented", "stale", "passing", "long"))
    assert scores["invented"] < scores["stale"] < scores["right"]


def test_the_date_aware_metrics_score_what_the_programs_parsed() -> None:
    """Through the programs (DummyLM answers, parsed into Fact and MemoryOp), the shipped
    time examples: the stay until Friday and the move that closes the old home score 1.0
    with the labelled dates, less without them."""
    from engram.apps.eval.datasets import Validity
    from engram.apps.eval.labelled import extract_metric, maintain_metric
    from tests.helpers import ops
    from tests.helpers import scripted_lm as dummy_lm

    dataset = load_dataset(LABELLED)
    tokyo = next(e for e in examples(dataset, "extract") if "until Friday" in e.user_message)
    assert tokyo.gold_dates == [Validity(valid_until=date(2025, 4, 11))]
    fact = {"text": "User is in Tokyo for a pharmacy conference", "category": "plans"}
    scores = {}
    for name, answer in {
        "right": {**fact, "valid_until": "2025-04-11"},
        "missing": fact,
        "a day off": {**fact, "valid_until": "2025-04-12"},
    }.items():
        with dspy.context(lm=dummy_lm({"facts": [answer]})):
            prediction = MemoryPrograms().extract(**tokyo.inputs())
        scores[name] = extract_metric(tokyo, prediction).score
    assert scores == {"right": 1.0, "missing": 0.5, "a day off": 0.5}

    move = next(
        e
        for e in examples(dataset, "maintain")
        if e.new_facts[-1].text == "User lives in Berlin, in Kreuzberg"
    )
    assert move.new_facts[-1].valid_from == date(2025, 3, 1)  # the fact's dates are shown
    ids = {m.text: m.id for m in move.existing_memories}
    paris = "User lives in Paris, in the 11th arrondissement"
    added = [{"op": "ADD", "text": f.text, "category": "location"} for f in move.new_facts]
    answers = {
        "closed": [{"op": "UPDATE", "id": ids[paris], "text": paris, "valid_until": "2025-02-28"}],
        "deleted": [{"op": "DELETE", "id": ids[paris]}],
        "left open": [],
    }
    scored = {}
    for name, operations in answers.items():
        with dspy.context(lm=dummy_lm(ops(*operations, *added))):
            prediction = MemoryPrograms().maintain(**move.inputs())
        scored[name] = maintain_metric(move, prediction).score
    assert scored["closed"] == 1.0
    assert scored["deleted"] < scored["left open"] < 1.0
