"""The benchmark's floor: the bare Flask route plus the one thing the service may not skip, the commit.

It reads the body as the service does and stores the event durably with the service's own store
(same SQLite settings, same fsync per commit, same group commit) before answering; no token, no
validation, no log line. The service cannot be faster than this; the gap between the two is what
the service's own checks cost.
"""

import os

from flask import Flask, request

from backup_api import storage
from backup_api.jsontext import parse_json
from bench.baseline import add_serve_command


def create_app() -> Flask:
    """Return a Flask app that stores each posted event and answers {"status": "ok"}."""
    app = Flask(__name__)
    store = storage.open_store(os.environ["BACKUP_API_DATABASE"])

    @app.post("/player-events")
    def stored():
        store.add_events([parse_json(request.get_data())], "bench")
        return {"status": "ok"}

    add_serve_command(app, store)
    return app
