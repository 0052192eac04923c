"""`engram` starts light: `--help` and `engram chat` up to its prompt import none of the
heavy libraries (they load in the background, or in the commands that need them), a start-up
that fails is one line, and local embeddings run on the configured torch threads. Timings
are in benchmarks/cold_start.py; nothing here is timed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engram.clients import build_embeddings
from engram.settings import Settings
from tests.fake_openai import free_port
from tests.helpers import REPO_ROOT, engram_env, run_engram

HEAVY = (
    "dspy",
    "litellm",
    "langchain_openai",
    "openai",
    "qdrant_client",
    "qdrant_edge",
    "torch",
    "sentence_transformers",
    "graph",
    "nodes",
    "memory",
)

# Runs `engram chat` in-process with the background start-up held back, and reports which
# heavy modules are loaded when the prompt is read. Then `engram --help`.
PROBE = f"""
import sys, threading
from typer.testing import CliRunner
from engram.apps.cli import chat, common

HEAVY = {HEAVY!r}

def loaded():
    return sorted(m for m in HEAVY if m in sys.modules)

release = threading.Event()

def held_start_up(settings, conv):
    release.wait()

async def prompt(text):
    print("at the prompt:", loaded())
    release.set()
    return "/quit"

chat._prepare = held_start_up
chat.read_line = prompt
chat.chat(user="alice", thread="main")
result = CliRunner().invoke(common.app, ["--help"])
assert result.exit_code == 0, result.output
print("after --help:", loaded())
"""


def test_help_and_the_chat_prompt_load_no_heavy_library(tmp_path: Path) -> None:
    env = engram_env(tmp_path, OPENAI_API_KEY="test")
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "at the prompt: []" in result.stdout
    assert "after --help: []" in result.stdout


def test_memories_commands_load_when_they_are_used(tmp_path: Path) -> None:
    env = engram_env(tmp_path, OPENAI_API_KEY="test")  # listing embeds nothing
    top = run_engram(env, "--help")
    assert top.returncode == 0, top.stderr
    for command in ("chat", "history", "forget", "memories"):
        assert command in top.stdout
    group = run_engram(env, "memories", "--help")
    assert group.returncode == 0, group.stderr
    for command in ("list", "search", "show", "history", "restore", "retry"):
        assert command in group.stdout
    listed = run_engram(env, "memories", "list", "--user", "alice")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip() == "memories of alice: none"


def test_a_start_up_that_fails_ends_the_chat_with_one_line(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    env = engram_env(
        tmp_path,
        OPENAI_API_KEY="test",
        OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1",
        QDRANT_URL=f"http://127.0.0.1:{port}",
    )
    result = run_engram(env, "chat", "--user", "alice", typed="hello\n")
    assert result.returncode == 1
    assert result.stdout.startswith("Chatting as alice")  # the prompt came first
    assert result.stderr.splitlines() == [
        f"error: the memory store at http://127.0.0.1:{port} could not open: "
        "ResponseHandlingException: [Errno 111] Connection refused"
    ]


def test_local_embeddings_run_on_the_configured_torch_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import langchain_huggingface
    import torch

    class Unloaded:  # the setting is applied before the model loads; skip loading it
        def __init__(self, **kwargs: Any) -> None:
            self.kwargs = kwargs

    monkeypatch.setattr(langchain_huggingface, "HuggingFaceEmbeddings", Unloaded)
    before = torch.get_num_threads()
    try:
        build_embeddings(Settings(embeddings="local", embedding_threads=3))
        assert torch.get_num_threads() == 3
        build_embeddings(Settings(embeddings="local"))
        assert torch.get_num_threads() == 1  # the default: fastest for a turn's texts
    finally:
        torch.set_num_threads(before)
