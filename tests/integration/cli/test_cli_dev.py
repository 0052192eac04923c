"""`engram dev` starts LangGraph's dev server on the project and says where Studio is;
it installs LangGraph's CLI on first use."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from engram.apps.cli import dev
from tests.helpers import engram_env


def test_engram_dev_serves_the_project_and_prints_the_studio_url(tmp_path: Path) -> None:
    port = dev.free_port(0)
    env = engram_env(tmp_path, OPENAI_API_KEY="test", OPENAI_BASE_URL="http://127.0.0.1:9")
    script = Path(sys.executable).with_name("engram")
    server = subprocess.Popen(
        [str(script), "dev", "--port", str(port)],
        env=env,
        cwd=tmp_path,  # works from anywhere: it finds the project itself
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    threads = f"http://127.0.0.1:{port}/threads/search"
    printed: list[str] = []
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ok", timeout=2) as reply:
                    assert reply.status == 200
                    break
            except OSError:
                assert server.poll() is None, server.stdout.read() if server.stdout else ""
                assert time.monotonic() < deadline, "engram dev did not start"
                time.sleep(0.5)
        # Never an open server: no token, 401; the printed token, 200.
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(threads, data=b"{}", method="POST"))
        assert refused.value.code == 401
        printed = read_until(server, "Token for")
        token = printed[-1].split(": ", 1)[1]
        request = urllib.request.Request(
            threads,
            data=b"{}",
            method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert reply.status == 200
        # recorded for the "store in use" error, while it runs
        assert (tmp_path / "data" / "dev-server.url").read_text() == f"http://127.0.0.1:{port}"
    finally:
        server.send_signal(signal.SIGINT)
        rest, _ = server.communicate(timeout=30)
    output = "\n".join(printed) + rest
    assert f"Studio: https://smith.langchain.com/studio/?baseUrl=http://127.0.0.1:{port}" in output
    assert "Studio acts as user 'dev'" in output
    assert "this session uses a temporary one" in output
    assert not (tmp_path / "data" / "dev-server.url").exists()


def test_the_dev_server_serves_several_runs_at_once(tmp_path: Path) -> None:
    """langgraph dev runs one run at a time unless told otherwise."""
    command = dev.dev_command(tmp_path / "langgraph.json", 2024, reload=False, jobs=dev.DEV_JOBS)
    assert command[command.index("--n-jobs-per-worker") + 1] == "10"
    assert "--no-reload" in command


def read_until(server: subprocess.Popen[str], marker: str) -> list[str]:
    """The server's output lines up to and including the first that holds `marker`."""
    lines: list[str] = []
    assert server.stdout is not None
    for line in server.stdout:
        lines.append(line.rstrip("\n"))
        if marker in line:
            return lines
    raise AssertionError(f"{marker!r} never printed: {lines}")


def test_langgraph_cli_is_installed_on_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def pip(command: list[str], check: bool) -> subprocess.CompletedProcess[str]:
        calls.append(command)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(dev.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(dev.subprocess, "run", pip)
    dev.ensure_langgraph_cli()
    assert calls == [
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            dev.LANGGRAPH_CLI,
        ]
    ]


def test_a_port_in_use_is_not_offered(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        assert dev.free_port(taken) != taken
