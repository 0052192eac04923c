"""The wheel as a user installs it: exactly one import package, `engram`, that lives beside
an app's own `state.py`, `graph.py` and `apps/` package without touching them, and runs a
chat turn and an `add` against a local fake OpenAI-compatible server."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from tests.fake_openai import FakeOpenAI
from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.slow

HOST_SCRIPT = """
import asyncio, json, sys
import apps.views, graph, state          # the app's own modules, first
from langgraph.checkpoint.memory import InMemorySaver
import engram
from engram import Memory, build_graph, checkpoint_serde

async def chat() -> str:
    compiled = build_graph().compile(checkpointer=InMemorySaver(serde=checkpoint_serde()))
    result = await compiled.ainvoke(
        {"messages": [("user", "I live in Lyon.")]},
        {"configurable": {"thread_id": "t1"}},
        context={"user_id": "alice"},
    )
    return result["messages"][-1].content

answer = asyncio.run(chat())
added = Memory(data_dir="./memories").add("I play the cello.", user_id="bob")
print(json.dumps({
    "answer": answer,
    "added": [a.text for a in added.applied],
    "host": [state.WHO, graph.WHO, apps.views.WHO],
    "engram_state": sys.modules["engram.state"].__file__,
    "engram": engram.__file__,
}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(REPO_ROOT),
        ],
        check=True,
        timeout=300,
    )
    (built,) = out.glob("engram-*.whl")
    return built


def test_the_wheel_holds_one_import_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"engram"}
    for expected in (
        "engram/py.typed",
        "engram/graph/studio.py",
        "engram/state/contracts.py",
        "engram/memory/engines/edge.py",
        "engram/apps/eval/data/labelled.jsonl",
    ):
        assert expected in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "engram = engram.apps.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_an_app_with_its_own_state_graph_and_apps_keeps_them(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (site,) = venv.glob("lib/python3*/site-packages")
    # The dependencies come from this environment (its own editable Engram is not seen:
    # a path in a .pth file adds modules, not that directory's .pth files).
    ours = next(p for p in sys.path if p.endswith("site-packages"))
    (site / "dependencies.pth").write_text(ours + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "-q",
            "--no-deps",
            str(wheel),
        ],
        check=True,
        timeout=300,
    )
    host = tmp_path / "host"
    (host / "apps").mkdir(parents=True)
    (host / "state.py").write_text("WHO = 'the app state'\n")
    (host / "graph.py").write_text("WHO = 'the app graph'\n")
    (host / "apps" / "__init__.py").write_text("")
    (host / "apps" / "views.py").write_text("WHO = 'the app views'\n")
    (host / "main.py").write_text(textwrap.dedent(HOST_SCRIPT))
    with FakeOpenAI() as fake:
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "OPENAI_BASE_URL": fake.url,
            "OPENAI_API_KEY": "test",
            "ENGRAM_DATA_DIR": str(tmp_path / "data"),
            "ENGRAM_RECALL_FLOOR": "-1",
            "ENGRAM_LLM_ATTEMPTS": "1",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "DSPY_CACHEDIR": str(tmp_path / "dspy"),
        }
        ran = subprocess.run(
            [str(venv / "bin" / "python"), "main.py"],
            cwd=host,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert ran.returncode == 0, ran.stderr[-3000:]
    report = json.loads(ran.stdout.strip().splitlines()[-1])
    assert report["answer"].startswith("Fake reply to:")
    assert report["added"] == ["User said: I play the cello."]
    assert report["host"] == ["the app state", "the app graph", "the app views"]
    assert report["engram_state"].startswith(str(venv))
    assert report["engram"].startswith(str(venv))
    assert not (venv / "bin" / "graph").exists()
    assert not (site / "state").exists() and not (site / "apps").exists()
