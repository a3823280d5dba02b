"""The Game Backup API: app factory, routes, error handling and CLI commands."""

import base64
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import signal
import threading
import time
from datetime import timedelta

import click
import waitress
import waitress.channel
import waitress.task
from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from flask.cli import AppGroup, FlaskGroup
from flask.logging import default_handler
from flask_jwt_extended import JWTManager, create_access_token, get_jwt, verify_jwt_in_request
from marshmallow import ValidationError
from waitress import wasyncore
from werkzeug.exceptions import Forbidden, HTTPException, NotFound, UnsupportedMediaType

import openapi
import schemas
import storage

__version__ = "0.2.0"

MIN_SECRET_BYTES = 32
DEFAULT_DATABASE = os.path.join("instance", "backup.db")
SECRET_FILE = "jwt-secret"
MAX_BODY_BYTES = 1 << 20


class ConfigError(click.ClickException):
    """The service is configured in a way it cannot run with.

    A click exception, so that the flask command prints it as one line ("Error: ...") and exits
    with status 1, rather than a traceback.
    """


def create_app(test_config: dict | None = None) -> Flask:
    """Create and configure the service."""
    app = Flask(__name__, instance_relative_config=True)
    app.json.sort_keys = False  # answers read in the order written: "status" first
    app.config.from_mapping(
        # Under the working directory, not Flask's instance_path: that moves with where the code is
        # installed (and lies in a temporary folder for a frozen executable).
        DATABASE=DEFAULT_DATABASE,
        JWT_SECRET=None,
        SYNCHRONOUS="FULL",
        BUSY_TIMEOUT_MS=5000,
        PG_TIMEOUT_MS=5000,
        LOG_LEVEL="INFO",
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
    )
    if test_config is None:
        # loads=str: a secret such as "123..." must stay a string, not become a number.
        app.config.from_prefixed_env("BACKUP_API", loads=str)
    else:
        app.config.update(test_config)

    database = str(app.config["DATABASE"])
    on_server = storage.is_url(database)
    if on_server:
        # Every process, on every machine, must verify the tokens the others accept: one secret, set.
        if app.config["JWT_SECRET"] is None:
            raise ConfigError(
                "with a PostgreSQL database, set BACKUP_API_JWT_SECRET (the same on every server process), for"
                " instance to the output of: python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"
            )
        timeout_setting = "PG_TIMEOUT_MS"
    else:
        database = os.path.abspath(database)
        try:
            storage.make_private_folder(os.path.dirname(database))
        except OSError as exc:
            raise ConfigError(f"cannot create the folder of the database {database}: {exc}") from None
        timeout_setting = "BUSY_TIMEOUT_MS"
    app.config.update(
        JWT_SECRET_KEY=_jwt_secret(app.config["JWT_SECRET"], os.path.dirname(database)),
        JWT_ALGORITHM="HS256",
        JWT_DECODE_ALGORITHMS=["HS256"],
        JWT_TOKEN_LOCATION=["headers"],
    )
    timeout_ms = str(app.config[timeout_setting])
    if not timeout_ms.isdigit() or int(timeout_ms) == 0:
        raise ConfigError(
            f"BACKUP_API_{timeout_setting} must be a positive whole number of milliseconds, not {timeout_ms!r}"
        )
    try:
        app.extensions["store"] = storage.open_store(
            database, synchronous=str(app.config["SYNCHRONOUS"]), timeout_ms=int(timeout_ms)
        )
    except ValueError as exc:  # the synchronous setting
        raise ConfigError(f"BACKUP_API_SYNCHRONOUS: {exc}") from None
    except storage.StorageError as exc:
        raise ConfigError(str(exc)) from None
    app.extensions["openapi"] = openapi.document()
    app.extensions["cursor_key"] = hashlib.sha256(b"page cursors\0" + app.config["JWT_SECRET_KEY"].encode()).digest()

    _init_logging(app)
    if not on_server:
        _warn_of_loose_modes(app, database)
    _init_jwt(app)
    _register_error_handlers(app)
    app.register_blueprint(_routes())
    _register_cli(app)
    return app


