"""The `engram` command: chat with memory, and inspect and manage what is remembered."""

from __future__ import annotations

from pydantic import ValidationError

# They register their commands; `memories` and `profile` load when used (common.LazyGroup), so
# `engram --help` and `engram chat` start without the graph and its clients.
from engram.apps.cli import chat, data, dev, eval, server  # noqa: F401
from engram.apps.cli.common import app, err
from engram.state.errors import EngramError

__all__ = ["app", "main"]


def main() -> None:
    """Entry point: Engram's own errors become one line on stderr and exit code 1."""
    try:
        app()
    except EngramError as error:
        err.print(f"error: {error}")
        raise SystemExit(1) from None
    except ValidationError as error:  # a bad ENGRAM_* / OPENAI_* value
        problem = error.errors()[0]
        name = ".".join(str(p) for p in problem["loc"])
        err.print(f"error: invalid setting {name}: {problem['msg']}")
        raise SystemExit(1) from None
