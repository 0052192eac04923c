"""Bearer tokens for the Engram server: verified with PyJWT, `sub` is the user id.

Two kinds are accepted, each only with its own algorithms (so a public key can never be
used as an HMAC secret): HS256 signed with ENGRAM_AUTH_SECRET (your app's backend or
`engram token` mints them), and RS256/ES256 signed by an identity provider whose keys are
published at ENGRAM_AUTH_JWKS_URL (Auth0, Clerk, Supabase, Cognito). `exp` and `sub` are
required; `aud` and `iss` are checked when ENGRAM_AUTH_AUDIENCE / ENGRAM_AUTH_ISSUER are
set. Every refusal is one line that says what is wrong.

Which agents a caller may act as is the token's word too, never the request's: the
`agents` claim (ENGRAM_AUTH_AGENTS_CLAIM names another) lists agent ids, `*` for any. A
token without it acts for no agent (the user's shared memories only).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from engram.settings import Settings
from engram.state.context import validate_agent_id, validate_user_id

SECRET_ALGORITHMS = ("HS256",)
JWKS_ALGORITHMS = ("RS256", "ES256")
MIN_SECRET_CHARS = 32  # HS256 with a shorter secret can be brute-forced
LEEWAY_SECONDS = 30  # clock skew between the token's issuer and this server
JWKS_TIMEOUT_SECONDS = 10.0


class TokenError(Exception):
    """The request's token is missing or not acceptable (HTTP 401); the message is the
    one-line reason."""


class AuthNotConfiguredError(TokenError):
    """The server has no way to verify tokens, so it refuses every request."""


ANY_AGENT = "*"  # in a token's agents claim: every agent of the user


@dataclass(frozen=True)
class Caller:
    """Who a verified token speaks for: the user (`sub`) and the agents it may act as."""

    user_id: str
    agents: frozenset[str] = frozenset()


@dataclass(frozen=True)
class TokenVerifier:
    """What a server accepts, built once from the settings."""

    secret: bytes | None
    jwks: jwt.PyJWKClient | None
    audience: str | None
    issuer: str | None
    agents_claim: str = "agents"

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVerifier:
        """Raises `AuthNotConfiguredError` when neither a secret nor a JWKS URL is set, or
        the secret is too short: such a server must refuse everything (fail closed)."""
        secret = secret_bytes(settings)
        if secret is None and settings.auth_jwks_url is None:
            raise AuthNotConfiguredError(
                "this server has no token verification configured and refuses every "
                "request: set ENGRAM_AUTH_SECRET (HS256, at least 32 characters) or "
                "ENGRAM_AUTH_JWKS_URL (your identity provider's JWKS) and restart it"
            )
        jwks = (
            jwt.PyJWKClient(settings.auth_jwks_url, timeout=JWKS_TIMEOUT_SECONDS)
            if settings.auth_jwks_url
            else None
        )
        return cls(
            secret,
            jwks,
            settings.auth_audience,
            settings.auth_issuer,
            settings.auth_agents_claim,
        )

    @property
    def accepted(self) -> str:
        kinds = []
        if self.secret is not None:
            kinds.append("HS256 (ENGRAM_AUTH_SECRET)")
        if self.jwks is not None:
            kinds.append("RS256 or ES256 (ENGRAM_AUTH_JWKS_URL)")
        return " or ".join(kinds)

    async def user_id(self, authorization: str | None) -> str:
        """The user id (`sub`) of a valid `Authorization: Bearer <JWT>` header, or a
        `TokenError`."""
        return (await self.caller(authorization)).user_id

    async def caller(self, authorization: str | None) -> Caller:
        """The user and agents of a valid `Authorization: Bearer <JWT>` header, or a
        `TokenError`. Fetching JWKS keys happens off the event loop."""
        token = bearer_token(authorization)
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.DecodeError as error:
            raise TokenError(f"malformed token: {_one_line(error)}") from None
        key: Any
        if algorithm in SECRET_ALGORITHMS and self.secret is not None:
            key = self.secret
        elif algorithm in JWKS_ALGORITHMS and self.jwks is not None:
            key = await self._jwks_key(token)
        else:
            raise TokenError(
                f"tokens signed with {algorithm!r} are not accepted; this server accepts "
                f"{self.accepted}"
            )
        claims = self._decode(token, key, algorithm)
        subject = str(claims["sub"])
        if subject.strip() and subject != subject.strip():
            # Ids are compared exactly: "bob " must not quietly become bob.
            raise TokenError("the token's subject has leading or trailing spaces")
        try:
            user_id = validate_user_id(subject)
        except ValueError as error:
            raise TokenError(f"the token's subject is not a valid user id: {error}") from None
        return Caller(user_id, self._agents(claims.get(self.agents_claim)))

    def _agents(self, claim: Any) -> frozenset[str]:
        """The agents claim: a list of agent ids (or one string of them, separated by
        spaces or commas, as some identity providers write scopes); `*` is any agent."""
        if claim is None:
            return frozenset()
        if isinstance(claim, str):
            claim = claim.replace(",", " ").split()
        if not isinstance(claim, list) or not all(isinstance(a, str) for a in claim):
            raise TokenError(f"the token's {self.agents_claim!r} claim must list agent ids")
        agents: set[str] = set()
        for agent in claim:
            if agent == ANY_AGENT:
                agents.add(agent)
                continue
            try:
                agents.add(validate_agent_id(agent))
            except ValueError as error:
                raise TokenError(f"the token's {self.agents_claim!r} claim: {error}") from None
        return frozenset(agents)

    async def _jwks_key(self, token: str) -> Any:
        assert self.jwks is not None
        try:
            signing_key = await asyncio.to_thread(self.jwks.get_signing_key_from_jwt, token)
        except jwt.PyJWKClientConnectionError as error:
            raise TokenError(
                f"could not fetch signing keys from ENGRAM_AUTH_JWKS_URL: {_one_line(error)}"
            ) from None
        except (jwt.PyJWKClientError, jwt.DecodeError) as error:
            raise TokenError(f"no signing key for this token: {_one_line(error)}") from None
        return signing_key.key

    def _decode(self, token: str, key: Any, algorithm: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("token expired; get a new one") from None
        except jwt.InvalidSignatureError:
            raise TokenError("token signature does not verify (wrong secret or key)") from None
        except jwt.MissingRequiredClaimError as error:
            raise TokenError(f"token has no {error.claim!r} claim") from None
        except jwt.InvalidAudienceError:
            expected = (
                f"{self.audience!r} (ENGRAM_AUTH_AUDIENCE)"
                if self.audience
                else "none (set ENGRAM_AUTH_AUDIENCE to accept tokens with an audience)"
            )
            raise TokenError(f"token audience is wrong; expected {expected}") from None
        except jwt.InvalidIssuerError:
            raise TokenError(
                f"token issuer is wrong; expected {self.issuer!r} (ENGRAM_AUTH_ISSUER)"
            ) from None
        except jwt.ImmatureSignatureError:
            raise TokenError("token is not valid yet (nbf or iat in the future)") from None
        except jwt.DecodeError as error:
            raise TokenError(f"malformed token: {_one_line(error)}") from None
        except jwt.InvalidTokenError as error:
            raise TokenError(f"invalid token: {_one_line(error)}") from None
        except (jwt.InvalidKeyError, TypeError, ValueError):
            # PyJWT raises these when the header's algorithm does not fit the key found
            # for its kid (RS256 against an EC key): a forged header, never a 500.
            raise TokenError(
                f"the token's algorithm {algorithm!r} does not match its signing key"
            ) from None
        return claims


def bearer_token(authorization: str | None) -> str:
    if authorization is None or not authorization.strip():
        raise TokenError("missing token: send Authorization: Bearer <token>")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenError("malformed Authorization header: expected 'Bearer <token>'")
    return token.strip()


def secret_bytes(settings: Settings) -> bytes | None:
    """The HS256 secret, or None; a secret too short to be safe is a configuration error."""
    if settings.auth_secret is None:
        return None
    secret = settings.auth_secret.get_secret_value().strip()
    if not secret:
        return None
    if len(secret) < MIN_SECRET_CHARS:
        raise AuthNotConfiguredError(
            f"ENGRAM_AUTH_SECRET is {len(secret)} characters; use at least "
            f"{MIN_SECRET_CHARS} (for example: openssl rand -hex 32)"
        )
    return secret.encode()


def mint_token(settings: Settings, user_id: str, ttl: timedelta, agents: Sequence[str] = ()) -> str:
    """An HS256 token for `user_id`, valid for `ttl`, that this server's settings accept
    (with ENGRAM_AUTH_AUDIENCE / ENGRAM_AUTH_ISSUER when set), allowed to act as `agents`
    (`*`: any)."""
    secret = secret_bytes(settings)
    if secret is None:
        raise AuthNotConfiguredError(
            "minting a token needs ENGRAM_AUTH_SECRET (the server's HS256 secret); tokens "
            "for ENGRAM_AUTH_JWKS_URL come from your identity provider"
        )
    if ttl <= timedelta(0):
        raise ValueError("the token lifetime must be positive")
    now = datetime.now(UTC)
    claims: dict[str, Any] = {"sub": validate_user_id(user_id), "iat": now, "exp": now + ttl}
    if settings.auth_audience:
        claims["aud"] = settings.auth_audience
    if settings.auth_issuer:
        claims["iss"] = settings.auth_issuer
    if agents:
        claims[settings.auth_agents_claim] = [
            agent if agent == ANY_AGENT else validate_agent_id(agent) for agent in agents
        ]
    return jwt.encode(claims, secret, algorithm="HS256")


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:200] or type(error).__name__