def _jwt_secret(configured: str | None, folder: str) -> str:
    """Return the configured secret, or the one kept in folder, made on first start."""
    if configured is not None:
        where = "BACKUP_API_JWT_SECRET"
        secret = configured
    else:
        where = os.path.join(folder, SECRET_FILE)
        try:
            # O_EXCL: of two processes starting at once, exactly one writes the secret.
            fd = os.open(where, os.O_WRONLY | os.O_CREAT | os.O_EXCL, storage.PRIVATE_FILE)
        except FileExistsError:
            with open(where, encoding="utf-8") as f:
                secret = f.read().strip()
        else:
            secret = secrets.token_urlsafe(48)
            os.fchmod(fd, storage.PRIVATE_FILE)  # the umask may have taken bits off
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(secret + "\n")
    size = len(secret.encode("utf-8"))
    if size < MIN_SECRET_BYTES:
        raise ConfigError(
            f"the JWT secret in {where} is {size} bytes long; HS256 needs at least {MIN_SECRET_BYTES}"
            " random bytes to resist guessing. Set a longer one, or unset it to have one generated."
        )
    return secret


def _warn_of_loose_modes(app: Flask, database: str) -> None:
    """Log a warning for each existing data file that others may read; an operator's choice is not changed."""
    files = [database, database + "-wal", database + "-shm", os.path.join(os.path.dirname(database), SECRET_FILE)]
    for path, mode in storage.loose_modes(files):
        app.logger.warning("%s has mode %04o: users other than its owner can read or change it (chmod 600)", path, mode)


# Logging --------------------------------------------------------------------------------

# Event types an operator wants to notice: logged at WARNING when stored.
NOTICE_EVENT_TYPES = ("big_win", "complaint")


def _printable(text: str) -> str:
    """Escape control characters so that a client cannot forge log lines."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _init_logging(app: Flask) -> None:
    """Log one line per request on stderr, at the level BACKUP_API_LOG_LEVEL names."""
    level = str(app.config["LOG_LEVEL"]).upper()
    if level not in logging.getLevelNamesMapping():
        raise ConfigError(f"BACKUP_API_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {level!r}")
    app.logger.setLevel(level)
    # The access line needs none of these; skipping them (and the caller lookup, as the
    # logging HOWTO's section on optimisation suggests) makes each record cheaper.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None
    default_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))

    @app.before_request
    def start_clock():
        g.started = time.perf_counter()

    @app.after_request
    def access_log(response):
        elapsed_ms = (time.perf_counter() - g.get("started", time.perf_counter())) * 1000
        # Never the token, never the body: only who and what.
        app.logger.info(
            "%s %s %d %.1fms partner=%s sub=%s",
            request.method,
            _printable(request.path),
            response.status_code,
            elapsed_ms,
            _printable(",".join(sorted(g.get("partners", ()))) or "-"),
            _printable(g.get("sub", "-")),
        )
        return response


# Authentication -------------------------------------------------------------------------


def _claims_problem(claims: dict) -> str | None:
    """Say what is wrong with a token's claims, or None when they are acceptable."""
    for name in ("exp", "nbf", "iat"):
        value = claims.get(name)
        if (value is None and name == "exp") or (
            name in claims and (isinstance(value, bool) or not isinstance(value, (int, float)))
        ):
            return f"the token needs a numeric '{name}' claim"
    sub = claims.get("sub")
    # Recorded with what the holder writes: no control characters, as for every identifier (and
    # PostgreSQL's text holds no NUL).
    if not isinstance(sub, str) or not sub or not schemas.NO_CONTROL_CHARACTERS.regex.match(sub):
        return "the token needs a non-empty string 'sub' claim, without control characters"
    partners = claims.get("partners")
    if "partners" in claims and not (
        isinstance(partners, list) and all(isinstance(p, str) and p for p in partners)
    ):
        return "the 'partners' claim must be an array of partner_id strings"
    return None


def owned_partners(claims: dict) -> set[str]:
    """Return the partner_ids the token's holder owns."""
    if "partners" in claims:
        return set(claims["partners"])
    return {claims["sub"]}


