"""Moves an embedded store written by earlier versions (qdrant-client's local mode under
`<data dir>/qdrant`) to Qdrant Edge, losing nothing.

The copy is written to a side directory, checked point by point (ids, payloads, vectors),
and only then put in place; the old files are kept, renamed, until the user removes them.
An interrupted migration leaves the old store untouched and starts over on the next open.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from langchain_core.embeddings import Embeddings
from qdrant_client import QdrantClient

from engram.memory.engines.base import Point
from engram.memory.engines.edge import EdgeEngine
from engram.memory.engines.qdrant_server import ServerEngine
from engram.memory.payload import stored_from_point, stored_point
from engram.memory.retrieval import cosine

PAGE = 1000
KEPT_SUFFIX = ".before-edge"


def needs_migration(local_path: Path, collection: str, edge_path: Path) -> bool:
    """A local-mode collection exists and no Edge shard has replaced it yet."""
    return (local_path / "collection" / collection).is_dir() and not edge_path.exists()


def migrate_to_edge(
    local_path: Path,
    collection: str,
    edge_path: Path,
    embeddings: Embeddings,
    on_progress: Callable[[int, int], None] | None = None,
) -> int:
    """Copy every point of `collection` to a new Edge shard at `edge_path`; returns how
    many. The old directory is renamed to `<name>.before-edge` once the copy is verified."""
    side = edge_path.with_name(edge_path.name + ".migrating")
    shutil.rmtree(side, ignore_errors=True)  # a previous attempt that did not finish
    client = QdrantClient(path=str(local_path))
    try:
        source = ServerEngine(client, collection, embeddings)
        dims = source.dims()
        if dims is None or dims < 1:
            raise RuntimeError(f"{local_path} holds no Engram collection {collection!r}")
        total = source.count(None)
        target = EdgeEngine(side)
        target.create(dims)
        copied = 0
        batch: list[Point] = []
        for point in source.scroll(None, with_dense=True):
            batch.append(stored_point(stored_from_point(point), point.dense or []))
            if len(batch) == PAGE:
                copied += _write(target, batch, on_progress, copied, total)
                batch = []
        copied += _write(target, batch, on_progress, copied, total)
        _verify(source, target, total)
        target.close()
    finally:
        client.close()
    edge_path.parent.mkdir(parents=True, exist_ok=True)
    side.rename(edge_path)
    local_path.rename(local_path.with_name(local_path.name + KEPT_SUFFIX))
    return copied


def _write(
    target: EdgeEngine,
    batch: list[Point],
    on_progress: Callable[[int, int], None] | None,
    done: int,
    total: int,
) -> int:
    if batch:
        target.upsert(batch)
    if on_progress:
        on_progress(done + len(batch), total)
    return len(batch)


def _verify(source: ServerEngine, target: EdgeEngine, total: int) -> None:
    """Every point arrived with its memory and its vector."""
    if target.count(None) != total:
        raise RuntimeError(
            f"migration copied {target.count(None)} of {total} memories; the old store is kept"
        )
    for old in source.scroll(None, with_dense=True):
        [new] = target.retrieve([old.id], with_dense=True)
        same_memory = stored_from_point(new).record == stored_from_point(old).record
        # Edge stores cosine vectors normalised; the direction is what must not change.
        same_vector = cosine(new.dense or [], old.dense or []) > 0.99999
        if not (same_memory and same_vector):
            raise RuntimeError(f"memory {old.id} differs after migration; the old store is kept")
