"""Bearer tokens: minting them, verifying them (and remembering the verified), what they may do, and the
partners they own. The keys that sign and verify them are in keys.py.
"""

import base64
import json
import math
import re
import threading
import time
from datetime import timedelta

from flask import Flask, current_app, g, request
from flask_jwt_extended import JWTManager, create_access_token, get_jwt, verify_jwt_in_request
from werkzeug.exceptions import Forbidden

from backup_api import ratelimit, revocations, schemas
from backup_api.errors import error_response
from backup_api.jsontext import RepeatedKey, no_duplicates
from backup_api.keys import key_id, raw_token, secret_key, verifying_key

# What a token may do, claim `scope` (space-separated, as OAuth 2.0 writes it). A token without
# the claim may do all four, as every token could before scopes.
SCOPES = ("events:write", "events:read", "vip:write", "vip:read")
# The latest time a token's exp, nbf or iat may name: the end of the year 9999, in seconds since the epoch.
LATEST_TIME = 253_402_300_799
# The longest namespace a stand-in token's `ns` claim may name (the durable service ignores the claim).
MAX_NAMESPACE_CHARS = 200


def issue(partners: list[str], days: int = 90, sub: str | None = None, scopes: list[str] | None = None,
          ns: str | None = None) -> str:
    """Mint a token owning partners, held by sub (default: the first partner), valid for days; needs an app context.

    scopes: what it may do (a subset of SCOPES); None, everything (no `scope` claim). ns: a stand-in's
    namespace (the `ns` claim).
    """
    claims = {"partners": list(partners)}
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
        return set(SCOPES)
    return set(claims["scope"].split()) & set(SCOPES)



def _claims_problem(claims: dict) -> str | None:
    """Say what is wrong with a token's claims, or None when they are acceptable."""
    repeated = _repeated_key()
    if repeated:
        return repeated
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
            and schemas.NO_CONTROL_CHARACTERS.regex.match(value) is not None)


def _repeated_key() -> str | None:
    """Say which key the token's header or payload names twice, if one does (the token already verified).

    PyJWT keeps the last of a repeated key; the strict reader's hook refuses it, as for a body.
    """
    parts = raw_token().split(".")
    if len(parts) != 3:
        return None
    for part, name in zip(parts[:2], ("header", "payload"), strict=True):
        try:
            json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)), object_pairs_hook=no_duplicates)
        except RepeatedKey as exc:
            return f"the token's {name} names the key {exc.key!r} twice"
        except ValueError:  # not base64 or not JSON: PyJWT has said so already
            continue
    return None


def owned_partners(claims: dict) -> set[str]:
    """Return the partner_ids the token's holder owns."""
    if "partners" in claims:
        return set(claims["partners"])
    return {claims["sub"]}


def _unauthorized(message: str, claims: dict | None = None):
    """Answer 401 with a Bearer challenge; claims, of a token whose signature verified, name it in the log."""
    if claims is not None:
        _note_holder(claims)
    response = error_response(401, message)
    response.headers["WWW-Authenticate"] = 'Bearer realm="backup-api"'
    return response


def _time_claims_hold(claims: dict, now: float) -> bool:
    """Tell whether exp, nbf and iat still hold at now, judged as PyJWT judges them."""
    return (
        int(claims["exp"]) > now
        and ("nbf" not in claims or int(claims["nbf"]) <= now)
        and ("iat" not in claims or int(claims["iat"]) <= now)
    )


