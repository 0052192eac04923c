"""Fixtures every server test module shares: the fake OpenAI server its `langgraph dev`
talks to (one per module, like the server each module starts with its own settings as
`server`), and an HTTP client for that server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.fake_openai import FakeOpenAI
from tests.servers import DevServer


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(dims=64) as server:
        yield server


@pytest.fixture
async def http(server: DevServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        yield client
