"""Clients built on first use (kept apart from clients.py, which imports nothing heavy
at module level so the CLI starts fast)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from langchain_core.embeddings import Embeddings


class LazyEmbeddings(Embeddings):
    """An embedding backend built the first time something is embedded, so its missing
    key or endpoint is reported only by the commands that need it."""

    def __init__(self, build: Callable[[], Embeddings]) -> None:
        self._build = build
        self._built: Embeddings | None = None
        self._lock = threading.Lock()

    def backend(self) -> Embeddings:
        with self._lock:
            if self._built is None:
                self._built = self._build()
            return self._built

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.backend().embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        return self.backend().embed_query(text)
