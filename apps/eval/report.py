"""Reports a person reads: Markdown or HTML with tables and PNG plots, written next to the
`results.json` a machine reads. Works for end-to-end runs and retrieval-only results.

Plots need matplotlib (`pip install 'engram[eval]'`); without it the report has its tables
and says how to get the plots.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from engram.apps.eval.metrics import mean, recall_at

Format = Literal["md", "html"]
WRONG_SHOWN = 10  # wrong answers listed in a run's report


@dataclass(frozen=True)
class Heading:
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Table:
    header: Sequence[str]
    rows: Sequence[Sequence[str]]


@dataclass(frozen=True)
class Figure:
    file: str
    caption: str


Block = Heading | Paragraph | Table | Figure


def percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def number(value: float | int | None, digits: int = 0) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def seconds(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def write_report(
    results: dict[str, Any], out_dir: Path, fmt: Format = "md", plots: bool = True
) -> Path:
    """Write `report.md` or `report.html` (and its PNGs) into `out_dir`; returns its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, str] = {}
    note = None
    if plots:
        try:
            figures = make_plots(results, out_dir)
        except ImportError:
            note = "Plots need matplotlib: pip install 'engram[eval]'."
    if results.get("kind") == "retrieval":
        blocks = retrieval_blocks(results, figures)
    else:
        blocks = run_blocks(results, figures)
    if note:
        blocks.append(Paragraph(note))
    path = out_dir / f"report.{fmt}"
    path.write_text(render_markdown(blocks) if fmt == "md" else render_html(blocks), "utf-8")
    return path


# -- content -------------------------------------------------------------------------------


def run_blocks(results: dict[str, Any], figures: dict[str, str]) -> list[Block]:
    run, summary = results["run"], results["summary"]
    questions = summary["questions"]
    blocks: list[Block] = [
        Heading(f"Engram memory evaluation: {run['dataset']['name']}"),
        Paragraph(
            f"Chat model {run['models'].get('chat', '?')}, memory model "
            f"{run['models'].get('memory', '?')}, judge {run['models'].get('judge', '?')}; "
            f"embeddings {run['embeddings']}, {run['retrieval']} retrieval, top {run['top_k']} "
            f"memories per speaker; programs {run['programs']}."
        ),
        Table(
            ["measure", "value"],
            [
                ["J (LLM judge, % correct)", percent(summary["j"])],
                [
                    "questions judged (graded / ungraded)",
                    f"{questions['judged']} ({questions['graded']} / {questions['ungraded']})",
                ],
                [
                    "questions without a gold answer (skipped)",
                    str(questions["skipped_without_answer"]),
                ],
                *[
                    [f"evidence recall@{k} (%)", percent(value)]
                    for k, value in summary["evidence_recall"]["at"].items()
                ],
                ["memories per conversation", number(summary["memories_per_conversation"], 1)],
                ["LLM calls: memory / answer / judge", _calls(summary["llm_calls"])],
                [
                    "tokens per ingested turn (memory steps)",
                    number(summary["tokens_per_turn"]["memory"]),
                ],
                [
                    "tokens per answer (recall + respond)",
                    number(summary["tokens_per_turn"]["answer"]),
                ],
            ],
        ),
        Heading("J by category"),
        Table(
            ["category", "questions", "J"],
            [[name, str(c["n"]), percent(c["j"])] for name, c in summary["j_by_category"].items()],
        ),
    ]
    blocks += _figure(figures, "j_by_category", "J by question category")
    blocks += [
        Heading("Latency per node"),
        Table(
            ["node", "runs", "p50", "p95", "mean"],
            [
                [node, str(s["n"]), seconds(s["p50"]), seconds(s["p95"]), seconds(s["mean"])]
                for node, s in summary["latency"].items()
            ],
        ),
    ]
    blocks += _figure(figures, "latency", "Seconds per node run")
    tokens = summary["tokens"]
    blocks += [
        Heading("Tokens (as the provider reported them)"),
        Table(
            ["steps", "calls", "prompt", "completion", "calls without usage"],
            [
                [
                    name,
                    str(t["calls"]),
                    number(t["prompt"]),
                    number(t["completion"]),
                    str(t["missing"]),
                ]
                for name, t in (
                    ("memory steps", tokens["memory"]),
                    ("answers", tokens["chat"]),
                    ("judge", tokens["judge"]),
                )
            ],
        ),
    ]
    blocks += _figure(figures, "tokens_per_turn", "Tokens per ingested turn, per session")
    blocks += _figure(figures, "recall_at_k", "Evidence recall@k of the recalled memories")
    blocks += profile_blocks(summary)
    ingest = summary["ingest"]
    applied = ", ".join(f"{n} {what}" for what, n in sorted(ingest["applied"].items())) or "none"
    blocks += [
        Heading("Ingestion"),
        Paragraph(
            f"{ingest['sessions']} sessions, {ingest['turns']} turns; {ingest['extracted']} facts "
            f"extracted; operations: {applied}; {ingest['rejected']} rejected; "
            f"{ingest['memory_errors']} sessions with a memory-step error."
        ),
        Table(
            ["conversation", "speaker", "active memories", "versions"],
            [
                [conversation, speaker, str(m["active"]), str(m["versions"])]
                for conversation, speakers in summary["memories"].items()
                for speaker, m in speakers.items()
            ],
        ),
    ]
    wrong = [q for q in results.get("questions", []) if q.get("correct") is not True]
    if wrong:
        blocks += [
            Heading(
                f"Answers not judged correct (first {min(len(wrong), WRONG_SHOWN)} of {len(wrong)})"
            ),
            Table(
                ["question", "gold", "answer", "verdict"],
                [
                    [
                        q["question"],
                        str(q["gold"]),
                        _short(q["answer"]),
                        "wrong" if q.get("correct") is False else "ungraded",
                    ]
                    for q in wrong[:WRONG_SHOWN]
                ],
            ),
        ]
    return blocks


