"""Every evaluation metric on cases computed by hand. No judge or model is involved: a
judge that always says "correct" cannot make any of these pass."""

from __future__ import annotations

from datetime import UTC, date, datetime

import dspy
import pytest

from engram.apps.eval.datasets import Validity
from engram.apps.eval.judge import parse_verdict
from engram.apps.eval.labelled import (
    decide_save_metric,
    extract_metric,
    maintain_metric,
    profile_metric,
    score_profile,
)
from engram.apps.eval.metrics import (
    Matched,
    accuracy,
    apply_planned,
    apply_planned_dated,
    by_category,
    describe_validity,
    judge_score,
    latency_summary,
    match_dated,
    match_texts,
    mean,
    micro,
    percentile,
    prf,
    recall_at,
    reciprocal_rank,
    text_similarity,
)
from engram.memory.store import PlannedOp
from engram.state.contracts import CitedLine, Fact, MemoryOp, NumberedMemory


def test_j_counts_ungraded_answers_as_not_correct() -> None:
    assert judge_score([True, False, None, True]) == 0.5
    assert judge_score([None, None]) == 0.0  # a judge that never answers scores nothing
    assert judge_score([]) is None
    assert by_category([("temporal", True), ("temporal", False), ("single-hop", None)]) == {
        "temporal": (0.5, 2),
        "single-hop": (0.0, 1),
    }


def test_recall_at_k_and_reciprocal_rank() -> None:
    evidence = ["D1:1", "D1:2"]
    ranked = [("D3:1",), ("D1:1", "D4:4"), ("D1:2",)]
    assert [recall_at(evidence, ranked, k) for k in (1, 2, 3, 10)] == [0.0, 0.5, 1.0, 1.0]
    assert reciprocal_rank(evidence, ranked) == 0.5
    assert reciprocal_rank(evidence, [("D9:9",)]) == 0.0
    assert recall_at([], ranked, 3) is None  # no evidence named: no recall
    assert mean([0.5, None, 1.0]) == 0.75
    assert mean([None]) is None


def test_percentiles_are_nearest_rank() -> None:
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50) == 3.0
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 95) == 5.0
    assert percentile([float(n) for n in range(1, 21)], 95) == 19.0
    assert percentile([], 50) is None
    summary = latency_summary([("recall", 0.1), ("respond", 2.0), ("recall", 0.3)])
    assert summary["recall"] == {"n": 2, "p50": 0.1, "p95": 0.3, "mean": pytest.approx(0.2)}
    assert summary["respond"]["n"] == 1


def test_text_similarity_is_dice_of_content_words() -> None:
    # {green, tea} vs {prefer, green, tea}: 2 * 2 / (2 + 3)
    assert text_similarity("User likes green tea", "User prefers green tea") == 0.8
    # {allergic, peanut} vs {allergic, shellfish}: 2 * 1 / 4, below the 0.6 threshold
    assert text_similarity("User is allergic to peanuts", "User is allergic to shellfish") == 0.5
    assert text_similarity("User moved to Berlin.", "user moved to berlin") == 1.0
    assert text_similarity("ok", "User lives in Oslo") == 0.0


def test_matching_is_one_to_one_best_first() -> None:
    result = match_texts(
        ["User lives in Porto", "User likes the assistant", "User is a nurse"],
        ["User is a nurse at São João hospital", "User lives in Porto"],
    )
    assert result.pairs == (
        ("User lives in Porto", "User lives in Porto"),
        ("User is a nurse", "User is a nurse at São João hospital"),  # {nurs} vs {nurs, hospital}
    )
    assert result.spurious == ("User likes the assistant",)
    assert result.missed == ()
    assert (result.precision, result.recall) == (2 / 3, 1.0)
    assert result.f1 == pytest.approx(0.8)
    twice = match_texts(["User lives in Porto", "User lives in Porto now"], ["User lives in Porto"])
    assert len(twice.pairs) == 1 and twice.spurious == ("User lives in Porto now",)
    different = match_texts(["User is allergic to shellfish"], ["User is allergic to peanuts"])
    assert different.pairs == () and different.f1 == 0.0


def test_precision_recall_edges_and_micro_average() -> None:
    assert prf(0, 0, 0) == (1.0, 1.0, 1.0)  # nothing expected, nothing predicted
    assert prf(0, 0, 2) == (1.0, 0.0, 0.0)  # predicted nothing, missed two
    assert prf(0, 1, 0) == (0.0, 1.0, 0.0)  # predicted something where nothing was said
    a = Matched(pairs=(("x", "x"),), spurious=("y",), missed=())
    b = Matched(pairs=(), spurious=(), missed=("z", "w"))
    # 1 pair, 1 spurious, 2 missed: precision 1/2, recall 1/3, F1 2*(1/6)/(5/6) = 0.4
    assert micro([a, b]) == {
        "precision": 0.5,
        "recall": pytest.approx(1 / 3),
        "f1": pytest.approx(0.4),
    }
    assert accuracy([(True, True), (False, True), (None, False)]) == pytest.approx(1 / 3)
    assert accuracy([]) is None


