"""Helpers the tests share: scripted LM answers, a graph on test clients, one turn, and
the `engram` command in a fresh process. (Fixtures live in conftest.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from dspy.utils import DummyLM
from langchain_core.embeddings import Embeddings
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph.state import CompiledStateGraph
from qdrant_client import QdrantClient

from engram.clients import Clients
from engram.graph import build_graph, checkpoint_serde
from engram.memory.engines.base import Engine
from engram.memory.engines.edge import EdgeEngine
from engram.memory.engines.qdrant_server import ServerEngine
from engram.memory.store import MemoryStore
from engram.settings import Settings

ENGINES = ["edge", "server"]


def make_engine(kind: str, embeddings: Embeddings, path: Path) -> Engine:
    """Qdrant Edge on disk, or qdrant-client's in-memory mode standing in for a server."""
    if kind == "edge":
        return EdgeEngine(path / "edge")
    return ServerEngine(QdrantClient(":memory:"), "engram_memories", embeddings)


def make_store(
    kind: str, embeddings: Embeddings, path: Path, dims: int = 384, **options: Any
) -> MemoryStore:
    options.setdefault("embedding_id", "local:all-MiniLM-L6-v2")
    return MemoryStore(make_engine(kind, embeddings, path), embeddings, dims=dims, **options)


def lm_answers(*answers: dict[str, Any]) -> list[dict[str, str]]:
    """DummyLM answers: lists and dicts are written as the JSON a model would return."""
    return [
        {k: v if isinstance(v, str) else json.dumps(v) for k, v in answer.items()}
        for answer in answers
    ]


def scripted_lm(*answers: dict[str, Any]) -> DummyLM:
    return DummyLM(lm_answers(*answers))


def save(value: bool = True) -> dict[str, Any]:
    return {"save": str(value)}


def facts(*items: tuple[str, str]) -> dict[str, Any]:
    return {"facts": [{"text": t, "category": c} for t, c in items]}


def ops(*items: dict[str, Any]) -> dict[str, Any]:
    return {"reasoning": "scripted", "operations": list(items)}


def make_graph(
    store: MemoryStore,
    lm: DummyLM,
    replies: list[str] | None = None,
    settings: Settings | None = None,
) -> CompiledStateGraph[Any, Any, Any, Any]:
    clients = Clients(
        settings or Settings(llm_attempts=1),
        store=store,
        chat_model=FakeListChatModel(responses=replies or ["Noted."]),
        memory_lm=lm,
    )
    return build_graph(clients).compile(checkpointer=InMemorySaver(serde=checkpoint_serde()))


async def turn(
    graph: CompiledStateGraph[Any, Any, Any, Any],
    text: str,
    user_id: str = "alice",
    thread_id: str = "thread-1",
    **context: Any,
) -> dict[str, Any]:
    result: dict[str, Any] = await graph.ainvoke(
        {"messages": [("user", text)]},
        config={"configurable": {"thread_id": thread_id}},
        context={"user_id": user_id, **context},
    )
    return result


async def thread_values(
    graph: CompiledStateGraph[Any, Any, Any, Any], thread_id: str = "thread-1"
) -> dict[str, Any]:
    """The thread's whole state, internal fields included (a run returns `ChatOutput`)."""
    snapshot = await graph.aget_state({"configurable": {"thread_id": thread_id}})
    return dict(snapshot.values)


REPO_ROOT = Path(__file__).resolve().parents[1]


def engram_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """This process's environment without Engram/OpenAI/Qdrant settings, plus `settings`.
    The profile is off unless `settings` turn it on (see `tests/conftest.py`)."""
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ENGRAM_", "QDRANT_"))
    }
    defaults = {"ENGRAM_DATA_DIR": str(tmp_path / "data"), "ENGRAM_PROFILE": "off"}
    return base | defaults | settings


def run_engram(
    env: dict[str, str], *args: str, typed: str = ""
) -> subprocess.CompletedProcess[str]:
    """The installed `engram` command in a fresh process, as a user runs it."""
    script = Path(sys.executable).with_name("engram")
    return subprocess.run(
        [str(script), *args],
        input=typed,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=180,
        check=False,
    )


def chat_env(fake_url: str, tmp_path: Path, **settings: str) -> dict[str, str]:
    """`engram chat` against the fake OpenAI-compatible server, one attempt per step."""
    return (
        engram_env(
            tmp_path,
            OPENAI_BASE_URL=fake_url,
            OPENAI_API_KEY="test",
            ENGRAM_EMBEDDINGS="openai",
            ENGRAM_RECALL_FLOOR="-1",  # the fake's embeddings know words, not meanings
            LITELLM_LOCAL_MODEL_COST_MAP="True",
            DSPY_CACHEDIR=str(tmp_path / "dspy"),
            ENGRAM_LLM_ATTEMPTS="1",
        )
        | settings
    )
