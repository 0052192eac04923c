"""`engram eval run`: memory quality end to end, with the user's own models.

For each conversation of a dataset:

1. Ingest: every session goes through the ingest graph (`engram.graph.ingest`: decide_save →
   extract → retrieve_similar → maintain), its messages sent at the session's date, on one
   thread per remembered speaker. Each speaker is an Engram user; in a conversation
   between two people (LoCoMo) the other one plays the assistant.
2. Ask: every question with a gold answer goes through the chat graph's own recall and
   respond nodes, sent a day after the last session (or at its own date). With two
   speakers, recall runs for both users and each memory is shown with whose it is.
3. Judge: a judge model grades each answer against the gold answer (`judge`).

The user's profile follows the settings (ENGRAM_PROFILE, `Settings.profile`): on, the
ingest graph's update_profile node keeps it and recall puts it in every answer's prompt;
off, neither. `engram eval run --profile both` runs the whole evaluation once each way
(`PROFILE_RUNS`) and reports them side by side (`compare.write_side_by_side`). Each run
records what the profile cost: its characters in each answer's prompt and the profile
program's calls per saving turn (a user turn whose facts were extracted).

Everything lands in an output directory: the store and the ingest threads, `run.json`
(what was run), `progress.jsonl` (one line per finished session or question: a rerun
skips them, so an interrupted run resumes where it stopped; a session interrupted midway is
re-sent and the ingest thread skips the messages it already saw) and finally
`results.json` with the summary, which `report` and `compare` read.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import dspy
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime

from engram.apps.eval.datasets import Conversation, Dataset, Question, Session
from engram.apps.eval.judge import JudgeAnswer, grade
from engram.apps.eval.metrics import by_category, judge_score, latency_summary, mean, recall_at
from engram.apps.eval.tracking import LMMeter, RunTracker, Usage, lm_usage
from engram.clients import Clients
from engram.graph import checkpoint_serde
from engram.graph.ingest import build_ingest_graph
from engram.identity import run_context
from engram.memory.store import MemoryStore
from engram.nodes import MemoryPrograms, make_recall, make_respond
from engram.nodes.respond import render_profile
from engram.settings import Settings
from engram.state import EngramContext, EngramState
from engram.state.contracts import MemoryRecord, Profile, ProfileLine
from engram.state.errors import ConfigurationError

RESULTS = "results.json"
RECALL_CUTOFFS = (1, 3, 5, 10, 20)
PROFILE_NODE = "update_profile"
PROFILE_RUNS = {"off": "profile-off", "on": "profile-on"}  # `--profile both`: subdirectories


@dataclass(frozen=True)
class Models:
    """The models a run uses: the chat model answers, the memory LM runs the memory
    programs, the judge grades. Each DSPy LM is copied per unit of work (usage)."""

    chat: BaseChatModel
    memory_lm: dspy.BaseLM
    judge_lm: dspy.BaseLM
    names: dict[str, str] = field(default_factory=dict)  # for run.json and the report


@dataclass(frozen=True)
class RunOptions:
    out: Path
    concurrency: int = 4
    top_k: int | None = None  # memories recalled per speaker; default ENGRAM_TOP_K


class RunProgress(Protocol):
    """What the CLI draws progress bars from."""

    def start(self, sessions: int, questions: int) -> None: ...
    def advance(self, kind: str) -> None: ...


def eval_chat_model(settings: Settings) -> BaseChatModel:
    """The configured chat model, called without streaming: every OpenAI-compatible
    server reports token usage then (streamed usage is opt-in on many of them)."""
    from langchain_openai import ChatOpenAI

    api_key, base_url = settings.llm_credentials()
    return ChatOpenAI(
        model=settings.chat_model,
        api_key=api_key,
        base_url=base_url,
        timeout=settings.llm_timeout,
        max_retries=1,
    )


def build_models(settings: Settings, judge_model: str | None) -> Models:
    clients = Clients(settings)
    judge = judge_model or settings.resolved_memory_model
    return Models(
        chat=eval_chat_model(settings),
        memory_lm=clients.memory_lm(),
        judge_lm=clients.memory_lm(judge),
        names={
            "chat": settings.chat_model,
            "memory": settings.resolved_memory_model,
            "judge": judge,
        },
    )


# -- the journal ---------------------------------------------------------------------------


class Journal:
    """`progress.jsonl`: one record per finished session or question, appended and
    flushed as each finishes. A torn last line (the process was killed) is ignored."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        if path.exists():
            for line in path.read_text("utf-8").splitlines():
                try:
                    self.records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        self._lock = asyncio.Lock()

    def done_sessions(self) -> set[tuple[str, str, int]]:
        return {
            (r["conversation"], r["user"], r["session"])
            for r in self.records
            if r.get("kind") == "session"
        }

    def done_questions(self) -> set[tuple[str, str]]:
        return {(r["conversation"], r["id"]) for r in self.records if r.get("kind") == "question"}

    async def add(self, record: dict[str, Any]) -> None:
        async with self._lock:
            self.records.append(record)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def _manifest(
    dataset: Dataset,
    settings: Settings,
    models: Models,
    options: RunOptions,
    store: MemoryStore,
    programs: MemoryPrograms,
) -> dict[str, Any]:
    """What makes two runs comparable; a resumed run must match it."""
    programs_state = json.dumps(
        {name: p.dump_state() for name, p in programs.programs().items()}, sort_keys=True
    )
    return {
        # The file, not the selection: `--limit` / `--questions` may grow on a resume.
        "dataset": {
            "name": dataset.name,
            "source": dataset.source,
            "fingerprint": dataset.fingerprint,
        },
        "models": dict(models.names),
        "embeddings": store.embedding_id,
        "retrieval": store.retrieval.mode,
        "top_k": options.top_k or settings.top_k,
        "recall_floor": settings.recall_floor,
        "profile": settings.profile,
        "profile_chars": settings.profile_chars,
        "programs": hashlib.sha256(programs_state.encode()).hexdigest()[:16],
    }


