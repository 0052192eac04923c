"""The Python examples in the README and docs/ run as written: each in a fresh process and
an empty working directory (their data directories are their own), against the local fake
OpenAI-compatible server. The server example needs a running server: the server tests
drive the same calls."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_openai import FakeOpenAI
from tests.helpers import REPO_ROOT, chat_env

RUNNABLE = ["README.md", "docs/python.md", "docs/store.md"]
NEEDS_A_SERVER = "langgraph_sdk"


def examples() -> list[tuple[str, int, str]]:
    found = []
    for name in RUNNABLE:
        text = (REPO_ROOT / name).read_text("utf-8")
        for number, block in enumerate(re.findall(r"```python\n(.*?)```", text, re.S), 1):
            if NEEDS_A_SERVER not in block:
                found.append((name, number, block))
    return found


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.mark.parametrize(
    ("document", "number", "code"), examples(), ids=lambda v: v if isinstance(v, str) else None
)
def test_the_example_runs_as_written(
    document: str, number: int, code: str, fake: FakeOpenAI, tmp_path: Path
) -> None:
    ran = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=chat_env(fake.url, tmp_path),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert ran.returncode == 0, f"{document} example {number}:\n{ran.stderr[-3000:]}"
    assert not (REPO_ROOT / "engram-quickstart").exists()


def test_the_readme_quickstart_remembers_and_finds(fake: FakeOpenAI, tmp_path: Path) -> None:
    readme = (REPO_ROOT / "README.md").read_text("utf-8")
    quickstart = readme.split("## Quickstart: Python", 1)[1]
    code = re.findall(r"```python\n(.*?)```", quickstart, re.S)[0]
    assert len(code.strip().splitlines()) <= 10
    ran = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=chat_env(fake.url, tmp_path),
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    assert "User said: I'm vegetarian and I just moved to Lyon." in ran.stdout
    assert (tmp_path / "engram-quickstart" / "edge").is_dir()  # its own data directory
    assert not (tmp_path / "data").exists()  # not ENGRAM_DATA_DIR's, the CLI user's


def test_every_example_was_found() -> None:
    assert {name for name, _, _ in examples()} == set(RUNNABLE)
