"""docs/profile.md's "Managing the profile": its Python example runs as written (in a
fresh process and an empty working directory, against the local fake OpenAI-compatible
server), and every command, route and tool it names exists."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from engram.apps.cli.common import app
from engram.apps.server.mcp import TOOLS
from engram.apps.server.routes import app as http_app
from tests.fake_openai import FakeOpenAI
from tests.helpers import REPO_ROOT, chat_env


def managing() -> str:
    text = (REPO_ROOT / "docs" / "profile.md").read_text("utf-8")
    section = text.split("## Managing the profile", 1)[1]
    return re.split(r"\n## ", section, maxsplit=1)[0]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def test_the_python_example_runs_as_written(fake: FakeOpenAI, tmp_path: Path) -> None:
    [code] = re.findall(r"```python\n(.*?)```", managing(), re.S)
    ran = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=chat_env(fake.url, tmp_path),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "User is vegetarian [" in ran.stdout


def test_the_commands_routes_and_tools_it_names_exist() -> None:
    import typer

    section = managing()
    group = typer.main.get_group(app)
    profile = group.get_command(None, "profile")  # type: ignore[arg-type]
    commands = set(profile.list_commands(None))  # type: ignore[union-attr, arg-type]
    assert set(re.findall(r"engram profile (\w+)", section)) <= commands
    routes = {
        (method, route.path)
        for route in http_app.routes
        for method in getattr(route, "methods", None) or ()
    }
    for method, path in re.findall(r"`(GET|POST|DELETE) (/memories/profile[^` ?]*)", section):
        assert (method, path) in routes, (method, path)
    assert {"get_profile", "pin_memory", "unpin_memory"} <= set(TOOLS)
