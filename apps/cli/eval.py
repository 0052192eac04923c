"""`engram eval run|retrieval|compare` and `engram optimize`: measure memory quality with
your own models, and optimize the memory programs (see apps/eval). Heavy imports happen
inside the commands, so `engram --help` stays fast."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from engram.apps.cli.common import app, err, out
from engram.settings import Settings, get_settings

if TYPE_CHECKING:
    from engram.apps.eval.datasets import Dataset

eval_app = typer.Typer(
    no_args_is_help=True,
    help="Measure memory quality: end to end with your LLM, or retrieval alone without one.",
)
app.add_typer(eval_app, name="eval")

DatasetArg = Annotated[
    Path,
    typer.Argument(
        help="LoCoMo's locomo10.json, an Engram JSONL file, or `labelled` (the shipped set)."
    ),
]
Limit = Annotated[int | None, typer.Option("--limit", help="Only the first N conversations.")]
Questions = Annotated[
    int | None, typer.Option("--questions", help="Only the first N questions of each.")
]
OutDir = Annotated[
    Path | None,
    typer.Option("--out", help="Output directory (default: eval/<dataset> in the data directory)."),
]
ReportFormat = Annotated[
    str, typer.Option("--format", help="Report format: md or html.", case_sensitive=False)
]
Plots = Annotated[bool, typer.Option("--plots/--no-plots", help="PNG plots in the report.")]


def _dataset(path: Path, limit: int | None = None, questions: int | None = None) -> Dataset:
    from engram.apps.eval.datasets import load_dataset
    from engram.apps.eval.labelled import LABELLED

    if str(path) == "labelled" and not path.is_file():
        path = LABELLED
    return load_dataset(path).limited(limit, questions)


def _format(value: str) -> Literal["md", "html"]:
    value = value.lower()
    if value not in ("md", "html"):
        raise typer.BadParameter("use md or html", param_hint="--format")
    return "md" if value == "md" else "html"


def _bars() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )


class _RunBars:
    """Progress bars for `eval run` (the harness's `RunProgress`)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, Any] = {}

    def start(self, sessions: int, questions: int) -> None:
        self.tasks["session"] = self.progress.add_task("ingesting sessions", total=sessions)
        self.tasks["question"] = self.progress.add_task("answering and judging", total=questions)

    def advance(self, kind: str) -> None:
        self.progress.advance(self.tasks[kind])


def eval_dir(settings: Settings, name: str) -> Path:
    """Where a report goes by default: under the data directory, never into a checkout."""
    return settings.data_dir / "eval" / name


@eval_app.command("run", help="End to end with your LLM: ingest, ask, judge (J). Rerun to resume.")
def run(
    dataset: DatasetArg,
    out_dir: OutDir = None,
    limit: Limit = None,
    questions: Questions = None,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Work in flight.")] = 4,
    judge_model: Annotated[
        str | None, typer.Option(help="Judge model (default: the memory model).")
    ] = None,
    top_k: Annotated[
        int | None, typer.Option(min=1, max=50, help="Memories recalled per speaker.")
    ] = None,
    programs: Annotated[
        Path | None, typer.Option(help="Memory programs file (default: ENGRAM_PROGRAMS).")
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            help="The user's profile: on, off, or both (two runs, reported side by side). "
            "Default: ENGRAM_PROFILE."
        ),
    ] = None,
    report_format: ReportFormat = "md",
    plots: Plots = True,
) -> None:
    """Ingest every conversation through the memory graph, ask every question through
    recall + respond, and have a judge grade the answers (J, as in Mem0's paper).
    Rerun the same command to resume an interrupted run."""
    import asyncio

    from engram.apps.eval.compare import compare as side_by_side
    from engram.apps.eval.compare import write_side_by_side
    from engram.apps.eval.harness import PROFILE_RUNS, RunOptions, build_models, run_evaluation
    from engram.apps.eval.report import write_report
    from engram.clients import default_store
    from engram.nodes.programs import MemoryPrograms

    fmt = _format(report_format)
    if profile not in (None, "on", "off", "both"):
        raise typer.BadParameter("use on, off or both", param_hint="--profile")
    settings = get_settings()
    settings.llm_credentials()  # one clear line when no model is configured
    data = _dataset(dataset, limit, questions)
    target = out_dir or eval_dir(settings, data.name)
    chosen = MemoryPrograms.load(programs) if programs else MemoryPrograms.configured(settings)
    models = build_models(settings, judge_model)
    runs = (
        {setting: target / sub for setting, sub in PROFILE_RUNS.items()}
        if profile == "both"
        else {profile or settings.profile: target}
    )
    done: dict[str, dict[str, Any]] = {}

    async def run_each() -> None:  # one event loop: the models' clients live on it
        for setting, where in runs.items():
            these = settings.model_copy(update={"profile": setting})
            store = default_store(these.model_copy(update={"data_dir": where / "data"}))
            if len(runs) > 1:
                err.print(f"profile {setting}: {where}")
            with _bars() as progress:
                done[f"profile {setting}"] = await run_evaluation(
                    data,
                    these,
                    RunOptions(out=where, concurrency=concurrency, top_k=top_k),
                    models=models,
                    store=store,
                    programs=chosen,
                    progress=_RunBars(progress),
                )

    asyncio.run(run_each())
    for results, where in zip(done.values(), runs.values(), strict=True):
        report = write_report(results, where, fmt, plots)
        if len(runs) == 1:
            _print_run(results)
            out.print(f"report: {report}")
            out.print(f"results: {where / 'results.json'}")
    if len(runs) > 1:
        report = write_side_by_side(done, target, fmt, f"{data.name}: the profile off and on")
        table = Table("measure", *done, "on - off")
        for row in side_by_side(*done.values()):
            table.add_row(row.name, row.a, row.b, row.delta)
        out.print(table)
        out.print(f"report: {report}")
        out.print(f"results: {', '.join(str(w / 'results.json') for w in runs.values())}")


