"""`engram token` in a fresh process, as a user runs it: the token it prints is one the
server's verifier accepts for that user, for the lifetime asked."""

from __future__ import annotations

from pathlib import Path

import jwt

from engram.apps.server.tokens import TokenVerifier
from engram.settings import Settings
from tests.helpers import engram_env, run_engram
from tests.servers import SECRET


async def test_engram_token_mints_what_the_server_accepts(tmp_path: Path) -> None:
    env = engram_env(tmp_path, ENGRAM_AUTH_SECRET=SECRET, ENGRAM_AUTH_AUDIENCE="engram")
    done = run_engram(env, "token", "--user", "alice", "--ttl", "15m")
    assert done.returncode == 0, done.stderr
    minted = done.stdout.strip()
    assert "\n" not in minted and "token for alice, valid until" in done.stderr
    claims = jwt.decode(minted, SECRET, algorithms=["HS256"], audience="engram")
    assert claims["sub"] == "alice" and claims["exp"] - claims["iat"] == 15 * 60
    verifier = TokenVerifier.from_settings(Settings(auth_secret=SECRET, auth_audience="engram"))
    assert await verifier.user_id(f"Bearer {minted}") == "alice"


def test_engram_token_says_what_is_missing_or_wrong(tmp_path: Path) -> None:
    no_secret = run_engram(engram_env(tmp_path), "token", "--user", "alice")
    assert no_secret.returncode == 1 and no_secret.stdout == ""
    assert "minting a token needs ENGRAM_AUTH_SECRET" in no_secret.stderr
    env = engram_env(tmp_path, ENGRAM_AUTH_SECRET=SECRET)
    for ttl, problem in (("soon", "not a duration"), ("0s", "between 1 second"), ("400d", "365")):
        done = run_engram(env, "token", "--user", "alice", "--ttl", ttl)
        assert done.returncode == 1 and problem in done.stderr, done.stderr
    blank = run_engram(env, "token", "--user", "  ")
    assert blank.returncode == 1 and "user_id must not be blank" in blank.stderr
    short = run_engram(engram_env(tmp_path, ENGRAM_AUTH_SECRET="short"), "token", "--user", "a")
    assert short.returncode == 1 and "use at least 32" in short.stderr
