"""`engram eval compare a.json b.json`: two results side by side, with the difference.

Both end-to-end runs and retrieval-only results flatten to named measures; a measure only
one side has is shown with a dash on the other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from engram.apps.eval.datasets import DatasetError
from engram.apps.eval.report import (
    Block,
    Format,
    Heading,
    Paragraph,
    Table,
    number,
    percent,
    render_html,
    render_markdown,
    seconds,
)

Kind = Literal["percent", "number", "seconds"]


@dataclass(frozen=True)
class Measure:
    name: str
    value: float | None
    kind: Kind


@dataclass(frozen=True)
class Row:
    name: str
    a: str
    b: str
    delta: str


def load_results(path: Path) -> dict[str, Any]:
    try:
        results = json.loads(path.read_text("utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise DatasetError(f"cannot read results {path}: {error}") from None
    if not isinstance(results, dict) or results.get("kind") not in ("run", "retrieval"):
        raise DatasetError(f"{path} is not a results.json of `engram eval run` or `retrieval`")
    return results


def measures(results: dict[str, Any]) -> list[Measure]:
    summary = results["summary"]
    if results["kind"] == "retrieval":
        found: list[Measure] = []
        for mode, scores in summary.items():
            found += [
                Measure(f"{mode} recall@{k}", value, "percent")
                for k, value in scores["recall"].items()
            ]
            found.append(Measure(f"{mode} MRR", scores["mrr"], "number"))
        return found
    found = [Measure("J", summary["j"], "percent")]
    found += [
        Measure(f"J {name}", c["j"], "percent") for name, c in summary["j_by_category"].items()
    ]
    found += [
        Measure(f"evidence recall@{k}", v, "percent")
        for k, v in summary["evidence_recall"]["at"].items()
    ]
    found += [
        Measure("memories per conversation", summary["memories_per_conversation"], "number"),
        Measure("tokens per ingested turn", summary["tokens_per_turn"]["memory"], "number"),
        Measure("tokens per answer", summary["tokens_per_turn"]["answer"], "number"),
    ]
    found += [
        Measure(f"LLM calls ({name})", calls, "number")
        for name, calls in summary["llm_calls"].items()
    ]
    profile = summary.get("profile")
    if profile is not None:
        found += [
            Measure("evidence in the prompt", summary.get("evidence_in_prompt"), "percent"),
            Measure("prompt chars per answer", summary.get("prompt_chars_per_answer"), "number"),
            Measure("profile chars per answer", profile["chars_per_answer"], "number"),
            Measure("profile calls per saving turn", profile["calls_per_saving_turn"], "number"),
            Measure("profile tokens", profile["tokens"], "number"),
        ]
    for node, stats in summary["latency"].items():
        found += [
            Measure(f"{node} p50", stats["p50"], "seconds"),
            Measure(f"{node} p95", stats["p95"], "seconds"),
        ]
    return found


def compare(a: dict[str, Any], b: dict[str, Any]) -> list[Row]:
    """Every measure of either side, in `a`'s order, then those only `b` has."""
    if a["kind"] != b["kind"]:
        raise DatasetError(
            f"cannot compare a {a['kind']} result with a {b['kind']} result "
            "(`eval run` with `eval run`, `eval retrieval` with `eval retrieval`)"
        )
    left = {m.name: m for m in measures(a)}
    right = {m.name: m for m in measures(b)}
    rows: list[Row] = []
    for name in [*left, *[n for n in right if n not in left]]:
        one, two = left.get(name), right.get(name)
        kind = (one or two).kind  # type: ignore[union-attr]
        va, vb = one.value if one else None, two.value if two else None
        delta = None if va is None or vb is None else vb - va
        rows.append(Row(name, _show(va, kind), _show(vb, kind), _delta(delta, kind)))
    return rows


def label(results: dict[str, Any]) -> str:
    """What a result was run with, in one line."""
    run = results["run"]
    dataset = run["dataset"]["name"]
    if results["kind"] == "retrieval":
        return f"{dataset}, {run['units']}, {run['embeddings']}"
    models = run["models"]
    return f"{dataset}, {models.get('chat')} / {models.get('memory')}, {run['retrieval']}"


def _show(value: float | None, kind: Kind) -> str:
    if kind == "percent":
        return percent(value)
    if kind == "seconds":
        return seconds(value)
    return number(value, 0 if value is None or float(value).is_integer() else 3)


def _delta(value: float | None, kind: Kind) -> str:
    if value is None:
        return "–"
    sign = "+" if value > 0 else ""
    if kind == "percent":
        return f"{sign}{100 * value:.1f}"
    if kind == "seconds":
        return f"{sign}{value * 1000:.0f} ms"
    return f"{sign}{value:,.3g}"


def write_side_by_side(
    runs: dict[str, dict[str, Any]], out_dir: Path, fmt: Format = "md", title: str = ""
) -> Path:
    """`report.<fmt>` in `out_dir`: two runs' measures side by side (`engram eval run
    --profile both`: the profile off and on), the second minus the first last."""
    (first, a), (second, b) = runs.items()
    rows = compare(a, b)
    blocks: list[Block] = [
        Heading(title or f"{label(a)}: {first} and {second}"),
        Paragraph(
            f"The same evaluation twice, {first} and {second}; each run's own report is in "
            "its directory. J by category shows where the difference is."
        ),
        Table(
            ["measure", first, second, f"{second} - {first}"],
            [[r.name, r.a, r.b, r.delta] for r in rows],
        ),
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"report.{fmt}"
    path.write_text(render_markdown(blocks) if fmt == "md" else render_html(blocks), "utf-8")
    return path