def _check_manifest(path: Path, manifest: dict[str, Any]) -> None:
    if not path.exists():
        path.write_text(json.dumps(manifest, indent=2), "utf-8")
        return
    try:
        before = json.loads(path.read_text("utf-8"))
    except json.JSONDecodeError:
        raise ConfigurationError(f"{path} is damaged; use another --out directory") from None
    # Runs made before the profile existed ran without one: they resume with --profile off.
    before.setdefault("profile", "off")
    for key, value in manifest.items():
        if key == "profile_chars" and manifest.get("profile") == "off":
            continue  # no profile: its bound changes nothing
        if before.get(key) != value:
            raise ConfigurationError(
                f"{path.parent} holds a run with another {key} ({before.get(key)!r}, now "
                f"{value!r}); resume it with the same settings, or use another --out"
            )


# -- the run -------------------------------------------------------------------------------


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    error = group.exceptions[0]
    return _first(error) if isinstance(error, BaseExceptionGroup) else error


def user_id_for(conversation: Conversation, speaker: str) -> str:
    return f"{conversation.id}:{speaker}"


async def run_evaluation(
    dataset: Dataset,
    settings: Settings,
    options: RunOptions,
    *,
    models: Models,
    store: MemoryStore,
    programs: MemoryPrograms | None = None,
    progress: RunProgress | None = None,
) -> dict[str, Any]:
    """Run (or resume) the evaluation in `options.out`; returns the results."""
    programs = programs or MemoryPrograms.configured(settings)
    options.out.mkdir(parents=True, exist_ok=True)
    manifest = _manifest(dataset, settings, models, options, store, programs)
    _check_manifest(options.out / "run.json", manifest)
    journal = Journal(options.out / "progress.jsonl")
    done_sessions, done_questions = journal.done_sessions(), journal.done_questions()
    asked = [q for c in dataset.conversations for q in c.questions if q.answer is not None]
    if progress is not None:
        progress.start(
            sum(len(c.users) * len(c.sessions) for c in dataset.conversations), len(asked)
        )
    limit = asyncio.Semaphore(options.concurrency)
    top_k = options.top_k or settings.top_k

    async def limited(work: Callable[[], Awaitable[None]]) -> None:
        async with limit:
            await work()

    async with AsyncSqliteSaver.from_conn_string(str(options.out / "ingest.sqlite")) as saver:
        saver.serde = checkpoint_serde()

        async def conversation(conv: Conversation) -> None:
            async with asyncio.TaskGroup() as group:
                for speaker in conv.users:
                    group.create_task(
                        limited(
                            partial(
                                _ingest,
                                conv,
                                speaker,
                                settings,
                                models,
                                store,
                                programs,
                                saver,
                                journal,
                                done_sessions,
                                progress,
                            )
                        )
                    )
            qa = _qa_graph(
                Clients(settings, store=store, chat_model=models.chat),
                {user_id_for(conv, s): s for s in conv.users},
            )
            async with asyncio.TaskGroup() as group:
                for question in conv.questions:
                    if question.answer is None or (conv.id, question.id) in done_questions:
                        continue
                    group.create_task(
                        limited(
                            partial(
                                _ask,
                                conv,
                                question,
                                qa,
                                settings,
                                models,
                                top_k,
                                journal,
                                progress,
                                store,
                            )
                        )
                    )

        try:
            async with asyncio.TaskGroup() as group:
                for conv in dataset.conversations:
                    group.create_task(conversation(conv))
        except BaseExceptionGroup as failed:  # the first failure, as itself; the rest stop
            raise _first(failed) from None
    results = summarize(dataset, manifest, journal.records, store)
    (options.out / RESULTS).write_text(json.dumps(results, indent=2, ensure_ascii=False), "utf-8")
    return results


