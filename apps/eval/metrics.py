"""Every number an evaluation report shows, as small pure functions (checked by hand in
tests/test_eval_metrics.py).

Conventions: shares are fractions in [0, 1] (reports print percentages); an empty
prediction of nothing is perfect; a question without evidence has no recall (None), and
averages skip Nones.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from engram.apps.eval.datasets import LASTING, Validity
from engram.memory.keywords import content_words
from engram.memory.store import PlannedOp, normalize_text

MATCH_THRESHOLD = 0.6  # Dice overlap of content words for two texts to state the same fact
DATE_SHARE = 0.5  # the share of a matched fact's credit that its dates carry


# -- answers -------------------------------------------------------------------------------


def judge_score(verdicts: Sequence[bool | None]) -> float | None:
    """J: the share of answers the judge called correct. An answer the judge could not
    grade (None: malformed verdicts) counts as not correct, so a broken judge can only
    lower the score, never raise it."""
    if not verdicts:
        return None
    return sum(1 for v in verdicts if v is True) / len(verdicts)


def by_category(items: Iterable[tuple[str, bool | None]]) -> dict[str, tuple[float | None, int]]:
    """J per category, with the number of questions, in order of first appearance."""
    grouped: dict[str, list[bool | None]] = defaultdict(list)
    for category, verdict in items:
        grouped[category].append(verdict)
    return {name: (judge_score(v), len(v)) for name, v in grouped.items()}


# -- retrieval -----------------------------------------------------------------------------


def recall_at(evidence: Iterable[str], ranked: Sequence[Iterable[str]], k: int) -> float | None:
    """The share of a question's evidence (turn ids) covered by the top `k` results, each
    result covering the turns it came from. None when the question names no evidence."""
    wanted = set(evidence)
    if not wanted:
        return None
    found = set().union(*[set(r) for r in ranked[:k]]) if k > 0 else set()
    return len(wanted & found) / len(wanted)


def reciprocal_rank(evidence: Iterable[str], ranked: Sequence[Iterable[str]]) -> float | None:
    """1 / the rank of the first result that covers any evidence turn; 0 if none does."""
    wanted = set(evidence)
    if not wanted:
        return None
    for rank, covered in enumerate(ranked, 1):
        if wanted & set(covered):
            return 1.0 / rank
    return 0.0


def mean(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


# -- latency -------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank percentile (`q` in 0..100): a value that was observed."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_summary(samples: Iterable[tuple[str, float]]) -> dict[str, dict[str, float | int]]:
    """Per node: how often it ran, and p50 / p95 / mean seconds."""
    grouped: dict[str, list[float]] = defaultdict(list)
    for node, seconds in samples:
        grouped[node].append(seconds)
    return {
        node: {
            "n": len(values),
            "p50": percentile(values, 50) or 0.0,
            "p95": percentile(values, 95) or 0.0,
            "mean": sum(values) / len(values),
        }
        for node, values in grouped.items()
    }


# -- facts and memory states ---------------------------------------------------------------


def text_similarity(a: str, b: str) -> float:
    """Dice overlap of the two texts' content words (stemmed, stopwords ignored): 1.0 for
    the same words in any order; identical normalized texts score 1.0 even without any."""
    if normalize_text(a) == normalize_text(b):
        return 1.0
    left, right = content_words(a), content_words(b)
    if not left or not right:
        return 0.0
    return 2 * len(left & right) / (len(left) + len(right))


@dataclass(frozen=True)
class Matched:
    """How predicted texts meet gold texts: one-to-one pairs, and what is left over."""

    pairs: tuple[tuple[str, str], ...]  # (predicted, gold)
    spurious: tuple[str, ...]  # predicted, matching no gold text
    missed: tuple[str, ...]  # gold, matched by no predicted text

    @property
    def precision(self) -> float:
        return prf(len(self.pairs), len(self.spurious), len(self.missed))[0]

    @property
    def recall(self) -> float:
        return prf(len(self.pairs), len(self.spurious), len(self.missed))[1]

    @property
    def f1(self) -> float:
        return prf(len(self.pairs), len(self.spurious), len(self.missed))[2]


def prf(pairs: int, spurious: int, missed: int) -> tuple[float, float, float]:
    """Precision, recall, F1 from counts; predicting nothing when nothing is expected is
    perfect, and an empty side has no errors of its own kind."""
    precision = pairs / (pairs + spurious) if pairs + spurious else 1.0
    recall = pairs / (pairs + missed) if pairs + missed else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def match_texts(
    predicted: Sequence[str], gold: Sequence[str], threshold: float = MATCH_THRESHOLD
) -> Matched:
    """Pair predicted and gold texts one-to-one, most similar pairs first, keeping pairs
    whose similarity is at least `threshold`."""
    pairs = _pair(predicted, gold, threshold)
    used_p, used_g = {i for i, _ in pairs}, {j for _, j in pairs}
    return Matched(
        pairs=tuple((predicted[i], gold[j]) for i, j in pairs),
        spurious=tuple(p for i, p in enumerate(predicted) if i not in used_p),
        missed=tuple(g for j, g in enumerate(gold) if j not in used_g),
    )


def _pair(predicted: Sequence[str], gold: Sequence[str], threshold: float) -> list[tuple[int, int]]:
    candidates = sorted(
        (
            (text_similarity(p, g), i, j)
            for i, p in enumerate(predicted)
            for j, g in enumerate(gold)
        ),
        key=lambda item: (-item[0], item[1], item[2]),
    )
    used_p: set[int] = set()
    used_g: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for score, i, j in candidates:
        if score < threshold:
            break
        if i not in used_p and j not in used_g:
            used_p.add(i)
            used_g.add(j)
            pairs.append((i, j))
    return sorted(pairs)


@dataclass(frozen=True)
class DatedMatch:
    """Predicted facts (or memories) with their dates against gold ones: the texts are
    paired as `match_texts` pairs them; a pair whose dates differ from the gold ones (by
    a day or more, a missing date, or an end given to a lasting fact) keeps only
    1 - `DATE_SHARE` of its credit."""

    texts: Matched
    wrong_dates: tuple[tuple[str, Validity, Validity], ...]  # (predicted text, given, gold)

    @property
    def credit(self) -> float:
        return len(self.texts.pairs) - DATE_SHARE * len(self.wrong_dates)

    @property
    def precision(self) -> float:
        predicted = len(self.texts.pairs) + len(self.texts.spurious)
        return self.credit / predicted if predicted else 1.0

    @property
    def recall(self) -> float:
        expected = len(self.texts.pairs) + len(self.texts.missed)
        return self.credit / expected if expected else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def match_dated(
    predicted: Sequence[tuple[str, Validity]],
    gold: Sequence[tuple[str, Validity]],
    threshold: float = MATCH_THRESHOLD,
) -> DatedMatch:
    """`match_texts` on the texts, then each pair's dates against the gold ones. Without
    any dates on either side, the score is `match_texts`' F1."""
    texts = match_texts([t for t, _ in predicted], [t for t, _ in gold], threshold)
    pairs = _pair([t for t, _ in predicted], [t for t, _ in gold], threshold)
    wrong = tuple(
        (predicted[i][0], predicted[i][1], gold[j][1])
        for i, j in pairs
        if predicted[i][1] != gold[j][1]
    )
    return DatedMatch(texts, wrong)


