"""Logging: one access line per request on stderr, and a warning for the events an operator wants to notice."""

import functools
import ipaddress
import json
import logging
import sys
import time
from datetime import UTC, datetime

from flask import Flask, Request, Response, current_app, request

from backup_api import record

# The WSGI environ's key for the connection's own address (REMOTE_ADDR is the one a trusted proxy forwarded).
PEER_ADDRESS = "backup_api.peer_address"

# Event types an operator wants to notice: logged at WARNING when stored.
NOTICE_EVENT_TYPES = ("big_win", "complaint")


def printable(text: str) -> str:
    """Escape control characters so that a client cannot forge log lines."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


class _StandardError(logging.StreamHandler):
    """The service's own handler: it writes to sys.stderr as it is when each line is written (a test's capture too)."""

    def __init__(self):
        super().__init__()
        self.fixed_stream = None  # serve's own process: sys.stderr, looked up once

    @property  # logging assigns it in __init__; here it is looked up
    def stream(self):
        return self.fixed_stream or sys.stderr

    @stream.setter
    def stream(self, value):
        pass


# One handler for the service's logger ("backup_api"), whichever apps a process makes.
_HANDLER = _StandardError()


def init_app(app: Flask) -> None:
    """Log one line per request on stderr, at the level BACKUP_API_LOG_LEVEL names, as BACKUP_API_LOG_FORMAT says.

    On the service's own logger, with a handler of its own: Flask's default_handler (one for every
    Flask app in the process), the root logger and other libraries' loggers are left as they were,
    so an app made in another program's process (the pytest plugin's stand-in) changes nothing of
    its logging. Its records still propagate to the root logger, for pytest's caplog.
    """
    logger = logging.getLogger(app.import_name)  # app.logger, before Flask would give it default_handler
    if _HANDLER not in logger.handlers:
        logger.addHandler(_HANDLER)
    logger.setLevel(str(app.config["LOG_LEVEL"] or "INFO").upper())  # checked by config
    json_lines = app.config["LOG_FORMAT"] == "json"
    _HANDLER.setFormatter(_JSONFormatter() if json_lines else _Formatter("%(asctime)s %(levelname)s %(message)s"))

    if app.config.get("TRUSTED_PROXY"):
        app.before_request(_forwarded_client_checked)

    @app.after_request
    def access_log(response):
        # Written once the answer is sent (waitress closes the response after writing it): the client
        # has its answer while the line is formatted, and the duration counts the sending too.
        response.call_on_close(functools.partial(_log_access, app, record.current(), record.this_request(),
                                                 response, json_lines))
        return response


def _log_access(app: Flask, seen: record.RequestRecord, req: Request, response: Response, json_lines: bool) -> None:
    """Write a request's access line."""
    elapsed_ms = (time.perf_counter() - seen.started) * 1000
    # Never the token, never the body: only who and what. The client is the peer's address,
    # or the one a trusted proxy forwarded (BACKUP_API_TRUSTED_PROXY); sub and jti only from a
    # token whose signature verified; for a refusal, why.
    refusal = reason = ""
    if response.status_code in (401, 403):
        answer = response.get_json(silent=True)
        reason = answer.get("message", "") if isinstance(answer, dict) else ""
        refusal = " reason=" + printable(json.dumps(reason, ensure_ascii=False))
    client_note = seen.client_note
    if client_note:
        refusal += " client_note=" + printable(json.dumps(client_note, ensure_ascii=False))
    if json_lines:  # the same fields, each its own (json.dumps escapes what printable would)
        fields = {"method": req.method, "path": req.path, "status": response.status_code,
                  "duration_ms": round(elapsed_ms, 1), "client": req.remote_addr,
                  "partner": ",".join(sorted(seen.partners)) or None, "sub": seen.sub, "jti": seen.jti}
        if reason:
            fields["reason"] = reason
        if client_note:
            fields["client_note"] = client_note
        app.logger.info("%s %s %d", req.method, printable(req.path), response.status_code,
                        extra={"access": fields})
        return
    app.logger.info(
        "%s %s %d %.1fms client=%s partner=%s sub=%s jti=%s%s",
        req.method,
        printable(req.path),
        response.status_code,
        elapsed_ms,
        printable(req.remote_addr or "-"),
        printable(",".join(sorted(seen.partners)) or "-"),
        printable(seen.sub or "-"),
        printable(str(seen.jti or "-")),
        refusal,
    )


def _forwarded_client_checked() -> None:
    """Behind the trusted proxy: a client address it forwarded that is not an IP address gives way to the peer's.

    The client's address is what the access line shows and what the limit counts requests that
    did not verify under: any string in X-Forwarded-For would be taken as it is. The line says why.
    """
    forwarded = str(request.environ.get("REMOTE_ADDR"))
    try:
        ipaddress.ip_address(forwarded)
    except ValueError:
        request.remote_addr = request.environ["REMOTE_ADDR"] = request.environ.get(PEER_ADDRESS, "unknown")
        record.current().client_note = (f"the forwarded client address {forwarded[:64]!r} is not an IP address:"
                                        " the connection's own is used")


class _JSONFormatter(logging.Formatter):
    """One JSON object per line, for log shippers: time, level, message, and an access line's fields."""

    def format(self, record):
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "message": record.getMessage(),
            **getattr(record, "access", {}),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


class _Formatter(logging.Formatter):
    """logging's own format, its date and time written once a second rather than for every line."""

    _second = (None, "")  # (the second, its text): one attribute, so that threads never see half of it

    def formatTime(self, record, datefmt=None):
        second, text = self._second
        if second != int(record.created):
            second = int(record.created)
            text = time.strftime(self.default_time_format, self.converter(second))
            self._second = (second, text)
        return self.default_msec_format % (text, record.msecs)


def lighten_records() -> None:
    """Make every log record of this process cheaper, for a process that serves and does nothing else.

    The access line needs no thread, process or caller; skipping them (as the logging HOWTO's section
    on optimisation suggests) makes each record cheaper; and the service's handler writes to the
    process's sys.stderr without looking it up each time. Process-wide, so `serve` calls it, and an
    app embedded in another program (the pytest plugin's) leaves that program's logging alone.
    """
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None
    _HANDLER.fixed_stream = sys.stderr


def notice_stored(events: list[dict], new: list[bool]) -> None:
    """Log at WARNING each newly stored event whose type an operator wants to notice."""
    for event, is_new in zip(events, new, strict=True):
        if is_new and event["event_type"] in NOTICE_EVENT_TYPES:
            current_app.logger.warning(
                "%s event: partner=%s player=%s", event["event_type"], event["partner_id"], event["player_login"]
            )
