"""`engram optimize`: compile decide_save, extract, maintain and the profile program
(update_profile's) with DSPy's GEPA against a labelled set, and save them for
`ENGRAM_PROGRAMS` / `build_graph(programs=...)`.

Why GEPA (reflective prompt evolution; Agrawal et al. 2025) rather than MIPROv2,
BootstrapFewShot or COPRO:

- It learns from *why* an output was wrong, not only from a score: the metrics here
  explain every miss ("missed: User moved to Porto"; "the assistant's words are never a
  source of facts"; "in memory but outdated: ..."; "lines citing ids that are not among
  the memories: ..."), and GEPA's reflection model turns
  those explanations into instructions. COPRO and MIPROv2 see scores only.
- It rewrites instructions and adds no few-shot demos, so the optimized prompts stay as
  short as the built-in ones. The memory steps run after every turn: demos
  (BootstrapFewShot, MIPROv2) would add their tokens to every call, forever.
- It is sample-efficient: a labelled set of a few dozen turns per step is enough (the
  paper beats MIPROv2 with far fewer rollouts), which is what a user can write.

Each program is compiled on its own examples (conversations split into train and
validation, so the validation score is on conversations it never saw), scored before and
after on the validation set with `dspy.Evaluate`, and saved together with the scores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import dspy

from engram.apps.eval.datasets import Dataset, DatasetError
from engram.apps.eval.labelled import METRICS, STEPS, examples
from engram.nodes.programs import MemoryPrograms

Budget = Literal["light", "medium", "heavy"]


@dataclass(frozen=True)
class OptimizeOptions:
    steps: tuple[str, ...] = STEPS
    budget: Budget = "light"
    max_metric_calls: int | None = None  # an exact budget instead of `budget`
    validation_every: int = 3  # every third conversation is for validation
    threads: int = 4
    seed: int = 0


@dataclass(frozen=True)
class StepScores:
    step: str
    train: int
    validation: int
    before: float
    after: float


def split(items: list[dspy.Example], every: int) -> tuple[list[dspy.Example], list[dspy.Example]]:
    """Train and validation examples, by conversation: every `every`-th conversation (in
    order of appearance) validates."""
    order = list(dict.fromkeys(e.conversation for e in items))
    held = {c for i, c in enumerate(order) if i % every == every - 1}
    train = [e for e in items if e.conversation not in held]
    validation = [e for e in items if e.conversation in held]
    if not train or not validation:
        raise DatasetError(
            f"need examples from at least {every} conversations to hold some out for validation"
        )
    return train, validation


def score(program: dspy.Module, step: str, items: list[dspy.Example], threads: int) -> float:
    """The mean metric on `items`, as a share (0..1), with `dspy.Evaluate`."""
    metric = METRICS[step]

    def plain(gold: dspy.Example, pred: dspy.Prediction, trace: Any = None) -> float:
        return float(metric(gold, pred).score)

    evaluate = dspy.Evaluate(
        devset=items,
        metric=plain,
        num_threads=threads,
        display_progress=False,
        provide_traceback=False,
        failure_score=0.0,
    )
    return float(evaluate(program).score) / 100


def optimize_programs(
    dataset: Dataset,
    task_lm: dspy.BaseLM,
    reflection_lm: dspy.BaseLM,
    options: OptimizeOptions,
    start: MemoryPrograms | None = None,
    on_step: Callable[[str], None] | None = None,
) -> tuple[MemoryPrograms, list[StepScores]]:
    """Compile the chosen steps of `start` (default: the built-in programs); the others
    are kept as they are. Returns the programs and each step's validation scores."""
    unknown = [s for s in options.steps if s not in STEPS]
    if unknown:
        raise DatasetError(f"unknown step(s) {unknown}; choose from {', '.join(STEPS)}")
    programs = start or MemoryPrograms()
    compiled: dict[str, dspy.Module] = {}
    scores: list[StepScores] = []
    for step in options.steps:
        if on_step:
            on_step(step)
        items = examples(dataset, step)
        train, validation = split(items, options.validation_every)
        student = getattr(programs, step)
        gepa = dspy.GEPA(
            metric=METRICS[step],
            auto=None if options.max_metric_calls else options.budget,
            max_metric_calls=options.max_metric_calls,
            reflection_lm=reflection_lm,
            num_threads=options.threads,
            seed=options.seed,
            track_stats=False,
        )
        with dspy.context(lm=task_lm):
            before = score(student, step, validation, options.threads)
            optimized = gepa.compile(student, trainset=train, valset=validation)
            after = score(optimized, step, validation, options.threads)
        compiled[step] = optimized
        scores.append(StepScores(step, len(train), len(validation), before, after))
    result = MemoryPrograms(**{**programs.programs(), **compiled})
    return result, scores


def info(
    scores: list[StepScores], dataset: Dataset, options: OptimizeOptions, models: dict[str, str]
) -> dict[str, Any]:
    """What a programs file records about how it was made."""
    return {
        "optimizer": "GEPA",
        "budget": options.max_metric_calls or options.budget,
        "dataset": {"name": dataset.name, "fingerprint": dataset.fingerprint},
        "models": models,
        "scores": {
            s.step: {
                "train": s.train,
                "validation": s.validation,
                "before": s.before,
                "after": s.after,
            }
            for s in scores
        },
    }
