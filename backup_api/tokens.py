"""Bearer tokens: minting them, verifying them (and remembering the verified), what they may do, and the
partners they own. The keys that sign and verify them are in keys.py.
"""

import base64
import math
import re
import threading
import time
from datetime import timedelta

import jwt
from flask import Flask, current_app, request
from flask_jwt_extended import JWTManager, create_access_token, decode_token
from flask_jwt_extended.exceptions import JWTExtendedException
from werkzeug.exceptions import Forbidden, Unauthorized

from backup_api import ratelimit, record, revocations, schemas
from backup_api.jsontext import BodyError, RepeatedKey, parse_json
from backup_api.keys import key_id, secret_key, verifying_key

# What a token may do, claim `scope` (space-separated, as OAuth 2.0 writes it). A token without
# the claim may do the first four, as every token could before scopes; erasing a player only a
# token whose claim names it.
SCOPES = ("events:write", "events:read", "vip:write", "vip:read", "players:erase")
DEFAULT_SCOPES = SCOPES[:4]
# The latest time a token's exp, nbf or iat may name: the end of the year 9999, in seconds since the epoch.
LATEST_TIME = 253_402_300_799
# The longest namespace a stand-in token's `ns` claim may name (the durable service ignores the claim).
MAX_NAMESPACE_CHARS = 200
# A stand-in token's claim marking the test's own helpers (the fixture's reads), not the code under test:
# their requests are neither journaled, nor met by faults, nor counted by the limit. Ignored elsewhere.
HELPER_CLAIM = "stand_in_helper"


def is_helper(claims: dict) -> bool:
    """Whether claims are a stand-in's test helper's (HELPER_CLAIM), not the code under test's."""
    return bool(current_app.config["STAND_IN"]) and claims.get(HELPER_CLAIM) is True


def issue(partners: list[str], days: int = 90, sub: str | None = None, scopes: list[str] | None = None,
          ns: str | None = None) -> str:
    """Mint a token owning partners, held by sub (default: the first partner), valid for days; needs an app context.

    scopes: what it may do (a subset of SCOPES); None, DEFAULT_SCOPES (no `scope` claim). ns: a stand-in's
    namespace (the `ns` claim).
    """
    claims: dict[str, object] = {"partners": list(partners)}
    if ns is not None:
        claims["ns"] = ns
    if scopes is not None:
        claims["scope"] = scope_claim(scopes)
    return create_access_token(identity=sub or partners[0], expires_delta=timedelta(days=days),
                               additional_claims=claims, additional_headers={"kid": key_id(secret_key())})


