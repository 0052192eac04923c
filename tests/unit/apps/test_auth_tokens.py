"""Token verification and minting (`engram.apps.server.tokens`), in-process: every refusal has its
one-line reason, identity-provider keys come from a real JWKS endpoint on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import jwt
import pytest

from engram.apps.server.tokens import (
    AuthNotConfiguredError,
    TokenError,
    TokenVerifier,
    mint_token,
)
from engram.settings import Settings
from tests.servers import SECRET, JwksServer, token


@pytest.fixture(scope="module")
def jwks() -> Iterator[JwksServer]:
    with JwksServer() as keys:
        yield keys


def verifier(**settings: Any) -> TokenVerifier:
    settings.setdefault("auth_secret", SECRET)
    return TokenVerifier.from_settings(Settings(**settings))


async def user_of(verify: TokenVerifier, raw: str) -> str:
    return await verify.user_id(f"Bearer {raw}")


async def refusal(verify: TokenVerifier, authorization: str | None) -> str:
    with pytest.raises(TokenError) as error:
        await verify.user_id(authorization)
    reason = str(error.value)
    assert "\n" not in reason
    return reason


async def test_a_valid_hs256_token_names_its_user() -> None:
    assert await user_of(verifier(), token("alice")) == "alice"
    assert await verifier().user_id(f"bearer   {token('bob')}  ") == "bob"  # case, spaces


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        (None, "missing token: send Authorization: Bearer <token>"),
        ("", "missing token"),
        ("Basic dXNlcjpwdw==", "malformed Authorization header"),
        ("Bearer ", "malformed Authorization header"),
        ("Bearer abc.def", "malformed token"),
        (f"Bearer {token('a', ttl=timedelta(minutes=-2))}", "token expired; get a new one"),
        (f"Bearer {token('a', secret='x' * 40)}", "token signature does not verify"),
        (f"Bearer {token('a', algorithm='HS512')}", "tokens signed with 'HS512' are not"),
        (f"Bearer {jwt.encode({'sub': 'a'}, SECRET, 'HS256')}", "token has no 'exp' claim"),
        (f"Bearer {token('a', nbf=4102444800)}", "token is not valid yet"),
        (f"Bearer {token('a', aud='api://other')}", "token audience is wrong; expected none"),
        (f"Bearer {token('  ')}", "the token's subject is not a valid user id"),
        (f"Bearer {token('a' * 300)}", "the token's subject is not a valid user id"),
        ("Bearer " + token("tab\there"), "must not contain control characters"),
        (f"Bearer {token('bob ')}", "the token's subject has leading or trailing spaces"),
        ("Bearer " + token("\u00a0bob"), "the token's subject has leading or trailing spaces"),
    ],
)
async def test_refusals_say_why(authorization: str | None, reason: str) -> None:
    assert reason in await refusal(verifier(), authorization)


async def test_a_token_without_sub_is_refused() -> None:
    raw = jwt.encode({"exp": 4102444800}, SECRET, "HS256")
    assert await refusal(verifier(), f"Bearer {raw}") == "token has no 'sub' claim"


async def test_audience_and_issuer_are_checked_when_set() -> None:
    strict = verifier(auth_audience="engram", auth_issuer="https://auth.example")
    good = token("carol", aud="engram", iss="https://auth.example")
    assert await user_of(strict, good) == "carol"
    wrong_aud = token("carol", aud="other", iss="https://auth.example")
    assert "expected 'engram' (ENGRAM_AUTH_AUDIENCE)" in await refusal(
        strict, f"Bearer {wrong_aud}"
    )
    wrong_iss = token("carol", aud="engram", iss="https://evil.example")
    assert "expected 'https://auth.example'" in await refusal(strict, f"Bearer {wrong_iss}")
    assert "token has no 'iss' claim" in await refusal(strict, f"Bearer {token('carol')}")
    audience_only = verifier(auth_audience="engram")
    assert "token has no 'aud' claim" in await refusal(audience_only, f"Bearer {token('carol')}")


async def test_identity_provider_tokens_verify_against_the_jwks(jwks: JwksServer) -> None:
    provider = verifier(auth_secret=None, auth_jwks_url=jwks.url)
    assert await user_of(provider, jwks.rs256("dave")) == "dave"
    assert await user_of(provider, jwks.es256("erin")) == "erin"
    # A key the provider did not publish, a kid it does not know, an HS256 token (no secret
    # here), and an RS256 token whose header claims HS256 with the public key as secret.
    stranger = JwksServer()
    assert "signature does not verify" in await refusal(
        provider, f"Bearer {stranger.rs256('dave')}"
    )
    unknown_kid = token("dave", algorithm="RS256", key=jwks.rsa_key, kid="nope")
    assert "no signing key for this token" in await refusal(provider, f"Bearer {unknown_kid}")
    assert "are not accepted; this server accepts RS256 or ES256" in await refusal(
        provider, f"Bearer {token('dave')}"
    )
    # A header naming RS256 with the kid of the EC key (and the reverse): 401, not a 500.
    for algorithm, kid, key in (("RS256", "ec-1", jwks.rsa_key), ("ES256", "rsa-1", jwks.ec_key)):
        mixed = token("dave", algorithm=algorithm, key=key, kid=kid)
        assert f"the token's algorithm {algorithm!r} does not match its signing key" in (
            await refusal(provider, f"Bearer {mixed}")
        )


async def test_both_kinds_can_be_accepted_at_once(jwks: JwksServer) -> None:
    both = verifier(auth_jwks_url=jwks.url)
    assert await user_of(both, token("frank")) == "frank"
    assert await user_of(both, jwks.rs256("frank")) == "frank"


async def test_an_unreachable_jwks_is_a_clear_refusal(jwks: JwksServer) -> None:
    gone = verifier(auth_secret=None, auth_jwks_url="http://127.0.0.1:9/.well-known/jwks.json")
    reason = await refusal(gone, f"Bearer {jwks.rs256('dave')}")
    assert reason.startswith("could not fetch signing keys from ENGRAM_AUTH_JWKS_URL")


def test_a_server_without_a_secret_or_jwks_is_not_configured() -> None:
    with pytest.raises(AuthNotConfiguredError, match=r"set ENGRAM_AUTH_SECRET .* or "):
        TokenVerifier.from_settings(Settings())
    with pytest.raises(AuthNotConfiguredError, match="ENGRAM_AUTH_SECRET is 5 characters"):
        TokenVerifier.from_settings(Settings(auth_secret="short"))


async def test_minted_tokens_verify_with_the_same_settings() -> None:
    settings = Settings(auth_secret=SECRET, auth_audience="engram", auth_issuer="me")
    minted = mint_token(settings, "grace", timedelta(minutes=5))
    claims = jwt.decode(minted, SECRET, algorithms=["HS256"], audience="engram", issuer="me")
    assert claims["sub"] == "grace" and claims["exp"] - claims["iat"] == 300
    assert await TokenVerifier.from_settings(settings).user_id(f"Bearer {minted}") == "grace"
    with pytest.raises(AuthNotConfiguredError, match="needs ENGRAM_AUTH_SECRET"):
        mint_token(Settings(), "grace", timedelta(minutes=5))
    with pytest.raises(ValueError, match="must be positive"):
        mint_token(settings, "grace", timedelta(0))
    with pytest.raises(ValueError, match="user_id must not be blank"):
        mint_token(settings, " ", timedelta(minutes=5))
