"""The benchmark's baseline: a bare Flask app with one route, served exactly as the service is."""

import click
from flask import Flask

from backup_api import config, server


def create_app() -> Flask:
    """Return a Flask app that answers {"status": "ok"} to POST /player-events and does nothing else."""
    app = Flask(__name__)

    @app.post("/player-events")
    def ok():
        return {"status": "ok"}

    add_serve_command(app)
    return app


class _NoStore:
    """What the baseline stores: nothing (the serve command names a store as it starts and closes it at the end)."""

    name = "none (the benchmark's baseline)"

    def close(self) -> None:
        pass


def add_serve_command(app: Flask, store=None) -> None:
    """Give app the service's `serve` command, so that it runs under the same waitress settings: the service's
    settings, read from the environment as the service reads them (the bounds per client, the drain), and store
    (by default none) as the store the command names."""
    config.configure(app, None)
    app.extensions["store"] = store or _NoStore()

    @app.cli.command("serve")
    @click.option("--host", default="127.0.0.1")
    @click.option("--port", default=8000, type=int)
    @click.option("--threads", default=server.THREADS, type=int)
    def serve(host, port, threads):
        """Serve with the service's own waitress settings."""
        server.serve(app, host=host, port=port, threads=threads)
