"""Shared fixtures. Tests run offline: real Qdrant (Edge on disk; qdrant-client's in-memory
mode standing in for a server), real local embeddings, and scripted LMs standing in for
the LLM provider only."""

from __future__ import annotations

import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Before dspy/litellm/transformers are imported anywhere: no network, isolated caches.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["DSPY_CACHEDIR"] = tempfile.mkdtemp(prefix="engram-dspy-cache-")

import dspy
import pytest
from langchain_core.embeddings import Embeddings

from engram.clients import build_embeddings
from engram.memory.store import MemoryStore
from engram.settings import Settings, get_settings
from tests.helpers import ENGINES, make_store

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
    # Tests script the memory model's answers call by call; the profile's program is one
    # more call after memory changes, so it is on only where a test turns it on (the
    # profile's own suites), not in the scripts of every other step.
    monkeypatch.setenv("ENGRAM_PROFILE", "off")
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(autouse=True, scope="session")
def interruptible_children() -> Iterator[None]:
    """Ctrl-C reaches the programs tests start (`engram chat`, `engram dev`) even when the
    suite itself runs as a shell's background job: such a job starts with SIGINT ignored,
    every child inherits that, and Python then installs no KeyboardInterrupt handler."""
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    if ignored:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests under tests/integration/ start programs: marked `subprocess`, so the fast
    command (`-m "not slow and not subprocess"`) leaves them out."""
    integration = Path(__file__).parent / "integration"
    for item in items:
        if item.path.is_relative_to(integration):
            item.add_marker(pytest.mark.subprocess)


@pytest.fixture(scope="session")
def local_embeddings() -> Embeddings:
    """The real offline all-MiniLM-L6-v2 model (384 dims), loaded once per session. Where
    the `local` extra is not installed (Python 3.12+: the registry's torch is a CUDA
    build), the tests that need it are skipped."""
    pytest.importorskip("langchain_huggingface", reason="the local extra is not installed")
    return build_embeddings(Settings(embeddings="local"))


@pytest.fixture
def store(local_embeddings: Embeddings, tmp_path: Path) -> Iterator[MemoryStore]:
    """The default engine: Qdrant Edge on disk."""
    opened = make_store("edge", local_embeddings, tmp_path)
    yield opened
    opened.engine.close()


@pytest.fixture(params=ENGINES)
def kind(request: pytest.FixtureRequest) -> str:
    """Each engine in turn: Qdrant Edge, and qdrant-client's in-memory mode (a server)."""
    return str(request.param)


@pytest.fixture
def store_on_each_engine(
    kind: str, local_embeddings: Embeddings, tmp_path: Path
) -> Iterator[MemoryStore]:
    """For suites that must hold on both engines (the store's, import/export)."""
    opened = make_store(kind, local_embeddings, tmp_path)
    yield opened
    opened.engine.close()


@pytest.fixture
def cli_store(monkeypatch: pytest.MonkeyPatch, local_embeddings: Embeddings) -> MemoryStore:
    """The store the CLI opens in this test's data dir, with the already-loaded model."""
    from engram import clients
    from engram.apps.cli import common

    monkeypatch.setenv("ENGRAM_EMBEDDINGS", "local")
    monkeypatch.setattr(clients, "build_embeddings", lambda settings: local_embeddings)
    monkeypatch.setattr(common.out, "width", 200)  # tables unfolded, as on a wide terminal
    get_settings.cache_clear()
    return clients.default_store()