def _unauthorized(message: str):
    """Answer 401 with a Bearer challenge."""
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
    Authorization header (so the token's signature too), and only its time claims are checked
    again. A token whose time is up is no longer found, so it goes through the full check and
    fails exactly as a new one would.
    """

    MAX_TOKENS = 1024

    def __init__(self):
        self._claims: dict[str, dict] = {}
        self._lock = threading.Lock()

    def find(self, authorization: str | None) -> dict | None:
        """Return the claims of the token in an Authorization header, if it was verified and is in time."""
        claims = self._claims.get(authorization)
        if claims is None or not _time_claims_hold(claims, time.time()):
            return None
        return claims

    def remember(self, authorization: str, claims: dict) -> None:
        """Keep the claims of a token just verified (the oldest is dropped past MAX_TOKENS)."""
        with self._lock:
            if len(self._claims) >= self.MAX_TOKENS:
                del self._claims[next(iter(self._claims))]
            self._claims[authorization] = claims


def _init_jwt(app: Flask) -> None:
    """Set up flask-jwt-extended so that every token failure is our 401, not its 422."""
    jwt = JWTManager(app)
    app.extensions["verified_tokens"] = _VerifiedTokens()
    jwt.token_verification_loader(lambda header, claims: _claims_problem(claims) is None)
    jwt.token_verification_failed_loader(lambda header, claims: _unauthorized(_claims_problem(claims)))
    jwt.unauthorized_loader(lambda reason: _unauthorized(f"missing or malformed bearer token: {reason}"))
    jwt.invalid_token_loader(lambda reason: _unauthorized(f"invalid token: {reason}"))
    jwt.expired_token_loader(lambda header, claims: _unauthorized("the token has expired"))
    jwt.revoked_token_loader(lambda header, claims: _unauthorized("the token has been revoked"))
    jwt.needs_fresh_token_loader(lambda header, claims: _unauthorized("a fresh token is required"))
    jwt.user_lookup_error_loader(lambda header, claims: _unauthorized("unknown token holder"))


# "bearer" as the scheme of one of the header's comma-separated fields, in any case.
_BEARER_SCHEME = re.compile(r"((?:^|,)\s*)bearer(?=\s|,|$)", re.IGNORECASE)


def authenticate() -> dict:
    """Verify the bearer token and return its claims."""
    authorization = request.headers.get("Authorization")
    verified = current_app.extensions["verified_tokens"]
    claims = verified.find(authorization)
    if claims is None:
        if authorization:
            # The scheme is case-insensitive (RFC 7235); flask-jwt-extended matches "Bearer" exactly.
            request.environ["HTTP_AUTHORIZATION"] = _BEARER_SCHEME.sub(r"\1Bearer", authorization)
        # verify_type=False: tokens minted elsewhere carry no flask-jwt-extended "type" claim.
        verify_jwt_in_request(verify_type=False)
        claims = get_jwt()
        verified.remember(authorization, claims)
    g.sub = claims["sub"]
    return claims


def authorise(claims: dict, partner_id: str) -> None:
    """Refuse with 403 a partner_id that the token does not own."""
    g.partners = g.get("partners", set()) | {partner_id}
    if partner_id not in owned_partners(claims):
        raise Forbidden(f"this token does not own partner {partner_id!r}")


def read_json():
    """Return the request body parsed strictly as JSON."""
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("the body must be JSON, sent as Content-Type: application/json")
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding != "identity":
        # Not decoded: a small compressed body could expand far past the 1 MiB limit.
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported; send the JSON uncompressed")
    return schemas.parse_json(request.get_data(cache=False))


# Routes ---------------------------------------------------------------------------------


def _routes():
    """Build the blueprint holding the two routes."""

    bp = Blueprint("api", __name__)

    @bp.post("/player-events")
    def post_player_events():
        """Store one player event, or a batch of them (a JSON array), all or nothing."""
        claims = authenticate()
        payload = read_json()
        batch = isinstance(payload, list)
        # Ownership first: a partner_id the token does not own is 403 whatever else is wrong.
        named = [item.get("partner_id") for item in (payload if batch else [payload]) if isinstance(item, dict)]
        for partner_id in sorted({p for p in named if isinstance(p, str) and p}):
            authorise(claims, partner_id)
        events = schemas.validate_batch(payload) if batch else [schemas.validate_event(payload)]
        new = store().add_events(events, claims["sub"])
        for event, is_new in zip(events, new, strict=True):
            if is_new and event["event_type"] in NOTICE_EVENT_TYPES:
                current_app.logger.warning(
                    "%s event: partner=%s player=%s", event["event_type"], event["partner_id"], event["player_login"]
                )
        if batch:
            accepted = sum(new)
            return {"status": "ok", "accepted": accepted, "duplicates": len(new) - accepted}
        return ok_response()

    @bp.get("/player-events")
    def list_player_events():
        """List a partner's stored events, oldest first, a page at a time."""
        claims = authenticate()
        # Ownership first: a partner_id the token does not own is 403 whatever else is wrong.
        for partner_id in sorted(set(request.args.getlist("partner_id"))):
            if partner_id:
                authorise(claims, partner_id)
        query = schemas.validate_event_query(request.args.to_dict(flat=False))
        limit = query.pop("limit")
        after = read_cursor(query.pop("after", None), query)
        events, next_after = store().read_events(after=after, limit=limit, **query)
        # The stored JSON text of each event is spliced in as it is: every digit as it was sent.
        cursor = "null" if next_after is None else f'"{make_cursor(next_after, query)}"'
        body = '{"events": [' + ", ".join(storage.format_event(*e) for e in events) + f'], "next": {cursor}}}'
        return Response(body, mimetype="application/json")

    @bp.get(f"/player-events/<int(max={schemas.MAX_ROW_ID}):event_row_id>")
    def get_player_event(event_row_id):
        """Return one stored event; 404 also when it belongs to a partner the token does not own."""
        claims = authenticate()
        found = store().get_event(event_row_id)
        if found is None or found[0] not in owned_partners(claims):
            raise NotFound(f"no stored event {event_row_id} among the partners this token owns")
        partner_id, received_at, event = found
        g.partners = {partner_id}
        return Response(storage.format_event(event_row_id, received_at, event), mimetype="application/json")

    @bp.get("/openapi.json")
    def openapi_document():
        """Serve the OpenAPI document (no token needed)."""
        return current_app.extensions["openapi"]

    @bp.get("/healthz")
    def healthz():
        """Answer 200 when the database answers a query (no token needed)."""
        store().ping()
        return {"status": "ok"}

    @bp.put("/users/<partner_id>/player/<player_login>/vip")
    def put_vip(partner_id, player_login):
        """Set or clear a player's VIP flag."""
        claims = authenticate()
        authorise(claims, partner_id)
        is_vip = schemas.validate_vip(read_json(), partner_id, player_login)
        store().set_vip(partner_id, player_login, is_vip, claims["sub"])
        return ok_response()

    @bp.get("/users/<partner_id>/player/<player_login>/vip")
    def get_vip(partner_id, player_login):
        """Return a player's VIP flag, when it was set and by whom (false and nulls if never set)."""
        claims = authenticate()
        authorise(claims, partner_id)
        schemas.validate_player_path(partner_id, player_login)
        is_vip, updated_at, updated_by = store().get_vip(partner_id, player_login) or (False, None, None)
        return {"is_vip": is_vip, "updated_at": updated_at, "updated_by": updated_by}

    return bp


# Page cursors: the id to go on after, bound to the query's filters by an HMAC, so that a client
# can neither forge one nor carry one over to another query.
_CURSOR = re.compile(r"[A-Za-z0-9_-]{32}")


def _cursor_mac(after: int, query: dict) -> bytes:
    """The MAC of a cursor: its id and the query's partner and filters, under the app's cursor key."""
    filters = json.dumps(sorted(query.items()), ensure_ascii=True).encode()
    message = after.to_bytes(8, "big") + filters
    return hmac.digest(current_app.extensions["cursor_key"], message, "sha256")[:16]


def make_cursor(after: int, query: dict) -> str:
    """Write the cursor of the page that follows the event with id after."""
    return base64.urlsafe_b64encode(after.to_bytes(8, "big") + _cursor_mac(after, query)).decode().rstrip("=")


def read_cursor(cursor: str | None, query: dict) -> int:
    """Return the id a cursor goes on after (0 for none); a cursor not made for this query is a 400."""
    if cursor is None:
        return 0
    if _CURSOR.fullmatch(cursor):
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        after = int.from_bytes(raw[:8], "big")
        if hmac.compare_digest(raw[8:], _cursor_mac(after, query)):
            return after
    raise ValidationError({"after": ["Not a cursor this service gave for this query (same partner and filters)."]})


def ok_response() -> Response:
    """Answer {"status": "ok"}: a constant body, written once rather than serialised per request."""
    return Response(_OK_BODY, mimetype="application/json")


_OK_BODY = b'{"status":"ok"}\n'


def store() -> storage.Store:
    """Return the app's store."""
    return current_app.extensions["store"]


# Errors ---------------------------------------------------------------------------------


def error_response(status: int, message: str, errors: dict | None = None):
    """Build the one error envelope every failure uses."""
    body = {"status": "error", "message": message}
    if errors is not None:
        body["errors"] = errors
    response = jsonify(body)
    response.status_code = status
    return response


def _register_error_handlers(app: Flask) -> None:
    """Answer every failure with the JSON error envelope."""

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        response = error_response(exc.code or 500, exc.description or exc.name)
        if exc.code == 405 and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(schemas.BodyError)
    def body_error(exc: schemas.BodyError):
        return error_response(400, f"invalid JSON body: {exc}")

    @app.errorhandler(ValidationError)
    def validation_error(exc: ValidationError):
        messages = exc.messages if isinstance(exc.messages, dict) else {"_body": exc.messages}
        return error_response(400, "the request failed validation: " + ", ".join(sorted(messages)), messages)

    @app.errorhandler(storage.EventConflict)
    def conflict(exc: storage.EventConflict):
        return error_response(409, str(exc))

    @app.errorhandler(storage.StorageError)
    def storage_error(exc: storage.StorageError):
        app.logger.error("storage failure: %s", exc)
        outcome = "nothing was stored, retry later" if request.method in ("POST", "PUT") else "retry later"
        return error_response(503, f"the backup store is unavailable; {outcome}")

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        app.logger.exception("unhandled error")
        return error_response(500, "internal error")


# Serving --------------------------------------------------------------------------------


class _JSONErrorTask(waitress.task.ErrorTask):
    """Answer waitress's own errors (413, malformed HTTP) in the JSON envelope too."""

    def execute(self):
        error = self.request.error
        body = json.dumps({"status": "error", "message": f"{error.reason}: {error.body}"}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class _JSONErrorChannel(waitress.channel.HTTPChannel):
    """An HTTP channel whose error responses are JSON."""

    error_task_class = _JSONErrorTask


# The waitress settings `serve` uses (the README's configuration section explains them).
WAITRESS = {
    "connection_limit": 1000,
    "channel_timeout": 30,
    "cleanup_interval": 10,
    "max_request_header_size": 64 * 1024,
    "max_request_body_size": 2 * MAX_BODY_BYTES,
}


# Worker threads. Requests waiting for a commit share the next one (and its fsync): eight let
# eight clients' writes share it, which took single events from about 2,000 to 2,300 a second
# on 2 cores (make bench; 16 did no better).
THREADS = 8


# How long a stop (SIGTERM, SIGINT) waits for the requests under way to be answered.
STOP_GRACE_SECONDS = 10


def serve(app: Flask, host: str = "127.0.0.1", port: int = 8000, threads: int = THREADS) -> None:
    """Serve app with waitress until SIGTERM or SIGINT, then stop cleanly."""
    server = waitress.create_server(
        app,
        host=host,
        port=port,
        threads=threads,
        # Idle and slow connections cost a socket, not a thread (waitress reads requests
        # whole before a thread sees them): allow many, and close the silent ones sooner
        # than waitress's default 120 s.
        connection_limit=WAITRESS["connection_limit"],
        channel_timeout=WAITRESS["channel_timeout"],
        cleanup_interval=WAITRESS["cleanup_interval"],
        max_request_header_size=WAITRESS["max_request_header_size"],
        # Above Flask's own 1 MiB limit, so that Flask answers 413 for most bodies; waitress
        # refuses anything larger still, by Content-Length, before buffering it.
        max_request_body_size=WAITRESS["max_request_body_size"],
    )
    server.channel_class = _JSONErrorChannel
    # Waitress warns "Task queue depth is N" on nearly every request under load, drowning the
    # access log, whose durations show load anyway; its errors still come through.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    stop = []

    def request_stop(signum, frame):
        stop.append(signum)
        server.pull_trigger()  # wake the event loop now, not at its next timeout

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, request_stop)
    # Printed, not logged, so that scripts can read the port (useful with --port 0).
    print(f"Serving on http://{server.effective_host}:{server.effective_port}", flush=True)
    try:
        while not stop:
            _serve_once(server, server.adj.asyncore_loop_timeout)
        app.logger.info("stopping on %s: no new connections; answering the requests under way",
                        signal.Signals(stop[0]).name)
        _finish_requests(server)
    finally:
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=STOP_GRACE_SECONDS)
        wasyncore.close_all(server._map)
        if "store" in app.extensions:
            app.extensions["store"].close()
    app.logger.info("stopped cleanly")