def _print_run(results: dict[str, Any]) -> None:
    from engram.apps.eval.report import number, percent

    summary = results["summary"]
    table = Table("measure", "value")
    table.add_row("J (% correct)", percent(summary["j"]))
    for name, category in summary["j_by_category"].items():
        table.add_row(f"  J {name} (n={category['n']})", percent(category["j"]))
    for k, value in summary["evidence_recall"]["at"].items():
        table.add_row(f"evidence recall@{k} (%)", percent(value))
    table.add_row("memories per conversation", number(summary["memories_per_conversation"], 1))
    profile = summary["profile"]
    table.add_row(
        f"profile ({profile['setting']}): characters per answer",
        number(profile["chars_per_answer"], 1),
    )
    table.add_row("profile calls per saving turn", number(profile["calls_per_saving_turn"], 3))
    tokens = summary["tokens"]
    for name in ("memory", "chat", "judge"):
        table.add_row(
            f"tokens {name} (prompt / completion)",
            f"{number(tokens[name]['prompt'])} / {number(tokens[name]['completion'])}",
        )
    out.print(table)


@eval_app.command("retrieval", help="recall@k of the gold evidence, with no LLM (dense vs hybrid).")
def retrieval(
    dataset: DatasetArg,
    out_dir: OutDir = None,
    limit: Limit = None,
    units: Annotated[
        str, typer.Option(help="Memories to load: turns, or observations (gold facts).")
    ] = "turns",
    mode: Annotated[str, typer.Option(help="dense, hybrid or both.")] = "both",
    k: Annotated[str, typer.Option("--k", help="Cutoffs, comma-separated.")] = "1,3,5,10,20",
    embeddings: Annotated[
        str | None, typer.Option(help="openai or local (default: ENGRAM_EMBEDDINGS).")
    ] = None,
    time_aware: Annotated[
        bool, typer.Option("--time/--no-time", help="Time-aware recall, as in chat.")
    ] = True,
    report_format: ReportFormat = "md",
    plots: Plots = True,
) -> None:
    """recall@k of each question's evidence with no LLM: the dataset's turns (or
    observations) become memories, each question is searched as recall searches."""
    import json
    import tempfile

    from engram.apps.eval.report import write_report
    from engram.apps.eval.retrieval import RetrievalOptions, evaluate_retrieval
    from engram.clients import build_embeddings
    from engram.memory.engines.edge import EdgeEngine
    from engram.memory.retrieval import Retrieval, RetrievalMode
    from engram.memory.store import MemoryStore

    fmt = _format(report_format)
    if units not in ("turns", "observations"):
        raise typer.BadParameter("use turns or observations", param_hint="--units")
    modes: tuple[RetrievalMode, ...] = (
        ("dense", "hybrid") if mode == "both" else (mode,)  # type: ignore[assignment]
    )
    if not set(modes) <= {"dense", "hybrid"}:
        raise typer.BadParameter("use dense, hybrid or both", param_hint="--mode")
    try:
        cutoffs = tuple(sorted({int(part) for part in k.split(",") if part.strip()}))
    except ValueError:
        raise typer.BadParameter(
            "cutoffs are whole numbers, e.g. 1,3,5,10", param_hint="--k"
        ) from None
    if not cutoffs or min(cutoffs) < 1:
        raise typer.BadParameter("cutoffs are whole numbers from 1", param_hint="--k")
    settings = get_settings()
    if embeddings is not None:
        if embeddings not in ("openai", "local"):
            raise typer.BadParameter("use openai or local", param_hint="--embeddings")
        settings = settings.model_copy(update={"embeddings": embeddings})
    data = _dataset(dataset, limit)
    target = out_dir or eval_dir(settings, f"{data.name}-retrieval")
    backend = build_embeddings(settings)
    options = RetrievalOptions(units=units, modes=modes, cutoffs=cutoffs, time_aware=time_aware)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory(prefix="engram-eval-") as scratch, _bars() as progress:
        store = MemoryStore(
            EdgeEngine(Path(scratch) / "edge"),
            backend,
            dims=settings.resolved_embedding_dims,
            embedding_id=f"{settings.embeddings}:{settings.resolved_embedding_model}",
            retrieval=Retrieval(mode=modes[0]),
        )
        tasks: dict[str, Any] = {}

        def advance(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(
                    "loading memories" if stage == "loading" else f"searching ({stage})",
                    total=total,
                )
            progress.update(tasks[stage], completed=done)

        try:
            results = evaluate_retrieval(data, store, options, advance)
        finally:
            store.engine.close()
    target.mkdir(parents=True, exist_ok=True)
    (target / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False), "utf-8")
    report = write_report(results, target, fmt, plots)
    _print_retrieval(results)
    out.print(f"report: {report}")
    out.print(f"results: {target / 'results.json'}")