def profile_blocks(summary: dict[str, Any]) -> list[Block]:
    """The profile's cost and reach, and the memory model's calls per node."""
    profile = summary.get("profile")
    if profile is None:  # results of a run from before the profile
        return []
    by_node = summary.get("memory_llm_by_node") or {}
    blocks: list[Block] = [
        Heading(f"Profile ({profile['setting']})"),
        Table(
            ["measure", "value"],
            [
                ["profile characters added per answer", number(profile["chars_per_answer"], 1)],
                ["answers with a profile in the prompt", str(profile["answers_with_profile"])],
                ["prompt characters per answer", number(summary.get("prompt_chars_per_answer"))],
                [
                    "profile program calls per saving turn",
                    number(profile["calls_per_saving_turn"], 3),
                ],
                [
                    "profile program calls / saving turns",
                    f"{profile['calls']} / {profile['saving_turns']}",
                ],
                ["profile program tokens", number(profile["tokens"])],
                [
                    "evidence in the prompt, profile or recalled (%)",
                    percent(summary.get("evidence_in_prompt")),
                ],
            ],
        ),
    ]
    if by_node:
        blocks += [
            Heading("Memory model calls per node"),
            Table(
                ["node", "calls", "prompt tokens", "completion tokens"],
                [
                    [node, str(u["calls"]), number(u["prompt"]), number(u["completion"])]
                    for node, u in by_node.items()
                ],
            ),
        ]
    return blocks


def retrieval_blocks(results: dict[str, Any], figures: dict[str, str]) -> list[Block]:
    run, summary = results["run"], results["summary"]
    cutoffs = [str(k) for k in run["cutoffs"]]
    modes = list(summary)
    first = summary[modes[0]]
    blocks: list[Block] = [
        Heading(f"Engram retrieval evaluation: {run['dataset']['name']}"),
        Paragraph(
            f"{run['memories']} memories ({run['units']}), {first['n']} questions with evidence; "
            f"embeddings {run['embeddings']}; time-aware recall "
            f"{'on' if run['time_aware'] else 'off'}; no relevance floor, no LLM. recall@k: "
            "share of a question's evidence turns covered by the top k memories (%)."
        ),
        Table(
            ["mode", *[f"recall@{k}" for k in cutoffs], "MRR"],
            [
                [
                    mode,
                    *[percent(summary[mode]["recall"][k]) for k in cutoffs],
                    number(summary[mode]["mrr"], 3),
                ]
                for mode in modes
            ],
        ),
    ]
    blocks += _figure(figures, "recall_at_k", "recall@k by retrieval mode")
    k = "5" if "5" in cutoffs else cutoffs[-1]
    categories = list(first["by_category"])
    blocks += [
        Heading(f"recall@{k} by category"),
        Table(
            ["category", "questions", *modes],
            [
                [
                    name,
                    str(first["by_category"][name]["n"]),
                    *[percent(summary[m]["by_category"][name]["recall"][k]) for m in modes],
                ]
                for name in categories
            ],
        ),
    ]
    return blocks


def _calls(calls: dict[str, int]) -> str:
    return f"{calls['memory']} / {calls['chat']} / {calls['judge']}"


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _figure(figures: dict[str, str], name: str, caption: str) -> list[Block]:
    return [Figure(figures[name], caption)] if name in figures else []


# -- plots ---------------------------------------------------------------------------------