def _serve_once(server, timeout: float) -> None:
    """Run one turn of waitress's event loop."""
    wasyncore.loop(timeout=timeout, map=server._map, use_poll=server.adj.asyncore_use_poll, count=1)


def _finish_requests(server) -> None:
    """Stop listening, answer every request already received, and close connections as they fall idle."""
    # Connections the kernel has completed but waitress has not yet accepted would be reset when
    # the listening socket closes, and the requests their clients already sent on them lost:
    # take them in first.
    known = None
    while len(server._map) != known:
        known = len(server._map)
        server.handle_accept()
    server.close()  # the listening socket: new connections are refused from here on
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while time.monotonic() < deadline:
        # A turn first: requests already sent, still in the sockets, are read and go to work.
        _serve_once(server, 0.05)
        busy = False
        for channel in list(server._map.values()):
            if isinstance(channel, waitress.channel.HTTPChannel):
                if channel.requests or channel.total_outbufs_len:
                    busy = True
                else:
                    channel.handle_close()
        if not busy:
            return


# CLI ------------------------------------------------------------------------------------


def _register_cli(app: Flask) -> None:
    """Add the serve, token, events and players commands."""

    @app.cli.command("serve")
    @click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: all).")
    @click.option("--port", default=8000, show_default=True, type=int,
                  help="Port to listen on (0: a free one, printed at start).")
    @click.option("--threads", default=THREADS, show_default=True, type=int, help="Worker threads.")
    def serve_command(host, port, threads):
        """Serve the API with waitress, until SIGTERM or SIGINT (Ctrl-C) stops it cleanly.

        It prints "Serving on http://HOST:PORT" once it listens, and one log line per request on
        stderr. The database is BACKUP_API_DATABASE (default: instance/backup.db under the working
        directory), its secret jwt-secret beside it; both are made on first start.
        """
        serve(current_app._get_current_object(), host=host, port=port, threads=threads)

    token = AppGroup("token", help="Mint bearer tokens.")
    app.cli.add_command(token)

    @token.command("issue")
    @click.argument("partners", nargs=-1, required=True)
    @click.option("--days", default=365, show_default=True, type=click.IntRange(min=1),
                  help="How many days the token is valid.")
    @click.option("--sub", help="The token holder, recorded with what it writes (default: the first partner).")
    def issue(partners, days, sub):
        """Print a bearer token that owns PARTNERS (partner_ids), signed with this database's secret."""
        if not all(partners):
            raise click.BadParameter("a partner_id cannot be empty", param_hint="PARTNERS")
        token = create_access_token(
            identity=sub or partners[0],
            expires_delta=timedelta(days=days),
            additional_claims={"partners": list(partners)},
        )
        click.echo(token)

    events = AppGroup("events", help="Export and import stored events.")
    app.cli.add_command(events)

    @events.command("export")
    @click.option("--partner", help="Only this partner_id.")
    @click.option("--player", help="Only this player_login.")
    def export_events(partner, player):
        """Write stored events as JSON Lines, oldest first."""
        for line in store().export_events(partner, player):
            click.echo(line)

    @events.command("import")
    @click.argument("file", type=click.File("rb"))
    def import_events(file):
        """Load events written by `events export` from FILE (- for stdin), all or nothing.

        Into an empty database everything comes back as it was, ids included; into one that holds
        events, those already held are skipped and the rest get new ids.
        """
        imported, held = _import(file, schemas.load_exported_event, store().import_events)
        click.echo(f"imported {imported}, already held {held}")

    db = AppGroup("db", help="Look after the database.")
    app.cli.add_command(db)

    @db.command("snapshot")
    @click.argument("path", type=click.Path(dir_okay=False))
    def snapshot(path):
        """Write a consistent copy of the live database to PATH (safe while serving)."""
        try:
            storage.make_private_folder(os.path.dirname(os.path.abspath(path)))
            store().snapshot(path)
        except (OSError, storage.StorageError) as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"snapshot written to {path}")

    @db.command("restore")
    @click.argument("snapshot_path", metavar="SNAPSHOT", type=click.Path(exists=True, dir_okay=False))
    def restore(snapshot_path):
        """Replace the database with SNAPSHOT, keeping the file it replaces under a new name.

        The snapshot must be a sound database of this version's layout; the database must not be
        in use (stop the server first).
        """
        try:
            kept, events, players = store().restore(snapshot_path)
        except storage.StorageError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"restored {snapshot_path} ({events} events, {players} players) to {store().name}")
        if kept:
            click.echo(f"the database it replaced is kept as {kept}")

    @db.command("check")
    def check():
        """Check the database: its layout, SQLite's integrity_check, and what it holds; exit 1 if unsound."""
        try:
            layout, integrity, events, players = store().check()
        except storage.StorageError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"database: {store().name}")
        click.echo(f"layout: {layout}")
        click.echo("integrity_check: " + "; ".join(integrity))
        click.echo(f"events: {events}")
        click.echo(f"players: {players}")
        if layout != storage.SCHEMA_VERSION or integrity != ["ok"]:
            raise click.exceptions.Exit(1)

    players = AppGroup("players", help="Export and import VIP flags.")
    app.cli.add_command(players)

    @players.command("export")
    def export_players():
        """Write the VIP flags as JSON Lines."""
        for line in store().export_players():
            click.echo(line)

    @players.command("import")
    @click.argument("file", type=click.File("rb"))
    def import_players(file):
        """Load VIP flags written by `players export` from FILE (- for stdin), all or nothing.

        A flag newer than the one held (by updated_at) replaces it; an older one is skipped.
        """
        imported, updated, held = _import(file, schemas.load_exported_player, store().import_players)
        click.echo(f"imported {imported}, updated {updated}, already held {held}")


