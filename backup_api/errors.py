"""Errors in one place: the JSON envelope every failure is answered in, and the handlers that build it."""

import json

from flask import Flask, jsonify, request
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

from backup_api import metrics, storage
from backup_api.jsontext import BodyError


def error_response(status: int, message: str, errors: dict | None = None):
    """Build the one error envelope every failure uses."""
    body: dict[str, object] = {"status": "error", "message": message}
    if errors is not None:
        body["errors"] = errors
    response = jsonify(body)
    response.status_code = status
    return response


def init_app(app: Flask) -> None:
    """Answer every failure with the JSON error envelope."""

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        response = error_response(exc.code or 500, exc.description or exc.name)
        # The exception's own headers (a 405's Allow, a 401's WWW-Authenticate), but its HTML's type.
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(BodyError)
    def body_error(exc: BodyError):
        return error_response(400, f"invalid JSON body: {exc}")

    @app.errorhandler(ValidationError)
    def validation_error(exc: ValidationError):
        messages = exc.messages if isinstance(exc.messages, dict) else {"_body": exc.messages}
        return error_response(400, "the request failed validation: " + ", ".join(sorted(messages)), messages)

    @app.errorhandler(storage.EventConflict)
    def conflict(exc: storage.EventConflict):
        return error_response(409, str(exc))

    @app.errorhandler(storage.WriteOutcomeUnknown)
    def outcome_unknown(exc: storage.WriteOutcomeUnknown):
        app.logger.error("storage failure: %s", exc)
        metrics.unavailable("commit_unconfirmed")
        return error_response(
            503, "the backup store did not confirm the write in time; it may have been stored: send it again"
            " (the same event is safe to resend)"
        )

    @app.errorhandler(storage.StorageError)
    def storage_error(exc: storage.StorageError):
        app.logger.error("storage failure: %s", exc)
        metrics.unavailable("database")
        outcome = "nothing was stored, retry later" if request.method in ("POST", "PUT") else "retry later"
        return error_response(503, f"the backup store is unavailable; {outcome}")

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        app.logger.exception("unhandled error")
        return error_response(500, "internal error")


def envelope_bytes(message: str) -> bytes:
    """The error envelope as bytes, for answers written outside Flask (by the HTTP server itself)."""
    return json.dumps({"status": "error", "message": message}).encode()