async def _ingest(
    conv: Conversation,
    speaker: str,
    settings: Settings,
    models: Models,
    store: MemoryStore,
    programs: MemoryPrograms,
    saver: AsyncSqliteSaver,
    journal: Journal,
    done: set[tuple[str, str, int]],
    progress: RunProgress | None,
) -> None:
    """One speaker's sessions, in order, through the ingest graph on the speaker's thread."""
    lm = models.memory_lm.copy()
    meter = LMMeter(lm)
    clients = Clients(settings, store=store, chat_model=models.chat, memory_lm=lm)
    graph: CompiledStateGraph[Any, Any, Any, Any] = build_ingest_graph(clients, programs).compile(
        checkpointer=saver
    )
    user_id = user_id_for(conv, speaker)
    for session in conv.sessions:
        if (conv.id, speaker, session.number) in done:
            if progress is not None:
                progress.advance("session")
            continue
        tracker = RunTracker(lm)
        meter.take()
        started = time.perf_counter()
        result = await graph.ainvoke(
            {"messages": session_messages(conv, session, speaker)},
            {"configurable": {"thread_id": f"eval:{user_id}"}, "callbacks": [tracker]},
            context={"user_id": user_id},
        )
        applied = Counter(op.result for op in result.get("applied") or [])
        extracted = result.get("extracted") or []
        await journal.add(
            {
                "kind": "session",
                "conversation": conv.id,
                "user": speaker,
                "session": session.number,
                "turns": len(session.turns),
                "user_turns": sum(1 for t in session.turns if t.speaker == speaker),
                "extracted": len(extracted),
                # user turns whose facts were extracted: the turns a chat saves after
                "saving_turns": len(
                    {i for fact in extracted for i in fact.message_ids}
                    & {t.id for t in session.turns if t.speaker == speaker}
                ),
                "applied": dict(applied),
                "rejected": len(result.get("rejected") or []),
                "memory_error": result.get("memory_error"),
                "memory_llm": meter.take().as_dict(),
                "memory_llm_by_node": {n: u.as_dict() for n, u in tracker.lm_by_node.items()},
                "nodes": tracker.nodes,
                "seconds": time.perf_counter() - started,
            }
        )
        if progress is not None:
            progress.advance("session")


def session_messages(conv: Conversation, session: Session, speaker: str) -> list[AnyMessage]:
    """The session as `speaker` lived it: their turns are the user's, the others' the
    assistant's (named, when the conversation has several people), all sent at the
    session's date."""
    sent = {"sent_at": session.at.isoformat()}
    messages: list[AnyMessage] = []
    for turn in session.turns:
        if turn.speaker == speaker:
            messages.append(HumanMessage(turn.text, id=turn.id, additional_kwargs=sent))
        else:
            text = f"{turn.speaker}: {turn.text}" if len(conv.users) > 1 else turn.text
            messages.append(AIMessage(text, id=turn.id, additional_kwargs=sent))
    return messages


def _qa_graph(clients: Clients, users: dict[str, str]) -> CompiledStateGraph[Any, Any, Any, Any]:
    """recall → respond, with the chat graph's own nodes; recall asks every remembered
    speaker's memories."""
    builder = StateGraph(EngramState, context_schema=EngramContext)
    builder.add_node("recall", _recall_all(clients, users))
    builder.add_node("respond", make_respond(clients))
    builder.add_edge(START, "recall")
    builder.add_edge("recall", "respond")
    builder.add_edge("respond", END)
    return builder.compile()