def _import(file, load, store_all):
    """Check each line of file with load and hand them all to store_all; a bad line aborts it all, by number."""
    where = {"line": 0}

    def records():
        for number, raw in enumerate(file, 1):
            where["line"] = number
            yield load(raw.rstrip(b"\r\n"))

    try:
        return store_all(records())
    except (ValidationError, ValueError, storage.EventConflict, storage.StorageError) as exc:
        detail = json.dumps(exc.messages, ensure_ascii=False) if isinstance(exc, ValidationError) else str(exc)
        place = f"line {where['line']}: " if not isinstance(exc, storage.StorageError) else ""
        raise click.ClickException(f"{place}{detail}; nothing was imported") from None


@click.group(
    cls=FlaskGroup,
    create_app=create_app,
    # Only the service's own commands: Flask's development server and shell are not for operators.
    add_default_commands=False,
    add_version_option=False,
    load_dotenv=False,
    help="The Game Backup API: keep casino partners' player events and VIP flags safely.\n\n"
    "Configured by BACKUP_API_* environment variables (see the README). BACKUP_API_DATABASE names the"
    f" SQLite file (default: {DEFAULT_DATABASE} under the working directory), created with its folder"
    " when missing; the JWT secret is kept beside it, in jwt-secret. Back up both.",
)
@click.version_option(__version__, prog_name="game-backup-api")
def main():
    """The `game-backup-api` command: the same commands as `flask --app backup_api`."""


# FlaskGroup's own options (--app, --env-file, --debug) would let this command load another app or
# run in debug mode: the service's command has its own app and none of them.
main.params = [param for param in main.params if param.name not in ("app", "env_file", "debug")]

