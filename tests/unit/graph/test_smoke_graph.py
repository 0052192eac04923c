from engram.memory.store import MemoryStore
from tests.helpers import facts, make_graph, ops, save, scripted_lm, turn


async def test_add_then_update_keeps_history(store: MemoryStore) -> None:
    lm = scripted_lm(
        save(),
        facts(("User lives in Paris", "location")),
        ops({"op": "ADD", "id": None, "text": "User lives in Paris", "category": "location"}),
        save(),
        facts(("User moved to Berlin", "location")),
        ops({"op": "UPDATE", "id": 1, "text": "User lives in Berlin", "category": "location"}),
    )
    graph = make_graph(store, lm)
    first = await turn(graph, "I live in Paris")
    assert [a.result for a in first["applied"]] == ["added"]
    second = await turn(graph, "I moved to Berlin")
    assert [a.result for a in second["applied"]] == ["updated"]
    assert [m.text for m in store.memories("alice")] == ["User lives in Berlin"]
    versions = store.history("alice", second["applied"][0].memory_id)
    assert [(v.text, v.status) for v in versions] == [
        ("User lives in Paris", "superseded"),
        ("User lives in Berlin", "active"),
    ]
