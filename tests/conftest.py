"""Shared fixtures. Tests run offline: real Qdrant (local mode), real local embeddings,
scripted LMs standing in for the LLM provider only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Before dspy/litellm/transformers are imported anywhere: no network, isolated caches.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["DSPY_CACHEDIR"] = tempfile.mkdtemp(prefix="engram-dspy-cache-")

import dspy
import pytest
from dspy.utils import DummyLM
from langchain_core.embeddings import Embeddings
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph.state import CompiledStateGraph
from qdrant_client import QdrantClient

from engram.resources import Resources, build_embeddings
from engram.settings import Settings, get_settings
from graph import build_graph, checkpoint_serde
from memory.store import MemoryStore

dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)

ENV_VARS = [
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "QDRANT_URL",
    "QDRANT_API_KEY",
    *[k for k in os.environ if k.startswith("ENGRAM_")],
]


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No real key, no real data dir, no stray `.env`: every test starts clean."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ENGRAM_DATA_DIR", str(tmp_path / "engram-data"))
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def local_embeddings() -> Embeddings:
    """The real offline all-MiniLM-L6-v2 model (384 dims), loaded once per session."""
    return build_embeddings(Settings(embeddings="local"))


@pytest.fixture
def store(local_embeddings: Embeddings) -> MemoryStore:
    return MemoryStore(
        QdrantClient(":memory:"), local_embeddings, dims=384, embedding_id="local:all-MiniLM-L6-v2"
    )


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
    resources = Resources(
        settings or Settings(llm_attempts=1),
        store=store,
        chat_model=FakeListChatModel(responses=replies or ["Noted."]),
        memory_lm=lm,
    )
    return build_graph(resources).compile(checkpointer=InMemorySaver(serde=checkpoint_serde()))


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


REPO_ROOT = Path(__file__).resolve().parents[1]


def engram_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """This process's environment without Engram/OpenAI/Qdrant settings, plus `settings`."""
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ENGRAM_", "QDRANT_"))
    }
    return base | {"ENGRAM_DATA_DIR": str(tmp_path / "data")} | settings


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