def _recall_all(
    clients: Clients, users: dict[str, str]
) -> Callable[..., Awaitable[dict[str, Any]]]:
    recall = make_recall(clients)

    async def recall_all(state: EngramState, runtime: Runtime[EngramContext]) -> dict[str, Any]:
        context = run_context(runtime)
        update: dict[str, Any] = {}
        merged: list[MemoryRecord] = []
        lines: list[ProfileLine] = []
        for user_id, speaker in users.items():
            mine = runtime.override(context=context.model_copy(update={"user_id": user_id}))
            update = await recall(state, mine)
            merged += [
                m if len(users) == 1 else m.model_copy(update={"text": whose(m.text, speaker)})
                for m in update["recalled"]
            ]
            profile: Profile | None = update.get("profile")
            lines += [
                line
                if len(users) == 1
                else line.model_copy(update={"text": whose(line.text, speaker)})
                for line in (profile.lines if profile else [])
            ]
        merged.sort(key=lambda m: m.score or 0, reverse=True)
        profile = Profile(user_id=context.user_id, lines=lines) if lines else None
        return {**update, "user_id": context.user_id, "recalled": merged, "profile": profile}

    recall_all.__name__ = "recall"
    return recall_all


def whose(text: str, speaker: str) -> str:
    """A memory written about "User", told about `speaker` instead."""
    named, count = re.subn(r"\buser\b", speaker, text, flags=re.IGNORECASE)
    return named if count else f"{speaker}: {text}"


async def _ask(
    conv: Conversation,
    question: Question,
    qa: CompiledStateGraph[Any, Any, Any, Any],
    settings: Settings,
    models: Models,
    top_k: int,
    journal: Journal,
    progress: RunProgress | None,
    store: MemoryStore,
) -> None:
    assert question.answer is not None
    tracker = RunTracker()
    message = HumanMessage(
        question.question, id=question.id, additional_kwargs={"sent_at": question.at.isoformat()}
    )
    result = await qa.ainvoke(
        {"messages": [message]},
        {"callbacks": [tracker]},
        context={"user_id": user_id_for(conv, conv.users[0]), "top_k": top_k},
    )
    answer = result["messages"][-1].text
    profile: Profile | None = result.get("profile")
    profile_sources = (
        await asyncio.to_thread(_profile_sources, store, conv) if profile is not None else []
    )
    judge_lm = models.judge_lm.copy()
    verdict = await grade(
        JudgeAnswer(),
        judge_lm,
        question=question.question,
        gold=question.answer,
        answer=answer,
        attempts=settings.llm_attempts,
        seconds=settings.llm_timeout,
    )
    recalled: list[MemoryRecord] = result.get("recalled") or []
    await journal.add(
        {
            "kind": "question",
            "conversation": conv.id,
            "id": question.id,
            "category": question.category,
            "question": question.question,
            "gold": question.answer,
            "answer": answer,
            "correct": verdict.correct,
            "judge_reasoning": verdict.reasoning,
            "judge_error": verdict.error,
            "evidence": list(question.evidence),
            "recalled": [
                {
                    "text": m.text,
                    "score": m.score,
                    "said": m.observed_at.isoformat(),
                    "sources": m.source.message_ids,
                }
                for m in recalled
            ],
            "profile": [line.text for line in profile.lines] if profile else [],
            "profile_chars": len(render_profile(profile)),  # what it adds to the prompt
            "profile_sources": profile_sources,
            "prompt_chars": tracker.chat_prompt_chars,
            "nodes": tracker.nodes,
            "chat": tracker.chat.as_dict(),
            "judge_llm": lm_usage(judge_lm.history).as_dict(),
        }
    )
    if progress is not None:
        progress.advance("question")


def _profile_sources(store: MemoryStore, conv: Conversation) -> list[list[str]]:
    """The turns the memories of the speakers' profiles came from (their message ids).
    The profiles are as recall read them: nothing changes them while questions are asked."""
    found: list[list[str]] = []
    for speaker in conv.users:
        user_id = user_id_for(conv, speaker)
        cited = store.profile(user_id).cited()
        found += [m.source.message_ids for m in store.active(user_id, cited).values()]
    return found


# -- the summary ---------------------------------------------------------------------------


