"""Opening an Edge shard written by an earlier version: its data and vectors stay as they
were, and this version's search setting (one search thread) is applied and persisted."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from engram.memory.engines.base import METADATA_KEY, Point, Query, Where
from engram.memory.engines.edge import SEARCH_THREADS, EdgeEngine


def test_a_shard_from_an_earlier_version_opens_with_its_data(tmp_path: Path) -> None:
    path = tmp_path / "edge"
    engine = EdgeEngine(path)
    engine.create(4)
    ids = [str(uuid.uuid4()) for _ in range(3)]
    engine.upsert(
        [
            Point(
                id=i,
                payload={"page_content": f"m{n}", METADATA_KEY: {"user_id": "alice"}},
                dense=[1.0, n / 10, 0.0, 0.0],
            )
            for n, i in enumerate(ids)
        ]
    )
    engine.close()
    config_file = path / "edge_config.json"
    earlier = json.loads(config_file.read_text())
    earlier.pop("max_search_threads")  # as versions before this setting wrote it
    config_file.write_text(json.dumps(earlier))

    reopened = EdgeEngine(path)
    try:
        assert reopened.dims() == 4
        assert reopened.count(Where(user_id="alice")) == 3
        hits = reopened.query([Query(Where(user_id="alice"), 3, [1.0, 0.0, 0.0, 0.0])])[0]
        assert [h.id for h in hits] == ids
    finally:
        reopened.close()
    config = json.loads(config_file.read_text())
    assert config["max_search_threads"] == SEARCH_THREADS
    assert config["vectors"] == earlier["vectors"]
    assert config["sparse_vectors"] == earlier["sparse_vectors"]


def test_a_shard_without_the_newer_indexes_gets_them_when_a_store_opens_it(
    tmp_path: Path,
) -> None:
    import qdrant_edge as edge
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from engram.memory.engines.edge import _config
    from engram.memory.store import MemoryStore

    path = tmp_path / "edge"
    path.mkdir()
    shard = edge.EdgeShard.create(str(path), _config(4))  # as before `valid_until` existed
    shard.update(
        edge.UpdateOperation.create_field_index(
            f"{METADATA_KEY}.user_id", edge.KeywordIndexParams(is_tenant=True)
        )
    )
    shard.close()
    engine = EdgeEngine(path)
    MemoryStore(engine, DeterministicFakeEmbedding(size=4), dims=4)  # opening it
    try:
        indexed = set(engine.shard.info().payload_schema)
        assert {f"{METADATA_KEY}.valid_until", f"{METADATA_KEY}.status"} <= indexed
    finally:
        engine.close()
