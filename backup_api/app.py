"""The app factory: settings, logging, tokens, errors, routes, the store and commands, wired together."""

import types

import click
from flask import Flask
from flask.json.provider import DefaultJSONProvider
from flask.testing import FlaskClient

from backup_api import (
    commands,
    config,
    errors,
    health,
    keys,
    logs,
    metrics,
    openapi,
    ratelimit,
    record,
    routes,
    storage,
    tokens,
)
from backup_api.config import ConfigError

__all__ = ["ConfigError", "create_app"]


class WholeAnswerClient(FlaskClient):
    """Flask's test client, reading each answer whole and closing it, as a WSGI server does: what the app does
    once its answer is sent (the access line, the request's metrics) is done by the time a test reads it."""

    def open(self, *args, buffered: bool = True, **kwargs):
        return super().open(*args, buffered=buffered, **kwargs)


class BackupFlask(Flask):
    """Flask, doing less at every request (issue 41).

    It asked of each hook and view whether it is a coroutine function (ensure_sync, which Flask's
    docs invite overriding): six times a single event, each a walk through inspect. A plain function
    is asked once now; anything else every time, as Flask does.
    """

    test_client_class = WholeAnswerClient

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._plain_functions: set[types.FunctionType] = set()

    def ensure_sync(self, func):
        if func in self._plain_functions:
            return func
        synced = super().ensure_sync(func)
        if synced is func and type(func) is types.FunctionType:
            self._plain_functions.add(func)
        return synced

    def request_context(self, environ):
        """Flask's, the body's limit set on its request: Flask's Request looked it up through current_app's
        proxy, twice a body read."""
        context = super().request_context(environ)
        context.request.max_content_length = self.config["MAX_CONTENT_LENGTH"]
        return context


def create_app(test_config: dict | None = None) -> Flask:
    """Create and configure the service (from BACKUP_API_* variables, or from test_config when given).

    The store and the secret are opened at once, so that a bad one fails here; under the command
    line, by each command when it needs them (`serve --stand-in` must create nothing durable).
    test_config's STAND_IN (the pytest fixture's) makes it the stand-in of backup_api.standin, as `serve
    --stand-in` does; never the environment.
    """
    app = BackupFlask("backup_api", instance_relative_config=True)
    assert isinstance(app.json, DefaultJSONProvider)
    app.json.sort_keys = False  # answers read in the order written: "status" first
    config.configure(app, test_config)
    app.extensions["openapi"] = openapi.document()
    record.init_app(app)
    logs.init_app(app)
    for warning in app.extensions["unknown_settings"]:
        app.logger.warning("%s", warning)
    tokens.init_app(app)
    ratelimit.init_app(app)
    errors.init_app(app)
    health.init_app(app)
    app.register_blueprint(routes.bp)
    metrics.init_app(app)
    # The mode: the stand-in (an ephemeral store, its faults and routes), or the durable store.
    if app.config["STAND_IN"]:
        from backup_api import standin  # here: a process that is no stand-in never loads it (0.1 s a start)

        standin.init_app(app)
    else:
        storage.init_app(app)
    commands.init_app(app)
    if click.get_current_context(silent=True) is None or app.config["STAND_IN"]:
        storage.get_store(app)
        keys.secret_key(app)
    return app
