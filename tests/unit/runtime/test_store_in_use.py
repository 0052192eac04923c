"""When another process holds the embedded store, the error says how to reach it: the URL
`engram dev` recorded while it runs, when that server still answers."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.embeddings import Embeddings

from engram import clients
from engram.memory.engines.edge import EdgeEngine
from engram.memory.store import MemoryStore
from engram.settings import Settings
from engram.state.errors import ConfigurationError


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def test_a_recorded_server_that_answers_is_named(tmp_path: Path, listening: int) -> None:
    settings = Settings(data_dir=tmp_path)
    clients.dev_server_file(settings).write_text(f"http://127.0.0.1:{listening}")
    assert clients.running_dev_server(settings) == f"http://127.0.0.1:{listening}"


def test_a_stale_or_missing_record_names_nothing(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert clients.running_dev_server(settings) is None
    with socket.socket() as probe:  # a port nothing listens on any more
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    clients.dev_server_file(settings).write_text(f"http://127.0.0.1:{port}")
    assert clients.running_dev_server(settings) is None
    clients.dev_server_file(settings).write_text("not a url")
    assert clients.running_dev_server(settings) is None


def test_the_in_use_error_names_the_running_servers_port(
    tmp_path: Path, listening: int, local_embeddings: Embeddings
) -> None:
    settings = Settings(data_dir=tmp_path, embeddings="local")
    # holds the shard's lock, as another process would
    holder = MemoryStore(EdgeEngine(settings.edge_path), local_embeddings, dims=384)
    try:
        clients.dev_server_file(settings).write_text(f"http://127.0.0.1:{listening}")
        with pytest.raises(ConfigurationError) as refused:
            clients.default_store(settings)
    finally:
        holder.engine.close()
    message = str(refused.value)
    assert "in use by another process" in message
    assert f"--server http://127.0.0.1:{listening}" in message
