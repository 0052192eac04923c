"""`engram token`: a bearer token for the Engram server, minted from ENGRAM_AUTH_SECRET (for
local use and scripts; an app's backend mints its own, see docs/deploying.md)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from engram.apps.cli.common import agent_option, app, err, out
from engram.settings import get_settings
from engram.state.errors import ConfigurationError, InvalidInputError

_TTL = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_TTL = timedelta(days=365)


def parse_ttl(text: str) -> timedelta:
    """`90s`, `15m`, `1h`, `30d` or plain seconds; positive and at most a year."""
    match = _TTL.match(text.lower())
    if match is None:
        raise InvalidInputError(f"--ttl {text!r} is not a duration like 90s, 15m, 1h or 7d")
    ttl = timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    if not timedelta(0) < ttl <= MAX_TTL:
        raise InvalidInputError(f"--ttl must be between 1 second and {MAX_TTL.days} days")
    return ttl


@app.command()
def token(
    user: Annotated[str, typer.Option("--user", "-u", help="The user id (the token's sub).")],
    ttl: Annotated[str, typer.Option(help="Lifetime: 90s, 15m, 1h, 7d.")] = "1h",
    agents: Annotated[
        list[str] | None,
        typer.Option(
            "--agent",
            help="An agent the token may act as (repeat for more; '*': any). None: the "
            "shared memories only.",
        ),
    ] = None,
) -> None:
    """Print a token for USER that this installation's server accepts
    (Authorization: Bearer <token>)."""
    from engram.apps.server.tokens import ANY_AGENT, AuthNotConfiguredError, mint_token

    lifetime = parse_ttl(ttl)
    allowed = [
        ANY_AGENT if agent.strip() == ANY_AGENT else agent_option(agent) for agent in agents or []
    ]
    try:
        minted = mint_token(get_settings(), user, lifetime, agents=allowed)
    except AuthNotConfiguredError as error:
        raise ConfigurationError(str(error)) from None
    except ValueError as error:
        raise InvalidInputError(str(error)) from None
    out.print(minted)
    expires = datetime.now(UTC) + lifetime
    acting = ""
    if allowed:
        acting = " as any agent" if ANY_AGENT in allowed else " as agent " + ", ".join(allowed)
    err.print(f"token for {user.strip()}{acting}, valid until {expires:%Y-%m-%d %H:%M:%S} UTC")
