"""`engram dev`: LangGraph's dev server (and Studio) on this project, set up to run offline."""

from __future__ import annotations

import importlib.util
import os
import secrets
import socket
import subprocess
import sys
from contextlib import suppress
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from pydantic import SecretStr

from engram.apps.cli.common import app, err, out
from engram.clients import dev_server_file
from engram.settings import Settings, get_settings
from engram.state.context import validate_user_id
from engram.state.errors import ConfigurationError, InvalidInputError

LANGGRAPH_CLI = "langgraph-cli[inmem]>=0.4,<0.5"  # as in the project's dev extra
PROJECT = Path(__file__).resolve().parents[2]
STUDIO = "https://smith.langchain.com/studio/?baseUrl={url}"
DEV_TOKEN_HOURS = 8
DEV_JOBS = 10  # runs served at once by engram dev


@app.command()
def dev(
    port: Annotated[
        int | None, typer.Option(help="Port to serve on (default: 2024, or a free one).")
    ] = None,
    reload: Annotated[bool, typer.Option(help="Restart when the code changes.")] = False,
    user: Annotated[
        str | None,
        typer.Option("--user", "-u", help="Whose memories Studio uses (ENGRAM_STUDIO_USER)."),
    ] = None,
    jobs: Annotated[
        int,
        typer.Option(min=1, max=1000, help="Runs served at once (langgraph dev's default is one)."),
    ] = DEV_JOBS,
) -> None:
    """Start LangGraph's dev server on Engram (installs it on first use) and print the
    Studio URL and a token. Ctrl-C stops it."""
    config = PROJECT / "langgraph.json"
    if not config.exists():
        raise ConfigurationError(f"engram dev runs from a checkout of Engram; {config} is missing")
    ensure_langgraph_cli()
    port = port or free_port(2024)
    url = f"http://127.0.0.1:{port}"
    out.print(f"API:    {url}")
    out.print(f"Studio: {STUDIO.format(url=url)}")
    command = dev_command(config, port, reload=reload, jobs=jobs)
    settings = get_settings()
    env = os.environ | {"LANGSMITH_TRACING": "false", "LANGGRAPH_CLI_NO_ANALYTICS": "1"}
    env |= dev_auth(user, settings)
    record = dev_server_file(settings)  # so "store in use" errors can name this server
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(url, "utf-8")
    try:
        completed = subprocess.run(command, env=env, cwd=PROJECT, check=False)
    except KeyboardInterrupt:  # the server got the same Ctrl-C and stops by itself
        return
    finally:
        with suppress(OSError):  # another engram dev's record is not ours to remove
            if record.read_text("utf-8") == url:
                record.unlink()
    raise typer.Exit(completed.returncode)


def dev_command(config: Path, port: int, *, reload: bool, jobs: int) -> list[str]:
    """`langgraph dev` on Engram's langgraph.json. `--n-jobs-per-worker`: without it the
    dev server runs one run at a time (its help says 10; its code starts one), so every
    user waits for everyone else's turns."""
    command = [
        sys.executable,
        "-c",
        "import sys; from langgraph_cli.cli import cli; sys.argv[0] = 'langgraph'; cli()",
        "dev",
        "--config",
        str(config),
        "--port",
        str(port),
        "--no-browser",
        "--n-jobs-per-worker",
        str(jobs),
    ]
    if not reload:
        command.append("--no-reload")  # one process holds the embedded store
    return command


def dev_auth(user: str | None, settings: Settings) -> dict[str, str]:
    """Authentication for a developer's server: Studio acts as one named user, and without
    a configured secret this session gets a temporary one, with a token printed for that
    user (the server is never left open)."""
    from engram.apps.server.tokens import mint_token

    try:
        studio_user = validate_user_id(user or settings.studio_user or "dev")
    except ValueError as error:
        raise InvalidInputError(f"--user: {error}") from None
    env = {"ENGRAM_STUDIO_USER": studio_user}
    out.print(f"Studio acts as user {studio_user!r} (--user to change)")
    if settings.auth_secret is None and settings.auth_jwks_url is None:
        secret = secrets.token_hex(32)
        env["ENGRAM_AUTH_SECRET"] = secret
        settings = settings.model_copy(update={"auth_secret": SecretStr(secret)})
        out.print("No ENGRAM_AUTH_SECRET is set: this session uses a temporary one.")
    if settings.auth_secret is not None:
        minted = mint_token(settings, studio_user, timedelta(hours=DEV_TOKEN_HOURS))
        out.print(f"Token for {studio_user} ({DEV_TOKEN_HOURS} h): {minted}")
    return env


def ensure_langgraph_cli() -> None:
    """Install LangGraph's CLI into this environment the first time it is needed."""
    if importlib.util.find_spec("langgraph_cli") is not None:
        return
    err.print(f"Installing {LANGGRAPH_CLI} (first run of engram dev only)...")
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            LANGGRAPH_CLI,
        ],
        check=False,
    )
    if installed.returncode != 0:
        raise ConfigurationError(f"could not install {LANGGRAPH_CLI}; see pip's message above")


def free_port(preferred: int) -> int:
    """`preferred` if nothing listens there, else any free port."""
    for candidate in (preferred, 0):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            port: int = probe.getsockname()[1]
            return port
    raise ConfigurationError("no free port on 127.0.0.1")