def summarize(
    dataset: Dataset, manifest: dict[str, Any], records: list[dict[str, Any]], store: MemoryStore
) -> dict[str, Any]:
    """The results: the run's manifest, the summary every report shows, and the records."""
    wanted = {c.id for c in dataset.conversations}
    sessions = [r for r in records if r.get("kind") == "session" and r["conversation"] in wanted]
    questions = [r for r in records if r.get("kind") == "question" and r["conversation"] in wanted]
    memory, chat, judge = Usage(), Usage(), Usage()
    for record in sessions:
        memory.add(Usage.of(record.get("memory_llm")))
    for record in questions:
        chat.add(Usage.of(record.get("chat")))
        judge.add(Usage.of(record.get("judge_llm")))
    applied: Counter[str] = Counter()
    by_node: dict[str, Usage] = {}
    for record in sessions:
        applied.update(record.get("applied") or {})
        for node, used in (record.get("memory_llm_by_node") or {}).items():
            by_node.setdefault(node, Usage()).add(Usage.of(used))
    profile_llm = by_node.get(PROFILE_NODE, Usage())
    saving_turns = sum(r.get("saving_turns", 0) for r in sessions)
    # A session is ingested once per remembered speaker; a turn is counted once.
    turns = sum({(r["conversation"], r["session"]): r["turns"] for r in sessions}.values())
    verdicts = [r.get("correct") for r in questions]
    cutoffs = [
        k for k in RECALL_CUTOFFS if k <= max((len(r["recalled"]) for r in questions), default=0)
    ]
    with_evidence = [r for r in questions if r.get("evidence")]
    memories = {
        conv.id: {
            speaker: {
                "active": store.count(user_id_for(conv, speaker), status="active"),
                "versions": store.count(user_id_for(conv, speaker)),
            }
            for speaker in conv.users
        }
        for conv in dataset.conversations
    }
    unanswerable = sum(1 for c in dataset.conversations for q in c.questions if q.answer is None)
    summary = {
        "questions": {
            "judged": len(questions),
            "graded": sum(1 for v in verdicts if v is not None),
            "ungraded": sum(1 for v in verdicts if v is None),
            "correct": sum(1 for v in verdicts if v is True),
            "skipped_without_answer": unanswerable,
        },
        "j": judge_score(verdicts),
        "j_by_category": {
            name: {"j": score, "n": n}
            for name, (score, n) in by_category(
                (r["category"], r.get("correct")) for r in questions
            ).items()
        },
        "evidence_recall": {
            "questions": len(with_evidence),
            "at": {
                str(k): mean(
                    recall_at(r["evidence"], [m["sources"] for m in r["recalled"]], k)
                    for r in with_evidence
                )
                for k in cutoffs
            },
        },
        "tokens": {"memory": memory.as_dict(), "chat": chat.as_dict(), "judge": judge.as_dict()},
        "tokens_per_turn": {
            "memory": (memory.prompt + memory.completion) / turns if turns else None,
            "answer": (chat.prompt + chat.completion) / len(questions) if questions else None,
        },
        "llm_calls": {"memory": memory.calls, "chat": chat.calls, "judge": judge.calls},
        "memory_llm_by_node": {node: used.as_dict() for node, used in by_node.items()},
        # evidence anywhere in the answer's prompt: the profile's memories or the recalled
        "evidence_in_prompt": mean(
            recall_at(
                r["evidence"],
                [*r.get("profile_sources", []), *[m["sources"] for m in r["recalled"]]],
                len(r.get("profile_sources", [])) + len(r["recalled"]),
            )
            for r in with_evidence
        ),
        "prompt_chars_per_answer": mean(r.get("prompt_chars") for r in questions),
        "profile": {
            "setting": manifest.get("profile", "off"),
            "max_chars": manifest.get("profile_chars"),
            "chars_per_answer": mean(r.get("profile_chars", 0) for r in questions),
            "answers_with_profile": sum(1 for r in questions if r.get("profile")),
            "calls": profile_llm.calls,
            "tokens": profile_llm.prompt + profile_llm.completion,
            "saving_turns": saving_turns,
            "calls_per_saving_turn": profile_llm.calls / saving_turns if saving_turns else None,
        },
        "latency": latency_summary(
            (node, seconds) for r in [*sessions, *questions] for node, seconds in r.get("nodes", [])
        ),
        "ingest": {
            "sessions": len(sessions),
            "turns": turns,
            "extracted": sum(r.get("extracted", 0) for r in sessions),
            "applied": dict(applied),
            "rejected": sum(r.get("rejected", 0) for r in sessions),
            "memory_errors": sum(1 for r in sessions if r.get("memory_error")),
        },
        "memories": memories,
        "memories_per_conversation": mean(
            sum(user["active"] for user in by_user.values()) for by_user in memories.values()
        ),
    }
    return {
        "kind": "run",
        "created": datetime.now(UTC).isoformat(),
        "run": manifest,
        "summary": summary,
        "sessions": sessions,
        "questions": questions,
    }