def describe_validity(validity: Validity) -> str:
    """How feedback names a fact's dates."""
    start, end = validity.valid_from, validity.valid_until
    if start is None and end is None:
        return "no dates (a lasting fact)"
    if start is not None and start == end:
        return f"on {start} only"
    return " ".join(
        part for part in (f"from {start}" if start else "", f"until {end}" if end else "") if part
    )


def micro(results: Iterable[Matched]) -> dict[str, float]:
    """Precision, recall and F1 over all pairs of many examples (not a mean of means)."""
    pairs = spurious = missed = 0
    for result in results:
        pairs += len(result.pairs)
        spurious += len(result.spurious)
        missed += len(result.missed)
    precision, recall, f1 = prf(pairs, spurious, missed)
    return {"precision": precision, "recall": recall, "f1": f1}


def accuracy(pairs: Iterable[tuple[bool | None, bool]]) -> float | None:
    """The share of (predicted, gold) decisions that agree; None (no answer) disagrees."""
    items = list(pairs)
    return sum(1 for p, g in items if p is g) / len(items) if items else None


def apply_planned(existing: Mapping[int, str], planned: Sequence[PlannedOp]) -> list[str]:
    """The memory texts after validated operations (`engram.nodes.maintain.plan_operations`),
    applied as the store would: UPDATE replaces, DELETE removes, an ADD of a text that is
    already there is a no-op. Existing memories are keyed by the small ids shown."""
    dated = {ref: (text, LASTING) for ref, text in existing.items()}
    return [text for text, _ in apply_planned_dated(dated, planned)]


def apply_planned_dated(
    existing: Mapping[int, tuple[str, Validity]], planned: Sequence[PlannedOp]
) -> list[tuple[str, Validity]]:
    """`apply_planned` with the memories' dates, as the store keeps them: an ADD has its
    operation's dates; an UPDATE the dates it gives, and when it keeps the memory's text
    the memory's own for the others (so an UPDATE that gives only `valid_until` closes the
    memory and keeps its start; a new text keeps no old dates)."""
    state = dict(existing)
    added: list[tuple[str, Validity]] = []
    for op in planned:
        if op.op == "ADD" and op.text:
            present = {normalize_text(t) for t, _ in [*state.values(), *added]}
            if normalize_text(op.text) not in present:
                added.append((op.text, Validity(op.valid_from, op.valid_until)))
        elif op.op == "UPDATE" and op.ref in state and op.text:
            text, before = state[op.ref]
            kept = before if normalize_text(op.text) == normalize_text(text) else Validity()
            state[op.ref] = (
                op.text,
                Validity(op.valid_from or kept.valid_from, op.valid_until or kept.valid_until),
            )
        elif op.op == "DELETE" and op.ref in state:
            del state[op.ref]
    return [*state.values(), *added]