def test_applying_planned_operations_like_the_store() -> None:
    existing = {1: "User lives in Lisbon", 2: "User smokes", 3: "User has a dog"}
    planned = [
        PlannedOp("UPDATE", ref=1, target_id="a", text="User lives in Porto"),
        PlannedOp("DELETE", ref=2, target_id="b"),
        PlannedOp("ADD", text="User has a cat"),
        PlannedOp("ADD", text="user lives in porto."),  # already there: a no-op
        PlannedOp("NOOP", ref=3, target_id="c"),
    ]
    assert apply_planned(existing, planned) == [
        "User lives in Porto",
        "User has a dog",
        "User has a cat",
    ]


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ("CORRECT", True),
        ("**correct**", True),
        ("Wrong.", False),
        ("INCORRECT", False),
        ("partially correct", None),
        ("CORRECT, because it matches", None),
        ("", None),
        (None, None),
    ],
)
def test_judge_verdicts_are_read_strictly(text: str | None, verdict: bool | None) -> None:
    assert parse_verdict(text) is verdict


def test_the_program_metrics_score_and_explain() -> None:
    gold = dspy.Example(save=False)
    wrong = decide_save_metric(gold, dspy.Prediction(save=True))
    assert wrong.score == 0.0 and "must not be saved" in wrong.feedback
    assert decide_save_metric(gold, dspy.Prediction(save=False)).score == 1.0

    extract_gold = dspy.Example(
        user_message="I moved to Porto last week.",
        gold_facts=["User moved to Porto in June 2024"],
    )
    prediction = dspy.Prediction(
        facts=[
            Fact(text="User moved to Porto in June 2024", category="location"),
            Fact(text="User enjoys cafés by the river", category="preferences"),  # ungrounded
        ]
    )
    scored = extract_metric(extract_gold, prediction)
    assert scored.score == 1.0  # the ungrounded fact would be rejected by the node anyway
    assert "Rejected as not in the user's own words" in scored.feedback
    missed = extract_metric(extract_gold, dspy.Prediction(facts=[]))
    assert missed.score == 0.0 and "Missed facts" in missed.feedback

    maintain_gold = dspy.Example(
        new_facts=[Fact(text="User lives in Porto", category="location")],
        existing_memories=[
            NumberedMemory(
                id=1, text="User lives in Lisbon", category="location", said=date(2024, 1, 1)
            ),
            NumberedMemory(id=2, text="User is a nurse", category="work", said=date(2024, 1, 1)),
        ],
        today=date(2024, 6, 1),
        observed_at=datetime(2024, 6, 1, tzinfo=UTC),
        gold_memories=["User lives in Porto", "User is a nurse"],
    )
    update = dspy.Prediction(operations=[MemoryOp(op="UPDATE", id=1, text="User lives in Porto")])
    assert maintain_metric(maintain_gold, update).score == 1.0
    # ADD without replacing the old home: memory {Lisbon, nurse, Porto} vs gold {Porto,
    # nurse}: precision 2/3, recall 1, F1 0.8.
    added = dspy.Prediction(operations=[MemoryOp(op="ADD", text="User lives in Porto")])
    scored = maintain_metric(maintain_gold, added)
    assert scored.score == pytest.approx(0.8)
    assert "User lives in Lisbon" in scored.feedback
    # A hallucinated id is rejected by the node's validation; the fact is still kept.
    bogus = dspy.Prediction(operations=[MemoryOp(op="DELETE", id=7)])
    scored = maintain_metric(maintain_gold, bogus)
    assert "unknown id 7" in scored.feedback and scored.score == pytest.approx(0.8)


def _memories(*texts: str) -> list[NumberedMemory]:
    return [
        NumberedMemory(id=i, text=t, category="other", said=date(2024, 6, 1))
        for i, t in enumerate(texts, 1)
    ]


