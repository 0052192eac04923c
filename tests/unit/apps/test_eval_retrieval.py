"""`engram eval retrieval` in-process: turns or observations become memories, questions are
searched as recall searches, recall@k of the evidence, with no LLM anywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engram.apps.eval.datasets import DatasetError, load_dataset
from engram.apps.eval.labelled import LABELLED
from engram.apps.eval.report import write_report
from engram.apps.eval.retrieval import RetrievalOptions, evaluate_retrieval, load_units, units_of
from engram.memory.store import MemoryStore
from tests.eval_fakes import TINY_LOCOMO, write_locomo


@pytest.mark.slow
def test_turns_of_a_locomo_conversation(store: MemoryStore, tmp_path: Path) -> None:
    data = load_dataset(write_locomo(tmp_path / "tiny.json", TINY_LOCOMO))
    units = units_of(data.conversations[0], "turns")
    assert units[1].text == "Ben: Great! I started learning the cello."  # named: two people
    assert units[1].covers == ("D1:2",) and units[1].at == data.conversations[0].sessions[0].at

    results = evaluate_retrieval(data, store, RetrievalOptions(cutoffs=(1, 3, 20)))
    assert results["run"]["memories"] == 8 and results["run"]["modes"] == ["dense", "hybrid"]
    summary = results["summary"]
    for mode in ("dense", "hybrid"):
        scores = summary[mode]
        assert scores["n"] == 7  # every question naming evidence, adversarial included
        # At most six memories per conversation: the top 20 hold every evidence turn.
        assert scores["recall"]["20"] == 1.0
        assert scores["recall"]["1"] <= scores["recall"]["3"] <= scores["recall"]["20"]
    rows = {q["question"]: q for q in results["questions"]}
    dog = rows["What is Ben's dog called?"]
    assert dog["dense"]["rr"] == 1.0 and dog["dense"]["recall"]["1"] == 1.0
    assert dog["dense"]["top"][0] == "Ben: Wow! I adopted a greyhound called Pip."
    # The summary is the mean of the rows.
    mean_r1 = sum(r["dense"]["recall"]["1"] for r in rows.values()) / len(rows)
    assert summary["dense"]["recall"]["1"] == pytest.approx(mean_r1)
    assert set(summary["dense"]["by_category"]) == {
        "single-hop",
        "multi-hop",
        "temporal",
        "adversarial",
    }
    assert store.retrieval.mode == "hybrid"  # the store's own mode is restored

    report = write_report(results, tmp_path / "report", "md", plots=True).read_text()
    assert "| dense |" in report and "| hybrid |" in report
    assert (tmp_path / "report" / "recall_at_k.png").exists()


def test_observations_as_memories(store: MemoryStore, tmp_path: Path) -> None:
    data = load_dataset(write_locomo(tmp_path / "tiny.json", TINY_LOCOMO))
    with pytest.raises(DatasetError, match="has no observations"):
        evaluate_retrieval(data, store, RetrievalOptions(units="observations"))
    first = data.limited(1, None)
    results = evaluate_retrieval(
        first, store, RetrievalOptions(units="observations", modes=("dense",), cutoffs=(1, 5))
    )
    assert results["run"]["memories"] == 4
    rows = {q["question"]: q for q in results["questions"]}
    assert rows["Where does Ana live?"]["dense"]["top"][0] in {
        "Ana moved to Porto.",
        "Ana lives in Lisbon by the river.",
    }
    assert rows["What colour is Ben's new bike?"]["dense"]["recall"]["5"] == 0.0  # no observation


def test_duplicate_texts_are_one_memory_covering_every_copy(
    store: MemoryStore, tmp_path: Path
) -> None:
    rows = [
        {
            "type": "session",
            "conversation": "c",
            "date": "2024-01-01T10:00:00+00:00",
            "turns": [
                {"id": "t1", "role": "user", "text": "I love jazz."},
                {"id": "t2", "role": "assistant", "text": "Nice!"},
                {"id": "t3", "role": "user", "text": "i love jazz"},
            ],
        }
    ]
    path = tmp_path / "dup.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    covers = load_units(load_dataset(path), store, "turns")
    assert list(covers.values()) == [("t1", "t3")]  # the assistant's turn is no memory


@pytest.mark.slow
def test_the_labelled_set_without_any_llm(store: MemoryStore) -> None:
    """The project's own set, retrieval-only: no key, no model, no LLM call."""
    data = load_dataset(LABELLED)
    timed = evaluate_retrieval(data, store, RetrievalOptions(modes=("dense",), cutoffs=(2, 20)))
    assert timed["run"]["memories"] == 60 and timed["summary"]["dense"]["n"] == 50
    assert timed["summary"]["dense"]["recall"]["20"] == 1.0
    rows = {q["id"]: q for q in timed["questions"]}
    # "What did I tell you last week?" is narrowed to that week: both turns, nothing else.
    assert rows["maya-q6"]["dense"]["recall"]["2"] == 1.0
    assert all("Porto" in t or "São João" in t for t in rows["maya-q6"]["dense"]["top"])