def _print_retrieval(results: dict[str, Any]) -> None:
    from engram.apps.eval.report import number, percent

    cutoffs = [str(c) for c in results["run"]["cutoffs"]]
    table = Table("mode", *[f"R@{c}" for c in cutoffs], "MRR")
    for mode, scores in results["summary"].items():
        table.add_row(
            mode, *[percent(scores["recall"][c]) for c in cutoffs], number(scores["mrr"], 3)
        )
    out.print(table)


@eval_app.command("compare", help="Two results.json side by side, with the change.")
def compare(
    first: Annotated[Path, typer.Argument(help="results.json of one run.")],
    second: Annotated[Path, typer.Argument(help="results.json of another run.")],
    markdown: Annotated[bool, typer.Option("--markdown", help="Print a Markdown table.")] = False,
) -> None:
    """Two runs side by side (the second minus the first in the last column)."""
    from engram.apps.eval.compare import compare as side_by_side
    from engram.apps.eval.compare import label, load_results

    a, b = load_results(first), load_results(second)
    rows = side_by_side(a, b)
    if markdown:
        out.print(f"| measure | {first} | {second} | change |")
        out.print("|---|---|---|---|")
        for row in rows:
            out.print(f"| {row.name} | {row.a} | {row.b} | {row.delta} |")
        return
    table = Table("measure", f"A: {label(a)}", f"B: {label(b)}", "B - A")
    for row in rows:
        table.add_row(row.name, row.a, row.b, row.delta)
    out.print(f"A: {first}")
    out.print(f"B: {second}")
    out.print(table)


@app.command(help="Optimize the memory programs with DSPy GEPA on a labelled set.")
def optimize(
    data: Annotated[
        Path, typer.Option(help="Labelled JSONL set (default: the shipped one).")
    ] = Path("labelled"),
    out_file: Annotated[Path, typer.Option("--out", help="Programs file to write.")] = Path(
        "engram-programs.json"
    ),
    steps: Annotated[
        str, typer.Option(help="Programs to optimize, comma-separated.")
    ] = "decide_save,extract,maintain,profile",
    budget: Annotated[str, typer.Option(help="GEPA budget: light, medium or heavy.")] = "light",
    max_metric_calls: Annotated[
        int | None, typer.Option(min=1, help="An exact budget of metric calls per program.")
    ] = None,
    reflection_model: Annotated[
        str | None,
        typer.Option(help="Model that proposes instructions (default: the memory model)."),
    ] = None,
    threads: Annotated[int, typer.Option(min=1, max=32, help="Parallel LLM calls.")] = 4,
) -> None:
    """Optimize the memory programs with DSPy's GEPA against a labelled set; run them
    with ENGRAM_PROGRAMS=<file>. Starts from ENGRAM_PROGRAMS when it is set."""
    from engram.apps.eval.optimize import OptimizeOptions, info, optimize_programs
    from engram.clients import Clients
    from engram.nodes.programs import MemoryPrograms

    if budget not in ("light", "medium", "heavy"):
        raise typer.BadParameter("use light, medium or heavy", param_hint="--budget")
    settings = get_settings()
    settings.llm_credentials()
    labelled = _dataset(data)
    options = OptimizeOptions(
        steps=tuple(s.strip() for s in steps.split(",") if s.strip()),
        budget=budget,  # type: ignore[arg-type]
        max_metric_calls=max_metric_calls,
        threads=threads,
    )
    clients = Clients(settings)
    task_lm = clients.memory_lm()
    reflection_lm = clients.memory_lm(reflection_model) if reflection_model else task_lm
    models = {
        "task": settings.resolved_memory_model,
        "reflection": reflection_model or settings.resolved_memory_model,
    }
    programs, scores = optimize_programs(
        labelled,
        task_lm,
        reflection_lm,
        options,
        start=MemoryPrograms.configured(settings),
        on_step=lambda step: err.print(f"optimizing {step} ..."),
    )
    programs.save(out_file, info(scores, labelled, options, models))
    table = Table("program", "train", "validation", "before", "after")
    for s in scores:
        table.add_row(s.step, str(s.train), str(s.validation), f"{s.before:.3f}", f"{s.after:.3f}")
    out.print(table)
    out.print(f"saved {out_file}; use it with ENGRAM_PROGRAMS={out_file}")