PROFILE_GOLD = dspy.Example(
    current_profile=[CitedLine(text="User lives in Lisbon", memory_ids=[1])],
    memories=_memories(
        "User lives in Porto",  # updated from Lisbon: the current line now cites it
        "User is a nurse at São João hospital",
        "User's daughter Anika is allergic to cashews",
        "User ate a pastel de nata on Sunday",
    ),
    max_chars=200,
    gold_profile=[
        "User lives in Porto",
        "User is a nurse at São João hospital",
        "User's daughter Anika is allergic to cashews",
    ],
    leave_out=["User ate a pastel de nata on Sunday"],
    outdated=["User lives in Lisbon"],
)


def _profile(*lines: tuple[str, list[int]]) -> dspy.Prediction:
    return dspy.Prediction(lines=[CitedLine(text=t, memory_ids=ids) for t, ids in lines])


def test_the_profile_metric_rewards_grounded_core_facts() -> None:
    good = _profile(
        ("User lives in Porto and works as a nurse at São João hospital", [1, 2]),  # merged
        ("User's daughter Anika is allergic to cashews", [3]),
    )
    scored = profile_metric(PROFILE_GOLD, good)
    assert (
        scored.score == 1.0
        and "3 of 3 core facts, grounding 1.00, 107 of 200 characters" in scored.feedback
    )
    # A shorter one is less complete: coverage 2/3, precision 1, F1 0.8.
    partial = profile_metric(
        PROFILE_GOLD,
        _profile(("User lives in Porto", [1]), ("User is a nurse at São João hospital", [2])),
    )
    assert partial.score == pytest.approx(0.8)
    assert "Core facts missing: User's daughter Anika is allergic to cashews." in partial.feedback


def test_the_profile_metric_punishes_invented_ids_and_empty_or_long_profiles() -> None:
    # An invented id: the node refuses the whole line; F1 of precision 2/3 and coverage
    # 2/3, less the penalty for the invention.
    invented = _profile(
        ("User lives in Porto", [1]),
        ("User is a nurse at São João hospital", [2]),
        ("User's daughter Anika is allergic to cashews", [9]),
    )
    scored = profile_metric(PROFILE_GOLD, invented)
    assert scored.score == pytest.approx(2 / 3 - 0.25)
    assert "citing ids that are not among the memories" in scored.feedback
    # Nothing at all, or lines that cite nothing, cover nothing.
    assert profile_metric(PROFILE_GOLD, _profile()).score == 0.0
    assert profile_metric(PROFILE_GOLD, dspy.Prediction(lines=None)).score == 0.0
    uncited = profile_metric(PROFILE_GOLD, _profile(("User lives in Porto", [])))
    assert uncited.score == 0.0 and "citing no memory" in uncited.feedback
    # An empty profile is right only when nothing is expected.
    nothing = dspy.Example(PROFILE_GOLD, gold_profile=[], leave_out=[], outdated=[])
    assert profile_metric(nothing, _profile()).score == 1.0
    # Past max_chars: what does not fit is never shown (the store's `fit`), and a penalty.
    tight = dspy.Example(PROFILE_GOLD, max_chars=80)
    long = _profile(
        ("User's daughter Anika is allergic to cashews", [3]),
        ("User is a nurse at São João hospital", [2]),  # 45 + 37 > 80: left out
        ("User lives in Porto", [1]),  # 45 + 20 fits
    )
    scored = profile_metric(tight, long)
    result = score_profile(long.lines, tight.memories, 80, tight.gold_profile)
    assert result.chars == 102 and result.missed == ("User is a nurse at São João hospital",)
    assert scored.score == pytest.approx(0.8 - 0.25)  # precision 1, coverage 2/3
    assert "Too long" in scored.feedback


def test_the_profile_metric_refuses_outdated_passing_and_unsupported_lines() -> None:
    stale = profile_metric(
        PROFILE_GOLD,
        _profile(
            ("User lives in Lisbon", [1]),  # the current profile copied: its memory changed
            ("User is a nurse at São João hospital", [2]),
            ("User's daughter Anika is allergic to cashews", [3]),
        ),
    )
    # Its cited memory shares half its words, but the line states the old home.
    assert (
        "no longer true (the memories changed it; revise or drop the line): User lives in Lisbon"
        in stale.feedback
    )
    assert stale.score == pytest.approx(2 * (2 / 3) * (2 / 3) / (4 / 3))
    passing = profile_metric(
        PROFILE_GOLD,
        _profile(
            ("User lives in Porto", [1]),
            ("User is a nurse at São João hospital", [2]),
            ("User's daughter Anika is allergic to cashews", [3]),
            ("User ate a pastel de nata on Sunday", [4]),
        ),
    )
    assert passing.score == pytest.approx(2 * 0.75 / 1.75)  # precision 3/4, coverage 1
    assert "do not belong in a profile: User ate a pastel de nata" in passing.feedback
    # A line that states the old fact while citing a memory that shares words with it.
    moved = dspy.Example(
        PROFILE_GOLD,
        memories=_memories("User likes tea more than coffee"),
        gold_profile=["User likes tea more than coffee"],
        leave_out=[],
        outdated=["User loves coffee"],
    )
    old = profile_metric(moved, _profile(("User loves coffee", [1])))
    assert old.score == 0.0 and "drop the line): User loves coffee" in old.feedback
    unsupported = profile_metric(moved, _profile(("User drinks espresso at work", [1])))
    assert "say more than the memories they cite" in unsupported.feedback
    assert profile_metric(moved, _profile(("User prefers tea to coffee", [1]))).score == 1.0


