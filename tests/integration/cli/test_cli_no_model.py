"""Commands that need no model run without one: with no key and no endpoint configured, a
user can still list, show, trace, delete, restore, export, re-import and erase their
memories. Only what embeds (search, chat) asks for an endpoint, in one line."""

from __future__ import annotations

import json
from pathlib import Path

from langchain_core.embeddings import DeterministicFakeEmbedding

from engram import clients
from engram.memory.engines.edge import EdgeEngine
from engram.memory.store import MemoryStore
from engram.settings import Settings
from tests.helpers import engram_env, run_engram


def seed(data_dir: Path) -> tuple[str, str]:
    """Memories written earlier with OpenAI embeddings (the default backend, 64 dims)."""
    settings = Settings(data_dir=data_dir)
    embeddings = DeterministicFakeEmbedding(size=64)
    store = MemoryStore(
        EdgeEngine(settings.edge_path),
        embeddings,
        dims=64,
        embedding_id="openai:text-embedding-3-small",
        vector_key=clients.vector_key(settings),
    )
    tea = store.add("alice", "User likes tea", "preferences").memory_id or ""
    paris = store.add("alice", "User lives in Paris", "location").memory_id or ""
    store.update("alice", paris, "User lives in Berlin")
    store.engine.close()
    return tea, paris


def test_no_model_is_needed_to_read_change_move_or_erase_memories(tmp_path: Path) -> None:
    env = engram_env(tmp_path)  # no OPENAI_* at all
    tea, paris = seed(Path(env["ENGRAM_DATA_DIR"]))

    def ok(*args: str) -> str:
        result = run_engram(env, *args)
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert "User likes tea" in ok("memories", "list", "--user", "alice")
    assert json.loads(ok("memories", "show", tea[:8], "--user", "alice", "--json"))["id"] == tea
    assert "User lives in Paris" in ok("memories", "history", paris[:8], "--user", "alice")
    assert ok("memories", "delete", tea[:8], "--user", "alice").startswith("deleted")
    assert ok("memories", "restore", tea[:8], "--user", "alice").startswith("restored")
    export = tmp_path / "alice.jsonl"
    ok("export", "--user", "alice", "--output", str(export))
    # Same embedding backend and this installation's signature: no re-embedding needed.
    assert "imported 3 memory versions for bob" in ok("import", str(export), "--as-user", "bob")
    assert "Erased 3 memory versions" in ok("forget", "--user", "bob", "--yes")

    for needs_a_model in (
        ("memories", "search", "tea", "--user", "alice"),
        ("chat", "--user", "alice"),
    ):
        result = run_engram(env, *needs_a_model)
        assert result.returncode == 1
        assert result.stderr.count("\n") == 1 and "set OPENAI_API_KEY" in result.stderr
