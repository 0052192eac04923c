"""`POST /memories/import` through a real `langgraph dev`: a hostile line (nested too
deep, too large, a version twice) is a 400 naming the line, never a 500, and writes
nothing; another user's ids in an import tell the importer nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from engram.memory.transfer import MAX_DEPTH, MAX_LINE_BYTES
from tests.fake_openai import FakeOpenAI
from tests.servers import DevServer, bearer, langgraph_dev


@pytest.fixture(scope="module")
def server(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    with langgraph_dev(fake, tmp_path_factory.mktemp("langgraph-bounds")) as running:
        yield running


async def export_of(http: httpx.AsyncClient, user: str, *texts: str) -> list[str]:
    for text in texts:
        added = await http.post("/memories", json={"text": text}, headers=bearer(user))
        assert added.status_code == 201, added.text
    exported = await http.get("/memories/export", headers=bearer(user))
    assert exported.status_code == 200
    return exported.text.splitlines()


async def post_import(http: httpx.AsyncClient, user: str, lines: list[str]) -> httpx.Response:
    body = ("\n".join(lines) + "\n").encode()
    headers = {**bearer(user), "Content-Type": "application/x-ndjson"}
    return await http.post("/memories/import", content=body, headers=headers)


async def test_hostile_lines_are_a_400_naming_the_line(http: httpx.AsyncClient) -> None:
    header, first, second = await export_of(
        http, "b-source", "User keeps bees", "User rows at dawn"
    )
    deep = "[" * 1000 + "]" * 1000  # past Python's recursion limit in json.loads
    twin = json.loads(first)
    twin_header = json.loads(header)
    twin_header["count"] = 3
    huge: dict[str, Any] = json.loads(second)
    huge["events"][0]["detail"] = "x" * MAX_LINE_BYTES
    cases = [
        (
            [header, first[:-1] + f', "extra": {deep}}}', second],
            f"line 2: JSON nested deeper than {MAX_DEPTH} levels",
        ),
        ([f'{{"format": {deep}}}', first, second], "line 1: JSON nested deeper"),
        (
            [json.dumps(twin_header), first, second, json.dumps(twin)],
            f"line 4: version {twin['id']} is also on line 2",
        ),
        ([header, first, json.dumps(huge)], "line 3: the line is "),
    ]
    for lines, reason in cases:
        response = await post_import(http, "b-importer", lines)
        assert response.status_code == 400, response.text
        detail = response.json()["detail"]
        assert detail.startswith(reason) and "\n" not in detail
    listed = await http.get("/memories", params={"status": "all"}, headers=bearer("b-importer"))
    assert listed.json()["total"] == 0  # nothing of any refused file was written


async def test_importing_someone_elses_ids_tells_nothing(http: httpx.AsyncClient) -> None:
    """bob sends alice's lines as his own: the answers are those for ids nobody holds."""
    lines = await export_of(http, "o-alice", "User sings in a choir", "User owns a kayak")
    as_bob = [line.replace('"user_id":"o-alice"', '"user_id":"o-bob"') for line in lines]
    ids = [json.loads(line)["id"] for line in lines[1:]]

    async def bobs_view() -> tuple[Any, list[int], list[str]]:
        report = (await post_import(http, "o-bob", as_bob)).json()
        reads = [
            (await http.get(f"/memories/{i}", headers=bearer("o-bob"))).status_code for i in ids
        ]
        mine = (await http.get("/memories", headers=bearer("o-bob"))).json()["items"]
        return report, reads, sorted(m["id"] for m in mine)

    held = await bobs_view()
    assert held[0]["imported"] == 2 and held[1] == [404, 404]
    alice = (await http.get("/memories", headers=bearer("o-alice"))).json()["items"]
    assert sorted(m["id"] for m in alice) == sorted(ids)  # alice's memories are untouched
    assert all(len(m["events"]) == 1 for m in alice)

    forget = {"confirm": True}
    for user in ("o-alice", "o-bob"):
        erased = await http.post("/memories/forget", json=forget, headers=bearer(user))
        assert erased.status_code == 200, erased.text
    assert await bobs_view() == held  # the same, now that nobody holds alice's ids