# -- dates: facts and memories that hold for a time --------------------------------------

FRIDAY = date(2025, 4, 11)
TOKYO = "User is in Tokyo for a pharmacy conference"


def test_dated_matching_halves_a_pair_with_wrong_dates() -> None:
    lasting, until_friday = Validity(), Validity(valid_until=FRIDAY)
    gold = [(TOKYO, until_friday), ("User is a pharmacist", lasting)]
    assert match_dated(list(gold), gold).f1 == 1.0
    # One of two facts with wrong dates: credit 1.5 of 2, precision = recall = 0.75.
    for given in (
        lasting,  # the end is missing
        Validity(valid_until=date(2025, 4, 10)),  # a day off
        Validity(valid_from=date(2025, 4, 7), valid_until=FRIDAY),  # a start never said
    ):
        result = match_dated([(TOKYO, given), ("User is a pharmacist", lasting)], gold)
        assert result.wrong_dates == ((TOKYO, given, until_friday),)
        assert (result.precision, result.recall, result.f1) == (0.75, 0.75, 0.75)
    # A lasting fact given an end is wrong too.
    ended = match_dated(
        [("User is a pharmacist", until_friday)], [("User is a pharmacist", lasting)]
    )
    assert ended.f1 == 0.5
    # Wrong dates and a missing fact: credit 0.5, precision 0.5, recall 0.25.
    assert match_dated([(TOKYO, lasting)], gold).f1 == pytest.approx(2 * 0.5 * 0.25 / 0.75)
    # Without dates on either side, it is match_texts' F1.
    texts = ["User lives in Porto", "User likes the assistant", "User is a nurse"]
    golds = ["User is a nurse at São João hospital", "User lives in Porto"]
    undated = match_dated([(t, lasting) for t in texts], [(g, lasting) for g in golds])
    assert undated.f1 == match_texts(texts, golds).f1 == pytest.approx(0.8)
    assert describe_validity(lasting) == "no dates (a lasting fact)"
    assert describe_validity(until_friday) == "until 2025-04-11"
    assert describe_validity(Validity(FRIDAY, FRIDAY)) == "on 2025-04-11 only"


def _extract_gold(message: str, *facts: tuple[str, Validity]) -> dspy.Example:
    return dspy.Example(
        user_message=message,
        gold_facts=[text for text, _ in facts],
        gold_dates=[validity for _, validity in facts],
    )


def _facts(*items: tuple[str, date | None, date | None]) -> dspy.Prediction:
    return dspy.Prediction(
        facts=[
            Fact(text=t, category="other", valid_from=start, valid_until=end)
            for t, start, end in items
        ]
    )


def test_the_extract_metric_scores_the_dates() -> None:
    until_friday = _extract_gold(
        "Greetings from Tokyo! I'm here for a pharmacy conference until Friday.",
        (TOKYO, Validity(valid_until=FRIDAY)),
    )
    assert extract_metric(until_friday, _facts((TOKYO, None, FRIDAY))).score == 1.0
    missing = extract_metric(until_friday, _facts((TOKYO, None, None)))
    assert missing.score == 0.5
    assert (
        f"Wrong dates (each such fact counts half): {TOKYO}: no dates (a lasting fact), "
        "expected until 2025-04-11." in missing.feedback
    )
    off_by_one = extract_metric(until_friday, _facts((TOKYO, None, date(2025, 4, 12))))
    assert off_by_one.score == 0.5 and "until 2025-04-12, expected until 2025-04-11" in (
        off_by_one.feedback
    )
    # An event is true on its day only: from and until that day.
    monday = date(2025, 4, 14)
    exam = _extract_gold(
        "My German B1 exam is next Monday, so I'm revising every evening.",
        ("User has a German B1 exam on 14 April 2025", Validity(monday, monday)),
    )
    text = "User has a German B1 exam on 14 April 2025"
    assert extract_metric(exam, _facts((text, monday, monday))).score == 1.0
    assert extract_metric(exam, _facts((text, None, monday))).score == 0.5
    # "Used to": no longer true, from the day it was said.
    violin = _extract_gold(
        "I used to play the violin in a student orchestra.",
        ("User used to play the violin", Validity(valid_until=date(2025, 1, 13))),
    )
    assert extract_metric(violin, _facts(("User used to play the violin", None, None))).score == 0.5
    # A lasting fact given an end (extra dates) is wrong; without dates it scores as before.
    lasting = _extract_gold("I'm a pharmacist.", ("User is a pharmacist", Validity()))
    ended = extract_metric(lasting, _facts(("User is a pharmacist", None, FRIDAY)))
    assert ended.score == 0.5 and "expected no dates (a lasting fact)" in ended.feedback
    assert extract_metric(lasting, _facts(("User is a pharmacist", None, None))).score == 1.0
    undated = dspy.Example(user_message="I'm a pharmacist.", gold_facts=["User is a pharmacist"])
    assert extract_metric(undated, _facts(("User is a pharmacist", None, None))).score == 1.0
    assert extract_metric(undated, _facts(("User is a pharmacist", None, FRIDAY))).score == 0.5