def scope_claim(scopes: list[str]) -> str:
    """The `scope` claim of a token that may do scopes; ValueError when one is unknown, or none is given."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise ValueError(f"a scope is one of {', '.join(SCOPES)}, not {', '.join(unknown) or 'nothing'}")
    return " ".join(scope for scope in SCOPES if scope in scopes)


class InsufficientScope(Forbidden):
    """403: the token may not do what this route does (RFC 6750's insufficient_scope)."""

    def __init__(self, scope: str):
        super().__init__(f"this token's scope does not include {scope!r}, which this route needs")
        self.scope = scope

    def get_headers(self, environ=None, scope=None):
        return [*super().get_headers(environ, scope),
                ("WWW-Authenticate", f'Bearer error="insufficient_scope", scope="{self.scope}"')]


def granted_scopes(claims: dict) -> set[str]:
    """The scopes a token holds: those its `scope` claim names (unknown names ignored), or all without one."""
    if "scope" not in claims:
        return set(DEFAULT_SCOPES)
    return set(claims["scope"].split()) & set(SCOPES)



def _claims_problem(claims: dict) -> str | None:
    """Say what is wrong with a token's claims (its signature verified), or None when they are acceptable."""
    if "exp" not in claims:
        return "the token needs a numeric 'exp' claim"
    for name in ("exp", "nbf", "iat"):
        value = claims.get(name, 0)
        # Compared, never converted: an integer of any size, or a float, is judged exactly. An exp
        # too far ahead is told by the lifetime's check below.
        highest = math.inf if name == "exp" else LATEST_TIME
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= highest:
            return (f"the token's '{name}' claim must be a time in seconds since the epoch, from 0 to"
                    f" {LATEST_TIME} (the end of the year 9999)")
    most = int(current_app.config["MAX_TOKEN_DAYS"])
    if claims["exp"] > time.time() + most * 86400:
        return (f"the token's exp lies more than {most} days ahead (BACKUP_API_MAX_TOKEN_DAYS): mint one that"
                " expires sooner")
    # Recorded with what the holder writes: the rule an import line's holder meets too.
    if not schemas.is_holder(claims.get("sub")):
        return "the token needs a non-empty string 'sub' claim, without control characters"
    if "scope" in claims and not isinstance(claims["scope"], str):
        return "the 'scope' claim must be a string of space-separated scopes"
    partners = claims.get("partners")
    if "partners" in claims and not (
        isinstance(partners, list) and all(isinstance(p, str) and p for p in partners)
    ):
        return "the 'partners' claim must be an array of partner_id strings"
    if current_app.config["STAND_IN"] and "ns" in claims and not is_namespace(claims["ns"]):
        return (f"the stand-in's 'ns' claim must be a non-empty string of at most {MAX_NAMESPACE_CHARS} characters,"
                " without control characters")
    return None


def is_namespace(value) -> bool:
    """Tell whether value may name a stand-in's namespace: 1 to MAX_NAMESPACE_CHARS characters, no control ones."""
    return (isinstance(value, str) and 0 < len(value) <= MAX_NAMESPACE_CHARS
            and schemas.NO_CONTROL_CHARACTERS.search(value) is None)


# The Authorization header's one reading: `Bearer`, in any case (RFC 7235), spaces or tabs, then the
# token, which holds no whitespace and no comma (a second credential after a comma is refused).
_BEARER = re.compile(r"[ \t]*bearer[ \t]+([^\s,]+)[ \t]*", re.IGNORECASE)


def bearer_token(authorization: str | None) -> str:
    """The token of an Authorization header, read the one way every check of it reads it; else TokenRefused."""
    match = _BEARER.fullmatch(authorization or "")
    if match is None:
        raise TokenRefused("missing or malformed bearer token: send 'Authorization: Bearer <token>'")
    return match[1]


def _unverified_problem(token: str) -> str | None:
    """Say what is wrong with a token's header or payload as JSON, read strictly, before its signature is checked.

    PyJWT keeps the last of a key named twice and reads NaN and Infinity, which are not JSON; the
    strict reader refuses both, as it does in a body. A token not of three parts, or a part that is not
    base64, is left to the decode, which says so.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    for part, name in zip(parts[:2], ("header", "payload"), strict=True):
        try:
            text = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        except ValueError:
            return None
        try:
            parse_json(text)
        except RepeatedKey as exc:
            return f"the token's {name} names the key {exc.key!r} twice"
        except BodyError as exc:
            return f"the token's {name} is not acceptable JSON: {exc}"
    return None


def owned_partners(claims: dict) -> set[str]:
    """Return the partner_ids the token's holder owns."""
    if "partners" in claims:
        return set(claims["partners"])
    return {claims["sub"]}


class TokenRefused(Unauthorized):
    """401 with a Bearer challenge, saying why; claims, of a token whose signature verified, name it in the log."""

    def __init__(self, message: str, claims: dict | None = None):
        super().__init__(message)
        if claims is not None:
            _note_holder(claims)

    def get_headers(self, environ=None, scope=None):
        return [*super().get_headers(environ, scope), ("WWW-Authenticate", 'Bearer realm="backup-api"')]


def _time_claims_hold(claims: dict, now: float) -> bool:
    """Tell whether exp, nbf and iat still hold at now, judged as PyJWT judges them."""
    return (
        int(claims["exp"]) > now
        and ("nbf" not in claims or int(claims["nbf"]) <= now)
        and ("iat" not in claims or int(claims["iat"]) <= now)
    )


class _VerifiedTokens:
    """The claims of tokens already verified, so that a partner's token is checked once, not per request.

    A partner sends the same token with every request: the strict read of its JSON, the decode
    (flask-jwt-extended's decode_token reads it unverified for its key, then verified) and the
    claims' checks are done once; its claims are kept, keyed by the whole Authorization header (so
    the token's signature too), and only its time claims and the revocations are checked again. A
    token whose time is up, or revoked since, is no longer found, so it goes through the full check
    and fails exactly as a new one would.
    """

    MAX_TOKENS = 1024

    def __init__(self, revoked: revocations.Revocations):
        self._claims: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._revoked = revoked

    def find(self, authorization: str | None) -> dict | None:
        """Return the claims of the token in an Authorization header, if it was verified, is in time and not revoked."""
        claims = None if authorization is None else self._claims.get(authorization)
        if claims is None or not _time_claims_hold(claims, time.time()) or self._revoked.revoked(claims):
            return None
        return claims

    def revoked(self, claims: dict) -> bool:
        """Tell whether a token of these claims is revoked."""
        return self._revoked.revoked(claims)

    def remember(self, authorization: str, claims: dict) -> None:
        """Keep the claims of a token just verified (the oldest is dropped past MAX_TOKENS)."""
        with self._lock:
            if len(self._claims) >= self.MAX_TOKENS:
                del self._claims[next(iter(self._claims))]
            self._claims[authorization] = claims


def init_app(app: Flask) -> None:
    """Set up flask-jwt-extended's keys (it mints and decodes tokens), the revocations and the verified tokens."""
    jwt_manager = JWTManager(app)
    # The secret is read when first needed (from the settings or its file), not when the app is made.
    jwt_manager.encode_key_loader(lambda identity: secret_key())
    jwt_manager.decode_key_loader(verifying_key)
    app.extensions["verified_tokens"] = _VerifiedTokens(revocations.init_app(app))


def authenticate(scope: str | None = None) -> dict:
    """Verify the bearer token and return its claims; with scope, refuse (403) a token whose scopes lack it."""
    app, req = record.this_app(), record.this_request()
    authorization = req.headers.get("Authorization")
    verified = app.extensions["verified_tokens"]
    claims = verified.find(authorization)
    if claims is None:
        try:
            claims = _verify(authorization)
        except TokenRefused:
            ratelimit.count_address()  # guessing tokens is limited by address
            raise
        verified.remember(authorization, claims)
    seen = record.current()
    seen.claims, seen.sub, seen.jti = claims, claims["sub"], claims.get("jti")
    if not app.config["STAND_IN"]:
        ratelimit.count_holder(claims["sub"])
    elif req.blueprint != "stand_in" and not is_helper(claims):
        # A stand-in counts each namespace's holders apart, and never its own routes or a test's helpers.
        ratelimit.count_holder(f"{claims.get('ns') or ''}\x1f{claims['sub']}")
    if scope is not None and scope not in granted_scopes(claims):
        raise InsufficientScope(scope)
    return claims


def verified_claims() -> dict | None:
    """The claims of the request's token when it verifies, else None: raising nothing, counting nothing (the
    stand-in's journal of a request no route took)."""
    authorization = request.headers.get("Authorization")
    claims = current_app.extensions["verified_tokens"].find(authorization)
    if claims is None:
        try:
            claims = _verify(authorization)
        except TokenRefused:
            return None
    return claims


def _verify(authorization: str | None) -> dict:
    """Read the token of the header, decode it once (flask-jwt-extended's decode_token) and check its claims."""
    token = record.current().token = bearer_token(authorization)
    problem = _unverified_problem(token)
    if problem:
        raise TokenRefused(problem)
    try:
        claims = decode_token(token)
    except jwt.ExpiredSignatureError as exc:
        raise TokenRefused("the token has expired", getattr(exc, "jwt_data", None)) from None
    except (jwt.PyJWTError, JWTExtendedException) as exc:
        raise TokenRefused(f"invalid token: {exc}") from None
    problem = _claims_problem(claims)
    if problem:
        raise TokenRefused(problem, claims)
    if current_app.extensions["verified_tokens"].revoked(claims):
        raise TokenRefused("the token has been revoked", claims)
    return claims


def _note_holder(claims: dict) -> None:
    """Keep a refused token's sub and jti for the access line, where they are strings."""
    seen = record.current()
    for name in ("sub", "jti"):
        if isinstance(claims.get(name), str):
            setattr(seen, name, claims[name])


def authorise(claims: dict, partner_id: str) -> None:
    """Refuse with 403 a partner_id that the token does not own."""
    record.current().partners.add(partner_id)
    if partner_id not in owned_partners(claims):
        raise Forbidden(f"this token does not own partner {partner_id!r}")
