"""The `engram eval` and `engram optimize` commands in a fresh process, as a user runs them:
retrieval-only with no LLM at all, and the end-to-end run and optimization against an
OpenAI-compatible server (the fake one), through the real clients."""

from __future__ import annotations

import json
import re
from pathlib import Path

from engram.nodes.programs import MemoryPrograms
from tests.eval_fakes import TINY_LOCOMO, write_locomo
from tests.fake_openai import FakeOpenAI, RecordedRequest, chat_adapter_answer, facts_answer
from tests.helpers import engram_env, run_engram


def test_retrieval_and_compare_need_no_llm(tmp_path: Path) -> None:
    env = engram_env(tmp_path)  # no key, no endpoint
    out = tmp_path / "retrieval"
    done = run_engram(
        env,
        "eval",
        "retrieval",
        "labelled",
        "--embeddings",
        "local",
        "--no-plots",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r"dense\s.*\d", done.stdout) and "hybrid" in done.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["kind"] == "retrieval" and results["run"]["memories"] == 60
    assert (out / "report.md").exists() and not (out / "recall_at_k.png").exists()

    compared = run_engram(
        env, "eval", "compare", str(out / "results.json"), str(out / "results.json")
    )
    assert compared.returncode == 0, compared.stderr
    assert "dense recall@5" in compared.stdout

    refused = run_engram(env, "eval", "retrieval", "labelled", "--mode", "sparse")
    assert refused.returncode != 0 and "dense, hybrid or both" in refused.stderr
    missing = run_engram(
        env, "eval", "compare", str(tmp_path / "nope.json"), str(out / "results.json")
    )
    assert missing.returncode == 1 and "cannot read results" in missing.stderr


def answer_from_memories(request: RecordedRequest) -> str | None:
    """The judge grades by the gold words; the chat model answers with its first memory;
    GEPA's reflection proposes an instruction (JSON, as DSPy's proposer asks); extract
    turns every message into a fact of a profile category; the profile states every
    memory."""
    system = request.system_prompt
    if "`verdict`" in system:
        fields = request.inputs
        gold = fields["gold_answer"].lower().split()
        right = all(word in fields["generated_answer"].lower() for word in gold)
        return chat_adapter_answer(reasoning="checked", verdict="CORRECT" if right else "WRONG")
    if "new_instruction" in system:
        return json.dumps({"new_instruction": "Save lasting facts about the user only."})
    if request.step == "extract":  # what the user said, as a fact that may be in a profile
        said = request.inputs.get("user_message", "").strip()
        return facts_answer((f"User said: {said}", "personal"))
    if "`lines`" in system:  # the profile program: every memory, each its own line
        memories = json.loads(request.inputs["memories"])
        return chat_adapter_answer(
            lines=[{"text": m["text"], "memory_ids": [m["id"]]} for m in memories]
        )
    if request.step == "chat":
        lines = [line[2:] for line in system.splitlines() if line.startswith("- ")]
        return lines[0] if lines else "I don't know"
    return None


def test_run_against_an_openai_compatible_server(tmp_path: Path) -> None:
    dataset = write_locomo(tmp_path / "tiny.json", TINY_LOCOMO)
    out = tmp_path / "run"
    with FakeOpenAI(responder=answer_from_memories) as fake:
        env = engram_env(tmp_path, OPENAI_BASE_URL=fake.url, OPENAI_API_KEY="test-key")
        done = run_engram(
            env, "eval", "run", str(dataset), "--out", str(out), "--no-plots", "--concurrency", "2"
        )
        assert done.returncode == 0, done.stderr
        steps = fake.steps()
    results = json.loads((out / "results.json").read_text())
    summary = results["summary"]
    assert summary["questions"]["judged"] == 6 and summary["j"] is not None
    # Token counts are the server's own `usage`, for every kind of call.
    tokens = summary["tokens"]
    for kind in ("memory", "chat", "judge"):
        assert tokens[kind]["calls"] > 0 and tokens[kind]["prompt"] > 0, kind
        assert tokens[kind]["missing"] == 0, kind
    assert tokens["chat"]["calls"] == 6
    assert {"decide_save", "extract", "maintain", "chat", "embeddings"} <= set(steps)
    assert "J (% correct)" in done.stdout
    assert (out / "report.md").exists() and (out / "progress.jsonl").exists()

    # Run again: everything is journaled, so nothing is sent to the server.
    with FakeOpenAI(responder=answer_from_memories) as fake:
        env = engram_env(tmp_path, OPENAI_BASE_URL=fake.url, OPENAI_API_KEY="test-key")
        again = run_engram(env, "eval", "run", str(dataset), "--out", str(out), "--no-plots")
        assert again.returncode == 0, again.stderr
        assert [s for s in fake.steps() if s != "embeddings"] == []


def test_the_profile_off_and_on_side_by_side(tmp_path: Path) -> None:
    dataset = write_locomo(tmp_path / "tiny.json", TINY_LOCOMO)
    out = tmp_path / "both"
    with FakeOpenAI(responder=answer_from_memories) as fake:
        env = engram_env(tmp_path, OPENAI_BASE_URL=fake.url, OPENAI_API_KEY="test-key")
        done = run_engram(
            env, "eval", "run", str(dataset), "--out", str(out), "--no-plots", "--profile", "both"
        )
        assert done.returncode == 0, done.stderr
    off = json.loads((out / "profile-off" / "results.json").read_text())["summary"]
    on = json.loads((out / "profile-on" / "results.json").read_text())["summary"]
    assert (off["profile"]["setting"], on["profile"]["setting"]) == ("off", "on")
    assert off["profile"]["calls"] == 0 and off["profile"]["chars_per_answer"] == 0
    assert on["profile"]["calls"] > 0 and on["profile"]["chars_per_answer"] > 0
    assert "update_profile" in on["memory_llm_by_node"]
    assert on["ingest"]["memory_errors"] == 0
    assert "profile chars per answer" in done.stdout and "on - off" in done.stdout
    report = (out / "report.md").read_text()
    assert "| measure | profile off | profile on |" in report
    assert (out / "profile-on" / "report.md").exists()
    refused = run_engram(env, "eval", "run", str(dataset), "--profile", "maybe")
    assert refused.returncode != 0 and "on, off or both" in refused.stderr


def test_optimize_writes_programs_the_graph_loads(tmp_path: Path) -> None:
    target = tmp_path / "programs.json"
    with FakeOpenAI(responder=answer_from_memories) as fake:
        env = engram_env(tmp_path, OPENAI_BASE_URL=fake.url, OPENAI_API_KEY="test-key")
        done = run_engram(
            env,
            "optimize",
            "--steps",
            "decide_save",
            "--max-metric-calls",
            "30",
            "--threads",
            "2",
            "--out",
            str(target),
        )
    assert done.returncode == 0, done.stderr
    assert "decide_save" in done.stdout and "ENGRAM_PROGRAMS" in done.stdout
    saved = json.loads(target.read_text())
    assert saved["info"]["optimizer"] == "GEPA"
    assert set(saved["info"]["scores"]) == {"decide_save"}
    MemoryPrograms.load(target)  # the shape matches this version's programs