def make_plots(results: dict[str, Any], out_dir: Path) -> dict[str, str]:
    """PNG plots for the report; name -> file name. Raises ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: dict[str, str] = {}

    def save(name: str, figure: Any) -> None:
        figure.tight_layout()
        figure.savefig(out_dir / f"{name}.png", dpi=110)
        plt.close(figure)
        made[name] = f"{name}.png"

    summary = results["summary"]
    if results.get("kind") == "retrieval":
        cutoffs = results["run"]["cutoffs"]
        figure, axes = plt.subplots(figsize=(6, 4))
        for mode, scores in summary.items():
            axes.plot(
                cutoffs, [100 * (scores["recall"][str(k)] or 0) for k in cutoffs], "o-", label=mode
            )
        axes.set(xlabel="k", ylabel="recall@k (%)", title="Evidence recall@k", ylim=(0, 100))
        axes.set_xscale("log")
        axes.set_xticks(cutoffs, [str(k) for k in cutoffs])
        axes.legend()
        axes.grid(alpha=0.3)
        save("recall_at_k", figure)
        return made

    categories = summary["j_by_category"]
    if categories:
        figure, axes = plt.subplots(figsize=(6, 3.5))
        names = list(categories)
        axes.bar(names, [100 * (categories[n]["j"] or 0) for n in names], color="#4C72B0")
        if summary["j"] is not None:
            axes.axhline(100 * summary["j"], color="#C44E52", linestyle="--", label="overall")
            axes.legend()
        axes.set(ylabel="J (%)", ylim=(0, 100), title="J by category")
        save("j_by_category", figure)

    nodes: dict[str, list[float]] = {}
    for record in [*results.get("sessions", []), *results.get("questions", [])]:
        for node, took in record.get("nodes", []):
            nodes.setdefault(node, []).append(took)
    if nodes:
        figure, axes = plt.subplots(figsize=(7, 3.5))
        axes.boxplot(list(nodes.values()), tick_labels=list(nodes), showfliers=True)
        axes.set(ylabel="seconds", title="Latency per node")
        axes.set_yscale("log")
        save("latency", figure)

    spent: dict[tuple[str, int], list[int]] = {}  # (conversation, session) -> tokens, turns
    for s in results.get("sessions", []):
        tokens = s["memory_llm"]["prompt"] + s["memory_llm"]["completion"]
        entry = spent.setdefault((s["conversation"], s["session"]), [0, s["turns"]])
        entry[0] += tokens  # every remembered speaker's memory steps on the session
    per_turn = [tokens / turns for tokens, turns in spent.values() if turns]
    if per_turn:
        figure, axes = plt.subplots(figsize=(6, 3.5))
        axes.hist(per_turn, bins=min(20, max(5, len(per_turn) // 2)), color="#55A868")
        axes.set(xlabel="memory-step tokens per turn", ylabel="sessions", title="Tokens per turn")
        save("tokens_per_turn", figure)

    asked = [q for q in results.get("questions", []) if q.get("evidence")]
    depth = max((len(q["recalled"]) for q in asked), default=0)
    if asked and depth:
        ks = list(range(1, depth + 1))
        curve = [
            100
            * (
                mean(
                    recall_at(q["evidence"], [m["sources"] for m in q["recalled"]], k)
                    for q in asked
                )
                or 0
            )
            for k in ks
        ]
        figure, axes = plt.subplots(figsize=(6, 3.5))
        axes.plot(ks, curve, "o-")
        axes.set(
            xlabel="k", ylabel="evidence recall@k (%)", ylim=(0, 100), title="Evidence recall@k"
        )
        axes.grid(alpha=0.3)
        save("recall_at_k", figure)
    return made


# -- rendering -----------------------------------------------------------------------------


def render_markdown(blocks: Sequence[Block]) -> str:
    lines: list[str] = []
    for index, block in enumerate(blocks):
        if isinstance(block, Heading):
            lines += [f"{'#' if index == 0 else '##'} {block.text}", ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, Table):
            lines.append("| " + " | ".join(_cell(h) for h in block.header) + " |")
            lines.append("|" + "|".join(["---"] * len(block.header)) + "|")
            lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in block.rows]
            lines.append("")
        else:
            lines += [f"![{block.caption}]({block.file})", ""]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def render_html(blocks: Sequence[Block]) -> str:
    title = next((b.text for b in blocks if isinstance(b, Heading)), "Engram evaluation")
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;"
        "padding:0 1rem}table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid "
        "#ccc;padding:.3rem .6rem;text-align:left}th{background:#f3f3f3}img{max-width:100%}"
        "</style></head><body>",
    ]
    for index, block in enumerate(blocks):
        if isinstance(block, Heading):
            tag = "h1" if index == 0 else "h2"
            parts.append(f"<{tag}>{html.escape(block.text)}</{tag}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{html.escape(block.text)}</p>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block.header)
            rows = "".join(
                "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                for row in block.rows
            )
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        else:
            parts.append(
                f'<figure><img src="{html.escape(block.file)}" alt="{html.escape(block.caption)}">'
                f"<figcaption>{html.escape(block.caption)}</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)