def test_the_maintain_metric_wants_a_move_to_close_the_old_home() -> None:
    said = date(2025, 1, 13)
    gold = dspy.Example(
        new_facts=[
            Fact(text="User lives in Berlin", category="other", valid_from=date(2025, 3, 1))
        ],
        existing_memories=[
            NumberedMemory(id=1, text="User lives in Paris", category="location", said=said),
            NumberedMemory(id=2, text="User is a pharmacist", category="work", said=said),
        ],
        today=date(2025, 3, 3),
        observed_at=datetime(2025, 3, 3, tzinfo=UTC),
        gold_memories=["User lives in Paris", "User is a pharmacist", "User lives in Berlin"],
        gold_memory_dates=[
            Validity(valid_until=date(2025, 2, 28)),
            Validity(),
            Validity(valid_from=date(2025, 3, 1)),
        ],
    )

    def score(*operations: MemoryOp) -> dspy.Prediction:
        return maintain_metric(gold, dspy.Prediction(operations=list(operations)))

    paris, berlin = "User lives in Paris", "User lives in Berlin"
    # Closed with its own text, and the new home added (its start from the fact).
    closed = score(
        MemoryOp(op="UPDATE", id=1, text=paris, valid_until=date(2025, 2, 28)),
        MemoryOp(op="ADD", text=berlin),
    )
    assert closed.score == 1.0
    # Deleted: the old home is lost; 2 of 3 expected, precision 1, F1 0.8.
    deleted = score(MemoryOp(op="DELETE", id=1), MemoryOp(op="ADD", text=berlin))
    assert deleted.score == pytest.approx(0.8)
    assert "closed with valid_until, not deleted): User lives in Paris" in deleted.feedback
    # Replaced by the new home (the UPDATE of old): Berlin takes its fact's start, but
    # Paris is lost: precision 2/2, recall 2/3, F1 0.8.
    replaced = score(MemoryOp(op="UPDATE", id=1, text=berlin))
    assert replaced.score == pytest.approx(0.8)
    # Berlin added beside a Paris still open, or closed a day late: credit 2.5 of 3.
    for paris_op in ([], [MemoryOp(op="UPDATE", id=1, text=paris, valid_until=date(2025, 3, 1))]):
        left = score(*paris_op, MemoryOp(op="ADD", text=berlin))
        assert left.score == pytest.approx(2.5 / 3)
        assert "User lives in Paris:" in left.feedback and "expected until 2025-02-28" in (
            left.feedback
        )


def test_applying_planned_operations_keeps_the_dates() -> None:
    existing = {
        1: ("User lives in Paris", Validity(valid_from=date(2020, 9, 1))),
        2: ("User is in Tokyo", Validity(valid_until=FRIDAY)),
    }
    planned = [
        # Closing keeps the start; an UPDATE to a new text keeps none it does not give.
        PlannedOp("UPDATE", ref=1, target_id="a", text="User lives in Paris", valid_until=FRIDAY),
        PlannedOp("UPDATE", ref=2, target_id="b", text="User is in Tokyo for a conference"),
        PlannedOp("ADD", text="User has an exam", valid_from=FRIDAY, valid_until=FRIDAY),
    ]
    assert apply_planned_dated(existing, planned) == [
        ("User lives in Paris", Validity(date(2020, 9, 1), FRIDAY)),
        ("User is in Tokyo for a conference", Validity()),
        ("User has an exam", Validity(FRIDAY, FRIDAY)),
    ]