class _VerifiedTokens:
    """The claims of tokens already verified, so that a partner's token is decoded once, not per request.

    flask-jwt-extended decodes every token twice per request (once unverified, once verified). A
    partner sends the same token with every request: its claims are kept, keyed by the whole
    Authorization header (so the token's signature too), and only its time claims and the
    revocations are checked again. A token whose time is up, or revoked since, is no longer
    found, so it goes through the full check and fails exactly as a new one would.
    """

    MAX_TOKENS = 1024

    def __init__(self, revoked: revocations.Revocations):
        self._claims: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._revoked = revoked

    def find(self, authorization: str | None) -> dict | None:
        """Return the claims of the token in an Authorization header, if it was verified, is in time and not revoked."""
        claims = self._claims.get(authorization)
        if claims is None or not _time_claims_hold(claims, time.time()) or self._revoked.revoked(claims):
            return None
        return claims

    def remember(self, authorization: str, claims: dict) -> None:
        """Keep the claims of a token just verified (the oldest is dropped past MAX_TOKENS)."""
        with self._lock:
            if len(self._claims) >= self.MAX_TOKENS:
                del self._claims[next(iter(self._claims))]
            self._claims[authorization] = claims


def init_app(app: Flask) -> None:
    """Set up flask-jwt-extended so that every token failure is our 401, not its 422."""
    jwt = JWTManager(app)
    # The secret is read when first needed (from the settings or its file), not when the app is made.
    jwt.encode_key_loader(lambda identity: secret_key())
    jwt.decode_key_loader(verifying_key)
    revoked = revocations.init_app(app)
    jwt.token_in_blocklist_loader(lambda header, claims: revoked.revoked(claims))
    app.extensions["verified_tokens"] = _VerifiedTokens(revoked)
    jwt.token_verification_loader(lambda header, claims: _claims_problem(claims) is None)
    jwt.token_verification_failed_loader(lambda header, claims: _unauthorized(_claims_problem(claims), claims))
    jwt.unauthorized_loader(lambda reason: _unauthorized(f"missing or malformed bearer token: {reason}"))
    jwt.invalid_token_loader(lambda reason: _unauthorized(f"invalid token: {reason}"))
    jwt.expired_token_loader(lambda header, claims: _unauthorized("the token has expired", claims))
    jwt.revoked_token_loader(lambda header, claims: _unauthorized("the token has been revoked", claims))
    jwt.needs_fresh_token_loader(lambda header, claims: _unauthorized("a fresh token is required", claims))
    jwt.user_lookup_error_loader(lambda header, claims: _unauthorized("unknown token holder", claims))


# "bearer" as the scheme of one of the header's comma-separated fields, in any case.
_BEARER_SCHEME = re.compile(r"((?:^|,)\s*)bearer(?=\s|,|$)", re.IGNORECASE)


def authenticate(scope: str | None = None) -> dict:
    """Verify the bearer token and return its claims; with scope, refuse (403) a token whose scopes lack it."""
    authorization = request.headers.get("Authorization")
    verified = current_app.extensions["verified_tokens"]
    claims = verified.find(authorization)
    if claims is None:
        if authorization:
            # The scheme is case-insensitive (RFC 7235); flask-jwt-extended matches "Bearer" exactly.
            request.environ["HTTP_AUTHORIZATION"] = _BEARER_SCHEME.sub(r"\1Bearer", authorization)
        try:
            # verify_type=False: tokens minted elsewhere carry no flask-jwt-extended "type" claim.
            verify_jwt_in_request(verify_type=False)
        except Exception:
            ratelimit.count_address()  # guessing tokens is limited by address
            raise
        claims = get_jwt()
        verified.remember(authorization, claims)
    g.claims = claims
    g.sub = claims["sub"]
    g.jti = claims.get("jti")
    ratelimit.count_holder(claims["sub"])
    if scope is not None and scope not in granted_scopes(claims):
        raise InsufficientScope(scope)
    return claims


def _note_holder(claims: dict) -> None:
    """Keep a refused token's sub and jti for the access line, where they are strings."""
    for name in ("sub", "jti"):
        if isinstance(claims.get(name), str):
            setattr(g, name, claims[name])


def authorise(claims: dict, partner_id: str) -> None:
    """Refuse with 403 a partner_id that the token does not own."""
    g.partners = g.get("partners", set()) | {partner_id}
    if partner_id not in owned_partners(claims):
        raise Forbidden(f"this token does not own partner {partner_id!r}")
