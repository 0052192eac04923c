"""`engram eval run` in-process on a tiny conversation set in LoCoMo's format: the real
ingest graph, recall and respond, and judge, with scripted models. Every figure of the
summary is checked against what the script makes happen."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dspy
import pytest

from engram.apps.eval.compare import compare, measures
from engram.apps.eval.datasets import Dataset, load_dataset
from engram.apps.eval.harness import Models, RunOptions, run_evaluation, whose
from engram.apps.eval.report import write_report
from engram.memory.store import MemoryStore
from engram.settings import Settings
from engram.state.errors import ConfigurationError
from tests.eval_fakes import (
    TINY_LOCOMO,
    MemoryEchoChat,
    adapter_answer,
    engine_of,
    scripted_lm,
    step_of,
    write_locomo,
)

FACTS = {  # what the scripted memory model extracts from each statement
    "I live in Lisbon now, by the river.": "User lives in Lisbon",
    "Big news: I moved to Porto last week.": "User lives in Porto",
    "Great! I started learning the cello.": "User is learning the cello",
    "Wow! I adopted a greyhound called Pip.": "User adopted a greyhound called Pip",
    "I work as a marine biologist.": "User works as a marine biologist",
    "Cool. I am allergic to peanuts.": "User is allergic to peanuts",
}


def memory_model(system: str, fields: dict[str, str]) -> str:
    step = step_of(system)
    if step == "decide_save":
        return adapter_answer(save=str(fields["user_message"] in FACTS))
    if step == "extract":
        fact = FACTS.get(fields["user_message"])
        return adapter_answer(facts=[{"text": fact, "category": "personal"}] if fact else [])
    assert step == "maintain"
    existing = json.loads(fields["existing_memories"])
    operations = []
    for fact in json.loads(fields["new_facts"]):
        home = [m for m in existing if m["text"].startswith("User lives in")]
        if fact["text"].startswith("User lives in") and home:
            operations.append({"op": "UPDATE", "id": home[0]["id"], "text": fact["text"]})
        else:
            operations.append({"op": "ADD", "text": fact["text"], "category": fact["category"]})
    return adapter_answer(reasoning="scripted", operations=operations)


def judge_model(system: str, fields: dict[str, str]) -> str:
    """Right when every gold word is in the answer; a malformed verdict for Dev."""
    assert step_of(system) == "judge"
    if "Dev" in fields["question"]:
        return adapter_answer(reasoning="unsure", verdict="MAYBE")
    gold = fields["gold_answer"].lower().split()
    right = all(word in fields["generated_answer"].lower() for word in gold)
    return adapter_answer(reasoning="scripted", verdict="CORRECT" if right else "WRONG")


def tiny(tmp_path: Path) -> Dataset:
    return load_dataset(write_locomo(tmp_path / "tiny.json", TINY_LOCOMO))


def models(chat: MemoryEchoChat | None = None, judge: str = "scripted-judge") -> Models:
    return Models(
        chat=chat or MemoryEchoChat(),
        memory_lm=scripted_lm(memory_model),
        judge_lm=scripted_lm(judge_model),
        names={"chat": "echo", "memory": "scripted", "judge": judge},
    )


SETTINGS = Settings(llm_attempts=2, llm_backoff=0, top_k=3)


async def test_a_run_end_to_end(store: MemoryStore, tmp_path: Path) -> None:
    chat = MemoryEchoChat()
    used = models(chat)
    out = tmp_path / "run"
    results = await run_evaluation(
        tiny(tmp_path), SETTINGS, RunOptions(out=out, concurrency=3), models=used, store=store
    )
    summary = results["summary"]
    answers = {q["question"]: (q["answer"], q["correct"]) for q in results["questions"]}
    assert answers["Where does Ana live?"] == ("Ana lives in Porto", True)  # the update won
    assert answers["What instrument is Ben learning?"] == ("Ben is learning the cello", True)
    assert answers["What is Ben's dog called?"][1] is True
    assert answers["What is Cleo's job?"][1] is True
    assert answers["What colour is Ben's new bike?"][1] is False  # never extracted
    assert answers["What is Dev allergic to?"] == ("Dev is allergic to peanuts", None)  # ungraded
    assert "What instrument is Ana learning?" not in answers  # adversarial: no gold answer

    # J: 4 correct of 6 judged; the ungraded one counts as not correct.
    assert summary["j"] == pytest.approx(4 / 6)
    assert summary["questions"] == {
        "judged": 6,
        "graded": 5,
        "ungraded": 1,
        "correct": 4,
        "skipped_without_answer": 1,
    }
    assert summary["j_by_category"] == {
        "single-hop": {"j": 1.0, "n": 3},
        "multi-hop": {"j": 1.0, "n": 1},
        "temporal": {"j": 0.0, "n": 2},
    }
    # The first memory recalled came from the evidence turn for all but the bike question.
    assert summary["evidence_recall"]["at"]["1"] == pytest.approx(5 / 6)
    assert summary["evidence_recall"]["questions"] == 6

    # Memory: Ana's home was updated (2 versions, 1 active); Ben has 2, Cleo and Dev 1.
    assert summary["memories"] == {
        "conv-a": {"Ana": {"active": 1, "versions": 2}, "Ben": {"active": 2, "versions": 2}},
        "conv-b": {"Cleo": {"active": 1, "versions": 1}, "Dev": {"active": 1, "versions": 1}},
    }
    assert summary["memories_per_conversation"] == 2.5
    assert summary["ingest"]["applied"] == {"added": 5, "updated": 1}

    # LLM calls: decide_save per message of each speaker (8), extract per statement (6),
    # maintain per session with facts (6). Tokens are the provider's (the script's) counts.
    memory_engine = engine_of(used.memory_lm)  # type: ignore[arg-type]
    assert summary["llm_calls"] == {"memory": 20, "chat": 6, "judge": 7}  # Dev judged twice
    assert len(memory_engine.prompts) == 20
    assert summary["tokens"]["memory"]["prompt"] == sum(p for p, _ in memory_engine.usage)
    assert summary["tokens"]["memory"]["completion"] == sum(c for _, c in memory_engine.usage)
    assert summary["tokens"]["memory"]["missing"] == 0
    assert summary["tokens"]["chat"]["calls"] == 6 and summary["tokens"]["chat"]["prompt"] > 0
    turns = 4 + 2 + 2  # every turn once, though each is ingested for both speakers
    memory_tokens = sum(p + c for p, c in memory_engine.usage)
    assert summary["tokens_per_turn"]["memory"] == pytest.approx(memory_tokens / turns)

    # Every node ran and was timed.
    latency = summary["latency"]
    assert {n: latency[n]["n"] for n in latency} == {
        "decide_save": 6,
        "extract": 6,
        "retrieve_similar": 6,
        "maintain": 6,
        "recall": 6,
        "respond": 6,
    }
    assert all(0 <= s["p50"] <= s["p95"] for s in latency.values())

    # The chat model saw whose memory it was and the date it was said.
    porto = next(p for p in chat.prompts if "Ana lives in Porto" in p)
    assert "- Ana lives in Porto (personal; said 2023-06-27)" in porto
    assert "Today is 2023-06-28." in porto  # asked a day after the last session

    assert json.loads((out / "results.json").read_text())["summary"]["j"] == summary["j"]


async def test_an_interrupted_run_resumes_without_repeating_work(
    store: MemoryStore, tmp_path: Path
) -> None:
    data = tiny(tmp_path)
    out = tmp_path / "run"
    failing = models(MemoryEchoChat(fail_on="Cleo"))
    with pytest.raises(RuntimeError, match="the provider is down"):
        await run_evaluation(
            data, SETTINGS, RunOptions(out=out, concurrency=1), models=failing, store=store
        )
    journal = [json.loads(line) for line in (out / "progress.jsonl").read_text().splitlines()]
    sessions_done = sum(1 for r in journal if r["kind"] == "session")
    questions_done = sum(1 for r in journal if r["kind"] == "question")
    assert questions_done < 6

    again = models()
    results = await run_evaluation(
        data, SETTINGS, RunOptions(out=out, concurrency=1), models=again, store=store
    )
    # Sessions journaled before are not ingested again; questions answered are not re-asked.
    memory_calls = len(engine_of(again.memory_lm).prompts)  # type: ignore[arg-type]
    assert sessions_done == 6 and memory_calls == 0
    assert results["summary"]["llm_calls"]["chat"] == 6  # all answers, counted once
    journal = [json.loads(line) for line in (out / "progress.jsonl").read_text().splitlines()]
    asked = [r["id"] for r in journal if r["kind"] == "question"]
    assert len(asked) == len(set(asked)) == 6
    assert results["summary"]["j"] == pytest.approx(4 / 6)
    assert results["summary"]["memories"]["conv-a"]["Ana"] == {"active": 1, "versions": 2}

    # Another configuration in the same directory is refused, not mixed in.
    with pytest.raises(ConfigurationError, match="another models"):
        await run_evaluation(
            data, SETTINGS, RunOptions(out=out), models=models(judge="other-judge"), store=store
        )


@pytest.mark.slow
async def test_reports_and_comparison(store: MemoryStore, tmp_path: Path) -> None:
    results = await run_evaluation(
        tiny(tmp_path), SETTINGS, RunOptions(out=tmp_path / "run"), models=models(), store=store
    )
    markdown = write_report(results, tmp_path / "md", "md", plots=True)
    text = markdown.read_text()
    assert "| J (LLM judge, % correct) | 66.7 |" in text
    assert "| temporal | 2 | 0.0 |" in text
    assert "What colour is Ben's new bike?" in text  # answers not judged correct are listed
    for plot in ("j_by_category", "latency", "tokens_per_turn", "recall_at_k"):
        assert f"({plot}.png)" in text
        assert (tmp_path / "md" / f"{plot}.png").read_bytes()[:4] == b"\x89PNG"
    page = write_report(results, tmp_path / "html", "html", plots=False).read_text()
    assert page.startswith("<!doctype html>") and "<td>66.7</td>" in page
    assert "<img" not in page

    better: dict[str, Any] = json.loads(json.dumps(results))
    better["summary"]["j"] = 5 / 6
    rows = {row.name: row for row in compare(results, better)}
    assert (rows["J"].a, rows["J"].b, rows["J"].delta) == ("66.7", "83.3", "+16.7")
    assert rows["LLM calls (memory)"].delta == "0"
    assert {m.name for m in measures(results)} >= {"J temporal", "respond p95"}


def test_memories_are_told_about_their_speaker() -> None:
    assert whose("User's sister lives in Lisbon", "Ana") == "Ana's sister lives in Lisbon"
    assert whose("Adopted a dog", "Ben") == "Ben: Adopted a dog"


def test_the_judge_is_a_chain_of_thought_over_the_gold_answer() -> None:
    from engram.apps.eval.judge import JudgeAnswer

    judge = JudgeAnswer()
    assert list(judge.predict.signature.input_fields) == [
        "question",
        "gold_answer",
        "generated_answer",
    ]
    assert list(judge.predict.signature.output_fields) == ["reasoning", "verdict"]
    lm = scripted_lm(judge_model)
    with dspy.context(lm=lm):
        verdict = judge(question="Where?", gold_answer="Porto", generated_answer="In Porto")
    assert verdict.verdict == "CORRECT"
