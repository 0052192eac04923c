"""The judge: an LLM grades the bot's answer against the gold answer, CORRECT or WRONG, the
LLM-as-a-judge protocol of Mem0's paper (its "J"). Grading is generous about wording and
format, strict about content. A verdict that is neither word is retried, then the answer
stays ungraded, which counts as not correct (`metrics.judge_score`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import dspy

from engram.nodes.programs import run_program
from engram.state.errors import MemoryStepError


class JudgeAnswerSignature(dspy.Signature):
    """Grade a chatbot's answer to a question about things a user told it, against the gold
    answer. Answer CORRECT when the generated answer states what the gold answer states,
    even in other words, at another length or with extra detail that does not contradict
    it; for times and dates, the same day, month or year in any format (a relative
    reference like "last Tuesday" counts when it points to the same time). Answer WRONG
    when it misses the gold answer's content, contradicts it, names something else, or
    says it does not know."""

    question: str = dspy.InputField()
    gold_answer: str = dspy.InputField()
    generated_answer: str = dspy.InputField()
    verdict: str = dspy.OutputField(desc="CORRECT or WRONG, one word")


class JudgeAnswer(dspy.ChainOfThought):
    def __init__(self) -> None:
        super().__init__(JudgeAnswerSignature)


@dataclass(frozen=True)
class Grade:
    correct: bool | None  # None: the judge gave no usable verdict
    reasoning: str = ""
    error: str | None = None


_VERDICT = re.compile(r"^\W*(CORRECT|WRONG|INCORRECT)\W*$", re.IGNORECASE)


def parse_verdict(text: object) -> bool | None:
    """True for CORRECT, False for WRONG / INCORRECT (any case, markup around it), None
    for anything else: a sentence, "partially correct", an empty answer."""
    match = _VERDICT.match(str(text or "").strip())
    if not match:
        return None
    return match.group(1).upper() == "CORRECT"


async def grade(
    program: dspy.Module,
    lm: dspy.BaseLM,
    *,
    question: str,
    gold: str,
    answer: str,
    attempts: int,
    seconds: float,
) -> Grade:
    """One answer's grade; the judge is asked again (up to `attempts` in all) when its
    call fails or its verdict is malformed."""
    problem = "no attempt"
    for _ in range(attempts):
        try:
            prediction = await run_program(
                "judge",
                program,
                lm,
                attempts=1,
                seconds=seconds,
                question=question,
                gold_answer=gold,
                generated_answer=answer,
            )
        except MemoryStepError as error:
            problem = str(error)
            continue
        verdict = parse_verdict(prediction.verdict)
        if verdict is not None:
            return Grade(verdict, str(getattr(prediction, "reasoning", "") or ""))
        problem = f"malformed verdict {str(prediction.verdict)[:80]!r}"
    return Grade(None, error=f"ungraded after {attempts} attempt(s): {problem}")
